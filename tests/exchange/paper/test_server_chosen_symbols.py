"""`--symbols`: the paper exchange lists the chosen symbols, replaying their klines from a data folder,
including a symbol it has no built-in filters for; a symbol it cannot serve is refused by name."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from exchange.client import BinanceFuturesClient
from tests.conftest import REPO, PaperExchange, start_paper_exchange
from tests.exchange.paper.kline_files import HOUR_MS, kline_rows, write_klines
from tests.exchange.paper.test_server_support import Api
from trading.instruments import DEFAULT_RULES, SymbolRules, inferred_rules

SYM = "PEPEUSDT"  # not among the built-in symbols


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("klines")
    write_klines(folder, SYM, kline_rows())
    return folder


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[PaperExchange]:
    ex = start_paper_exchange(
        Path(tmp_path_factory.mktemp("chosen")),
        *("--prices", "replay", "--speed", "3600", "--data-dir", str(data_dir), "--symbols", SYM),
    )
    try:
        yield ex
    finally:
        ex.process.stop()


def paper_exchange_process(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BINANCE_API_KEY": "k", "BINANCE_API_SECRET": "s"}
    return subprocess.run(
        [sys.executable, "-m", "exchange.paper", "--host", "127.0.0.1", "--port", "1", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_exchange_lists_exactly_the_chosen_symbol_with_its_replayed_klines(exchange: PaperExchange) -> None:
    rows = kline_rows()
    with Api(exchange) as api:
        info = api.public("/fapi/v1/exchangeInfo").json()
        assert [s["symbol"] for s in info["symbols"]] == [SYM]
        entry = info["symbols"][0]
        assert SymbolRules.from_exchange_info(entry) == inferred_rules(SYM, Decimal(rows[0][1]))
        assert entry["baseAsset"] == "PEPE" and entry["status"] == "TRADING"

        # At 3600x a replayed hour passes every wall second: wait for two closed bars.
        deadline = time.monotonic() + 60
        while True:
            bars = api.public("/fapi/v1/klines", symbol=SYM, interval="1h", limit=1500).json()
            if len(bars) >= 3 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert len(bars) >= 3, bars
        # The first bars are the file's first rows, rebased to the exchange's start, one hour apart.
        for bar, row in zip(bars[:2], rows[:2], strict=True):
            assert [Decimal(x) for x in bar[1:5]] == [Decimal(x) for x in row[1:5]]
            assert Decimal(bar[5]) == Decimal(row[5])
        assert bars[1][0] - bars[0][0] == HOUR_MS

        bad = api.public("/fapi/v1/ticker/price", symbol="BTCUSDT")
        assert bad.status_code == 400 and bad.json()["code"] == -1121  # not listed here


async def test_the_trading_client_orders_the_chosen_symbol(exchange: PaperExchange) -> None:
    async with BinanceFuturesClient(exchange.base_url, exchange.api_key, exchange.api_secret) as client:
        rules = await client.rules_for(SYM)
        assert rules.tick_size == Decimal("1E-9") and rules.step_size == Decimal("100000")
        lows = [Decimal(r[3]) for r in kline_rows()]
        highs = [Decimal(r[2]) for r in kline_rows()]
        mark = (await client.premium_index(SYM)).mark_price
        assert min(lows) <= mark <= max(highs)
        order = await client.new_order(SYM, "BUY", "MARKET", Decimal("1000000"), price_hint=mark)
        assert order.status == "FILLED" and order.executed_qty == Decimal("1000000")
        (position,) = await client.position_risk(SYM)
        assert position.position_amt == Decimal("1000000")
        close = await client.new_order(SYM, "SELL", "MARKET", Decimal("1000000"), reduce_only=True)
        assert close.status == "FILLED"


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--prices", "replay", "--symbols", f"{SYM},NODATAUSDT"), "no klines for NODATAUSDT in {data}"),
        (("--prices", "manual", "--symbols", "BTCUSDT,NODATAUSDT"), "no klines for NODATAUSDT in {data}"),
        (("--prices", "replay", "--symbols", "BTCUSDT"), "no klines for BTCUSDT in {data}"),
        (("--prices", "manual", "--symbols", "BTC-USDT"), "'BTC-USDT': not a USDT perpetual name"),
    ],
    ids=["replay-unknown", "manual-unknown", "replay-builtin-without-data", "bad-name"],
)
def test_a_symbol_it_cannot_serve_is_refused_by_name(
    data_dir: Path, args: tuple[str, ...], named: str
) -> None:
    result = paper_exchange_process("--state", ":memory:", "--data-dir", str(data_dir), *args)
    assert result.returncode == 2, result.stderr
    assert named.format(data=data_dir) in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_manual_prices_list_a_builtin_symbol_without_data_beside_a_chosen_one(
    data_dir: Path, tmp_path: Path
) -> None:
    ex = start_paper_exchange(tmp_path, "--data-dir", str(data_dir), "--symbols", f"BTCUSDT,{SYM}")
    try:
        with Api(ex) as api:
            info = api.public("/fapi/v1/exchangeInfo").json()
            assert [s["symbol"] for s in info["symbols"]] == ["BTCUSDT", SYM]
            price = api.public("/fapi/v1/ticker/price", symbol=SYM).json()["price"]
            assert Decimal(price) == Decimal(kline_rows()[-1][4])  # manual: the data's last close
            entry = next(s for s in info["symbols"] if s["symbol"] == "BTCUSDT")
            assert SymbolRules.from_exchange_info(entry) == DEFAULT_RULES["BTCUSDT"]
    finally:
        ex.process.stop()


def test_state_holding_a_position_on_a_symbol_no_longer_listed_refuses_to_start(
    data_dir: Path, tmp_path: Path
) -> None:
    """Restarted without the symbol, the exchange would forget a position a workflow still manages."""
    state = tmp_path / "paper.sqlite"
    key, secret = secrets.token_hex(16), secrets.token_hex(16)
    chosen = ("--data-dir", str(data_dir), "--symbols", SYM)
    ex = start_paper_exchange(tmp_path, *chosen, state_path=state, api_key=key, api_secret=secret)
    try:
        with Api(ex) as api:
            api.ok(
                "POST",
                "/fapi/v1/order",
                {"symbol": SYM, "side": "BUY", "type": "MARKET", "quantity": "1000000"},
            )
            assert api.position_amt(SYM) == 1_000_000
    finally:
        ex.process.stop()

    result = paper_exchange_process("--prices", "manual", "--state", str(state), "--data-dir", str(data_dir))
    assert result.returncode == 2, result.stderr
    assert f"holds open positions or orders on {SYM}" in result.stderr and "--symbols" in result.stderr

    again = start_paper_exchange(tmp_path, *chosen, state_path=state, api_key=key, api_secret=secret)
    try:
        with Api(again) as api:
            assert api.position_amt(SYM) == 1_000_000  # nothing was lost by the refused start
    finally:
        again.process.stop()
