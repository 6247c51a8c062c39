"""The demo's one page: plain HTML and CSS, no script, no external asset."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from html import escape
from typing import Any

__all__ = ["PRODUCTS", "PageState", "render"]

#: What the shop sells: id -> label.
PRODUCTS = {"coffee": "Coffee", "tea": "Green tea", "croissant": "Croissant", "bagel": "Bagel"}

# One colour per instance name, so a glance tells which one answered.
_COLOURS = ["#2563eb", "#ea580c", "#16a34a", "#9333ea", "#db2777", "#0891b2", "#ca8a04"]

_CSS = """
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
  background:#f4f5f7;color:#1f2937}
header{background:#111827;color:#f9fafb;padding:18px 28px;display:flex;align-items:center;
  gap:18px;flex-wrap:wrap}
header h1{font-size:19px;margin:0;font-weight:600;letter-spacing:.2px}
header .sub{color:#9ca3af;font-size:13px}
.badge{display:inline-flex;align-items:center;gap:8px;border-radius:999px;padding:6px 14px;
  color:#fff;font-weight:600}
.badge small{font-weight:400;opacity:.85}
main{max-width:1040px;margin:24px auto;padding:0 20px;display:grid;gap:18px;
  grid-template-columns:repeat(auto-fit,minmax(300px,1fr))}
section{background:#fff;border-radius:12px;padding:18px 20px;
  box-shadow:0 1px 2px rgba(0,0,0,.06),0 1px 8px rgba(0,0,0,.04)}
section h2{font-size:13px;text-transform:uppercase;letter-spacing:.08em;color:#6b7280;
  margin:0 0 12px}
form{display:inline}
input[type=text]{font:inherit;padding:7px 10px;border:1px solid #d1d5db;border-radius:8px;
  width:160px}
button{font:inherit;border:0;border-radius:8px;padding:7px 14px;cursor:pointer;
  background:#111827;color:#fff}
button.light{background:#e5e7eb;color:#111827}
button:hover{filter:brightness(1.15)}
.products{display:flex;flex-wrap:wrap;gap:8px;margin-bottom:12px}
.products button{background:#eef2ff;color:#3730a3}
ul.cart{list-style:none;padding:0;margin:0 0 12px}
ul.cart li{display:flex;justify-content:space-between;padding:5px 0;border-bottom:1px solid #f1f5f9}
.empty{color:#9ca3af}
.trail{display:flex;flex-wrap:wrap;gap:6px}
.chip{width:30px;height:30px;border-radius:8px;color:#fff;display:flex;align-items:center;
  justify-content:center;font-weight:700;font-size:13px}
dl{display:grid;grid-template-columns:auto 1fr;gap:4px 14px;margin:0 0 10px}
dt{color:#6b7280}dd{margin:0;font-family:ui-monospace,Menlo,monospace;font-size:13px;
  overflow-wrap:anywhere}
pre{background:#0f172a;color:#e2e8f0;border-radius:8px;padding:12px;margin:0;font-size:12.5px;
  white-space:pre-wrap;overflow-wrap:anywhere}
.instances{display:flex;gap:10px;flex-wrap:wrap}
.note{color:#6b7280;font-size:13px;margin:10px 0 0}
@media (min-width:960px){main{grid-template-columns:repeat(3,1fr)}.wide{grid-column:span 2}}
footer{max-width:1040px;margin:0 auto 30px;padding:0 20px;color:#6b7280;font-size:13px}
"""


@dataclass(frozen=True, slots=True)
class PageState:
    instance: str
    instances: str
    pid: int
    started: float
    user: str | None
    cart: dict[str, int]
    trail: list[str]
    views: int
    handle: str | None
    expires_at: float | None
    contents: dict[str, Any]


def _colour(name: str, instances: str) -> str:
    index = instances.find(name)
    return _COLOURS[index % len(_COLOURS)] if index >= 0 else "#6b7280"


def _you(state: PageState) -> str:
    if state.user is None:
        return """
<p>You are not signed in.</p>
<form method="post" action="/login">
  <input type="text" name="user" placeholder="your name" required maxlength="40"
         aria-label="name" data-testid="login-name">
  <button type="submit" data-testid="login">Sign in</button>
</form>"""
    return f"""
<p>Signed in as <strong data-testid="user">{escape(state.user)}</strong>.</p>
<form method="post" action="/logout"><button type="submit" class="light"
  data-testid="logout">Sign out</button></form>
<p class="note">Signing in gave you a new session id (so one planted before
cannot be used); signing out deletes the session in Redis.</p>"""


def _cart(state: PageState) -> str:
    buttons = "".join(
        f'<button name="item" value="{key}" data-testid="add-{key}">+ {escape(label)}</button>'
        for key, label in PRODUCTS.items()
    )
    if state.cart:
        rows = "".join(
            f"<li><span>{escape(PRODUCTS.get(key, key))}</span>"
            f"<strong>&times; {count}</strong></li>"
            for key, count in state.cart.items()
        )
        items = f'<ul class="cart" data-testid="cart">{rows}</ul>'
    else:
        items = '<p class="empty" data-testid="cart">Your cart is empty.</p>'
    return f"""
<form method="post" action="/cart/add"><div class="products">{buttons}</div></form>
{items}
<form method="post" action="/cart/clear"><button type="submit" class="light"
  data-testid="clear">Empty the cart</button></form>"""


def _trail(state: PageState) -> str:
    chips = "".join(
        f'<span class="chip" style="background:{_colour(name, state.instances)}">'
        f"{escape(name)}</span>"
        for name in state.trail
    )
    return f"""
<div class="trail" data-testid="trail">{chips}</div>
<p class="note">Your last {len(state.trail)} requests, by the instance that served them
({state.views} in all). The balancer alternates; the session stays the same.</p>"""


def _session(state: PageState) -> str:
    if state.handle is None:
        facts = "<p class='empty'>A new session: it is stored as this page is sent.</p>"
    else:
        expires = max(0, round((state.expires_at or 0) - time.time()))
        facts = f"""
<dl><dt>handle</dt><dd data-testid="handle">{escape(state.handle)}</dd>
<dt>expires in</dt><dd>{expires // 60} min {expires % 60} s unless used</dd></dl>"""
    # One line per attribute: readable without scrolling through a long list.
    lines = [
        f"  {json.dumps(name)}: {json.dumps(state.contents[name])}"
        for name in sorted(state.contents)
    ]
    contents = escape("{\n" + ",\n".join(lines) + "\n}" if lines else "{}")
    return f"""{facts}<pre data-testid="contents">{contents}</pre>
<p class="note">The handle is what Redis stores the session under: a digest of the id,
which stays in your cookie only.</p>"""


def _instances(state: PageState) -> str:
    buttons = "".join(
        f'<button name="instance" value="{name}" data-testid="restart-{name}" '
        f'style="background:{_colour(name, state.instances)}">Restart {name}</button>'
        for name in state.instances
    )
    return f"""
<form method="post" action="/_demo/restart"><div class="instances">{buttons}</div></form>
<p class="note">A restart stops the instance and starts a new process, as a deploy
does. Sessions live in Redis, so nobody is signed out and no cart is lost.</p>"""


def render(state: PageState) -> str:
    colour = _colour(state.instance, state.instances)
    uptime = max(0, round(time.time() - state.started))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>sessionhub demo · instance {escape(state.instance)}</title>
<style>{_CSS}</style></head>
<body>
<header>
  <h1>sessionhub demo</h1>
  <span class="badge" style="background:{colour}" data-testid="instance"
        data-instance="{escape(state.instance)}" data-pid="{state.pid}">
    instance {escape(state.instance)} <small>pid {state.pid} · up {uptime} s</small></span>
  <span class="sub">{len(state.instances)} instances behind a round-robin balancer,
    one Redis</span>
</header>
<main>
  <section><h2>You</h2>{_you(state)}</section>
  <section><h2>Cart</h2>{_cart(state)}</section>
  <section><h2>Who served you</h2>{_trail(state)}</section>
  <section><h2>Instances</h2>{_instances(state)}</section>
  <section class="wide"><h2>Session</h2>{_session(state)}</section>
</main>
<footer>Reload the page: the next instance answers, and everything above stays.</footer>
</body></html>
"""
