"""Meta-strategy chooser: which strategy to trade in the current regime, learned from realized rewards.

Rewards arrive on `quantum:stream:rl_rewards` (one per closed trade, written by the position's
projection). The chooser reads them with a consumer group, so each reward is applied once even across
restarts and with several chooser processes:

* a batch is applied to the bandit state (`trading.bandit`) and the new state is written to Redis in
  the same MULTI/EXEC as the XACK of the batch, under WATCH of the state key: either both happen or
  neither, and a concurrent writer makes the batch retry on the fresh state;
* after a crash between read and ack, the entries are still pending for this consumer and are read
  again first (`XREADGROUP ... 0`); entries left pending by a consumer that died are claimed after
  `claim_idle_ms` (XAUTOCLAIM);
* an unusable reward (NaN, missing field, out of range) is not lost: it goes to the dead-letter stream
  `quantum:stream:rl_rewards.dead` with its id and the reason, in the same transaction, and is logged.
  Rewards of strategies that are not arms (manual, adopted) are acknowledged and counted as ignored.

`choose(regime)` answers from the state in memory (Thompson sampling); `consume()` or `refresh()`
bring it up to date. `python -m signals.strategy_chooser --help` runs it as a service or prints what
it learned.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError, WatchError

from signals.regime import REGIMES, Regime
from trading.bandit import (
    REWARDS_STREAM,
    ArmView,
    BanditState,
    RewardError,
    choose,
    parse_reward,
    update,
)
from trading.intents import ExitOverrides

STATE_KEY = "quantum:strategy_chooser:state"
DEAD_LETTER_STREAM = "quantum:stream:rl_rewards.dead"
GROUP = "strategy-chooser"
DEAD_LETTER_MAXLEN = 100_000

log = logging.getLogger("qtrader.strategy_chooser")

# The arms: a strategy is how a signal is traded, i.e. its exit profile (the side comes from the
# ensemble); take-profit levels are percent from entry. None: the default profile
# (trading/exit_policy.py).
STRATEGIES: dict[str, ExitOverrides | None] = {
    # let winners run: wide take-profit ladder, trailing stop
    "trend": ExitOverrides(
        profile={
            "tp_levels": [{"at": "4", "fraction": "0.3"}, {"at": "8", "fraction": "0.7"}],
            "trailing_enabled": True,
            "trailing_pct": "2.5",
            "trailing_activation_pct": "2",
        }
    ),
    # take the first move: one near target, tight stop, no trailing, out within 4 h
    "scalp": ExitOverrides(
        profile={
            "tp_levels": [{"at": "1", "fraction": "1"}],
            "stop_pct": "1",
            "hard_stop_pct": "2",
            "trailing_enabled": False,
            "max_holding_seconds": 4 * 3600,
        }
    ),
    "swing": None,
}


@dataclass(frozen=True)
class StrategyChoice:
    regime: str
    strategy: str
    exits: ExitOverrides | None
    arms: tuple[ArmView, ...]  # posterior of every arm in this regime

    def reason(self) -> str:
        return ", ".join(f"{a.arm} {a.mean:+.3f}±{a.sd:.3f} n={a.pulls}" for a in self.arms)


@dataclass
class ConsumeReport:
    applied: list[str] = field(default_factory=list)  # entry ids
    ignored: list[str] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.applied) + len(self.ignored) + len(self.dead)


def _decode(fields: Mapping[Any, Any] | None) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else str(k)): (v.decode() if isinstance(v, bytes) else str(v))
        for k, v in (fields or {}).items()
    }


class StrategyChooser:
    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        arms: Sequence[str] = tuple(STRATEGIES),
        consumer: str = "chooser-1",
        group: str = GROUP,
        stream: str = REWARDS_STREAM,
        seed: int | None = None,
        claim_idle_ms: int = 60_000,
        batch: int = 200,
        discount: float = 0.995,
    ) -> None:
        unknown = [a for a in arms if a not in STRATEGIES]
        if unknown:
            raise ValueError(f"unknown strategies {unknown}; known: {sorted(STRATEGIES)}")
        self.redis = redis
        self.arms = tuple(arms)
        self.consumer, self.group, self.stream = consumer, group, stream
        self.claim_idle_ms, self.batch = claim_idle_ms, batch
        self.discount = discount
        self.rng = random.Random(seed)
        self.state = BanditState.new(self.arms, discount=discount)

    # ------------------------------------------------------------------------------------ answer
    def choose(self, regime: Regime | str) -> StrategyChoice:
        r = Regime(regime).value  # refuses a regime name that does not exist
        c = choose(self.state, r, self.rng)
        return StrategyChoice(r, c.arm, STRATEGIES[c.arm], c.arms)

    # ----------------------------------------------------------------------------------- consume
    async def start(self) -> None:
        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        await self.refresh()

    async def refresh(self) -> None:
        self.state = self._adopt(await self.redis.get(STATE_KEY))

    def _adopt(self, raw: bytes | None) -> BanditState:
        """The stored state, fitted to this chooser's arms (stats of arms still in use are kept)."""
        if raw is None:
            return BanditState.new(self.arms, discount=self.discount)
        stored = BanditState.from_json(raw)
        if stored.config.arms == self.arms:
            return stored
        cells = {r: {a: s for a, s in c.items() if a in self.arms} for r, c in stored.cells.items()}
        cfg = stored.config.model_copy(update={"arms": self.arms})
        return BanditState(config=cfg, cells=cells, updates=stored.updates)

    async def consume(self, block_ms: int | None = None) -> ConsumeReport:
        """Apply every reward available now (pending first); with `block_ms`, wait that long for one."""
        total = ConsumeReport()
        while True:
            entries = await self._next_entries(block_ms if not len(total) else None)
            if not entries:
                return total
            rep = await self._apply(entries)
            for k in ("applied", "ignored", "dead"):
                getattr(total, k).extend(getattr(rep, k))

    async def _next_entries(self, block_ms: int | None) -> list[tuple[str, dict[str, str] | None]]:
        # 1. ours, read before a crash and never acked
        got = await self.redis.xreadgroup(self.group, self.consumer, {self.stream: "0"}, count=self.batch)
        entries = [(i.decode(), f) for i, f in (got[0][1] if got else [])]
        if entries:
            return [(i, _decode(f) if f else None) for i, f in entries]
        # 2. left pending by a consumer that stopped
        claimed = await self.redis.xautoclaim(
            self.stream, self.group, self.consumer, self.claim_idle_ms, "0-0", count=self.batch
        )
        msgs = [(i.decode(), _decode(f)) for i, f in claimed[1] if i is not None]
        msgs += [(i.decode(), None) for i in (claimed[2] if len(claimed) > 2 else [])]  # trimmed away
        if msgs:
            return msgs  # type: ignore[return-value]
        # 3. new ones
        got = await self.redis.xreadgroup(
            self.group, self.consumer, {self.stream: ">"}, count=self.batch, block=block_ms
        )
        return [(i.decode(), _decode(f)) for i, f in (got[0][1] if got else [])]

    async def _apply(self, entries: list[tuple[str, dict[str, str] | None]]) -> ConsumeReport:
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                rep = ConsumeReport()
                try:
                    await pipe.watch(STATE_KEY)
                    state = self._adopt(await pipe.get(STATE_KEY))
                    dead: list[tuple[str, dict[str, str], str]] = []
                    for entry_id, fields in entries:
                        if fields is None:  # trimmed from the stream before we read it
                            rep.ignored.append(entry_id)
                            continue
                        try:
                            r = parse_reward(fields)
                        except RewardError as err:
                            dead.append((entry_id, fields, str(err)))
                            rep.dead.append(entry_id)
                            continue
                        if r.strategy not in state.config.arms:
                            rep.ignored.append(entry_id)
                            continue
                        state = update(state, r.regime, r.strategy, r.reward)
                        rep.applied.append(entry_id)
                    pipe.multi()
                    pipe.set(STATE_KEY, state.to_json())
                    for entry_id, fields, why in dead:
                        pipe.xadd(
                            DEAD_LETTER_STREAM,
                            {"source_id": entry_id, "error": why, "fields": json.dumps(fields)},
                            maxlen=DEAD_LETTER_MAXLEN,
                            approximate=True,
                        )
                    pipe.xack(self.stream, self.group, *[i for i, _ in entries])
                    await pipe.execute()
                except WatchError:
                    continue  # another chooser wrote the state: redo the batch on the fresh one
                self.state = state
                for entry_id, _, why in dead:
                    log.warning("reward %s dead-lettered to %s: %s", entry_id, DEAD_LETTER_STREAM, why)
                return rep

    async def run(self, stop: asyncio.Event, block_ms: int = 1000) -> None:
        await self.start()
        while not stop.is_set():
            rep = await self.consume(block_ms)
            if len(rep):
                log.info(
                    "rewards applied=%d ignored=%d dead=%d", *map(len, (rep.applied, rep.ignored, rep.dead))
                )


def format_state(state: BanditState) -> str:
    from trading.bandit import posterior

    lines = [f"{'regime':<14} {'strategy':<8} {'mean':>7} {'sd':>6} {'trades':>6}"]
    for r in REGIMES:
        for a in state.config.arms:
            v = posterior(state, r.value, a)
            lines.append(f"{r.value:<14} {a:<8} {v.mean:>+7.3f} {v.sd:>6.3f} {v.pulls:>6}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m signals.strategy_chooser", description=__doc__.split("\n")[0])
    p.add_argument("--redis-url", default=None, help="default: REDIS_HOST / REDIS_PORT of the settings")
    p.add_argument("--consumer", default="chooser-1")
    p.add_argument("--once", action="store_true", help="apply what is there, print the table, exit")
    p.add_argument("--show", action="store_true", help="print what was learned; consume nothing")
    args = p.parse_args(argv)
    from workers.service import setup_logging, stop_on_signals

    setup_logging()

    async def go() -> None:
        if args.redis_url is None:
            from trading.config import load_settings

            args.redis_url = load_settings().redis_url
        redis = aioredis.Redis.from_url(args.redis_url)
        try:
            chooser = StrategyChooser(redis, consumer=args.consumer)
            if args.show:
                await chooser.refresh()
            elif args.once:
                await chooser.start()
                t0 = time.monotonic()
                rep = await chooser.consume()
                print(
                    f"applied {len(rep.applied)}, ignored {len(rep.ignored)}, dead-lettered "
                    f"{len(rep.dead)} rewards in {time.monotonic() - t0:.2f}s"
                )
            else:
                await chooser.run(stop_on_signals())
            print(format_state(chooser.state))
        finally:
            with contextlib.suppress(Exception):
                await redis.aclose()

    asyncio.run(go())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
