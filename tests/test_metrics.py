"""Prometheus metrics and OpenTelemetry spans, scraped after real workloads on real Redis."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import flask
import httpx
import pytest
import redis
import redis.asyncio
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from redis.backoff import NoBackoff
from redis.retry import Retry
from starlette.applications import Starlette
from starlette.routing import Mount

from sessionhub import (
    AsyncRedisStore,
    AsyncSessionManager,
    ExpiryWorker,
    MemoryStore,
    RedisStore,
    SessionManager,
    StoreUnavailable,
    Timeouts,
)
from sessionhub.hooks import ObservedStore
from sessionhub.metrics import SessionMetrics
from sessionhub.tracing import SessionTracing
from tests.servers import RedisServer
from tests.web_apps import KINDS, Client

NO_RETRY = Retry(NoBackoff(), 0)
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(exposition: bytes) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(exposition.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def scrape(metrics: SessionMetrics) -> Samples:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    return parse(body)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def latency_count(samples: Samples, operation: str) -> float:
    return value(samples, "sessionhub_store_latency_seconds_count", operation=operation)


@pytest.fixture
def metrics() -> SessionMetrics:
    return SessionMetrics(CollectorRegistry(), live_max_age=0)


def login(manager: SessionManager, user: str) -> str:
    session = manager.load(None)
    manager.login(session, user)
    outcome = manager.commit(session)
    assert outcome.id is not None
    return outcome.id


def test_counters_match_a_scripted_workload(
    metrics: SessionMetrics, redis_client: redis.Redis
) -> None:
    manager = metrics.instrument(
        SessionManager(RedisStore(redis_client), timeouts=Timeouts(idle=3, refresh_share=0.5))
    )
    ids = [login(manager, f"user-{n}") for n in range(6)]  # 6 created + 6 logins
    for _ in range(3):  # anonymous, then logged in: 3 logins (anonymous creates are untracked)
        session = manager.load(None)
        session["cart"] = [1]
        anonymous_id = manager.commit(session).id
        session = manager.load(anonymous_id)
        manager.login(session, "anna")
        manager.commit(session)
    for session_id in ids[:2]:  # 2 rotations
        session = manager.load(session_id)
        session.rotate()
        manager.commit(session)
    session = manager.load(ids[2])  # 1 logout
    session.invalidate()
    manager.commit(session)
    assert manager.end_session(manager.load(ids[3]).handle or "")  # 1 admin end
    assert len(manager.end_sessions("anna")) == 3  # 3 admin ends
    reads = 2 + 1 + 1 + 3  # the loads of stored ids above
    before = scrape(metrics)
    assert value(before, "sessionhub_live_sessions") == 4  # user-0, -1 (rotated), -4, -5

    time.sleep(3.2)  # all four time out
    worker = ExpiryWorker(manager.store, interval=0.5)
    expired = worker.tick()

    samples = scrape(metrics)
    assert expired == 4
    assert value(samples, "sessionhub_sessions_created_total") == 6
    assert value(samples, "sessionhub_logins_total") == 9
    assert value(samples, "sessionhub_sessions_rotated_total") == 2
    assert value(samples, "sessionhub_sessions_deleted_total", reason="logout") == 1
    assert value(samples, "sessionhub_sessions_deleted_total", reason="admin") == 4
    assert value(samples, "sessionhub_sessions_expired_total") == 4
    assert value(samples, "sessionhub_live_sessions") == 0
    assert latency_count(samples, "create") == 6 + 3
    assert latency_count(samples, "read") == reads
    assert latency_count(samples, "rotate") == 3 + 2
    assert latency_count(samples, "delete") == 2
    assert latency_count(samples, "end_sessions") == 1
    assert latency_count(samples, "hold_lease") == 1
    assert latency_count(samples, "sweep") == 1
    assert (
        value(samples, "sessionhub_store_errors_total", operation="read", error="unavailable") == 0
    )


async def test_an_asyncio_manager_is_measured_the_same_way(
    metrics: SessionMetrics, async_redis_client: redis.asyncio.Redis
) -> None:
    manager = metrics.instrument(AsyncSessionManager(AsyncRedisStore(async_redis_client)))
    for n in range(4):
        session = await manager.load(None)
        manager.login(session, f"user-{n}")
        await manager.commit(session)
    assert len(await manager.end_sessions("user-0")) == 1

    app = Starlette(routes=[Mount("/metrics", metrics.asgi_app())])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        response = await client.get("/metrics/")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    samples = parse(response.content)
    assert value(samples, "sessionhub_sessions_created_total") == 4
    assert value(samples, "sessionhub_logins_total") == 4
    assert value(samples, "sessionhub_sessions_deleted_total", reason="admin") == 1
    assert value(samples, "sessionhub_live_sessions") == 3  # refreshed on the event loop
    assert latency_count(samples, "create") == 4


def test_the_live_gauge_is_refreshed_at_most_every_max_age(redis_client: redis.Redis) -> None:
    metrics = SessionMetrics(CollectorRegistry(), live_max_age=3600)
    manager = metrics.instrument(SessionManager(RedisStore(redis_client)))
    login(manager, "alice")
    assert value(scrape(metrics), "sessionhub_live_sessions") == 1
    login(manager, "bob")
    assert value(scrape(metrics), "sessionhub_live_sessions") == 1  # not stale yet
    metrics.live_max_age = 0
    assert value(scrape(metrics), "sessionhub_live_sessions") == 2


def test_a_memory_store_counts_every_session_held(metrics: SessionMetrics) -> None:
    store = MemoryStore()
    sync = metrics.instrument(SessionManager(store))
    metrics.instrument(AsyncSessionManager(store))  # the same store: events counted once
    login(sync, "alice")
    session = sync.load(None)
    session["cart"] = [1]
    sync.commit(session)
    samples = scrape(metrics)
    assert value(samples, "sessionhub_live_sessions") == 2
    assert value(samples, "sessionhub_logins_total") == 1
    assert value(samples, "sessionhub_sessions_created_total") == 1


def test_store_errors_are_counted_by_operation() -> None:
    server = RedisServer().start()
    metrics = SessionMetrics(CollectorRegistry(), live_max_age=0)
    manager = metrics.instrument(
        SessionManager(RedisStore(redis.Redis(port=server.port, retry=NO_RETRY)))
    )
    session_id = login(manager, "alice")
    server.cleanup()
    for _ in range(2):
        with pytest.raises(StoreUnavailable):
            manager.load(session_id)
    samples = scrape(metrics)
    assert (
        value(samples, "sessionhub_store_errors_total", operation="read", error="unavailable") == 2
    )
    assert (
        value(samples, "sessionhub_store_errors_total", operation="create", error="unavailable")
        == 0
    )
    assert latency_count(samples, "read") == 2  # failed calls are timed too
    assert (
        value(
            samples, "sessionhub_store_errors_total", operation="live_sessions", error="unavailable"
        )
        == 1
    )
    assert value(samples, "sessionhub_live_sessions") == 0


def test_instrumenting_twice_measures_once(
    metrics: SessionMetrics, redis_client: redis.Redis
) -> None:
    manager = SessionManager(RedisStore(redis_client))
    metrics.instrument(metrics.instrument(manager))
    assert isinstance(manager.store, ObservedStore)
    assert len(manager.store.observers) == 1
    login(manager, "alice")
    samples = scrape(metrics)
    assert value(samples, "sessionhub_logins_total") == 1
    assert latency_count(samples, "create") == 1


@pytest.fixture
def installed(metrics: SessionMetrics) -> Iterator[SessionMetrics]:
    stop = metrics.install()
    yield metrics
    stop()


@pytest.mark.parametrize("kind", KINDS)
def test_install_measures_every_integration(
    kind: str, installed: SessionMetrics, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    client = Client(kind, {"store": "redis", "redis": {"url": redis_server.url}})
    try:
        assert client.post("/write", key="cart", value="1").status == 200
        assert client.post("/login", user="alice").status == 200
        assert client.get("/read").json()["principal"] == "alice"
        assert client.post("/logout").status == 200
    finally:
        client.close()
    samples = scrape(installed)
    assert value(samples, "sessionhub_logins_total") == 1
    assert value(samples, "sessionhub_sessions_deleted_total", reason="logout") == 1
    assert latency_count(samples, "create") == 1
    assert latency_count(samples, "rotate") == 1


def test_endpoints_for_wsgi_flask_and_django(
    metrics: SessionMetrics, redis_client: redis.Redis
) -> None:
    login(metrics.instrument(SessionManager(RedisStore(redis_client))), "alice")

    started: list[Any] = []
    body = b"".join(metrics.wsgi_app()({}, lambda status, headers: started.append(status)))
    assert started == ["200 OK"]
    assert value(parse(body), "sessionhub_logins_total") == 1

    app = flask.Flask(__name__)

    @app.get("/metrics")
    def flask_metrics() -> Any:
        body, content_type = metrics.render()
        return body, 200, {"Content-Type": content_type}

    response = app.test_client().get("/metrics")
    assert response.status_code == 200
    assert value(parse(response.data), "sessionhub_live_sessions") == 1

    from django.http import HttpResponse
    from django.test import RequestFactory

    import tests.web_django  # noqa: F401  (configures Django)

    def django_metrics(request: Any) -> HttpResponse:
        return HttpResponse(*metrics.render())

    reply = django_metrics(RequestFactory().get("/metrics"))
    assert reply["Content-Type"].startswith("text/plain")
    assert value(parse(reply.content), "sessionhub_logins_total") == 1


def test_spans_around_store_calls(redis_client: redis.Redis) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = SessionTracing(provider)
    store = RedisStore(redis_client)
    manager = tracing.instrument(SessionManager(store))
    session_id = login(manager, "alice")
    manager.load(session_id)

    spans = exporter.get_finished_spans()
    assert [span.name for span in spans] == ["sessionhub.create", "sessionhub.read"]
    read = spans[1]
    assert read.attributes is not None
    assert read.attributes["db.system"] == "redis"
    assert read.attributes["sessionhub.operation"] == "read"
    handle = read.attributes["sessionhub.session_handle"]
    assert isinstance(handle, str)
    assert len(handle) == 23
    assert session_id not in str([dict(span.attributes or {}) for span in spans])

    store.client = redis.Redis(port=1, retry=NO_RETRY)  # nothing listens there
    with pytest.raises(StoreUnavailable):
        manager.load(session_id)
    failed = exporter.get_finished_spans()[-1]
    assert failed.name == "sessionhub.read"
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.events[0].name == "exception"


async def test_spans_and_metrics_on_one_async_store(
    async_redis_client: redis.asyncio.Redis,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    metrics = SessionMetrics(CollectorRegistry())
    manager = AsyncSessionManager(AsyncRedisStore(async_redis_client))
    SessionTracing(provider).instrument(metrics.instrument(manager))

    session = await manager.load(None)
    manager.login(session, "alice")
    await manager.commit(session)
    assert [span.name for span in exporter.get_finished_spans()] == ["sessionhub.create"]
    assert latency_count(scrape(metrics), "create") == 1
