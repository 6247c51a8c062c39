"""Headless Chromium for the browser tests: Debian's build, driven by Playwright.

No browser is downloaded: Playwright drives the system's chromium (installed by
scripts/setup.sh), or the one SESSIONHUB_CHROMIUM names.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from playwright.sync_api import Browser, sync_playwright

__all__ = ["CHROMIUM_ARGS", "chromium"]

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


@contextmanager
def chromium() -> Iterator[Browser]:
    path = os.environ.get("SESSIONHUB_CHROMIUM", "/usr/bin/chromium")
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"{path} not found: run ./scripts/test.sh (it installs chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
