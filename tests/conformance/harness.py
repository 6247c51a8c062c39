"""The frameworks' own session tests, run against sessionhub.

A team adopting sessionhub runs its own tests first; the frameworks' session
tests are the contract those rely on. Each suite here is taken from the
framework's source distribution on the package index, at the exact version
installed (never copied into this repository), cached under `CACHE`,
changed as little as possible -- each change an `Edit` that must apply exactly
once, so a new framework version cannot silently skip one -- and run with
pytest in a subprocess. Every test that does not pass must be a deliberate
difference, listed with its reason in docs/frameworks.md.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CACHE", "Edit", "Results", "Suite", "run", "source"]

ROOT = Path(__file__).resolve().parents[2]
#: Where the source distributions are kept between runs.
CACHE = Path(os.environ.get("SESSIONHUB_CONFORMANCE_CACHE", ROOT / ".cache" / "conformance"))


@dataclass(frozen=True)
class Edit:
    """One change to a framework's test file: `old` (found exactly once) becomes `new`."""

    path: str  # inside the source distribution, e.g. "tests/test_basic.py"
    old: str
    new: str
    why: str


@dataclass(frozen=True)
class Suite:
    """A framework's session tests, and how they are run against sessionhub."""

    distribution: str  # as on the package index, e.g. "Flask"
    files: tuple[str, ...]  # taken from the source distribution (tests and their helpers)
    tests: tuple[str, ...]  # pytest node ids or paths to run, relative to the source root
    edits: tuple[Edit, ...] = ()
    #: Files written next to them: name -> contents (a conftest that configures sessionhub).
    extra: dict[str, str] = field(default_factory=dict)
    #: Deliberate differences: test id -> the security reason it does not pass.
    differences: dict[str, str] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return importlib.metadata.version(self.distribution)


@dataclass
class Results:
    passed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # test id -> the first line of why
    skipped: list[str] = field(default_factory=list)
    output: str = ""

    @property
    def run(self) -> int:
        return len(self.passed) + len(self.failed)


def source(distribution: str, version: str) -> Path:
    """The unpacked source distribution of `distribution` at `version` (fetched once)."""
    target = CACHE / f"{distribution.lower()}-{version}"
    if target.is_dir():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    downloads = CACHE / "downloads"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
         "--no-binary", ":all:", "--dest", str(downloads), f"{distribution}=={version}"],
        check=True, capture_output=True, timeout=600, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    stem = f"{distribution}-{version}.tar.gz".lower().replace("_", "-")
    [archive] = [
        path for path in downloads.glob("*.tar.gz") if path.name.lower().replace("_", "-") == stem
    ]
    unpacked = CACHE / f".unpacking-{os.getpid()}"
    shutil.rmtree(unpacked, ignore_errors=True)
    with tarfile.open(archive) as tar:
        tar.extractall(unpacked, filter="data")
    [root] = list(unpacked.iterdir())
    root.rename(target)  # atomic: a half-unpacked tree is never used
    shutil.rmtree(unpacked, ignore_errors=True)
    return target


def prepare(suite: Suite, workdir: Path) -> Path:
    """The suite's files in `workdir`, edited; returns `workdir`."""
    origin = source(suite.distribution, suite.version)
    for name in suite.files:
        target = workdir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(origin / name, target)
    for package in {Path(name).parent for name in suite.files}:
        for folder in (package, *package.parents):
            init = workdir / folder / "__init__.py"
            if folder != Path(".") and not init.exists():
                init.write_text("")
    for edit in suite.edits:
        path = workdir / edit.path
        text = path.read_text()
        found = text.count(edit.old)
        if found != 1:
            raise AssertionError(
                f"{suite.distribution} {suite.version}: {edit.path}: the text to change is "
                f"there {found} times, not once ({edit.why}): {edit.old!r}"
            )
        path.write_text(text.replace(edit.old, edit.new))
    for name, text in suite.extra.items():
        (workdir / name).write_text(text)
    return workdir


def run(suite: Suite, workdir: Path, *, env: dict[str, str] | None = None) -> Results:
    """Run the suite's tests against sessionhub; what passed, failed, was skipped."""
    prepare(suite, workdir)
    report = workdir / "report.xml"
    environment = {**os.environ, **(env or {})}
    environment["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(workdir)])
    environment.pop("PYTEST_ADDOPTS", None)
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir",
         str(workdir), "-o", "addopts=", "--junitxml", str(report), *suite.tests],
        cwd=workdir, env=environment, capture_output=True, text=True, timeout=900,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    results = Results(output=completed.stdout[-20_000:] + completed.stderr[-5_000:])
    if not report.exists():
        raise AssertionError(f"{suite.distribution}'s tests did not run:\n{results.output}")
    # Our own pytest wrote it, a moment ago.
    for case in ET.parse(report).getroot().iter("testcase"):  # noqa: S314
        name = f"{case.get('classname')}::{case.get('name')}"
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if problem is not None:
            message = problem.get("message") or problem.text or ""
            results.failed[name] = message.strip().splitlines()[0] if message.strip() else ""
        elif case.find("skipped") is not None:
            results.skipped.append(name)
        else:
            results.passed.append(name)
    return results
