"""Projections to Redis's read model, with the seed's key and stream names.

Redis is never the source of a decision: a position keeps trading while Redis is down, and these
activities retry until Redis is back (the projection catches up). Stream entries are written at most
once per event even when an activity is retried (a dedupe key set in the same Lua script).
"""

from __future__ import annotations

import json
import time
from decimal import Decimal

import redis.asyncio as aioredis
from temporalio import activity

from trading.bandit import REWARDS_STREAM, RewardError, normalize_reward, trade_margin
from workflows import calls
from workflows.messages import EssMove, PortfolioView, ProjectionInput, PublishLevelsInput, Refusal

SNAPSHOT_KEY = "quantum:position:snapshot:{symbol}"
LEDGER_KEY = "quantum:ledger:{symbol}"
PORTFOLIO_KEY = "quantum:portfolio:state"
# The risk layer's notional cap per symbol (MarketInputsWorkflow → the portfolio), one hash per symbol.
ALLOCATION_KEY = "quantum:capital:allocation:{symbol}"
ALLOCATION_INDEX = "quantum:capital:allocation:index"
LEVELS_KEY = "quantum:exit:levels"  # the price watcher's trigger table (feeds/price_watcher.py)
LEVELS_CHANNEL = "quantum:exit:levels:changed"
APPLY_RESULT_STREAM = "quantum:stream:apply.result"
TRADE_CLOSED_STREAM = "quantum:stream:trade.closed"
# One entry per intent the portfolio refused before any workflow existed for it (its gate and reason).
REFUSED_STREAM = "quantum:stream:intent.refused"
# One entry per change of the portfolio's emergency state or kill switch (read by the notifier, alerts/).
EMERGENCY_STREAM = "quantum:stream:portfolio.emergency"
# One entry per move of the automatic emergency stop, with its cause, rule, reason and figures (the seed's
# name; read by the notifier, alerts/).
ESS_STREAM = "quantum:stream:ess.state.changed"
RL_REWARDS_STREAM = REWARDS_STREAM  # one per traded position; read by signals/strategy_chooser.py
STREAM_MAXLEN = 100_000
DEDUPE_TTL_S = 7 * 24 * 3600

# KEYS: dedupe, stream, ledger ; ARGV: ttl, maxlen, pnl (or ""), fees, field, value, ...
_ONCE = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  if ARGV[3] ~= '' then
    redis.call('HINCRBYFLOAT', KEYS[3], 'realized_pnl', ARGV[3])
    redis.call('HINCRBYFLOAT', KEYS[3], 'fees', ARGV[4])
    redis.call('HINCRBY', KEYS[3], 'trades', 1)
  end
  return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 5))
end
return false
"""


# KEYS: snapshot ; ARGV: event_ms, seq, field, value, ... Writes only if not older than what is there.
_SNAPSHOT = """
local cur = redis.call('HMGET', KEYS[1], 'event_ms', 'seq')
local ms, seq = tonumber(ARGV[1]), tonumber(ARGV[2])
local cur_ms, cur_seq = tonumber(cur[1] or '0'), tonumber(cur[2] or '0')
if ms < cur_ms or (ms == cur_ms and seq < cur_seq) then return 0 end
redis.call('HSET', KEYS[1], 'event_ms', ARGV[1], 'seq', ARGV[2], unpack(ARGV, 3))
return 1
"""

# KEYS: portfolio hash, emergency stream ; ARGV: maxlen, emergency, kill switch, field, value, ...
# Writes the state and, in the same step, an event when the emergency state or the kill switch differs
# from what the hash held: a retried or repeated projection of the same state adds nothing.
_PORTFOLIO = """
local prev = redis.call('HMGET', KEYS[1], 'emergency', 'kill_switch')
local was_em, was_ks = prev[1] or 'NORMAL', prev[2] or 'false'
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
if was_em ~= ARGV[2] or was_ks ~= ARGV[3] then
  return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'from', was_em, 'to', ARGV[2],
    'kill_switch_from', was_ks, 'kill_switch', ARGV[3], unpack(ARGV, 4))
end
return false
"""

# KEYS: table, channel ; ARGV: workflow id, JSON value, version, remove ("1"/"0")
_LEVELS = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then
  local ok, decoded = pcall(cjson.decode, current)
  if ok and decoded['version'] and tonumber(decoded['version']) > tonumber(ARGV[3]) then
    return 0
  end
end
if ARGV[4] == '1' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
redis.call('PUBLISH', KEYS[2], ARGV[1])
return 1
"""


def _s(value: object) -> str:
    return "" if value is None else str(value)


def reward_fields(inp: ProjectionInput, now_ms: int) -> dict[str, str] | None:
    """The rl_rewards entry of a closed position (None when nothing was traded): net PnL over the
    initial margin, squashed by `trading.bandit.normalize_reward`. The margin comes from the fills when
    the close carries the result, else from the intent (its notional is an upper bound of the fill)."""
    v, intent = inp.view, inp.intent
    if inp.result is not None and inp.result.quantity > 0:
        notional, basis = inp.result.quantity * inp.result.entry_price, "fills"
    elif v.fees > 0 or v.realized_pnl != 0:  # something filled
        if intent.quantity is not None and v.entry_price > 0:
            notional, basis = intent.quantity * v.entry_price, "intent_quantity"
        else:
            notional, basis = intent.notional_usdt or Decimal(0), "intent_notional"
    else:
        return None
    try:
        margin = trade_margin(notional, intent.leverage)
        reward = normalize_reward(v.realized_pnl, margin)
    except RewardError as err:
        activity.logger.warning("no reward for %s: %s", v.workflow_id, err)
        return None
    return {
        "trade_id": v.workflow_id,
        "symbol": v.symbol,
        "side": v.side.value,
        "strategy": intent.strategy,
        "regime": intent.regime,
        "source": intent.source.value,
        "reward": repr(reward),
        "realized_pnl": str(v.realized_pnl),
        "margin": str(margin),
        "margin_basis": basis,
        "roe": repr(float(v.realized_pnl / margin)),
        "leverage": str(intent.leverage),
        "timestamp": str(now_ms),
    }


class ProjectionActivities:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._once = redis.register_script(_ONCE)
        self._levels = redis.register_script(_LEVELS)
        self._snapshot = redis.register_script(_SNAPSHOT)
        self._portfolio = redis.register_script(_PORTFOLIO)

    @activity.defn(name=calls.PROJECT_POSITION.name)
    async def project_position(self, inp: ProjectionInput) -> None:
        v = inp.view
        now_ms = int(time.time() * 1000)
        snapshot = {
            "symbol": v.symbol,
            "side": v.side.value,
            "status": v.status.value,
            "workflow_id": v.workflow_id,
            "qty": _s(v.open_qty),
            "entry_price": _s(v.entry_price),
            "mark_price": _s(v.mark_price),
            "unrealized_pnl": _s(v.unrealized_pnl),
            "realized_pnl": _s(v.realized_pnl),
            "fees": _s(v.fees),
            "stop_loss": _s(v.stop_loss_price),
            "take_profit": _s(v.take_profit_price),
            "hard_stop": _s(v.hard_stop_price),
            "strategy": inp.intent.strategy,
            "source": inp.intent.source.value,
            "updated_at": str(now_ms),
        }
        await self._snapshot(
            keys=[SNAPSHOT_KEY.format(symbol=v.symbol)],
            args=[inp.event_ms, inp.seq, *(x for kv in snapshot.items() for x in kv)],
        )
        if inp.kind == "apply_result" and inp.outcome is not None:
            o = inp.outcome
            fields = {
                "workflow_id": v.workflow_id,
                "symbol": v.symbol,
                "action": inp.action or "",
                "side": v.side.value,
                "client_order_id": o.client_order_id,
                "order_id": str(o.order_id),
                "status": o.status.value,
                "executed_qty": str(o.executed_qty),
                "avg_price": str(o.avg_price),
                "fees": str(sum(f.fee for f in o.fills)),
                "recovered": str(o.recovered).lower(),
                "intent_id": _s(inp.intent.intent_id),
                "timestamp": str(now_ms),
            }
            await self._append_once(f"apply:{o.client_order_id}", APPLY_RESULT_STREAM, fields)
        elif inp.kind == "trade_closed":
            fields = {
                "workflow_id": v.workflow_id,
                "symbol": v.symbol,
                "side": v.side.value,
                "status": v.status.value,
                "realized_pnl": str(v.realized_pnl),
                "fees": str(v.fees),
                "reason": _s(v.reason),
                "strategy": inp.intent.strategy,
                "source": inp.intent.source.value,
                "intent_id": _s(inp.intent.intent_id),
                "timestamp": str(now_ms),
            }
            await self._append_once(
                f"closed:{v.workflow_id}",
                TRADE_CLOSED_STREAM,
                fields,
                ledger=LEDGER_KEY.format(symbol=v.symbol),
                pnl=v.realized_pnl,
                fees=v.fees,
            )
            reward = reward_fields(inp, now_ms)
            if reward is not None:
                await self._append_once(f"reward:{v.workflow_id}", RL_REWARDS_STREAM, reward)

    @activity.defn(name=calls.PUBLISH_LEVELS.name)
    async def publish_levels(self, inp: PublishLevelsInput) -> None:
        """Write (or remove) one position's trigger levels and tell the watcher which one changed. A
        newer version is never overwritten by an older one (activities can finish out of order)."""
        value = json.dumps(
            {
                "workflow_id": inp.workflow_id,
                "symbol": inp.symbol,
                "above": _s(inp.above) or None,
                "below": _s(inp.below) or None,
                "version": inp.version,
            }
        )
        await self._levels(
            keys=[LEVELS_KEY, LEVELS_CHANNEL],
            args=[inp.workflow_id, value, inp.version, "1" if inp.remove else "0"],
        )

    @activity.defn(name=calls.PROJECT_PORTFOLIO.name)
    async def project_portfolio(self, view: PortfolioView) -> None:
        state = {
            "slots_used": str(view.slots_used),
            "max_open_positions": str(view.policy.max_open_positions),
            "notional_used": str(view.notional_used),
            "max_total_notional": str(view.policy.max_total_notional_usdt),
            "kill_switch": str(view.policy.kill_switch).lower(),
            "emergency": view.book.emergency.value,
            "holders": json.dumps(sorted(view.book.reservations)),
            "updated_at": str(int(time.time() * 1000)),
        }
        last = view.ess_moves[-1].transition if view.ess_moves else None
        # Why the automatic stop stands where it does (the notifier's alert says it); "" otherwise.
        state["reason"] = last.reason if last is not None and last.to_state is view.book.emergency else ""
        await self._project_allocation(view)
        await self._portfolio(
            keys=[PORTFOLIO_KEY, EMERGENCY_STREAM],
            args=[
                str(STREAM_MAXLEN),
                state["emergency"],
                state["kill_switch"],
                *(x for kv in state.items() for x in kv),
            ],
        )

    async def _project_allocation(self, view: PortfolioView) -> None:
        """`quantum:capital:allocation:{symbol}`: each symbol's cap and when it was computed, written when
        the caps change (`...:index` names the symbols written; one no longer capped is removed)."""
        risk = view.risk_state
        caps = (risk.allocation or {}) if risk is not None and view.risk is not None else {}
        at = str(risk.allocation_at_ms or "") if risk is not None and caps else ""
        index = json.loads(await self.redis.get(ALLOCATION_INDEX) or "{}")
        if index.get("at") == at and sorted(index.get("symbols", [])) == sorted(caps):
            return
        pipe = self.redis.pipeline(transaction=True)
        for symbol in set(index.get("symbols", [])) - set(caps):
            pipe.delete(ALLOCATION_KEY.format(symbol=symbol))
        for symbol, cap in caps.items():
            pipe.hset(ALLOCATION_KEY.format(symbol=symbol), mapping={"cap_usdt": str(cap), "computed_at": at})
        pipe.set(ALLOCATION_INDEX, json.dumps({"at": at, "symbols": sorted(caps)}))
        await pipe.execute()

    @activity.defn(name=calls.PUBLISH_ESS_MOVES.name)
    async def publish_ess_moves(self, moves: list[EssMove]) -> None:
        """Each move of the emergency stop to its stream once: keyed by its number and time, so a retry,
        or a move carried into the next run and sent again, adds nothing."""
        for m in moves:
            t = m.transition
            fields = {
                "seq": str(m.seq),
                "from": t.from_state.value,
                "to": t.to_state.value,
                "cause": t.cause.value,
                "rule": t.rule,
                "reason": t.reason,
                "operator": _s(t.operator),
                "breaches": json.dumps([b.model_dump(mode="json") for b in t.breaches]),
                "at_ms": str(t.at_ms),
            }
            await self._append_once(f"ess:{m.seq}:{t.at_ms}", ESS_STREAM, fields)

    @activity.defn(name=calls.PUBLISH_REFUSALS.name)
    async def publish_refusals(self, refused: list[Refusal]) -> None:
        """Each intent the portfolio refused before starting anything, once (keyed by its workflow id)."""
        for r in refused:
            fields = {
                "workflow_id": r.workflow_id,
                "intent_id": _s(r.intent_id),
                "symbol": r.symbol,
                "side": r.side.value,
                "notional_usdt": str(r.notional_usdt),
                "gate": r.gate,
                "reason": r.reason,
                "at_ms": str(r.at_ms),
            }
            await self._append_once(f"refused:{r.workflow_id}", REFUSED_STREAM, fields)

    async def _append_once(
        self,
        event_id: str,
        stream: str,
        fields: dict[str, str],
        *,
        ledger: str = "",
        pnl: object = None,
        fees: object = None,
    ) -> None:
        args: list[str] = [str(DEDUPE_TTL_S), str(STREAM_MAXLEN), _s(pnl), _s(fees)]
        for key, value in fields.items():
            args += [key, value]
        await self._once(keys=[f"quantum:dedupe:{event_id}", stream, ledger or "quantum:ledger:_"], args=args)
