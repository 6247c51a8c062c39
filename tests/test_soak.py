"""The soak run, shortened: under a minute of mixed traffic on a real uvicorn and Redis.

The full run (`python -m bench.soak --minutes 10`) and its figures: docs/soak.md.
"""

from __future__ import annotations

import pytest

from tests.soak import ACTIONS, Sample, SoakConfig, SoakReport, run_soak

CONFIG = SoakConfig(seconds=45, warmup=15, users=16, rate=200, idle=5, sample=3)


def test_a_short_soak_keeps_memory_and_keys_flat_without_errors() -> None:
    report = run_soak(CONFIG)
    assert report.error_count == 0, report.errors
    total = sum(report.requests.values())
    assert total > CONFIG.rate * CONFIG.seconds * 0.5  # the load really ran
    assert set(report.requests) == set(ACTIONS) - {"leave"}
    assert report.leaves > 20  # sessions were abandoned, and had to expire
    steady = report.steady()
    assert len(steady) >= 8
    for sample in steady:
        assert sample.keys <= report.key_bound(sample), sample
        assert sample.session_keys > 0
    assert report.problems(rss_growth_mb=25) == []


# -- the judge itself ---------------------------------------------------------------------


def sample(at: float, *, rss_mb: float = 50, keys: int = 200, held: int = 16) -> Sample:
    return Sample(at, int(rss_mb * 2**20), keys, keys // 2, keys // 4, 2**21, 0, held, 20, 0, 0, 0)


def test_the_report_names_what_went_wrong() -> None:
    report = SoakReport(CONFIG, samples=[sample(at) for at in range(0, 46, 3)])
    assert report.problems(rss_growth_mb=25) == []
    report.error_count, report.errors = 1, ["read: got {'cart': 0}, expected {'cart': 1}"]
    report.samples[-1] = sample(45, keys=10_000)
    report.samples[-2] = sample(42, rss_mb=90)
    report.samples[-3] = sample(39, rss_mb=90)
    problems = report.problems(rss_growth_mb=25)
    assert problems[0].startswith('1 errors, e.g. ["read: got')
    assert problems[1].startswith("10000 keys at 45 s, more than ")
    assert problems[2] == "the app's memory grew by 40.0 MB after the warm-up"


def test_the_key_bound_follows_the_live_sessions() -> None:
    report = SoakReport(CONFIG)
    # 16 held + 20 abandoned = 36 live; 36 index keys at most; 129 fixed; 10% + 10.
    assert report.key_bound(sample(20)) == int((36 + 36 + 129) * 1.1) + 10
    assert report.key_bound(sample(20, held=0)) < report.key_bound(sample(20))


def test_a_run_shorter_than_its_warm_up_is_refused() -> None:
    with pytest.raises(ValueError, match="longer than the idle timeout"):
        SoakConfig(seconds=60, warmup=5, idle=10)
    with pytest.raises(ValueError, match="a few samples longer than the warm-up"):
        SoakConfig(seconds=20, warmup=15, idle=5, sample=3)
