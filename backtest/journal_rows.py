"""A backtest's trades as trade-journal rows, so backtest, paper and live results answer the same
queries (`qtrader report --by ...`)."""

from __future__ import annotations

from backtest.result import BacktestResult
from trading.records import RecordMode, TradeRecord


def to_records(result: BacktestResult, run_id: str) -> list[TradeRecord]:
    """One row per trade, id `{run_id}:{trade_no}` (a re-run with the same id writes nothing new)."""
    return [
        TradeRecord(
            trade_id=f"{run_id}:{t.trade_no}",
            run_id=run_id,
            mode=RecordMode.BACKTEST,
            symbol=t.symbol,
            side=t.side,
            strategy=t.strategy,
            regime=None if t.regime == "unknown" else t.regime,
            model_version=t.model_version,
            source="model" if t.model_version else "backtest",
            quantity=t.qty,
            entry_price=t.entry_price,
            exit_price=t.exit_price,
            opened_at_ms=t.entry_time_ms,
            closed_at_ms=t.exit_time_ms,
            realized_pnl=t.pnl,  # the journal's figure is net of fees and funding
            gross_pnl=t.gross_pnl,
            fees=t.fees,
            funding=t.funding,
            exit_reason=t.exit_reason,
            exit_controller=t.exit_controller,
        )
        for t in result.trades
    ]
