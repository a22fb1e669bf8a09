"""The backtester applies the risk layer with the same pure functions: a scripted losing streak on
synthetic bars moves the emergency stop (smaller sizes, then refusals naming the gate) while protections
lock the symbol (`--no-protections` admits those entries); HALTED flattens at the next open; correlated
symbols fill their cluster and no more; and over the shipped 1 h files of ten symbols the CLI writes both
reports, with and without protections, listing every refused entry with its gate."""

from __future__ import annotations

import csv
import json
import math
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from backtest.config import BacktestConfig, BacktestRisk
from backtest.engine import SignalSet, run_backtest
from backtest.report import write_report
from signals.data import AlignedKlines
from trading.concentration import ConcentrationPolicy
from trading.emergency import EmergencyPolicy, Thresholds
from trading.governor import EmergencyState, Gate
from trading.risk import RiskLayerPolicy
from workers.cli import main as qtrader

D = Decimal
ES = EmergencyState
HOUR = 3_600_000
T0 = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000)
OFF = RiskLayerPolicy.off()


def bars(symbols: tuple[str, ...], ohlc: list[list[tuple[float, float, float, float]]]) -> AlignedKlines:
    """Hourly bars from T0: ohlc[symbol][bar] = (open, high, low, close)."""
    arr = np.asarray(ohlc, dtype=float)  # [symbols, bars, 4]
    n = arr.shape[1]
    return AlignedKlines(
        symbols,
        "1h",
        T0 + HOUR * np.arange(n, dtype=np.int64),
        arr[:, :, 0],
        arr[:, :, 1],
        arr[:, :, 2],
        arr[:, :, 3],
        np.ones((len(symbols), n)),
    )


def longs(shape: tuple[int, int], from_bar: int = 0) -> SignalSet:
    side = np.zeros(shape, dtype=np.int8)
    side[:, from_bar:] = 1
    return SignalSet(side)


def config(
    symbols: tuple[str, ...], risk: RiskLayerPolicy | None, resume: int | None = None
) -> BacktestConfig:
    return BacktestConfig(
        symbols=symbols,
        risk=None if risk is None else BacktestRisk(policy=risk, operator_resume_hours=resume),
    )


# Every bar opens at 100 and dips to 97.5: a long entered at the open is stopped out (2 %) in the bar.
LOSING = [(100.0, 100.2, 97.5, 99.0)] * 30


def test_losing_streak_moves_the_ess_and_protections_lock_the_symbol() -> None:
    b = bars(("ETHUSDT",), [LOSING])
    sig = longs((1, b.n_bars))
    risk = RiskLayerPolicy()
    with_prot = run_backtest(config(("ETHUSDT",), risk), b, sig)
    without = run_backtest(config(("ETHUSDT",), risk.model_copy(update={"protections": None})), b, sig)
    at = [int(t) for t in b.open_time_ms]

    # The ESS: three losses in a row → WARNING, five → CRITICAL, each with its reason.
    moves = [(m.from_state, m.to_state, m.at_ms, m.rule) for m in with_prot.ess_timeline]
    assert moves == [
        (ES.NORMAL, ES.WARNING, at[3], "losing_streak"),
        (ES.WARNING, ES.CRITICAL, at[15], "losing_streak"),
    ]
    assert "5 losing trades in a row ≥ 5" in with_prot.ess_timeline[1].reason
    trades = with_prot.trades
    assert [t.entry_bar for t in trades] == [1, 2, 3, 9, 15] and all(t.pnl < 0 for t in trades)
    # WARNING: the next entries get half the size, and the cut is listed with its gate.
    assert trades[3].qty == trades[0].qty / 2 and trades[4].qty == trades[0].qty / 2
    cut = with_prot.size_cuts[0]
    assert (cut.at_ms, cut.gate, cut.granted_usdt) == (at[4], Gate.EMERGENCY.value, D("100.0"))
    # The low-profit protection locks the symbol after the third loss: the entry at bar 4 is refused,
    # and asked again when the lock ends (6 h after the close).
    first = with_prot.refusals[0]
    assert (first.at_ms, first.gate) == (at[4], Gate.SYMBOL_PROTECTION.value)
    assert first.reason.startswith("low_profit lock for 18000 s more: ETHUSDT: 3 trades")
    # CRITICAL: later entries are refused by the emergency stop, naming it.
    critical = [r for r in with_prot.refusals if r.gate == Gate.EMERGENCY.value]
    # (the emergency stop is asked before the lock: the entry after the fifth loss is refused by it)
    assert critical and critical[0].at_ms == at[16] and "CRITICAL" in critical[0].reason

    # Without protections the entry at bar 4 is admitted (at the WARNING size), and the streak
    # reaches CRITICAL two bars sooner.
    assert [t.entry_bar for t in without.trades] == [1, 2, 3, 4, 5]
    assert [m.at_ms for m in without.ess_timeline] == [at[3], at[5]]
    assert {r.gate for r in without.refusals} == {Gate.EMERGENCY.value}
    assert without.refusals[0].at_ms == at[6]


def test_operator_resume_and_the_risk_layer_off() -> None:
    b = bars(("ETHUSDT",), [LOSING])
    sig = longs((1, b.n_bars))
    no_prot = RiskLayerPolicy(protections=None)
    resumed = run_backtest(config(("ETHUSDT",), no_prot, resume=2), b, sig)
    at = [int(t) for t in b.open_time_ms]
    back = resumed.ess_timeline[2]
    assert (back.from_state, back.to_state, back.cause.value, back.at_ms) == (
        ES.CRITICAL,
        ES.NORMAL,
        "operator",
        at[7],
    )
    assert "the operator resumes trading 2 h after CRITICAL" in back.reason
    assert 7 in [t.entry_bar for t in resumed.trades]  # trading again, at full size
    # Off: the governor alone, one losing trade per bar, nothing refused by a risk gate.
    off = run_backtest(config(("ETHUSDT",), None), b, sig)
    assert len(off.trades) == b.n_bars - 1 and off.ess_timeline == [] and off.size_cuts == []


def test_halted_flattens_every_position_at_the_next_open() -> None:
    flat = [(100.0, 100.1, 99.9, 100.0)] * 12
    falling = [(100.0, 100.1, 99.9, 100.0)] * 2 + [(100.0, 100.1, 97.5, 98.0)] * 10
    symbols = ("ETHUSDT", "SOLUSDT", "BNBUSDT")
    b = bars(symbols, [falling, flat, flat])
    halt_on_loss = EmergencyPolicy(
        daily_loss_usdt=Thresholds[Decimal](warning=D(1), critical=D(2), halt=D(3)),
        losing_streak=Thresholds[int](),
        stop_outs=Thresholds[int](),
    )
    result = run_backtest(
        config(symbols, OFF.model_copy(update={"emergency": halt_on_loss})), b, longs((3, 12))
    )
    at = [int(t) for t in b.open_time_ms]
    (halt,) = result.ess_timeline
    assert (halt.to_state, halt.rule, halt.at_ms) == (ES.HALTED, "daily_loss", at[2])
    by_symbol = {t.symbol: t for t in result.trades}
    assert by_symbol["ETHUSDT"].exit_reason != "emergency_flatten" and by_symbol["ETHUSDT"].pnl < 0
    for s in ("SOLUSDT", "BNBUSDT"):
        t = by_symbol[s]
        assert (t.exit_reason, t.exit_controller, t.exit_time_ms) == ("emergency_flatten", "portfolio", at[3])
    assert len(result.trades) == 3  # nothing entered after HALTED
    assert result.refusals and all(
        r.gate == Gate.EMERGENCY.value and "HALTED" in r.reason for r in result.refusals
    )


def test_correlated_symbols_fill_their_cluster_and_no_more() -> None:
    n = 24 * 4
    close = [100.0 * (1 + 0.004 * math.sin(k)) for k in range(n)]  # same wiggle, never near a stop
    opens = [close[0], *close[:-1]]
    ohlc = [(o, max(o, c) + 0.01, min(o, c) - 0.01, c) for o, c in zip(opens, close, strict=True)]
    symbols = ("ETHUSDT", "SOLUSDT", "BNBUSDT")
    b = bars(symbols, [ohlc] * 3)
    sig = longs((3, n), from_bar=49)  # after the first refresh that has a day of returns
    tight = OFF.model_copy(
        update={"concentration": ConcentrationPolicy(max_symbol_share=D("0.1"), max_cluster_share=D("0.2"))}
    )
    result = run_backtest(config(symbols, tight), b, sig)
    assert sorted(t.symbol for t in result.trades) == ["ETHUSDT", "SOLUSDT"]  # 2 × 200 = the cluster's 400
    refused = result.refusals[0]
    assert (refused.symbol, refused.gate) == ("BNBUSDT", Gate.CLUSTER_CONCENTRATION.value)
    # the two grants hold what their fills cost (a little under 200 each); the room left is under 5
    assert "cluster ['BNBUSDT', 'ETHUSDT', 'SOLUSDT']: net exposure 399." in refused.reason
    assert "exceeds the limit 400.0 (max_cluster_share 0.2 of 2000)" in refused.reason
    assert len(run_backtest(config(symbols, OFF), b, sig).trades) == 3


def test_report_lists_refusals_and_the_ess_timeline(tmp_path: Path) -> None:
    b = bars(("ETHUSDT",), [LOSING])
    result = run_backtest(config(("ETHUSDT",), RiskLayerPolicy()), b, longs((1, b.n_bars)))
    write_report(result, tmp_path)
    with (tmp_path / "refusals.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["gate"], r["reason"]) for r in rows] == [(r.gate, r.reason) for r in result.refusals]
    with (tmp_path / "ess_timeline.csv").open() as fh:
        assert [r["to"] for r in csv.DictReader(fh)] == ["WARNING", "CRITICAL"]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["ess_final_state"] == "CRITICAL" and m["refusals_by_gate"][Gate.SYMBOL_PROTECTION.value] >= 1
    page = (tmp_path / "report.html").read_text()
    assert "<h2>Refused entries</h2>" in page and "low_profit lock for 18000 s more" in page
    assert "<h2>Emergency stop timeline</h2>" in page and "5 losing trades in a row" in page
    assert page.count("<rect ") == 2  # the WARNING and CRITICAL bands on the equity chart


# ------------------------------------------------------------------------------------------ the CLI
TEN = "ADAUSDT,AVAXUSDT,BNBUSDT,BTCUSDT,DOGEUSDT,ETHUSDT,LINKUSDT,LTCUSDT,SOLUSDT,XRPUSDT"
# The ten 1 h files do not share a period (BNB ends before ADA begins): --union trades each in its own.
WINDOW = ["--from", "2025-11-27", "--to", "2026-02-06"]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("QT_HOME", str(tmp_path / "qt"))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    return tmp_path


def _refusals(folder: Path) -> list[dict[str, str]]:
    with (folder / "refusals.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_ten_symbols_with_and_without_protections(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = {"on": [], "no-protections": ["--no-protections"], "no-risk": ["--no-risk"]}
    for name, extra in runs.items():
        argv = ["backtest", "--symbols", TEN, "--union", *WINDOW, "--out", str(home / name), *extra]
        assert qtrader(argv) == 0, capsys.readouterr().err
    gates = {g.value for g in Gate}
    with_prot, without, off = (_refusals(home / n) for n in runs)
    assert with_prot and without  # the governor alone refuses nothing in this window
    for rows in (with_prot, without, off):
        assert all(r["gate"] in gates and r["reason"] and r["symbol"] in TEN for r in rows)
    assert {r["symbol"] for r in with_prot if r["gate"] == Gate.SYMBOL_PROTECTION.value}
    assert not [r for r in without if r["gate"] == Gate.SYMBOL_PROTECTION.value]
    risk_gates = {Gate.EMERGENCY.value, Gate.HEAT.value, Gate.ALLOCATION.value, Gate.SYMBOL_PROTECTION.value}
    assert not {r["gate"] for r in off} & risk_gates
    for name in runs:
        m = json.loads((home / name / "metrics.json").read_text())
        page = (home / name / "report.html").read_text()
        assert sum(m["refusals_by_gate"].values()) == len(_refusals(home / name))
        assert "<h2>Refused entries</h2>" in page
        symbols = {t["symbol"] for t in csv.DictReader((home / name / "trades.csv").open())}
        assert len(symbols) == 10  # every file traded in its own period
    on = json.loads((home / "on" / "metrics.json").read_text())
    assert on["risk_layer"]["policy"]["protections"] is not None and on["ess_transitions"] > 0
    assert (
        json.loads((home / "no-protections" / "metrics.json").read_text())["risk_layer"]["policy"][
            "protections"
        ]
        is None
    )
    assert json.loads((home / "no-risk" / "metrics.json").read_text())["risk_layer"] is None


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--no-risk", "--no-protections"], "--no-risk turns the whole risk layer off"),
        (["--risk-policy", "{missing}"], "--risk-policy"),
        (["--risk-policy", "{bad}"], "emergency.warning_size_factor: Input should be greater than 0"),
        (["--ess-resume-hours", "-1"], "--ess-resume-hours -1"),
        (["--union", "--model", "xgboost"], "--union works with rule signals"),
        (
            ["--union", "--from", "2024-01-01", "--to", "2024-02-01", "--symbols", "ADAUSDT"],
            "ADAUSDT 1h has fewer",
        ),
    ],
)
def test_bad_risk_arguments_fail_before_work(
    home: Path, capsys: pytest.CaptureFixture[str], args: list[str], problem: str
) -> None:
    bad = home / "bad.json"
    bad.write_text('{"emergency": {"warning_size_factor": 0}}')
    args = [{"{missing}": str(home / "nope.json"), "{bad}": str(bad)}.get(a, a) for a in args]
    if "--symbols" not in args:
        args = ["--symbols", "BTCUSDT", *args]
    out = home / "never"
    assert qtrader(["backtest", *args, "--out", str(out)]) == 2
    assert problem in capsys.readouterr().err
    assert not out.exists()
