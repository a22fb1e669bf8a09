"""`qtrader report`: the attribution table from a real journal file, its filters and its errors."""

from __future__ import annotations

import json
import math
import statistics
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from journal.cli import parse_since
from journal.store import open_journal
from tests.trading.test_records import DAY_MS, T0, rec
from workers.cli import main
from workers.processes import free_port

D = Decimal


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "qt"
    monkeypatch.setenv("QT_HOME", str(home))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("START_EQUITY_USDT", raising=False)
    monkeypatch.setenv("PAPER_START_BALANCE_USDT", "1000")
    open_journal(None, home).record_many(
        [
            rec(1, "20", day=0, strategy="trend", symbol="BTCUSDT"),
            rec(2, "-10", day=1, strategy="trend", symbol="ETHUSDT"),
            rec(3, "5", day=3, strategy="trend", symbol="BTCUSDT"),
            rec(4, "-30", day=0, strategy="revert", symbol="ETHUSDT"),
            rec(5, "12", day=1, strategy="revert", symbol="BTCUSDT"),
            rec(6, "99", day=1, trade_id="position-paper-1", run_id="paper", mode="paper"),
        ]
    )
    return home


def report(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["report", *args])
    out, err = capsys.readouterr()
    return code, out, err


def cells(out: str, first: str) -> list[str]:
    (line,) = [ln for ln in out.splitlines() if ln.split() and ln.split()[0] == first]
    return line.split()


def test_table_by_strategy(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = report(capsys, "--run-id", "bt", "--by", "strategy")
    assert code == 0
    assert "5 trades, run bt" in out and "capital 1000 USDT" in out
    revert_returns = [-30 / 1000, 12 / 970, 0.0, 0.0]  # days 0..3, the span of the whole selection
    revert_sharpe = statistics.fmean(revert_returns) / statistics.stdev(revert_returns) * math.sqrt(365)
    # name, trades, PnL, win rate, Sharpe, max DD USDT, max DD %, fees
    assert cells(out, "trend")[:4] == ["trend", "3", "15.00", "66.7%"]
    assert cells(out, "revert") == [
        "revert",
        "2",
        "-18.00",
        "50.0%",
        f"{revert_sharpe:.2f}",
        "30.00",
        "3.0%",
        "1.00",
    ]
    assert cells(out, "TOTAL")[:3] == ["TOTAL", "5", "-3.00"]
    assert out.index("trend") < out.index("revert")  # best PnL first


def test_filters_and_json(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    since = datetime.fromtimestamp((T0 + DAY_MS) / 1000, UTC).strftime("%Y-%m-%d")
    code, out, _ = report(capsys, "--run-id", "bt", "--by", "symbol", "--since", since, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["by"] == "symbol" and data["total"]["trades"] == 3
    groups = {g["symbol"]: g for g in data["groups"]}
    assert groups["BTCUSDT"]["pnl"] == "17" and groups["ETHUSDT"]["pnl"] == "-10"
    # Without --run-id the stack's own run (TRADING_MODE=paper) is reported; 'all' takes every run.
    code, out, _ = report(capsys)
    assert code == 0 and "1 trades, run paper" in out and cells(out, "TOTAL")[2] == "99.00"
    code, out, _ = report(capsys, "--run-id", "all", "--by", "mode")
    assert cells(out, "backtest")[1] == "5" and cells(out, "paper")[1] == "1"
    code, out, _ = report(capsys, "--run-id", "nope")
    assert code == 0 and "no closed trades in the journal" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], "argument --since: 'yesterday' is neither a date"),
        (["--since", "2999-01-01"], "is in the future"),
        (["--by", "colour"], "argument --by: invalid choice: 'colour'"),
        (["--mode", "demo"], "argument --mode: invalid choice: 'demo'"),
        (["--capital", "-5"], "argument --capital: '-5' must be a positive number"),
    ],
)
def test_bad_arguments_are_named(
    home: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["report", *args])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_an_unreachable_database_is_an_error_without_its_password(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://qt:s3cret@127.0.0.1:{free_port()}/journal")
    code, out, err = report(capsys)
    assert code == 1 and "unreachable" in err and "s3cret" not in err + out


def test_ages() -> None:
    now = datetime(2024, 3, 10, 12, 0, tzinfo=UTC)
    assert parse_since("7d", now) == int(datetime(2024, 3, 3, 12, 0, tzinfo=UTC).timestamp() * 1000)
    assert parse_since("90m", now) == int(datetime(2024, 3, 10, 10, 30, tzinfo=UTC).timestamp() * 1000)
    assert parse_since("2024-01-01", now) == int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000)
