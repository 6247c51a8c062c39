#!/usr/bin/env bash
# The whole benchmark in one command: ./bench/run.sh [--quick] [--no-docs]
# Creates bench/.venv (the peers from PyPI, pinned in bench/requirements.txt, plus
# sessionhub from this working tree), makes sure redis-server and wrk are there,
# then runs `python -m bench`, which starts its own redis-server on a free
# loopback port and writes docs/benchmarks.md and docs/benchmarks.png.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/setup.sh"
BENCH_VENV="$ROOT/bench/.venv"

ensure_bench_venv() {
  local stamp="$BENCH_VENV/.installed" want
  want="$(cat "$ROOT/pyproject.toml" "$ROOT/bench/requirements.txt" | sha256sum | cut -c1-16)"
  if [ ! -x "$BENCH_VENV/bin/python" ]; then
    say "creating $BENCH_VENV"
    "$(find_python)" -m venv "$BENCH_VENV"
  fi
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "installing the peers and sessionhub into $BENCH_VENV"
    "$BENCH_VENV/bin/python" -m pip install -q --upgrade pip
    "$BENCH_VENV/bin/python" -m pip install -q -r "$ROOT/bench/requirements.txt" -e "$ROOT[asgi,flask]"
    echo "$want" >"$stamp"
  fi
}

ensure_wrk() {
  command -v wrk >/dev/null 2>&1 && return
  if can_install_packages; then
    apt_install wrk
  else
    say "wrk is not installed and cannot be: the end-to-end throughput test will be skipped"
  fi
}

ensure_redis_server
ensure_wrk
ensure_bench_venv
cd "$ROOT"
exec "$BENCH_VENV/bin/python" -m bench "$@"
