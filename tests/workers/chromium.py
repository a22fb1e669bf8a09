"""Debian's Chromium, headless, driven by Playwright for Python (never `playwright install`: no browser is
downloaded). A missing browser fails the test with what to install; it is never skipped."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.async_api import Page

CHROMIUM = os.environ.get("QT_CHROMIUM", "/usr/bin/chromium")
# What works in a container without a GPU, a sandbox or network: no first-run, sync, update or QUIC
# traffic, and a fresh profile per test (--user-data-dir is the persistent context's folder).
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


WAIT_MS = 45_000


def require_chromium() -> str:
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        found = shutil.which("chromium")
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM} (the dashboard's browser tests need it): "
            "`sudo apt-get install -y chromium` (./quantum setup installs it)"
            + (f"; one was found at {found}, set QT_CHROMIUM to use it" if found else ""),
            pytrace=False,
        )
    try:
        import playwright  # noqa: F401
    except ImportError:
        pytest.fail("Playwright for Python is missing: `pip install -e '.[test]'`", pytrace=False)
    return CHROMIUM


def artifacts_dir(tmp_path: Path) -> Path:
    """Where screenshots go: $QT_TEST_ARTIFACTS when set (CI keeps it), else the test's own tmp folder."""
    path = Path(os.environ.get("QT_TEST_ARTIFACTS") or tmp_path / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.asynccontextmanager
async def chromium_page(tmp_path: Path) -> AsyncIterator[Page]:
    executable = require_chromium()
    from playwright.async_api import async_playwright, expect

    # Every wait ends as soon as the page shows what is awaited; the bound is for a loaded machine.
    expect.set_options(timeout=WAIT_MS)

    async with async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=executable,
            headless=True,
            args=FLAGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            page = context.pages[0] if context.pages else await context.new_page()
            yield page
        finally:
            await context.close()
