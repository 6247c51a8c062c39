"""One demo app instance as a process: ``python -m sessionhub.demo.instance``.

Configured by the supervisor through the environment: DEMO_INSTANCE (its
name), DEMO_INSTANCES (all names), DEMO_PORT, DEMO_REDIS_URL.
"""

from __future__ import annotations

import os

import uvicorn

from .app import create_app


def main() -> None:
    app = create_app(
        instance=os.environ["DEMO_INSTANCE"],
        instances=os.environ["DEMO_INSTANCES"],
        redis_url=os.environ["DEMO_REDIS_URL"],
    )
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["DEMO_PORT"]), log_level="warning")


if __name__ == "__main__":
    main()
