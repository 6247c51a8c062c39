"""Resolvers and the request flow's decisions: pure functions, tested as such."""

from __future__ import annotations

import pytest

from sessionhub import MemoryStore, Outcome, SessionManager
from sessionhub.config import Settings
from sessionhub.errors import StoreUnavailable
from sessionhub.ids import MAX_ID_LENGTH, IdScheme
from sessionhub.web import (
    CompositeResolver,
    CookiePolicy,
    CookieResolver,
    HeaderResolver,
    SessionFlow,
    merge_headers,
)
from sessionhub.web.wsgi import SessionMiddleware as WSGISessionMiddleware

SID = "A" + "b" * 43
OTHER = "B" + "c" * 43
NOW = 1_800_000_000.0


# -- the cookie policy --------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"name": "__Host-sid", "secure": False}, "__Host- prefix requires Secure"),
        ({"name": "__Host-sid", "path": "/app"}, "__Host- prefix requires Secure, Path=/"),
        ({"name": "__Host-sid", "domain": "example.com"}, "and no Domain"),
        ({"name": "__Secure-sid", "secure": False}, "__Secure- prefix requires Secure"),
        ({"same_site": "none", "secure": False}, "SameSite=None cookie must be Secure"),
        ({"partitioned": True, "secure": False}, "Partitioned cookie must be Secure"),
        ({"same_site": "sometimes"}, "same_site must be Lax, Strict or None"),
        ({"name": "bad name"}, "not a valid cookie name"),
        ({"name": ""}, "not a valid cookie name"),
        ({"path": "app"}, "must start with '/'"),
        ({"path": "/a;b"}, "hold no ';'"),
        ({"domain": "example.com; Secure"}, "not a valid domain"),
        ({"domain": ""}, "not a valid domain"),
        ({"max_age": 0}, "max_age must be positive"),
    ],
)
def test_bad_cookie_policies_are_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CookiePolicy(**options)  # type: ignore[arg-type]


def test_host_prefix_policy_is_accepted_when_it_follows_the_rules() -> None:
    policy = CookiePolicy(name="__Host-sid", secure=True, path="/", domain=None)
    header = policy.set_cookie(SID, None, NOW)
    assert header == f"__Host-sid={SID}; Path=/; Secure; HttpOnly; SameSite=Lax"


def test_set_cookie_renders_every_attribute() -> None:
    policy = CookiePolicy(
        name="sid",
        domain="example.com",
        path="/app",
        same_site="Strict",
        http_only=True,
        partitioned=True,
    )
    assert policy.same_site == "strict"  # any case accepted, kept lower-case
    header = policy.set_cookie(SID, 90.2, NOW)
    assert header == (
        f"sid={SID}; Path=/app; Domain=example.com; Max-Age=91; "
        "Expires=Fri, 15 Jan 2027 08:01:31 GMT; Secure; HttpOnly; SameSite=Strict; Partitioned"
    )


def test_expiring_keeps_the_attributes_the_browser_matches_on() -> None:
    policy = CookiePolicy(name="__Host-sid", same_site="none")
    assert policy.expire() == (
        "__Host-sid=; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; "
        "Secure; HttpOnly; SameSite=None"
    )


def test_http_only_and_secure_can_be_turned_off() -> None:
    policy = CookiePolicy(secure=False, http_only=False)
    assert policy.set_cookie(SID, None, NOW) == f"session={SID}; Path=/; SameSite=Lax"


@pytest.mark.parametrize(
    ("header", "found"),
    [
        (None, []),
        ("", []),
        ("other=1", []),
        (f"session={SID}", [SID]),
        (f"a=1; session={SID}; b=2", [SID]),
        (f'session="{SID}"', [SID]),
        (f"session={SID}; session=second", [SID, "second"]),  # in the order sent
        ("sessionx=1; xsession=2", []),
        ("session=", [""]),
        ("session", []),  # no '=': not a cookie pair
    ],
)
def test_finding_the_cookie(header: str | None, found: list[str]) -> None:
    assert CookiePolicy().values(header) == found


# -- resolvers ----------------------------------------------------------------------


def test_cookie_resolver_reads_and_writes() -> None:
    resolver = CookieResolver(CookiePolicy(secure=False))
    [presented] = resolver.candidates({"cookie": f"session={SID}"})
    assert presented.value == SID
    assert presented.resolver is resolver
    assert resolver.candidates({}) == []
    [(name, value)] = resolver.write(Outcome(SID, send=True), NOW)
    assert (name, value) == ("Set-Cookie", f"session={SID}; Path=/; HttpOnly; SameSite=Lax")
    [(_, ended)] = resolver.write(Outcome(None, send=True), NOW)
    assert "Max-Age=0" in ended


def test_cookie_lifetime_follows_remember_me_then_the_policy() -> None:
    resolver = CookieResolver(CookiePolicy(max_age=600))
    remembered = Outcome(SID, send=True, expires_at=NOW + 86_400, persistent=True)
    [(_, long_lived)] = resolver.write(remembered, NOW)
    assert "Max-Age=86400" in long_lived
    [(_, ordinary)] = resolver.write(Outcome(SID, send=True, expires_at=NOW + 1800), NOW)
    assert "Max-Age=600" in ordinary
    [(_, browser)] = CookieResolver().write(Outcome(SID, send=True, expires_at=NOW + 1), NOW)
    assert "Max-Age" not in browser
    assert "Expires" not in browser


def test_oversized_values_are_present_but_unusable() -> None:
    huge = "A" * (MAX_ID_LENGTH + 1)
    [by_cookie] = CookieResolver().candidates({"cookie": f"session={huge}"})
    [by_header] = HeaderResolver().candidates({"x-session-id": huge})
    assert by_cookie.value is None
    assert by_header.value is None
    just_fits = "A" * MAX_ID_LENGTH
    [fitting] = HeaderResolver().candidates({"x-session-id": just_fits})
    assert fitting.value == just_fits


def test_header_resolver() -> None:
    resolver = HeaderResolver("X-Upstream-Session")
    [presented] = resolver.candidates({"x-upstream-session": f" {SID} "})
    assert presented.value == SID
    assert resolver.write(Outcome(SID, send=True), NOW) == [("X-Upstream-Session", SID)]
    assert resolver.write(Outcome(None, send=True), NOW) == [("X-Upstream-Session", "")]
    assert resolver.vary == ("X-Upstream-Session",)


@pytest.mark.parametrize("name", ["", "X Session", "X-Session:", "Cookie", "cookie"])
def test_bad_header_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="header"):
        HeaderResolver(name)


def test_composite_answers_through_the_resolver_the_id_came_by() -> None:
    cookie, header = CookieResolver(), HeaderResolver()
    composite = CompositeResolver([cookie, header])
    assert composite.vary == ("Cookie", "X-Session-Id")
    flow = SessionFlow(composite, clock=lambda: NOW)
    both = {"cookie": f"session={SID}", "x-session-id": OTHER}
    first = flow.read_id(both)
    assert first is not None
    assert first.resolver is cookie
    assert first.value == SID
    by_header = flow.read_id({"x-session-id": SID})
    assert by_header is not None
    assert by_header.resolver is header
    assert flow.read_id({"cookie": "unrelated=1"}) is None
    # A malformed cookie gives way to a well-formed header.
    past_junk = flow.read_id({"cookie": "session=junk", "x-session-id": SID})
    assert past_junk is not None
    assert past_junk.resolver is header
    session = SessionManager(MemoryStore()).new_session()
    answer = flow.response_headers(by_header, session, Outcome(SID, send=True))
    assert ("X-Session-Id", SID) in answer
    assert not any(name == "Set-Cookie" for name, _ in answer)
    new_client = flow.response_headers(None, session, Outcome(SID, send=True))
    assert any(name == "Set-Cookie" for name, _ in new_client)


@pytest.mark.parametrize(
    ("header", "chosen"),
    [
        (f"session=junk; session={SID}", SID),  # a parent domain's junk cookie comes first
        (f'session=""; session="{SID}"', SID),
        (f"session={'x' * (MAX_ID_LENGTH + 1)}; session={SID}", SID),  # too long: no candidate
        (f"session={SID[:-1]}; session={SID}", SID),  # one character short
        (f"session={SID}; session={OTHER}", SID),  # both well-formed: the first
        (f"session={OTHER}; session={SID}", OTHER),
        ("session=junk; session=more junk", "junk"),  # none: the first, which loads nothing
    ],
)
def test_the_flow_takes_the_first_well_formed_id(header: str, chosen: str) -> None:
    presented = SessionFlow().read_id({"cookie": header})
    assert presented is not None
    assert presented.value == chosen


def test_the_shape_is_the_managers() -> None:
    scheme = IdScheme(token_factory=lambda: "t" * 30, token_pattern="t{30}")
    custom = "A" + "t" * 30
    header = {"cookie": f"session=junk; session={custom}"}
    presented = SessionFlow(ids=scheme).read_id(header)
    assert presented is not None
    assert presented.value == custom
    settings = Settings.load()
    manager = SessionManager(MemoryStore(), ids=scheme)
    flow = WSGISessionMiddleware(lambda environ, start: [], settings=settings, manager=manager).flow
    assert flow.ids is scheme


def test_composite_needs_a_resolver() -> None:
    with pytest.raises(ValueError, match="at least one"):
        CompositeResolver([])


# -- the flow's decisions -------------------------------------------------------------


def test_response_headers_for_each_case() -> None:
    flow = SessionFlow(CookieResolver(CookiePolicy(secure=False)), clock=lambda: NOW)
    manager = SessionManager(MemoryStore())
    untouched = manager.new_session()
    assert flow.response_headers(None, untouched, None) == []
    assert flow.response_headers(None, untouched, Outcome(None, send=False)) == []
    looked = manager.new_session()
    looked.get("anything")
    assert flow.response_headers(None, looked, Outcome(None, send=False)) == [("Vary", "Cookie")]
    created = flow.response_headers(None, looked, Outcome(SID, send=True))
    assert created == [
        ("Vary", "Cookie"),
        ("Set-Cookie", f"session={SID}; Path=/; HttpOnly; SameSite=Lax"),
        ("Cache-Control", "no-store"),
    ]


def test_cache_control_and_clear_site_data_are_configurable() -> None:
    flow = SessionFlow(
        cache_control="private, no-cache",
        clear_site_data=("cache", "cookies"),
        clock=lambda: NOW,
    )
    session = SessionManager(MemoryStore()).new_session()
    ended = dict(flow.response_headers(None, session, Outcome(None, send=True)))
    assert ended["Cache-Control"] == "private, no-cache"
    assert ended["Clear-Site-Data"] == '"cache", "cookies"'
    kept = dict(flow.response_headers(None, session, Outcome(SID, send=True)))
    assert "Clear-Site-Data" not in kept
    silent = SessionFlow(cache_control=None, clock=lambda: NOW)
    assert "Cache-Control" not in dict(silent.response_headers(None, session, Outcome(SID, True)))


def test_only_server_errors_skip_the_commit() -> None:
    assert SessionFlow.should_commit(200)
    assert SessionFlow.should_commit(302)
    assert SessionFlow.should_commit(404)
    assert not SessionFlow.should_commit(500)
    assert not SessionFlow.should_commit(503)


def test_unavailable_is_a_short_plain_503() -> None:
    response = SessionFlow(retry_after=3).unavailable(StoreUnavailable("session store timed out"))
    assert response.status == 503
    assert response.status_line == "503 Service Unavailable"
    assert response.body == b"503 Service Unavailable: session store timed out\n"
    assert dict(response.headers) == {
        "Content-Type": "text/plain; charset=utf-8",
        "Content-Length": str(len(response.body)),
        "Retry-After": "3",
        "Cache-Control": "no-store",
    }
    with pytest.raises(ValueError, match="retry_after"):
        SessionFlow(retry_after=-1)


def test_merge_headers() -> None:
    app = [
        ("Content-Type", "text/html"),
        ("Cache-Control", "public, max-age=600"),
        ("Vary", "Accept-Encoding"),
        ("Set-Cookie", "theme=dark"),
    ]
    ours = [
        ("Vary", "Cookie"),
        ("Set-Cookie", f"session={SID}"),
        ("Cache-Control", "no-store"),
    ]
    assert merge_headers(app, ours) == [
        ("Content-Type", "text/html"),
        ("Set-Cookie", "theme=dark"),
        ("Set-Cookie", f"session={SID}"),
        ("Cache-Control", "no-store"),
        ("Vary", "Accept-Encoding, Cookie"),
    ]
    assert merge_headers([("vary", "cookie")], [("Vary", "Cookie")]) == [("Vary", "cookie")]
    assert merge_headers([("Vary", "*")], [("Vary", "Cookie")]) == [("Vary", "*")]
    assert merge_headers(app[:1], []) == app[:1]
