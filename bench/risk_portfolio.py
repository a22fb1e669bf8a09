"""The portfolio workflow's decision throughput, today's gates against every gate of the risk layer, on
one real dev server (bench.risk's `portfolio` phase).

The portfolio of a throw-away local stack (bench/stack.py) gets `n` reservation requests as signals
(the way positions ask), from holders that do not exist: each batch's delivery finds them gone and gives
their slots back, so the book keeps moving. First with the governor's gates alone (the floor,
`decisions_per_s_today_gates`), then, after the validated `set_risk_policy` and `set_market_inputs`
updates, with every part of the risk layer on (`decisions_per_s`): the emergency stop, protections, heat
(a limit it never reaches, so every request goes through every gate), concentration with clusters and
allocation caps. A phase's time runs from its first signal to the query that shows all `n` decided.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench.stack import local_stack
from trading.concentration import Clusters
from trading.governor import ReservationRequest
from trading.intents import Side
from trading.market_inputs import MarketInputs
from trading.risk import RiskLayerPolicy
from workflows.messages import DEFAULT_PORTFOLIO_ID, PortfolioView

D = Decimal
SYMBOLS = [f"T{i:03d}USDT" for i in range(1, 101)]
EVERY_GATE = RiskLayerPolicy.model_validate(
    {"concentration": {"max_entries_per_window": 1_000_000}}  # heat evaluated, never the one that refuses
)


async def decided(handle: Any, total: int, timeout: float) -> float:
    async with asyncio.timeout(timeout):
        while True:
            view = await handle.query("state", result_type=PortfolioView)
            if view.granted_total + view.denied_total >= total:
                return time.perf_counter()
            await asyncio.sleep(0.05)


async def phase(handle: Any, n: int, offset: int, tag: str, timeout: float) -> tuple[float, PortfolioView]:
    view = await handle.query("state", result_type=PortfolioView)
    before = view.granted_total + view.denied_total
    limit = asyncio.Semaphore(64)

    async def ask(k: int) -> None:
        req = ReservationRequest(
            holder_id=f"{tag}-{k}",
            symbol=SYMBOLS[(offset + k) % len(SYMBOLS)],
            side=Side.LONG if k % 2 else Side.SHORT,
            notional_usdt=D(50),
        )
        async with limit:
            await handle.signal("request_reservation", req)

    t0 = time.perf_counter()
    await asyncio.gather(*(ask(k) for k in range(n)))
    t1 = await decided(handle, before + n, timeout)
    return n / (t1 - t0), await handle.query("state", result_type=PortfolioView)


async def portfolio_decisions(tmp: Path, n: int, log: Any, timeout: float = 300) -> dict[str, object]:
    async with local_stack(
        tmp,
        extra_symbols=len(SYMBOLS),
        log=log,
        gov_max_open_positions=1000,
        gov_max_total_notional_usdt=D(1_000_000),
    ) as stack:
        handle = stack.client.get_workflow_handle(DEFAULT_PORTFOLIO_ID)
        await decided(handle, 0, 60)  # running and answering
        floor, v0 = await phase(handle, n, 0, "today", timeout)
        log(f"portfolio, today's gates: {floor:,.0f} decisions/s ({v0.granted_total} granted in all)")
        await handle.execute_update("set_risk_policy", EVERY_GATE.model_dump(mode="json"))
        caps = {s: D(5_000) for s in SYMBOLS}
        clusters = Clusters(groups=(tuple(SYMBOLS[:10]), tuple(SYMBOLS[10:20])), threshold=0.8)
        inputs = MarketInputs(at_ms=1, clusters=clusters, allocation=caps, symbols=tuple(SYMBOLS))
        await handle.execute_update("set_market_inputs", inputs.model_dump(mode="json"))
        rate, v1 = await phase(handle, n, 7, "risk", timeout)
        log(f"portfolio, every gate: {rate:,.0f} decisions/s")
        assert v1.risk is not None and v1.risk_state is not None and v1.risk_state.allocation is not None
        denied = [d for d in v1.last_decisions if d.decision == "denied"]
        return {
            "decisions_per_s": round(rate, 1),
            "decisions_per_s_today_gates": round(floor, 1),
            "portfolio_ratio": round(floor / rate, 2),
            "portfolio_requests_per_phase": n,
            "portfolio_last_denials_by_gate": sorted({d.gate.value for d in denied}),
        }
