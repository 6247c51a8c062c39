"""Logged-in visitors writing and logging out through real app servers, each answer kept.

Every visitor is one browser: it logs in, then writes its counter "n" (the next
value each time) and now and then logs out and logs in again as a new visitor.
Worker threads each own some visitors, so one visitor's requests never overlap,
and send them to the app servers in turn. What each visitor was told is kept:

* the last value of "n" a write acknowledged (200), and the highest sent (a
  503 may still have been applied);
* whether its logout was acknowledged (200), or answered 503 (unknown).

`check` then reads every visitor's session from the primary the test names,
directly: a session whose acknowledged logout is live again is an undone
logout; a counter below its last acknowledged value is a lost write.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.cookiejar import DefaultCookiePolicy

import httpx

from sessionhub import SessionManager

__all__ = ["Answer", "FailoverLoad", "Findings", "Visitor"]


@dataclass
class Visitor:
    name: str
    session_id: str
    acknowledged: int = 0  # the last "n" a write was answered 200 for
    sent: int = 0  # the highest "n" sent
    logged_out: bool | None = False  # None: the logout was answered 503
    answered_at: float = 0.0  # when the last acknowledgement came (monotonic)


@dataclass(frozen=True, slots=True)
class Answer:
    kind: str  # "login", "write" or "logout"
    started: float
    duration: float
    status: int  # 0: no HTTP answer (the test fails on it)


@dataclass
class Findings:
    acknowledged_writes: int = 0
    lost_writes: int = 0  # visitors whose counter is below what they were told
    acknowledged_logouts: int = 0
    undone_logouts: int = 0
    #: When each lost write or undone logout was acknowledged (monotonic).
    wrongly_acknowledged_at: list[float] = field(default_factory=list, repr=False)
    beyond_sent: list[str] = field(default_factory=list)  # a value never sent: a bug


def _client() -> httpx.Client:
    """A client shared by several visitors, so its jar keeps no cookie: each request
    carries its visitor's, set by hand."""
    client = httpx.Client(timeout=10)
    client.cookies.jar.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    return client


class FailoverLoad:
    def __init__(
        self,
        urls: list[str],
        cookie: str = "session",
        visitors: int = 100,
        workers: int = 4,
        logout_share: float = 0.05,
        pause: float = 0.005,
    ) -> None:
        self.urls = urls
        self.cookie = cookie
        self.logout_share = logout_share
        self.pause = pause
        self.answers: list[Answer] = []
        self.visitors: list[Visitor] = []  # every visitor ever, logged out ones too
        self._count = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._random = random.Random(18)
        owned: list[list[Visitor]] = [[] for _ in range(workers)]
        with _client() as http:
            for i in range(visitors):
                owned[i % workers].append(self._log_in(http, self.urls[i % len(urls)]))
        self._threads = [
            threading.Thread(target=self._work, args=(mine,), daemon=True) for mine in owned
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
            assert not thread.is_alive(), "a load worker hangs"

    # -- what the tests read ----------------------------------------------------------

    def since(self, moment: float, kind: str | None = None) -> list[Answer]:
        with self._lock:
            answers = list(self.answers)
        return [a for a in answers if a.started >= moment and kind in (None, a.kind)]

    def statuses(self, answers: list[Answer] | None = None) -> Counter[int]:
        return Counter(a.status for a in (self.since(0) if answers is None else answers))

    def check(self, primary: SessionManager) -> Findings:
        """Every visitor's session as `primary` holds it, against what the visitor was told."""
        found = Findings()
        for visitor in self.visitors:
            session = primary.load(visitor.session_id)
            if visitor.logged_out:
                found.acknowledged_logouts += 1
                if not session.is_new:
                    found.undone_logouts += 1
                    found.wrongly_acknowledged_at.append(visitor.answered_at)
            elif visitor.logged_out is False:
                found.acknowledged_writes += visitor.acknowledged
                stored = int(str(session.get("n", 0)))
                if stored < visitor.acknowledged:
                    found.lost_writes += 1
                    found.wrongly_acknowledged_at.append(visitor.answered_at)
                if stored > visitor.sent:
                    found.beyond_sent.append(visitor.name)
        return found

    # -- the visitors -----------------------------------------------------------------

    def _log_in(self, http: httpx.Client, url: str) -> Visitor:
        """A new logged-in visitor (tried until a server says yes: logins are not checked)."""
        with self._lock:
            self._count += 1
            name = f"user-{self._count}"
        while True:
            started = time.monotonic()
            try:
                reply = http.post(url + "/login", params={"user": name})
                status = reply.status_code
            except httpx.HTTPError:
                status = 0
            with self._lock:
                self.answers.append(Answer("login", started, time.monotonic() - started, status))
            if status == 200:
                visitor = Visitor(name, reply.cookies[self.cookie])
                with self._lock:
                    self.visitors.append(visitor)
                return visitor
            if self._stop.wait(0.05):
                raise RuntimeError("stopped while logging in")

    def _work(self, mine: list[Visitor]) -> None:
        turn = 0
        with _client() as http:
            while not self._stop.is_set():
                for index, visitor in enumerate(mine):
                    url = self.urls[turn % len(self.urls)]
                    turn += 1
                    if self._random.random() < self.logout_share:
                        self._logout(http, url, visitor)
                        try:
                            mine[index] = self._log_in(http, url)
                        except RuntimeError:
                            return
                    else:
                        self._write(http, url, visitor)
                    if self._stop.wait(self.pause):
                        return

    def _send(
        self, http: httpx.Client, kind: str, url: str, visitor: Visitor, **params: str
    ) -> int:
        started = time.monotonic()
        try:
            reply = http.post(
                f"{url}/{kind}",
                params=params,
                headers={"cookie": f"{self.cookie}={visitor.session_id}"},
            )
            status = reply.status_code
        except httpx.HTTPError:
            status = 0
        with self._lock:
            self.answers.append(Answer(kind, started, time.monotonic() - started, status))
        return status

    def _write(self, http: httpx.Client, url: str, visitor: Visitor) -> None:
        value = visitor.sent + 1
        visitor.sent = value
        if self._send(http, "write", url, visitor, key="n", value=str(value)) == 200:
            visitor.acknowledged, visitor.answered_at = value, time.monotonic()

    def _logout(self, http: httpx.Client, url: str, visitor: Visitor) -> None:
        status = self._send(http, "logout", url, visitor)
        visitor.logged_out = True if status == 200 else None
        visitor.answered_at = time.monotonic()
