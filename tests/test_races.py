"""Requests of one session that overlap a login, a rotation or an end.

Each test forces one interleaving of two (or three) requests of one browser:
each request is a `load` and, later, a `commit` of the same session id, on
every kind of store -- memory, standalone Redis, Sentinel and a Cluster
(where a login moves the session to another slot), sync and asyncio. What
must hold (docs/design.md, "Races with a rotation or an end"):

* a request whose session another request rotated keeps its writes (they land
  in the rotated session), is never told the new id, and never changes the
  client's cookie;
* an end (logout, log out everywhere, an operator, a limit) wins: the
  concurrent writes are dropped and the request is told (`SessionEnded`);
* a login by another principal than the session's starts a clean session.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from sessionhub import Outcome, Session, SessionEnded, SessionLimit
from sessionhub.connect import RedisSettings, async_redis_client, redis_client
from sessionhub.stores.base import FORWARD_WINDOW
from tests.harness import FakeClock, session_records
from tests.servers import RedisCluster, RedisSentinelSet, RedisServer
from tests.users_kit import Kit, flush

DEPLOYMENTS = ["memory", "standalone", "sentinel", "cluster"]


@pytest.fixture(scope="module")
def sentinel_set() -> Iterator[RedisSentinelSet]:
    servers = RedisSentinelSet(replicas=1).start()
    yield servers
    servers.cleanup()


@pytest.fixture(params=[f"{d}-{f}" for d in DEPLOYMENTS for f in ("sync", "async")])
def browser(
    request: pytest.FixtureRequest,
    redis_server: RedisServer,
    redis_cluster: RedisCluster,
    sentinel_set: RedisSentinelSet,
) -> Iterator[Browser]:
    deployment, flavor = str(request.param).split("-")
    kit = _kit(deployment, flavor, redis_server, redis_cluster, sentinel_set, {})
    yield Browser(kit)
    kit.close()


def _kit(
    deployment: str,
    flavor: str,
    redis_server: RedisServer,
    redis_cluster: RedisCluster,
    sentinel_set: RedisSentinelSet,
    options: dict[str, Any],
) -> Kit:
    if deployment == "memory":
        return Kit(f"memory-{flavor}", **options)
    if deployment == "sentinel":
        flush(sentinel_set.primary)
        sentinels = ",".join(f"{host}:{port}" for host, port in sentinel_set.sentinel_addresses)
        settings = RedisSettings(url=f"redis+sentinel://{sentinels}/{sentinel_set.service}")
        build = redis_client if flavor == "sync" else async_redis_client
        return Kit(f"redis-{flavor}", sentinel_set.primary, client=build(settings), **options)
    server = redis_cluster if deployment == "cluster" else redis_server
    flush(server)
    kind = f"{'cluster' if deployment == 'cluster' else 'redis'}-{flavor}"
    return Kit(kind, server, **options)


class Browser:
    """One browser's session, and the requests it makes (each a load, then a commit)."""

    def __init__(self, kit: Kit) -> None:
        self.kit = kit

    def request(self, session_id: str | None) -> Session:
        return self.kit.load(session_id)

    def commit(self, session: Session) -> Outcome:
        outcome: Outcome = self.kit.run(self.kit.manager.commit(session))
        return outcome

    def login(self, session: Session, principal: str) -> Outcome:
        self.kit.manager.login(session, principal)
        return self.commit(session)

    def anonymous(self, **values: Any) -> str:
        session = self.request(None)
        session.update(values or {"cart": ["book"]})
        outcome = self.commit(session)
        assert outcome.id is not None
        return outcome.id

    def logged_in(self, principal: str, **values: Any) -> str:
        outcome = self.login(self.request(self.anonymous(**values)), principal)
        assert outcome.id is not None
        return outcome.id

    def read(self, session_id: str) -> Session:
        return self.request(session_id)

    def records(self) -> int:
        """How many sessions the store holds (forwards and markers aside)."""
        if not self.kit.is_redis:
            return len(self.kit.store)
        server = self.kit.server
        nodes = server.nodes if isinstance(server, RedisCluster) else [server]
        return sum(len(session_records(node.client())) for node in nodes if node is not None)


# -- a rotation (login) overlapped by writes ---------------------------------------


def test_a_write_that_overlaps_a_login_lands_in_the_logged_in_session(browser: Browser) -> None:
    old_id = browser.anonymous(cart=["book"])
    page, login = browser.request(old_id), browser.request(old_id)
    logged_in = browser.login(login, "alice")
    assert logged_in.send
    assert logged_in.id not in (None, old_id)
    page["k"] = "v"
    written = browser.commit(page)
    assert written.id == old_id  # never told the new id...
    assert not written.send  # ...and the client's cookie is left alone
    assert logged_in.id is not None
    session = browser.read(logged_in.id)
    assert session.principal == "alice"
    assert dict(session) == {"cart": ["book"], "k": "v"}
    assert browser.read(old_id).is_new  # the old id opens nothing
    assert browser.records() == 1


def test_writes_follow_a_session_rotated_twice(browser: Browser) -> None:
    old_id = browser.anonymous(n=0)
    page = browser.request(old_id)
    first = browser.request(old_id)
    first.rotate()
    middle = browser.commit(first).id
    assert middle is not None
    second = browser.request(middle)
    second.rotate()
    last = browser.commit(second).id
    assert last is not None
    page["n"] = 1
    page["m"] = 2
    assert not browser.commit(page).send
    assert dict(browser.read(last)) == {"n": 1, "m": 2}
    assert browser.read(middle).is_new


def test_a_remembered_session_s_followed_write_sends_no_cookie(browser: Browser) -> None:
    session = browser.request(None)
    session["a"] = 1
    session.remember(idle=86_400)
    old_id = browser.commit(session).id
    assert old_id is not None
    page, other = browser.request(old_id), browser.request(old_id)
    other.rotate()
    browser.commit(other)
    page["b"] = 2
    page.remember(idle=2 * 86_400)  # moves the expiry: would set the cookie again
    assert not browser.commit(page).send


def test_a_request_that_starts_after_the_login_can_neither_read_nor_write(
    browser: Browser,
) -> None:
    old_id = browser.anonymous(cart=["book"])
    logged_in = browser.login(browser.request(old_id), "alice").id
    assert logged_in is not None
    late = browser.request(old_id)  # the old cookie, sent after the login answered
    assert late.is_new
    assert dict(late) == {}  # the rotated session is not open to the old id
    late["k"] = "planted"
    with pytest.raises(SessionEnded, match="signed in again"):
        browser.commit(late)  # no new id to replace the client's new cookie
    assert dict(browser.read(logged_in)) == {"cart": ["book"]}
    assert browser.records() == 1


def test_a_login_that_starts_after_another_login_makes_its_own_session(
    browser: Browser,
) -> None:
    old_id = browser.anonymous(cart=["book"])
    first = browser.login(browser.request(old_id), "alice").id
    late = browser.login(browser.request(old_id), "alice")
    assert late.send
    assert late.id not in (None, old_id, first)
    assert late.id is not None
    assert browser.read(late.id).principal == "alice"
    assert first is not None
    assert browser.read(first).principal == "alice"


def test_a_logout_that_overlaps_a_login_wins(browser: Browser) -> None:
    old_id = browser.anonymous(cart=["book"])
    logout, login = browser.request(old_id), browser.request(old_id)
    logged_in = browser.login(login, "alice").id
    assert logged_in is not None
    logout.invalidate()
    ended = browser.commit(logout)
    assert ended.send
    assert ended.id is None
    assert browser.read(logged_in).is_new
    assert browser.kit.sessions_of("alice") == []
    assert browser.records() == 0


def test_a_logout_that_starts_after_the_login_ends_the_logged_in_session(
    browser: Browser,
) -> None:
    old_id = browser.anonymous(cart=["book"])
    logged_in = browser.login(browser.request(old_id), "alice").id
    assert logged_in is not None
    late = browser.request(old_id)
    late.invalidate()
    ended = browser.commit(late)
    assert ended.send
    assert ended.id is None
    assert browser.read(logged_in).is_new
    assert browser.records() == 0


def test_two_logins_at_once_leave_the_later_one_s_session(browser: Browser) -> None:
    old_id = browser.anonymous(cart=["book"])
    first, second = browser.request(old_id), browser.request(old_id)
    earlier = browser.login(first, "alice").id
    later = browser.login(second, "alice").id  # follows the first login's rotation
    assert later not in (None, old_id, earlier)
    assert later is not None
    assert earlier is not None
    assert dict(browser.read(later)) == {"cart": ["book"]}
    assert browser.read(earlier).is_new
    assert [each.handle for each in browser.kit.sessions_of("alice")] == [browser.kit.handle(later)]


# -- a login by another principal ---------------------------------------------------


def test_a_login_as_another_user_starts_a_clean_session(browser: Browser) -> None:
    alice = browser.logged_in("alice", secret="alice's")
    session = browser.request(alice)
    outcome = browser.login(session, "mallory")
    assert outcome.send
    assert outcome.id not in (None, alice)
    assert outcome.id is not None
    mallory = browser.read(outcome.id)
    assert mallory.principal == "mallory"
    assert dict(mallory) == {}
    assert browser.read(alice).is_new  # alice's session ended with her
    assert browser.kit.sessions_of("alice") == []
    assert browser.records() == 1


def test_a_login_as_the_same_user_or_from_anonymous_keeps_the_data(browser: Browser) -> None:
    anonymous = browser.anonymous(cart=["book"])
    first = browser.login(browser.request(anonymous), "alice").id
    assert first is not None
    again = browser.login(browser.request(first), "alice").id
    assert again is not None
    assert dict(browser.read(again)) == {"cart": ["book"]}


def test_a_login_that_overlaps_another_user_s_login_gets_its_own_session(
    browser: Browser,
) -> None:
    old_id = browser.anonymous(cart=["book"])
    as_bob, as_alice = browser.request(old_id), browser.request(old_id)
    alice = browser.login(as_alice, "alice").id
    as_bob["note"] = "bob's"
    bob = browser.login(as_bob, "bob").id
    assert bob not in (None, old_id, alice)
    assert bob is not None
    assert alice is not None
    assert browser.read(bob).principal == "bob"
    assert dict(browser.read(bob)) == {"cart": ["book"], "note": "bob's"}
    assert browser.read(alice).principal == "alice"
    assert "note" not in browser.read(alice)


# -- an end overlapped by writes --------------------------------------------------------


@pytest.mark.parametrize("end", ["logout", "everywhere", "operator"])
def test_an_end_wins_over_an_overlapping_write(browser: Browser, end: str) -> None:
    alice = browser.logged_in("alice", cart=["book"])
    page = browser.request(alice)
    if end == "logout":
        ender = browser.request(alice)
        ender.invalidate()
        browser.commit(ender)
    elif end == "everywhere":
        browser.kit.end_sessions("alice")
    else:
        assert browser.kit.end_session(browser.kit.handle(alice))
    page["cart"] = ["book", "pen"]
    with pytest.raises(SessionEnded, match="ended while this request ran"):
        browser.commit(page)
    assert browser.read(alice).is_new
    assert browser.records() == 0


def test_an_end_wins_over_a_write_that_follows_a_login(browser: Browser) -> None:
    old_id = browser.anonymous(cart=["book"])
    page = browser.request(old_id)
    alice = browser.login(browser.request(old_id), "alice").id
    assert alice is not None
    browser.kit.end_sessions("alice")
    page["k"] = "v"
    with pytest.raises(SessionEnded):
        browser.commit(page)
    assert browser.records() == 0


def test_a_session_limit_ending_the_session_wins(
    redis_server: RedisServer, redis_cluster: RedisCluster, sentinel_set: RedisSentinelSet
) -> None:
    for deployment in DEPLOYMENTS:
        options = {"session_limit": SessionLimit(1)}
        kit = _kit(deployment, "sync", redis_server, redis_cluster, sentinel_set, options)
        try:
            browser = Browser(kit)
            first = browser.logged_in("alice")
            page = browser.request(first)
            browser.logged_in("alice")  # a second device: the limit ends the first
            page["k"] = "v"
            with pytest.raises(SessionEnded):
                browser.commit(page)
        finally:
            kit.close()


# -- the forward's lifetime -------------------------------------------------------------


def test_a_write_after_the_forward_expired_is_told(redis_server: RedisServer) -> None:
    clock = FakeClock()
    kit = Kit("memory-sync", clock=clock)
    browser = Browser(kit)
    old_id = browser.anonymous()
    page = browser.request(old_id)
    rotating = browser.request(old_id)
    rotating.rotate()
    browser.commit(rotating)
    clock.advance(FORWARD_WINDOW / 1000)
    page["k"] = "v"
    with pytest.raises(SessionEnded):
        browser.commit(page)


@pytest.mark.parametrize("deployment", ["standalone", "cluster"])
def test_a_forward_on_redis_lives_for_the_window_only(
    deployment: str, redis_server: RedisServer, redis_cluster: RedisCluster
) -> None:
    server = redis_cluster if deployment == "cluster" else redis_server
    flush(server)
    kit = Kit("cluster-sync" if deployment == "cluster" else "redis-sync", server)
    try:
        browser = Browser(kit)
        old_id = browser.anonymous()
        new_id = browser.login(browser.request(old_id), "alice").id
        assert new_id is not None
        key = kit.store.commands.key(kit.handle(old_id))
        client = kit.store.client
        assert client.get(key) == b"!>" + kit.handle(new_id).encode()
        assert 0 < client.pttl(key) <= FORWARD_WINDOW
    finally:
        kit.close()
