"""Benchmark: signed MARKET orders through our client against the paper exchange on loopback.

`python -m bench.exchange [--orders N] [--concurrency C] [--profile]`

Starts its own paper exchange (state in a temp dir, a free loopback port, its order / weight limits
raised so the venue's rate limits do not cap the measurement), warms up, then measures N
sequential signed MARKET orders (alternating BUY / SELL, so the position stays flat-ish) next to N
unsigned `GET /fapi/v1/time` through the same keep-alive httpx client, interleaved (the floor), and
the throughput of C concurrent order senders. Progress goes to stderr; the last stdout line is one
JSON object. The paper exchange is stopped by PID even on error.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import secrets
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from exchange.client import BinanceFuturesClient
from workers.devservers import start_paper_exchange
from workers.processes import ManagedProcess

SYMBOL = "BTCUSDT"
PRICE = "60000"
QTY = Decimal("0.002")  # 120 USDT notional: above BTCUSDT's 100 minimum
BIG = 10_000_000  # raised venue limits for the benchmark (orders / weight)


def log(msg: str) -> None:
    print(f"[bench.exchange] {msg}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[idx]


def start_exchange(tmp: Path) -> tuple[ManagedProcess, str, str, str]:
    ex = start_paper_exchange(
        tmp,
        "--symbols",
        SYMBOL,
        "--start-balance",
        "1000000",
        "--order-limit-10s",
        str(BIG),
        "--order-limit-1m",
        str(BIG),
        "--weight-limit",
        str(BIG),
    )
    ex.set_price(SYMBOL, PRICE)
    return ex.process, ex.base_url, ex.api_key, ex.api_secret


async def measure(
    base: str, key: str, secret: str, n: int, concurrency: int, profile: bool, deadline: float
) -> dict[str, float | int | str]:
    async with BinanceFuturesClient(
        base, key, secret, weight_limit_1m=BIG, order_limit_10s=BIG, order_limit_1m=BIG, timeout_s=10
    ) as client:
        http = client.http
        await client.sync_time()
        await client.exchange_info()
        await client.set_leverage(SYMBOL, 20)
        side_flip = ["BUY", "SELL"]

        async def one_order(i: int) -> float:
            t0 = time.perf_counter()
            order = await client.new_order(
                SYMBOL,
                side_flip[i & 1],
                "MARKET",
                QTY,  # type: ignore[arg-type]
                client_order_id=f"b-{i}-{secrets.token_hex(4)}",
            )
            dt = time.perf_counter() - t0
            if order.status != "FILLED":
                raise RuntimeError(f"order not filled: {order.status}")
            return dt

        async def one_time() -> float:
            t0 = time.perf_counter()
            resp = await http.get("/fapi/v1/time")
            resp.json()
            dt = time.perf_counter() - t0
            resp.raise_for_status()
            return dt

        warm = min(100, max(10, n // 5))
        log(f"warm-up: {warm} orders + {warm} time requests")
        for i in range(warm):
            await one_order(i)
            await one_time()

        log(f"measuring {n} sequential signed MARKET orders interleaved with {n} GET /fapi/v1/time")
        order_rtt: list[float] = []
        floor_rtt: list[float] = []
        prof = cProfile.Profile() if profile else None
        seq_started = time.perf_counter()
        order_time = 0.0
        for i in range(n):
            if time.perf_counter() > deadline:
                log(f"time budget reached after {i} orders")
                break
            floor_rtt.append(await one_time())
            if prof:
                prof.enable()
            dt = await one_order(warm + i)
            if prof:
                prof.disable()
            order_rtt.append(dt)
            order_time += dt
            if (i + 1) % max(1, n // 5) == 0:
                log(
                    f"  {i + 1}/{n}: order p50 {statistics.median(order_rtt) * 1000:.3f} ms, "
                    f"floor p50 {statistics.median(floor_rtt) * 1000:.3f} ms"
                )
        seq_wall = time.perf_counter() - seq_started

        log(f"measuring throughput with {concurrency} concurrent senders ({n} orders)")
        counter = iter(range(n))
        done = 0

        async def worker() -> None:
            nonlocal done
            for i in counter:
                if time.perf_counter() > deadline:
                    return
                await one_order(10 * n + i)
                done += 1

        conc_started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        conc_wall = time.perf_counter() - conc_started
        pos = await client.position_risk(SYMBOL)
        log(f"final position: {[str(p.position_amt) for p in pos]}; weights {client.rate_limits()}")

        if prof:
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(30)
            log("cProfile of the client side of the sequential orders (cumulative):\n" + out.getvalue())

    p50, floor_p50 = statistics.median(order_rtt), statistics.median(floor_rtt)
    return {
        "order_rtt_p50_ms": round(p50 * 1000, 3),
        "order_rtt_p99_ms": round(pct(order_rtt, 0.99) * 1000, 3),
        "orders_per_s": round(len(order_rtt) / order_time, 1),
        "floor_p50_ms": round(floor_p50 * 1000, 3),
        "ratio_p50": round(p50 / floor_p50, 2),
        "floor_p99_ms": round(pct(floor_rtt, 0.99) * 1000, 3),
        "orders_per_s_concurrent": round(done / conc_wall, 1) if conc_wall > 0 else 0.0,
        "concurrency": concurrency,
        "orders": len(order_rtt),
        "sequential_wall_s": round(seq_wall, 3),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.exchange", description=__doc__.splitlines()[0])
    ap.add_argument("--orders", type=int, default=500, help="sequential orders to measure (default 500)")
    ap.add_argument("--concurrency", type=int, default=16, help="concurrent senders for orders/s")
    ap.add_argument("--budget-s", type=float, default=50.0, help="stop measuring after this long")
    ap.add_argument("--profile", action="store_true", help="cProfile the client side of the orders")
    args = ap.parse_args(argv)
    if args.orders < 1 or args.concurrency < 1:
        ap.error("--orders and --concurrency must be positive")
    started = time.perf_counter()
    deadline = started + args.budget_s
    with tempfile.TemporaryDirectory(prefix="qt-bench-exchange-") as tmp:
        proc = None
        try:
            log("starting the paper exchange")
            proc, base, key, secret = start_exchange(Path(tmp))
            log(f"paper exchange pid {proc.pid} on {base}")
            result = asyncio.run(
                measure(base, key, secret, args.orders, args.concurrency, args.profile, deadline)
            )
        except Exception as exc:
            log(f"failed: {type(exc).__name__}: {exc}")
            if proc is not None:
                log("paper exchange log tail:\n" + proc.log_tail())
            return 1
        finally:
            if proc is not None:
                proc.stop()
                log(f"stopped paper exchange pid {proc.pid}")
    result["total_s"] = round(time.perf_counter() - started, 2)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
