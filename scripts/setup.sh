#!/usr/bin/env bash
# Prepares a machine for sessionhub's demo and tests; sourced by test.sh and demo.sh.
# Creates .venv with everything installed and makes sure redis-server is present
# and chromium for the browser tests (installing Debian's packages when they are
# missing and this user may install).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

find_python() {
  local candidate
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      command -v "$candidate"
      return
    fi
  done
  die "Python 3.11 or newer is needed (none found on PATH)"
}

can_install_packages() {
  command -v apt-get >/dev/null 2>&1 || return 1
  [ "$(id -u)" = 0 ] && return 0
  command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null
}

apt_install() {
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo -n"
  say "installing Debian packages: $*"
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

ensure_venv() {
  local stamp="$VENV/.installed" want
  want="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)-$1"
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    "$(find_python)" -m venv "$VENV"
  fi
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "installing sessionhub and its dependencies ($1)"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e "$ROOT[$1]"
    echo "$want" >"$stamp"
  fi
}

ensure_redis_server() {
  if [ -n "${SESSIONHUB_REDIS_SERVER:-}" ] || command -v redis-server >/dev/null 2>&1; then
    return
  fi
  if can_install_packages; then
    apt_install redis-server
    return
  fi
  die "redis-server is not installed and this user cannot install it.
Install it (Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install redis)
or point SESSIONHUB_REDIS_SERVER at a redis-server binary."
}

ensure_chromium() {
  # The browser tests drive Debian's chromium through Playwright (no browser download).
  if [ -n "${SESSIONHUB_CHROMIUM:-}" ] || [ -x /usr/bin/chromium ]; then
    return
  fi
  if can_install_packages; then
    apt_install chromium
    return
  fi
  die "chromium is not installed and this user cannot install it; the browser tests need it.
Install it (Debian/Ubuntu: sudo apt-get install chromium) or point SESSIONHUB_CHROMIUM
at a Chromium binary."
}
