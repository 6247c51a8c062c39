#!/usr/bin/env bash
# Sets everything up, then runs the whole check: ruff, mypy --strict, pytest.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
ensure_venv dev
ensure_redis_server
ensure_chromium
cd "$ROOT"
say "ruff"
"$VENV/bin/ruff" check src tests
"$VENV/bin/ruff" format --check src tests
say "mypy --strict"
"$VENV/bin/mypy"
say "pytest"
"$VENV/bin/pytest" "$@"
