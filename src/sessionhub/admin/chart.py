"""The dashboard's chart: events per minute as an inline SVG (no script, no asset).

Each series is a polyline over one bucket per minute, the last bucket being
the current minute. Its counts are also in the series' ``data-counts``
attribute, and each point has a ``<title>`` (a tooltip). Minutes before the
window is complete (a stream held more events than were read) are shaded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from ..events import Event, EventType

__all__ = ["SERIES", "Buckets", "bucket", "svg"]

#: Charted event types, their legend and colour.
SERIES: tuple[tuple[EventType, str, str], ...] = (
    (EventType.CREATED, "created", "#2563eb"),
    (EventType.AUTHENTICATED, "logins", "#16a34a"),
    (EventType.EXPIRED, "expired", "#dc2626"),
)

WIDTH, HEIGHT = 760, 220
LEFT, RIGHT, TOP, BOTTOM = 44, 12, 14, 40


@dataclass(frozen=True, slots=True)
class Buckets:
    """Counts per minute for each charted type; minute `start` is the first bucket's."""

    start: float  # seconds since the epoch
    counts: dict[EventType, list[int]]
    complete_from: float

    @property
    def minutes(self) -> int:
        return len(next(iter(self.counts.values())))


def bucket(events: Sequence[Event], now: float, minutes: int, complete_from: float) -> Buckets:
    start = (math.floor(now / 60) - minutes + 1) * 60
    counts = {kind: [0] * minutes for kind, _, _ in SERIES}
    for event in events:
        index = int((event.at - start) // 60)
        if event.type in counts and 0 <= index < minutes:
            counts[event.type][index] += 1
    return Buckets(start, counts, complete_from)


def _ceiling(value: int) -> int:
    """A round top for the y axis: 1, 2, 5, 10, 20, 50..."""
    magnitude = 1
    while True:
        for step in (1, 2, 5):
            if step * magnitude >= value:
                return step * magnitude
        magnitude *= 10


def svg(buckets: Buckets) -> str:
    minutes = buckets.minutes
    top = _ceiling(max((max(c) for c in buckets.counts.values()), default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(index: int) -> float:
        return LEFT + (plot_w * index / (minutes - 1) if minutes > 1 else plot_w)

    def y(count: int) -> float:
        return TOP + plot_h - plot_h * count / top

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'data-start="{int(buckets.start)}" data-minutes="{minutes}">',
        "<title>Session events per minute</title>",
    ]
    incomplete = (buckets.complete_from - buckets.start) / 60
    if incomplete > 0:
        edge = x(min(minutes - 1, math.ceil(incomplete)))
        parts.append(
            f'<rect class="incomplete" x="{LEFT}" y="{TOP}" width="{edge - LEFT:.1f}" '
            f'height="{plot_h}"><title>not all events were read for these minutes</title></rect>'
        )
    for fraction in (0, 0.5, 1):
        level = round(top * fraction)
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(level):.1f}" '
            f'y2="{y(level):.1f}"/><text class="axis" x="{LEFT - 6}" y="{y(level) + 4:.1f}" '
            f'text-anchor="end">{level}</text>'
        )
    for index in range(0, minutes, max(1, minutes // 6)):
        ago = minutes - 1 - index
        parts.append(
            f'<text class="axis" x="{x(index):.1f}" y="{HEIGHT - BOTTOM + 16}" '
            f'text-anchor="middle">{"now" if ago == 0 else f"-{ago}m"}</text>'
        )
    for position, (kind, label, colour) in enumerate(SERIES):
        counts = buckets.counts[kind]
        points = " ".join(f"{x(i):.1f},{y(c):.1f}" for i, c in enumerate(counts))
        tips = "".join(
            f'<circle cx="{x(i):.1f}" cy="{y(c):.1f}" r="2" fill="{colour}">'
            f"<title>{escape(label)}: {c} at -{minutes - 1 - i}m</title></circle>"
            for i, c in enumerate(counts)
            if c
        )
        legend_x = LEFT + position * 110
        parts.append(
            f'<g class="series" data-series="{escape(label)}" '
            f'data-counts="{",".join(map(str, counts))}">'
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>{tips}'
            f'<rect x="{legend_x}" y="{HEIGHT - 14}" width="10" height="10" fill="{colour}"/>'
            f'<text class="legend" x="{legend_x + 14}" y="{HEIGHT - 5}">{escape(label)} '
            f"({sum(counts)})</text></g>"
        )
    parts.append("</svg>")
    return "".join(parts)
