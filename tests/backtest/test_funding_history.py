"""Funding from the data folder's history instead of the constant: at the history's own funding times
and rates inside its range, the constant on the 8 h grid outside it — by hand on a scripted path, and
through `qtrader data download --kind funding` then `qtrader backtest`."""

from __future__ import annotations

import json
import shutil
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from backtest.config import BacktestConfig, Costs
from backtest.engine import run_backtest
from signals.data import FundingRates, kline_path
from tests.backtest.test_costs_by_hand import HOUR, T0, once, path
from tests.conftest import SHIPPED_DATA
from tests.signals.download.conftest import LocalArchive, archive  # noqa: F401  (the fixture)
from workers.cli import main as qtrader

D = Decimal


def test_historical_rates_at_their_own_times_and_the_constant_outside() -> None:
    bars = path([(60000.0,) * 4] * 18)  # 00:00 … 17:00, flat: only fees and funding move the PnL
    cfg = BacktestConfig(symbols=("BTCUSDT",), costs=Costs(slippage_bps=D(0)))
    sig = once(1, 18)  # long from 01:00 to the end of the data
    # a 4-hourly history from 04:00 to 08:00 (Binance's times can be a few ms past the hour)
    history = FundingRates(
        "BTCUSDT",
        np.array([T0 + 4 * HOUR + 5, T0 + 8 * HOUR + 3], dtype=np.int64),
        (D("-0.0002"), D("0.0005")),
    )
    (plain,) = run_backtest(cfg, bars, sig).trades
    (hist,) = run_backtest(cfg, bars, sig, funding={"BTCUSDT": history}).trades
    # constant: the long pays 0.003 BTC · 60000 · 0.0001 = 0.018 at 08:00 and at 16:00
    assert plain.funding == D("-0.036")
    # history: receives 0.003 · 60000 · 0.0002 = 0.036 at 04:00 (no 8 h grid time), pays 0.09 at 08:00;
    # 16:00 lies after the history: the constant 0.018
    assert hist.funding == D("0.036") - D("0.09") - D("0.018")
    assert hist.pnl - plain.pnl == hist.funding - plain.funding == D("-0.036")
    assert (hist.gross_pnl, hist.fees) == (plain.gross_pnl, plain.fees)


def test_a_symbol_without_history_keeps_the_constant() -> None:
    bars = path([(60000.0,) * 4] * 18)
    cfg = BacktestConfig(symbols=("BTCUSDT",), costs=Costs(slippage_bps=D(0)))
    other = FundingRates("ETHUSDT", np.array([T0 + 8 * HOUR], dtype=np.int64), (D("0.01"),))
    (t,) = run_backtest(cfg, bars, once(1, 18), funding={"ETHUSDT": other}).trades
    assert t.funding == D("-0.036")


def test_downloaded_funding_rates_change_the_backtest(
    archive: LocalArchive,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    src = kline_path("BTCUSDT", "1h", SHIPPED_DATA)
    if not src.is_file():
        pytest.skip(f"shipped klines not found: {src}")
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(src, data / src.name)
    monkeypatch.setenv("QT_DATA_DIR", str(data))
    monkeypatch.setenv("QT_HOME", str(tmp_path / "qt"))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    bt = ["backtest", "--symbols", "BTCUSDT", "--from", "2024-01-01", "--to", "2024-02-01"]
    bt += ["--signal", "every-bar", "--side", "short"]

    def funding(run: str) -> tuple[float, list[str]]:
        assert qtrader([*bt, "--out", str(tmp_path / run)]) == 0
        m = json.loads((tmp_path / run / "metrics.json").read_text())
        return m["funding"], m["funding_history"]

    constant, none = funding("constant")
    assert none == []
    archive.funding_month("BTCUSDT", "2024-01")
    dl = ["data", "download", "--kind", "funding", "--symbols", "BTCUSDT", "--start", "2024-01-01"]
    dl += ["--end", "2024-01-31", "--archive-url", archive.url, "--no-rest"]
    assert qtrader(dl) == 0  # into QT_DATA_DIR
    historical, used = funding("historical")
    assert used == ["BTCUSDT"] and historical != constant
    assert constant > 0  # a short receives the positive constant; the history's rates have both signs
    assert "historical rates of BTCUSDT" in capsys.readouterr().err
    assert "the historical rates of BTCUSDT" in (tmp_path / "historical" / "report.html").read_text()
