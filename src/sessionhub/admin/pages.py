"""The dashboard's HTML: one page, built from escaped parts.

Every value that reaches the page goes through `escape` (`e` below):
principals, client info and handles come from users or from Redis and are
attacker-influenced. There is no script; the only style is one block carrying
the response's CSP nonce. Links and form actions are relative, so the page
works wherever the dashboard is mounted.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape as e
from typing import Any
from urllib.parse import quote

import orjson

from ..events import Event
from ..users import SessionInfo
from .chart import Buckets, svg

__all__ = ["Overview", "denied", "overview"]

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1f2937;background:#f8fafc}
header{background:#111827;color:#f9fafb;padding:10px 24px;
  display:flex;justify-content:space-between}
main{padding:16px 24px;max-width:1100px}
section{background:#fff;border:1px solid #e5e7eb;border-radius:6px;
  padding:12px 16px;margin:0 0 16px}
h1{font-size:16px;margin:0}h2{font-size:15px;margin:0 0 8px}
.figure{font-size:28px;font-weight:600}.muted{color:#6b7280}
table{border-collapse:collapse;width:100%}
td,th{text-align:left;padding:4px 8px;border-bottom:1px solid #f1f5f9;vertical-align:top}
code{font:12px ui-monospace,monospace}.notice{background:#ecfdf5;border-color:#a7f3d0}
button{cursor:pointer}.danger{color:#b91c1c}form[role=search]{margin:0 0 12px}
.chart .grid{stroke:#e5e7eb}.chart .axis,.chart .legend{font:11px system-ui,sans-serif;fill:#6b7280}
.chart .incomplete{fill:#f3f4f6}
"""

NOTICES = {
    "ended": "The session was ended.",
    "gone": "That session had already ended.",
    "ended-all": "Every session of the user was ended.",
}


@dataclass(frozen=True, slots=True)
class Overview:
    """What the page shows."""

    operator: str
    csrf: str
    live: int
    buckets: Buckets
    recent: Sequence[Event]
    user: str | None = None
    sessions: Sequence[SessionInfo] = ()
    notice: str | None = None


def _time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds)) + "Z"


def _ago(seconds: float) -> str:
    left = int(seconds - time.time())
    return f"{left // 60}m {left % 60:02d}s" if left > 0 else "now"


def _client(info: dict[str, Any]) -> str:
    return e(orjson.dumps(info).decode()) if info else "-"


def _hidden(name: str, value: str) -> str:
    return f'<input type="hidden" name="{e(name)}" value="{e(value)}">'


def _sessions(page: Overview) -> str:
    user = page.user or ""
    rows = []
    for info in page.sessions:
        rows.append(
            "<tr>"
            f"<td><code>{e(info.handle)}</code></td>"
            f"<td>{e(_time(info.authenticated_at))}</td>"
            f"<td>{e(_time(info.accessed_at))}</td>"
            f"<td>{e(_ago(info.expires_at))}</td>"
            f"<td><code>{_client(info.client_info)}</code></td>"
            '<td><form method="post" action="end">'
            f"{_hidden('csrf', page.csrf)}{_hidden('handle', info.handle)}{_hidden('user', user)}"
            f'<button type="submit" class="danger" data-handle="{e(info.handle)}">End</button>'
            "</form></td></tr>"
        )
    if not rows:
        return f'<p class="muted">No live session for <strong>{e(user)}</strong>.</p>'
    end_all = (
        '<form method="post" action="end-user">'
        f"{_hidden('csrf', page.csrf)}{_hidden('user', user)}"
        f'<button type="submit" class="danger">End all {len(rows)} sessions</button></form>'
    )
    head = "".join(
        f"<th>{name}</th>"
        for name in ("handle", "logged in", "last access", "expires in", "client", "")
    )
    return f'<table id="sessions"><tr>{head}</tr>{"".join(rows)}</table>{end_all}'


def _events(events: Sequence[Event]) -> str:
    if not events:
        return '<p class="muted">No events in the streams.</p>'
    rows = []
    for event in events:
        detail = []
        if event.previous:
            detail.append(f"was <code>{e(event.previous)}</code>")
        if event.reason:
            detail.append(f"reason {e(event.reason.value)}")
        rows.append(
            f'<tr data-type="{e(event.type.value)}">'
            f"<td>{e(_time(event.at))}</td><td>{e(event.type.value)}</td>"
            f"<td><code>{e(event.handle)}</code></td><td>{e(event.principal or '-')}</td>"
            f"<td>{' '.join(detail)}</td></tr>"
        )
    head = "<tr><th>time</th><th>event</th><th>session</th><th>user</th><th></th></tr>"
    return f'<table id="events">{head}{"".join(rows)}</table>'


def _layout(title: str, nonce: str, body: str, operator: str | None = None) -> str:
    who = (
        f'<span>signed in as <strong id="operator">{e(operator)}</strong></span>'
        if operator
        else ""
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="referrer" content="same-origin"><title>{e(title)}</title>'
        f'<style nonce="{e(nonce)}">{_STYLE}</style></head>'
        f"<body><header><h1>{e(title)}</h1>{who}</header><main>{body}</main></body></html>"
    )


def overview(page: Overview, nonce: str) -> str:
    parts = []
    if page.notice in NOTICES:
        parts.append(f'<section class="notice" id="notice">{e(NOTICES[page.notice])}</section>')
    parts.append(
        "<section><h2>Live sessions</h2>"
        f'<div class="figure" id="live">{page.live:,}</div>'
        '<div class="muted">tracked by the store: logged in (and anonymous, with '
        "anonymous events on)</div></section>"
    )
    parts.append(
        f"<section><h2>Events per minute, last {page.buckets.minutes} minutes</h2>"
        f"{svg(page.buckets)}</section>"
    )
    search = (
        '<form method="get" action="." role="search">'
        f'<input type="search" name="user" value="{e(page.user or "")}" '
        'placeholder="user (principal)" aria-label="user" maxlength="512" required> '
        '<button type="submit">Find sessions</button></form>'
    )
    found = ""
    if page.user is not None:
        found = f"<h2>Sessions of <strong>{e(page.user)}</strong></h2>{_sessions(page)}"
    parts.append(f"<section><h2>Search by user</h2>{search}{found}</section>")
    parts.append(f"<section><h2>Recent events</h2>{_events(page.recent)}</section>")
    return _layout("sessionhub · sessions", nonce, "".join(parts), page.operator)


def denied(message: str, nonce: str) -> str:
    return _layout("sessionhub · sessions", nonce, f"<section><p>{e(message)}</p></section>")


def user_link(user: str) -> str:
    """The page of `user`'s sessions, relative to the dashboard's root."""
    return "./?user=" + quote(user, safe="")
