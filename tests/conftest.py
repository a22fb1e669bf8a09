"""Shared fixtures: real processes on free loopback ports, stopped by PID when the test ends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from trading.config import SHIPPED_DATA_DIR
from workers.devservers import PaperExchange, start_paper_exchange

__all__ = ["REPO", "SHIPPED_DATA", "PaperExchange", "start_paper_exchange"]

REPO = Path(__file__).resolve().parents[1]
SHIPPED_DATA = SHIPPED_DATA_DIR  # the sample klines in the repository (data/README.md)


@pytest.fixture
def paper_exchange(tmp_path: Path) -> Iterator[PaperExchange]:
    """A fresh paper exchange with manual prices (fixed until a test moves them)."""
    ex = start_paper_exchange(tmp_path)
    try:
        yield ex
    finally:
        ex.process.stop()
