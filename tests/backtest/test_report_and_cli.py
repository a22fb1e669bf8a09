"""`qtrader backtest` on real data: the report folder's files and their numbers, recomputed here from
the raw klines and the trade list; and bad arguments refused before any work, with the problem named."""

from __future__ import annotations

import csv
import gzip
import json
from datetime import UTC, datetime
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from backtest.command import load_range
from backtest.config import BacktestConfig, BacktestRisk
from backtest.engine import SignalSet, run_backtest
from backtest.signals import momentum
from signals.data import kline_path
from trading.governor import RiskPolicy
from trading.records import RecordMode
from workers.cli import main as qtrader

FROM, TO = "2023-01-01", "2023-07-01"


def ms(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp() * 1000)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("QT_HOME", str(tmp_path / "qt"))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("MODEL_REGISTRY_DIR", raising=False)
    return tmp_path


class _Tables(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows, self.polylines, self.svgs = 0, 0, 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.rows += tag == "tr"
        self.polylines += tag == "polyline"
        self.svgs += tag == "svg"


def test_report_files_and_metric_values(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = home / "report"
    argv = [
        "backtest",
        "--symbols",
        "BTCUSDT,ETHUSDT",
        "--timeframe",
        "1h",
        "--from",
        FROM,
        "--to",
        TO,
        "--signal",
        "momentum",
        "--out",
        str(out),
        "--journal",
        "--run-id",
        "bt-test",
    ]
    assert qtrader(argv) == 0
    printed = capsys.readouterr()
    assert "Total return" in printed.out and "report:" in printed.out and "100.0 %" in printed.err
    m = json.loads((out / "metrics.json").read_text())
    with (out / "trades.csv").open() as fh:
        trades = list(csv.DictReader(fh))
    assert m["trades"] == len(trades) > 50

    # the ledger: end equity is the start plus every trade's PnL (fees and funding included)
    pnl = sum(Decimal(t["pnl"]) for t in trades)
    assert m["end_equity"] == pytest.approx(10_000 + float(pnl), abs=1e-6)
    assert m["total_return"] == pytest.approx(m["end_equity"] / 10_000 - 1, abs=1e-12)
    assert m["fees"] == pytest.approx(float(sum(Decimal(t["fees"]) for t in trades)), abs=1e-9)
    assert m["funding"] == pytest.approx(float(sum(Decimal(t["funding"]) for t in trades)), abs=1e-9)
    assert m["win_rate"] == pytest.approx(sum(Decimal(t["pnl"]) > 0 for t in trades) / len(trades))
    wins = sum(Decimal(t["pnl"]) for t in trades if Decimal(t["pnl"]) > 0)
    losses = -sum(Decimal(t["pnl"]) for t in trades if Decimal(t["pnl"]) < 0)
    assert m["profit_factor"] == pytest.approx(float(wins / losses))
    assert m["expectancy"] == pytest.approx(float(pnl) / len(trades))
    assert all(t["exit_reason"] and t["side"] in ("LONG", "SHORT") for t in trades)

    # buy and hold from the raw files: first open of the range to the last close before its end
    def hold(symbol: str) -> float:
        with gzip.open(kline_path(symbol, "1h"), "rt") as fh:
            rows = [r for r in csv.DictReader(fh) if ms(FROM) <= int(r["open_time_ms"]) < ms(TO)]
        return float(rows[-1]["close"]) / float(rows[0]["open"]) - 1

    assert m["buy_and_hold"]["BTCUSDT"] == pytest.approx(hold("BTCUSDT"))
    assert m["buy_and_hold_return"] == pytest.approx((hold("BTCUSDT") + hold("ETHUSDT")) / 2)

    # max drawdown, recomputed with a plain loop over the same replay's equity curve
    bars, _ = load_range(("BTCUSDT", "ETHUSDT"), "1h", ms(FROM), ms(TO))
    cfg = BacktestConfig(
        symbols=("BTCUSDT", "ETHUSDT"),
        policy=RiskPolicy.from_settings(_settings()),
        risk=BacktestRisk(),  # the CLI's default: the risk layer on
    )
    result = run_backtest(cfg, bars, SignalSet(momentum(bars, 24)))
    assert len(result.trades) == len(trades) and result.equity[-1] == pytest.approx(m["end_equity"])
    peak, worst, since, longest = 10_000.0, 0.0, 0, 0
    for k, e in enumerate(result.equity.tolist()):
        if e >= peak:
            peak, since = e, k + 1
        worst = max(worst, 1 - e / peak)
        longest = max(longest, k + 1 - since)
    assert m["max_drawdown"] == pytest.approx(worst, rel=1e-9) and worst > 0
    assert m["max_drawdown_days"] == pytest.approx((longest + 1) / 24, abs=1 / 24 + 1e-9)
    days = (ms(TO) - ms(FROM)) / 86_400_000
    assert m["cagr"] == pytest.approx((m["end_equity"] / 10_000) ** (365 / days) - 1)
    assert m["exposure"] == pytest.approx(float(np.mean(result.exposure)))

    page = (out / "report.html").read_text()
    tables = _Tables()
    tables.feed(page)
    assert tables.svgs == 2 and tables.polylines == 3  # equity + buy and hold, drawdown
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "") and "<script" not in page
    assert "the adverse one" in page and f"<td>{trades[-1]['trade_no']}</td>" in page
    for month in ("2023", "<th>06</th>"):
        assert month in page
    assert tables.rows >= len(trades) + 1 + 17  # every trade, the metrics

    # the journal got every trade once, with the run id; a second write adds nothing
    from journal.store import open_journal

    journal = open_journal(None, home / "qt")
    rows = journal.trades(run_id="bt-test")
    assert len(rows) == len(trades) and {r.mode for r in rows} == {RecordMode.BACKTEST}
    assert sum(r.realized_pnl for r in rows) == pnl
    from backtest.journal_rows import to_records

    assert journal.record_many(to_records(result, "bt-test")) == 0


def _settings():
    from trading.config import load_settings

    return load_settings()


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--symbols", "FOOUSDT"], "unknown symbol FOOUSDT"),
        (["--symbols", "SOLUSDT", "--timeframe", "1m"], "1m is not shipped for SOLUSDT"),
        (["--symbols", "BTCUSDT", "--timeframe", "7x"], "'7x' is not a timeframe"),
        (["--symbols", "BTCUSDT", "--from", "2015-01-01"], "outside the data of BTCUSDT"),
        (
            ["--symbols", "BTCUSDT,SOLUSDT", "--from", "2023-01-01", "--to", "2023-06-01"],
            "outside the data of SOLUSDT",
        ),
        (["--symbols", "BTCUSDT", "--from", "2024-01-01", "--to", "2023-01-01"], "is not before --to"),
        (["--symbols", "BTCUSDT", "--model", "xgboost@nope"], "model xgboost version nope"),
        (["--symbols", "BTCUSDT", "--leverage", "0"], "--leverage 0"),
        (["--symbols", "BTCUSDT", "--signal", "astrology"], "--signal 'astrology': choose one of every-bar"),
        (["--symbols", "BTCUSDT", "--walk-forward", "oracle"], "choose one of xgboost, lightgbm"),
        (["--symbols", "BTCUSDT", "--from", "yesterday"], "'yesterday' is not a date"),
    ],
)
def test_bad_arguments_fail_before_work(
    home: Path, capsys: pytest.CaptureFixture[str], args: list[str], problem: str
) -> None:
    out = home / "never"
    try:
        code = qtrader(["backtest", *args, "--out", str(out)])
    except SystemExit as exit_:  # argparse refuses a bad type itself
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err
    assert problem in err, err
    # Before any work: nothing written, no progress line (not a wall-clock bound: load makes it slower).
    assert not out.exists() and "backtest " not in err.replace("qtrader backtest", "")
