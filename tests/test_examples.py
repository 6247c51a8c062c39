"""Each example, run as a user runs it: real processes on loopback, checked end to end.

Each example checks its own story and exits non-zero when it does not hold;
these tests run them and look at what they printed as well.
"""

from __future__ import annotations

import re
import subprocess
import sys

from tests.demo_process import ROOT


def _run(example: str) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / example / "run.py")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_scale_out_memory_loses_sessions_redis_keeps_them() -> None:
    output = _run("scale_out")
    memory, redis = output.split("2. redis store")
    lost = re.search(r"memory store: the session was lost (\d+) times", memory)
    assert lost is not None
    assert int(lost.group(1)) > 0
    assert re.search(r"instance A, user \(nobody\)", memory)
    assert re.search(r"instance B, user \(nobody\)", memory)
    assert "redis store: the session was lost 0 times in 10 visits" in redis
    counts = [int(n) for n in re.findall(r"user alice +visits +(\d+)", redis)]
    assert counts == list(range(1, 11))
    assert set(re.findall(r"instance ([AB]), user alice", redis)) == {"A", "B"}


def test_microservices_share_one_login() -> None:
    output = _run("microservices")
    assert '-> 401 {"detail": "sign in first"}' in output
    handles = set(re.findall(r'"handle": "([A-Za-z0-9_-]{23})"', output))
    assert len(handles) == 1  # gateway and orders service: one session
    assert '"orders": ["coffee", "bagel"], "user": "alice"' in output
    assert "no header\n  -> 401" in output


def test_rolling_restart_loses_nothing() -> None:
    output = _run("rolling_restart")
    restarts = re.findall(r"restarted ([ABC]): pid (\d+) -> (\d+)", output)
    assert [name for name, _, _ in restarts] == ["A", "B", "C"]
    assert all(before != after for _, before, after in restarts)
    visits = re.search(r"(\d+) visits by 5 users", output)
    assert visits is not None
    assert int(visits.group(1)) > 50
    assert "No visit failed, nobody was signed out, no visit was lost." in output
