"""Real shipped klines for the signal-layer tests; skipped cleanly when the data folder is absent."""

from __future__ import annotations

import pytest

from signals.data import AlignedKlines, default_data_dir, kline_path, load_aligned

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


def _need(symbols: tuple[str, ...], timeframe: str = "1h") -> None:
    missing = [s for s in symbols if not kline_path(s, timeframe).is_file()]
    if missing:
        pytest.skip(f"shipped klines not found in {default_data_dir()}: {missing}")


@pytest.fixture(scope="session")
def bars3() -> AlignedKlines:
    """BTC, ETH, SOL 1h aligned, a 3000-bar slice (2024)."""
    _need(SYMBOLS)
    return load_aligned(SYMBOLS, "1h").slice(0, 3000)


@pytest.fixture(scope="session")
def btc_1h() -> AlignedKlines:
    """BTCUSDT 1h, the most recent 12,000 bars."""
    _need(("BTCUSDT",))
    return load_aligned(("BTCUSDT",), "1h", last_n=12_000)
