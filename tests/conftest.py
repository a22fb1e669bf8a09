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
CHAMPION_SYMBOLS = ("BTCUSDT", "ETHUSDT")


@pytest.fixture
def paper_exchange(tmp_path: Path) -> Iterator[PaperExchange]:
    """A fresh paper exchange with manual prices (fixed until a test moves them)."""
    ex = start_paper_exchange(tmp_path)
    try:
        yield ex
    finally:
        ex.process.stop()


@pytest.fixture(scope="session")
def champion_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model registry with a champion trained once per session on the shipped BTC and ETH 1h klines
    (XGBoost, LightGBM, N-HiTS, PatchTST on small budgets): the bar-close tests and the paper run share
    it. Read it only; a test that writes into a registry copies it first."""
    from signals.data import kline_path
    from signals.labels import LabelSpec
    from signals.training import TorchBudget, train_and_validate

    if not all(kline_path(s, "1h").is_file() for s in CHAMPION_SYMBOLS):
        pytest.skip("shipped klines not found")
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("models")
    train_and_validate(
        CHAMPION_SYMBOLS,
        "1h",
        LabelSpec(horizon=12),
        folds=2,
        registry_root=root,
        last_n=2500,
        torch_budget=TorchBudget(epochs=1, windows_per_epoch=1500),
        progress=None,
    )
    return root
