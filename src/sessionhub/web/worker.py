"""Running the expiry worker with the application.

The expiry worker reports sessions that time out as `expired` events
(`sessionhub.expiry`). Those events are opt-in: the helpers below start a
worker only when the settings enable it (``SESSIONHUB_EXPIRY__ENABLED=true``),
so an application can always include them and leave the choice to its
deployment. Every instance may run one; only one sweeps at a time.

ASGI (Starlette, FastAPI, Litestar): a lifespan::

    settings = Settings.load()
    app = Starlette(routes, middleware=[Middleware(SessionMiddleware, settings=settings)],
                    lifespan=expiry_lifespan(settings))
    app = Litestar(handlers, middleware=[SessionMiddleware.shared(settings)],
                   lifespan=[expiry_lifespan(settings)])

WSGI and Flask: a daemon thread started at start-up, stopped at exit::

    start_expiry_worker(settings)

Django: ``sessionhub.web.django.start_expiry_worker()`` in an ``AppConfig.ready()``.

Give the integration and the worker the same `Settings` object: under the
memory store, it is what makes them share one store.
"""

from __future__ import annotations

import atexit
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from ..config import Settings
from ..expiry import ExpiryWorker
from ..stores.base import Store

__all__ = ["expiry_lifespan", "start_expiry_worker"]


def expiry_lifespan(
    settings: Settings | None = None,
) -> Callable[[object], AbstractAsyncContextManager[None]]:
    """An ASGI lifespan that runs the asyncio expiry worker while the app serves.

    It does nothing unless ``settings.expiry.enabled``. The settings come from
    `Settings.load()` unless given.
    """
    chosen = settings or Settings.load()

    @asynccontextmanager
    async def lifespan(app: object) -> AsyncIterator[None]:
        if not chosen.expiry.enabled:
            yield
            return
        async with chosen.async_expiry_worker():  # made here: in the serving event loop
            yield

    return lifespan


def start_expiry_worker(
    settings: Settings | None = None, *, store: Store | None = None
) -> ExpiryWorker | None:
    """Start the expiry worker in a daemon thread, stopped when the process exits.

    None (and nothing started) unless ``settings.expiry.enabled``. `store` is
    the store to sweep; by default that of a manager the settings build.
    """
    chosen = settings or Settings.load()
    if not chosen.expiry.enabled:
        return None
    worker = chosen.expiry_worker(store).start()
    atexit.register(worker.stop)  # gives the lease up, so another instance sweeps at once
    return worker
