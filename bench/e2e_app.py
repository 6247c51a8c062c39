"""The app a real uvicorn serves in the throughput test (see e2e.py).

BENCH_APP names a contender, BENCH_REDIS_URL the benchmark's Redis.
"""

from __future__ import annotations

import os

from bench.apps import starlette_apps

_BUILDERS = {
    "Starlette (bare)": starlette_apps.bare,
    "sessionhub · Starlette": starlette_apps.sessionhub,
    "starsessions · Starlette": starlette_apps.starsessions,
}

app = _BUILDERS[os.environ["BENCH_APP"]](os.environ["BENCH_REDIS_URL"])
