"""`sessionhub doctor`: what in the Redis deployment puts sessions at risk, and the fix.

The checks are `sessionhub.doctor.diagnose`'s (connectivity, version,
eviction, persistence, replication, Sentinel, Cluster coverage, latency).
Exit status: 1 when a finding is an error (with ``--strict``, a warning too),
else 0.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from ..doctor import Level, diagnose
from .common import ConfigOption, JsonOption, NamespaceOption, UrlOption, load_settings, print_json
from .sessions import stdout

__all__ = ["doctor"]

_STYLE = {Level.OK: "green", Level.INFO: "cyan", Level.WARNING: "yellow", Level.ERROR: "bold red"}


def doctor(
    strict: Annotated[bool, typer.Option(help="Exit with 1 on warnings too.")] = False,
    json: JsonOption = False,
    url: UrlOption = None,
    namespace: NamespaceOption = None,
    config: ConfigOption = None,
) -> None:
    """Check the Redis deployment and say what to fix.

    Connectivity, version, eviction policy, persistence, replication, Sentinel,
    Cluster coverage and latency.
    """
    settings = load_settings(url, namespace, config)
    report = diagnose(settings.redis)
    if json:
        print_json(report.to_dict())
    else:
        table = Table(title=f"doctor: {report.target}", title_justify="left")
        for name in ("", "check", "node", "finding", "fix"):
            table.add_column(name, overflow="fold")
        for finding in sorted(report.findings, key=lambda f: -f.level):
            table.add_row(
                Text(str(finding.level), style=_STYLE[finding.level]),
                finding.check,
                finding.node or "",
                Text(finding.message),
                Text(finding.fix),
            )
        stdout().print(table)
        typer.echo(f"worst: {report.worst}")
    if report.worst >= (Level.WARNING if strict else Level.ERROR):
        raise typer.Exit(1)
