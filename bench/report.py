"""The report: Markdown tables and a plot from one run's results.

`write` replaces what lies between the result markers of docs/benchmarks.md
(the prose around them is written by hand) and draws docs/benchmarks.png.
Everything here is a pure function of the results JSON, so the report can be
redrawn without measuring again (`python -m bench --report-only`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.contenders import ASYNC, CONTENDERS, SYNC, Contender, bare_of
from bench.scenario import KINDS

__all__ = ["Target", "markdown", "targets", "write"]

START = "<!-- bench:results:start -->"
END = "<!-- bench:results:end -->"
KIND_TITLES = {"anon": "anonymous", "read": "read", "write": "write", "new": "new session"}
#: target name -> the largest allowed ratio of extra cost to one raw round trip
RATIO_TARGETS = {"read": 1.3, "write": 2.3}
ANON_EXTRA_US = 5.0


@dataclass(frozen=True)
class Target:
    name: str
    measured: str
    met: bool
    cpu: str = ""  # the same comparison in CPU time, where it applies


def _median(data: dict[str, Any], name: str, kind: str) -> float:
    return float(data["latency"][name][kind]["median"])


def extra(data: dict[str, Any], contender: Contender, kind: str) -> float:
    """Median µs a contender adds to its bare framework for this request kind."""
    return _median(data, contender.name, kind) - _median(data, bare_of(contender).name, kind)


def _floor(data: dict[str, Any], contender: Contender) -> float:
    return float(data["floors"][contender.family]["median"])


def extra_cpu(data: dict[str, Any], contender: Contender, kind: str) -> float:
    """Median CPU µs a contender adds to its bare framework (the steadier number)."""
    cpu = data["cpu"]
    return float(cpu[contender.name][kind]) - float(cpu[bare_of(contender).name][kind])


def _cpu_ratio(data: dict[str, Any], contender: Contender, kind: str) -> str:
    floor = float(data["floors"][contender.family]["cpu"])
    added = extra_cpu(data, contender, kind)
    return f"+{added:.0f} µs = {added / floor:.2f} × {floor:.0f} µs"


def _peers(contender: Contender) -> list[Contender]:
    return [
        c for c in CONTENDERS if c.family == contender.family and not c.bare and not c.is_sessionhub
    ]


def _ours() -> list[Contender]:
    return [c for c in CONTENDERS if c.is_sessionhub and not c.variant]


def targets(data: dict[str, Any]) -> list[Target]:
    found = []
    for ours in _ours():
        if ours.name not in data["latency"]:
            continue
        floor = _floor(data, ours)
        client = "asyncio" if ours.family == ASYNC else "sync"
        for kind, limit in RATIO_TARGETS.items():
            ratio = extra(data, ours, kind) / floor
            found.append(
                Target(
                    f"{ours.name}: {kind} extra ≤ {limit} × one {client} round trip",
                    f"+{extra(data, ours, kind):.0f} µs = {ratio:.2f} × {floor:.0f} µs",
                    ratio <= limit,
                    _cpu_ratio(data, ours, kind),
                )
            )
        commands = data["usage"][ours.name]["anon"]["commands"]
        anon = extra(data, ours, "anon")
        found.append(
            Target(
                f"{ours.name}: anonymous: 0 Redis commands, ≤ {ANON_EXTRA_US:g} µs extra",
                f"{commands:g} commands, +{anon:.1f} µs",
                commands == 0 and anon <= ANON_EXTRA_US,
                f"+{extra_cpu(data, ours, 'anon'):.1f} µs",
            )
        )
        for kind in KINDS:
            mine = extra(data, ours, kind)
            rivals = {p.name: extra(data, p, kind) for p in _peers(ours)}
            best_name = min(rivals, key=lambda n: rivals[n])
            best = next(p for p in _peers(ours) if p.name == best_name)
            found.append(
                Target(
                    f"{ours.name}: {KIND_TITLES[kind]} faster than every {client} peer",
                    f"+{mine:.0f} µs vs best peer {best_name} +{rivals[best_name]:.0f} µs",
                    all(mine < theirs for theirs in rivals.values()),
                    f"+{extra_cpu(data, ours, kind):.0f} µs vs "
                    f"+{extra_cpu(data, best, kind):.0f} µs",
                )
            )
        kept = data["survivors"][ours.name]
        found.append(Target(f"{ours.name}: 50 of 50 concurrent writes kept", f"{kept}", kept == 50))
    peers_memory = {
        name: size for name, (size, _) in data["memory"].items() if "sessionhub" not in name
    }
    best = min(peers_memory, key=lambda n: peers_memory[n])
    mine = max(size for name, (size, _) in data["memory"].items() if "sessionhub" in name)
    found.append(
        Target(
            "Redis bytes per session ≤ the best peer's",
            f"{mine} B vs {best} {peers_memory[best]} B",
            mine <= peers_memory[best],
        )
    )
    return found


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _latency_rows(data: dict[str, Any], family: str) -> list[list[str]]:
    rows = []
    for contender in CONTENDERS:
        if contender.family != family or contender.name not in data["latency"]:
            continue
        cells = [f"**{contender.name}**" if contender.is_sessionhub else contender.name]
        for kind in KINDS:
            cell = data["latency"][contender.name][kind]
            added = "" if contender.bare else f" (+{extra(data, contender, kind):.0f})"
            cells.append(f"{cell['median']:.0f}{added} · {cell['p99']:.0f}")
        rows.append(cells)
    floor = data["floors"][family]
    client = "redis.asyncio" if family == ASYNC else "redis-py"
    raw = f"{floor['median']:.0f} · {floor['p99']:.0f}"
    rows.append([f"*one raw {client} GET*", raw, raw, raw, raw])
    return rows


def _usage_rows(data: dict[str, Any]) -> list[list[str]]:
    rows = []
    for contender in CONTENDERS:
        if contender.bare or contender.name not in data["usage"]:
            continue
        cells = [contender.name]
        for kind in KINDS:
            usage = data["usage"][contender.name][kind]
            cells.append(
                f"{usage['label']} · {usage['bytes']:.0f} B · {usage.get('server_us', 0):.1f} µs"
            )
        rows.append(cells)
    return rows


def markdown(data: dict[str, Any]) -> str:
    machine = data["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
    load = "/".join(f"{x:.1f}" for x in machine["load_before"])
    lines = [
        f"Run of {machine['date']}{' (quick mode: few samples)' if data.get('quick') else ''}: "
        f"{machine['cpu']}, {machine['cores']} cores, Python {machine['python']}, "
        f"Redis {machine['redis']}; load average before the run {load}; "
        f"the run took {machine['seconds']} s.  ",
        f"Versions: {versions}.",
        "",
        "![benchmark plot](benchmarks.png)",
        "",
        "### Targets",
        "",
    ]
    lines += _table(
        ["target", "measured (wall time)", "met", "the same in CPU time"],
        [[t.name, t.measured, "yes" if t.met else "**no**", t.cpu] for t in targets(data)],
    )
    header = ["µs: median (+ over bare) · p99", *(KIND_TITLES[k] for k in KINDS)]
    for family, title in ((ASYNC, "async frameworks"), (SYNC, "WSGI frameworks")):
        lines += ["", f"### Latency per request, {title}", ""]
        lines += _table(header, _latency_rows(data, family))
    lines += ["", "### CPU time added over the bare framework (median µs)", ""]
    rows = [
        [c.name, *(f"+{extra_cpu(data, c, kind):.0f}" for kind in KINDS)]
        for c in CONTENDERS
        if not c.bare and c.name in data["cpu"]
    ]
    for family in (ASYNC, SYNC):
        floor_cpu = f"{data['floors'][family]['cpu']:.0f}"
        client = "redis.asyncio" if family == ASYNC else "redis-py"
        rows.append([f"*one raw {client} GET*", floor_cpu, floor_cpu, floor_cpu, floor_cpu])
    lines += _table(["library", *(KIND_TITLES[k] for k in KINDS)], rows)
    lines += ["", "### Redis per request: commands sent · bytes in and out · Redis's own time", ""]
    lines += _table(["library", *(KIND_TITLES[k] for k in KINDS)], _usage_rows(data))
    lines += ["", "### Concurrent writes and memory", ""]
    rows = []
    for contender in CONTENDERS:
        if contender.bare or contender.name not in data["survivors"]:
            continue
        size, keys = data["memory"][contender.name]
        kept = data["survivors"][contender.name]
        rows.append([contender.name, f"{kept} of 50", f"{size} B in {keys} key(s)"])
    lines += _table(
        ["library", "attributes kept after 50 concurrent writes", "Redis memory per session"],
        rows,
    )
    lines += ["", "### One round trip, by client", ""]
    lines += _table(
        ["client", "median µs per GET"], [[k, f"{v:.1f}"] for k, v in data["clients"].items()]
    )
    if data.get("ladder"):
        columns = list(data["ladder"])
        steps = list(data["ladder"][columns[-1]])  # a write has every step
        lines += ["", "### Where sessionhub's time goes (median µs: wall · CPU)", ""]
        rows = []
        for step in steps:
            cells = [step]
            for column in columns:
                times = data["ladder"][column].get(step)
                cells.append("" if times is None else f"{times[0]:.0f} · {times[1]:.0f}")
            rows.append(cells)
        lines += _table(["step", *columns], rows)
    if data.get("tracking"):
        t = data["tracking"]
        lines += ["", "### Client-side caching (RESP3 CLIENT TRACKING, opt-in)", ""]
        rows = [
            [
                "invalidation reaches the other instance, after DEL returns: median",
                f"{t['staleness_median_us']:.0f}",
            ],
            ["the same, p99", f"{t['staleness_p99_us']:.0f}"],
            ["the same, worst of the run", f"{t['staleness_max_us']:.0f}"],
            ["a cached read (socket poll + lookup)", f"{t['cached_read_us']:.1f}"],
            ["a GET on the same connection", f"{t['round_trip_us']:.1f}"],
        ]
        if "store_staleness_median_us" in t:
            rows += [
                [
                    "through the stores: B still serves a session after A's logout returned, "
                    "median · p99 · worst",
                    f"{t['store_staleness_median_us']:.0f} · {t['store_staleness_p99_us']:.0f}"
                    f" · {t['store_staleness_max_us']:.0f}",
                ],
                ["a store read from B's cache (sync)", f"{t['store_cached_read_us']:.1f}"],
                ["a store read from Redis (sync)", f"{t['store_read_us']:.1f}"],
            ]
        lines += _table(["measure", "µs"], rows)
    if data.get("scale"):
        lines += [
            "",
            "### sessionhub at 1 k, 100 k and 1 M live sessions",
            "",
            "Median µs, and in brackets in raw round trips of the same client timed in the",
            "same rounds (the steadier figure when the machine's load changes between levels).",
            "",
        ]
        names = list(data["scale"][0]["latency"])
        family_of = {c.name: c.family for c in CONTENDERS}
        header = [
            "live sessions",
            "Redis memory",
            *(f"{n} {k}" for n in names for k in ("read", "write")),
        ]
        rows = []
        for row in data["scale"]:
            cells = [f"{row['live']:,}", f"{row['used_memory'] / 2**20:.0f} MiB"]
            for n in names:
                floor = float(row["floors"][family_of[n]])
                cells += [
                    f"{row['latency'][n][k]:.0f} ({row['latency'][n][k] / floor:.2f} ×)"
                    for k in ("read", "write")
                ]
            rows.append(cells)
        lines += _table(header, rows)
    if data.get("e2e"):
        lines += ["", "### End to end: uvicorn (one worker) under wrk, 16 connections", ""]
        lines += _table(
            ["app", "path", "requests/s", "p50 ms", "p99 ms", "errors"],
            [
                [
                    r["contender"],
                    r["path"],
                    f"{r['requests_per_s']:.0f}",
                    f"{r['p50_ms']:.2f}",
                    f"{r['p99_ms']:.2f}",
                    str(r["errors"]),
                ]
                for r in data["e2e"]
            ],
        )
    return "\n".join(lines) + "\n"


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(13, 9))
    for axis, family, title in ((axes[0][0], ASYNC, "async"), (axes[0][1], SYNC, "WSGI")):
        libraries = [c for c in CONTENDERS if c.family == family and not c.bare]
        width = 0.8 / len(libraries)
        for index, contender in enumerate(libraries):
            values = [extra(data, contender, kind) for kind in KINDS]
            positions = [k + index * width for k in range(len(KINDS))]
            mark = {"edgecolor": "black", "hatch": "//"} if contender.is_sessionhub else {}
            axis.bar(positions, values, width, label=contender.name, **mark)
        floor = data["floors"][family]["median"]
        axis.axhline(floor, color="black", linestyle="--", linewidth=1, label="one raw round trip")
        axis.set_xticks([k + 0.4 - width / 2 for k in range(len(KINDS))])
        axis.set_xticklabels([KIND_TITLES[k] for k in KINDS])
        axis.set_ylabel("µs added to the bare framework (median)")
        axis.set_title(f"Per-request cost of the session layer, {title}")
        axis.legend(fontsize=8)
    axis = axes[1][0]
    scale = data.get("scale", [])
    family_of = {c.name: c.family for c in CONTENDERS}
    for name in scale[0]["latency"] if scale else ():
        for kind in ("read", "write"):
            xs = [row["live"] for row in scale]
            ys = [row["latency"][name][kind] / row["floors"][family_of[name]] for row in scale]
            axis.plot(xs, ys, marker="o", label=f"{name} {kind}")
    axis.set_xscale("log")
    axis.set_ylim(bottom=0)
    axis.set_xlabel("live sessions in Redis")
    axis.set_ylabel("median per request, in raw round trips")
    axis.set_title("sessionhub as the store grows")
    axis.legend(fontsize=8)
    axis = axes[1][1]
    runs = data.get("e2e", [])
    axis.barh([f"{r['contender']} {r['path']}" for r in runs], [r["requests_per_s"] for r in runs])
    axis.invert_yaxis()
    axis.set_xlabel("requests per second")
    axis.set_title("uvicorn, one worker, wrk -c16")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def write(data: dict[str, Any], docs: Path) -> None:
    page = docs / "benchmarks.md"
    text = page.read_text()
    if START not in text or END not in text:
        raise RuntimeError(f"{page} lacks the {START} / {END} markers")
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    page.write_text(f"{head}{START}\n{markdown(data)}{END}{tail}")
    plot(data, docs / "benchmarks.png")
