"""The soak run: ``python -m bench.soak --minutes 10`` (see tests/soak.py).

A uvicorn server with the ASGI middleware on Redis under mixed traffic from
this process; the app's memory and Redis's key count are watched, and every
answer is checked. tests/test_soak.py runs the same for under a minute.
"""

from __future__ import annotations

import sys

from tests.soak import main

if __name__ == "__main__":
    sys.exit(main())
