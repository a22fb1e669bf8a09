"""`qtrader backtest` at work: replay the shipped klines through the live policies, write a report folder.

Every argument is checked before any work starts (unknown symbol, a timeframe not shipped for a
symbol, a range outside the data, a missing or not walk-forward model version); a bad one exits 2
with the problem named."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime

import numpy as np
from pydantic import ValidationError

from backtest.config import BacktestConfig, BacktestRisk, Costs
from backtest.engine import SignalSet, run_backtest
from backtest.model_signals import IntentParams
from backtest.signals import SIGNALS, every_bar, momentum
from backtest.union import mask_signal, union_bars
from signals.data import (
    AlignedKlines,
    DataError,
    FundingRates,
    align,
    available,
    funding_path,
    load_funding,
    load_klines,
    timeframe_ms,
)
from signals.training import ALL_MODELS
from trading.config import Settings
from trading.governor import RiskPolicy
from trading.instruments import DEFAULT_RULES
from trading.risk import RiskLayerPolicy

WARMUP_BARS = 400  # bars before --from that a model's features may read (never traded)


class UsageError(ValueError):
    """A bad argument, found before any work."""


def _symbols(text: str, timeframe: str) -> tuple[str, ...]:
    symbols = tuple(s.strip().upper() for s in text.split(",") if s.strip())
    if not symbols:
        raise UsageError("--symbols: give at least one symbol, e.g. BTCUSDT")
    shipped = available()
    by_symbol: dict[str, list[str]] = {}
    for s, tf in shipped:
        by_symbol.setdefault(s, []).append(tf)
    for s in symbols:
        if s not in by_symbol or s not in DEFAULT_RULES:
            known = ", ".join(sorted(set(by_symbol) & set(DEFAULT_RULES)))
            raise UsageError(f"--symbols: unknown symbol {s} (shipped: {known})")
        if timeframe not in by_symbol[s]:
            raise UsageError(
                f"--timeframe: {timeframe} is not shipped for {s} (it has {', '.join(sorted(by_symbol[s]))})"
            )
    return symbols


def load_range(
    symbols: tuple[str, ...], timeframe: str, start: int | None, end: int | None, warmup: int = 0
) -> tuple[AlignedKlines, int]:
    """The aligned bars of [start, end) plus up to `warmup` bars before; and the index of `start`.
    A range not inside every symbol's data is refused, naming the symbol and its span."""
    from backtest.report import iso

    if start is not None and end is not None and start >= end:
        raise UsageError(f"--from {iso(start)} is not before --to {iso(end)}")
    step = timeframe_ms(timeframe)
    loaded = [load_klines(s, timeframe) for s in symbols]
    for k in loaded:
        first, last_end = int(k.open_time_ms[0]), int(k.open_time_ms[-1]) + step
        if (start is not None and not first <= start < last_end) or (
            end is not None and not first < end <= last_end
        ):
            raise UsageError(
                f"range {iso(start or first)} → {iso(end or last_end)} is outside the data of {k.symbol} "
                f"{timeframe} ({iso(first)} → {iso(last_end)} UTC)"
            )
    bars = align(loaded)
    t = bars.open_time_ms
    lo = int(np.searchsorted(t, start)) if start is not None else 0
    hi = int(np.searchsorted(t, end)) if end is not None else bars.n_bars
    if hi - lo < 2:
        raise UsageError("the range holds fewer than 2 bars common to all symbols")
    first = max(0, lo - warmup)
    return bars.slice(first, hi), lo - first


def funding_histories(symbols: tuple[str, ...]) -> dict[str, FundingRates]:
    """The funding files of the data folder for these symbols (`qtrader data download --kind funding`);
    a symbol without one pays the constant rate."""
    return {s: load_funding(s) for s in symbols if funding_path(s).is_file()}


def load_union_range(
    symbols: tuple[str, ...], timeframe: str, start: int | None, end: int | None
) -> tuple[AlignedKlines, np.ndarray]:
    """`--union`: every symbol's bars within [start, end) on the union of their times (backtest/union.py),
    and where each has bars of its own. A symbol with fewer than 2 bars there is refused, by name."""
    from backtest.report import iso

    if start is not None and end is not None and start >= end:
        raise UsageError(f"--from {iso(start)} is not before --to {iso(end)}")
    loaded = [load_klines(s, timeframe, start_ms=start, end_ms=end) for s in symbols]
    for k in loaded:
        if len(k) < 2:
            whole = load_klines(k.symbol, timeframe)
            raise UsageError(
                f"{k.symbol} {timeframe} has fewer than 2 bars in the range (its data: "
                f"{iso(int(whole.open_time_ms[0]))} → {iso(int(whole.open_time_ms[-1]))} UTC)"
            )
    return union_bars(loaded)


def risk_layer(args: argparse.Namespace) -> BacktestRisk | None:
    """The risk layer the arguments ask for (None: off)."""
    if args.no_risk:
        if args.no_protections or args.risk_policy is not None:
            raise UsageError(
                "--no-risk turns the whole risk layer off: drop --no-protections / --risk-policy"
            )
        return None
    if args.ess_resume_hours < 0:
        raise UsageError(f"--ess-resume-hours {args.ess_resume_hours}: must be 0 (never) or more")
    policy = RiskLayerPolicy()
    if args.risk_policy is not None:
        try:
            text = args.risk_policy.read_text()
        except OSError as err:
            raise UsageError(f"--risk-policy {args.risk_policy}: {err.strerror or err}") from None
        try:
            policy = RiskLayerPolicy.model_validate_json(text)
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'the file'}: {e['msg']}" for e in err.errors()
            )
            raise UsageError(f"--risk-policy {args.risk_policy}: {problems}") from None
    if args.no_protections:
        policy = policy.model_copy(update={"protections": None})
    return BacktestRisk(policy=policy, operator_resume_hours=args.ess_resume_hours or None)


def intent_params(settings: Settings) -> IntentParams:
    """How the live signal service turns a model decision into an intent (the same settings)."""
    return IntentParams(
        threshold=settings.signal_confidence_threshold,
        risk_fraction=settings.signal_risk_fraction,
        leverage=settings.signal_leverage,
        equity=settings.signal_equity_usdt or settings.paper_start_balance_usdt,
        max_notional=settings.gov_max_notional_per_trade_usdt,
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        return _run(args, settings)
    except (UsageError, DataError, ValueError) as err:
        print(f"qtrader backtest: {err}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from signals.models.base import ModelLoadError

    timeframe = args.timeframe
    try:
        timeframe_ms(timeframe)
    except ValueError:
        raise UsageError(f"--timeframe: {timeframe!r} is not a timeframe (1m, 5m, 15m, 1h)") from None
    symbols = _symbols(args.symbols, timeframe)
    if args.leverage < 1 or args.leverage > 125:
        raise UsageError(f"--leverage {args.leverage}: must be 1 to 125")
    if args.lookback < 1:
        raise UsageError(f"--lookback {args.lookback}: must be at least 1 bar")
    if args.signal is not None and args.signal not in SIGNALS:
        raise UsageError(f"--signal {args.signal!r}: choose one of {', '.join(SIGNALS)}")
    if args.walk_forward is not None and args.walk_forward not in ALL_MODELS:
        raise UsageError(f"--walk-forward {args.walk_forward!r}: choose one of {', '.join(ALL_MODELS)}")
    if args.refit_days < 1 or args.train_days < 1:
        raise UsageError("--refit-days and --train-days: must be at least 1 day")
    if args.union and (args.model or args.walk_forward):
        raise UsageError("--union works with rule signals (--signal): a model's features need every bar")
    risk = risk_layer(args)
    costs = Costs(
        slippage_bps=args.slippage_bps,
        **({"taker_fee": args.fee_bps / 10_000} if args.fee_bps is not None else {}),
        **({"funding_rate": args.funding_rate} if args.funding_rate is not None else {}),
    )
    source = args.model or (f"wf-{args.walk_forward}" if args.walk_forward else args.signal or "momentum")
    config = BacktestConfig(
        symbols=symbols,
        timeframe=timeframe,
        start_ms=args.start,
        end_ms=args.end,
        start_balance=args.balance,
        notional_usdt=args.notional,
        leverage=args.leverage,
        policy=RiskPolicy.from_settings(settings),
        costs=costs,
        strategy=f"backtest-{source}",
        risk=risk,
    )
    registry_ref = None
    if args.model:
        from backtest.model_signals import ModelRef, check_walk_forward, trained_until_ms
        from signals.registry import ModelRegistry

        registry_ref = (ModelRegistry(settings.registry_dir), ModelRef.parse(args.model))
        try:  # the version must exist and be walk-forward before the data is even loaded
            meta = registry_ref[0].meta(registry_ref[1].name, registry_ref[1].version)
        except ModelLoadError as err:
            raise UsageError(f"--model: {err}") from None
        if args.start is None:  # the first bar the model never saw
            args.start = -(-trained_until_ms(meta) // timeframe_ms(timeframe)) * timeframe_ms(timeframe)
        check_walk_forward(meta, args.start)
    per_day = 86_400_000 // timeframe_ms(timeframe)
    train_bars = args.train_days * per_day
    warmup = WARMUP_BARS if args.model else train_bars + WARMUP_BARS if args.walk_forward else 0
    real = None
    if args.union:
        bars, real = load_union_range(symbols, timeframe, args.start, args.end)
        first = 0
    else:
        bars, first = load_range(symbols, timeframe, args.start, args.end, warmup)
    if args.walk_forward and args.start is None:  # start once a whole training window lies behind
        first = min(train_bars + WARMUP_BARS, bars.n_bars - 2)
    run_id = args.run_id or "backtest-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    out = args.out or settings.qt_home / "backtests" / run_id
    t0 = time.perf_counter()
    if registry_ref is not None:
        from backtest.model_signals import model_signals

        print(f"computing {registry_ref[1]} signals ...", file=sys.stderr)
        try:
            sig = model_signals(*registry_ref, bars, first, intent_params(settings))
        except ModelLoadError as err:
            raise UsageError(f"--model: {err}") from None
        bars = bars.slice(first, None)
    elif args.walk_forward:
        from backtest.model_signals import retrained_signals

        sig = retrained_signals(
            args.walk_forward,
            bars,
            first,
            refit_bars=args.refit_days * per_day,
            train_bars=train_bars,
            params=intent_params(settings),
            progress=lambda msg: print(f"walk-forward {args.walk_forward}: {msg}", file=sys.stderr),
        )
        bars = bars.slice(first, None)
    elif (args.signal or "momentum") == "every-bar":
        sig = SignalSet(every_bar(bars, 1 if args.side == "long" else -1), name="every-bar " + args.side)
    else:
        sig = SignalSet(momentum(bars, args.lookback), name=f"momentum {args.lookback}")
    if real is not None:
        sig.side = mask_signal(sig.side, real)

    def progress(frac: float) -> None:
        print(f"\rbacktest {frac * 100:5.1f} %", end="", file=sys.stderr, flush=True)

    if time.perf_counter() - t0 > 1:
        print(f"signals ready ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    t0 = time.perf_counter()
    funding = funding_histories(symbols)
    if funding:
        print(f"funding: historical rates of {', '.join(funding)} from the data folder", file=sys.stderr)
    result = run_backtest(config, bars, sig, progress=progress, funding=funding)
    print(f"\rbacktest 100.0 % ({time.perf_counter() - t0:.2f} s)", file=sys.stderr)
    from backtest.report import metric_rows, write_report

    metrics = write_report(result, out)
    width = max(len(k) for k, _ in metric_rows(metrics))
    print(f"{', '.join(symbols)} {timeframe} · {sig.name} · {bars.n_bars:,} bars")
    for k, v in metric_rows(metrics):
        print(f"  {k:<{width}}  {v}")
    print(f"report: {out / 'report.html'} (trades.csv, metrics.json, refusals.csv, ess_timeline.csv)")
    if args.journal:
        from backtest.journal_rows import to_records
        from journal.store import JournalError, open_journal

        try:
            written = open_journal(settings.database_url, settings.qt_home).record_many(
                to_records(result, run_id)
            )
        except (JournalError, OSError) as err:
            print(f"qtrader backtest: journal: {err}", file=sys.stderr)
            return 1
        print(f"journal: {written} new trades under run id {run_id}")
    return 0
