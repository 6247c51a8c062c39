"""Running `sessionhub demo` (or an example) as a real process, and seeing what it left behind."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

__all__ = ["Running", "alive", "descendants", "run_demo"]

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"
_URL = re.compile(r"Open (http://\S+)")


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: split after it.
    return int(stat.rpartition(")")[2].split()[1])


def descendants(pid: int) -> set[int]:
    """Every process below `pid` right now."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            parent = _parent_of(int(entry))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped, does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


@dataclass
class Running:
    process: subprocess.Popen[str]
    url: str
    lines: queue.Queue[str | None]
    output: list[str] = field(default_factory=list)

    def rest(self) -> str:
        """All it printed, once it has exited."""
        while (line := self.lines.get(timeout=10)) is not None:
            self.output.append(line)
        return "".join(self.output)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, signum: int = signal.SIGINT, timeout: float = 30) -> int:
        self.process.send_signal(signum)
        return self.process.wait(timeout)


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


@contextmanager
def run_demo(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 90
) -> Iterator[Running]:
    """`sessionhub demo ARGS` until it prints its URL; stopped (SIGKILL at worst) after."""
    process = subprocess.Popen(
        [sys.executable, "-m", "sessionhub.cli", "demo", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True).start()
    output: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"the demo printed no URL in {timeout} s: {output}") from None
            if line is None:
                raise AssertionError(f"the demo exited ({process.wait()}): {''.join(output)}")
            output.append(line)
            match = _URL.search(line)
            if match:
                break
        running = Running(process, match.group(1), lines, output)
        yield running
    finally:
        if process.poll() is None:
            below = descendants(process.pid)
            process.kill()
            process.wait()
            for pid in below:
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
