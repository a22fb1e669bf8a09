"""`--extra-symbols N`: N synthetic perpetuals T001USDT..TNNNUSDT that trade like the real ones."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from exchange.paper.__main__ import run
from exchange.paper.config import PaperConfig
from exchange.paper.engine import PaperEngine
from exchange.paper.prices import DEFAULT_DATA_DIR, build_price_source, data_files
from tests.conftest import PaperExchange, start_paper_exchange
from tests.exchange.paper.test_server_support import Api
from trading.instruments import (
    DEFAULT_RULES,
    SymbolRules,
    synthetic_rules,
    synthetic_symbols,
)

SYM = "T042USDT"


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PaperExchange]:
    ex = start_paper_exchange(Path(tmp_path_factory.mktemp("extra")), "--extra-symbols", "100")
    try:
        yield ex
    finally:
        ex.process.stop()


def test_exchange_info_lists_110_symbols(exchange: PaperExchange) -> None:
    with Api(exchange) as api:
        info = api.public("/fapi/v1/exchangeInfo").json()
    names = [s["symbol"] for s in info["symbols"]]
    assert len(names) == len(set(names)) == 110
    assert set(DEFAULT_RULES) <= set(names)
    assert {"T001USDT", SYM, "T100USDT"} <= set(names) and "T101USDT" not in names
    entry = next(s for s in info["symbols"] if s["symbol"] == SYM)
    assert entry["status"] == "TRADING" and entry["contractType"] == "PERPETUAL"
    assert SymbolRules.from_exchange_info(entry) == synthetic_rules(SYM)


def test_market_order_stop_algo_and_close_on_a_synthetic_symbol(exchange: PaperExchange) -> None:
    with Api(exchange) as api:
        mark = api.public("/fapi/v1/premiumIndex", symbol=SYM).json()
        assert mark["symbol"] == SYM and Decimal(mark["markPrice"]) == Decimal("100")
        api.ok("POST", "/fapi/v1/leverage", {"symbol": SYM, "leverage": 10})
        entry = api.ok(
            "POST",
            "/fapi/v1/order",
            {
                "symbol": SYM,
                "side": "BUY",
                "type": "MARKET",
                "quantity": "1.000",
                "newOrderRespType": "RESULT",
            },
        )
        assert entry["status"] == "FILLED" and Decimal(entry["avgPrice"]) == Decimal("100")
        assert api.position_amt(SYM) == 1.0
        stop = api.ok(
            "POST",
            "/fapi/v1/algoOrder",
            {
                "algoType": "CONDITIONAL",
                "symbol": SYM,
                "side": "SELL",
                "type": "STOP_MARKET",
                "triggerPrice": "90.00",
                "quantity": "1.000",
                "reduceOnly": "true",
                "clientAlgoId": "t042-stop",
            },
        )
        assert stop["algoStatus"] == "NEW"
        assert [a["clientAlgoId"] for a in api.ok("GET", "/fapi/v1/openAlgoOrders", {"symbol": SYM})] == [
            "t042-stop"
        ]
        exchange.set_price(SYM, "95.5")  # settable like any manual price; above the stop
        tick = api.public("/fapi/v1/ticker/price", symbol=SYM).json()
        assert tick["price"] == "95.50"
        close = api.ok(
            "POST",
            "/fapi/v1/order",
            {
                "symbol": SYM,
                "side": "SELL",
                "type": "MARKET",
                "quantity": "1.000",
                "reduceOnly": "true",
                "newOrderRespType": "RESULT",
            },
        )
        assert close["status"] == "FILLED"
        assert api.position_amt(SYM) == 0.0
        assert api.ok("GET", "/fapi/v1/openAlgoOrders", {"symbol": SYM}) == []  # reduce-only stop expired
        assert api.ok("GET", "/fapi/v1/algoOrder", {"clientAlgoId": "t042-stop"})["algoStatus"] == "EXPIRED"
        trades = api.ok("GET", "/fapi/v1/userTrades", {"symbol": SYM})
        assert len(trades) == 2 and Decimal(trades[-1]["realizedPnl"]) == Decimal("-4.5")
        klines = api.public("/fapi/v1/klines", symbol=SYM, interval="1m", limit=1).json()
        assert klines and klines[-1][4] == "95.50"


@pytest.mark.parametrize("mode", ["manual", "synthetic", "replay"])
def test_every_price_mode_lists_the_synthetic_symbols(mode: str) -> None:
    if mode == "replay" and not data_files(DEFAULT_DATA_DIR):
        pytest.skip("no shipped kline data")
    cfg = PaperConfig(api_key="k", api_secret="s", prices=mode, extra_symbols=5, symbols=["BTCUSDT"])
    engine = PaperEngine(cfg, build_price_source(cfg))
    assert engine.symbols == ["BTCUSDT", *synthetic_symbols(5)]
    assert engine.rules["T005USDT"] == synthetic_rules("T005USDT")
    assert engine.last["T003USDT"] == Decimal("100.00")
    assert engine.klines({"symbol": "T003USDT", "interval": "1m", "limit": "1"})[0][4] == "100.00"
    engine.close()


def test_bad_extra_symbols_count_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BINANCE_API_KEY", "k")
    monkeypatch.setenv("BINANCE_API_SECRET", "s")
    assert run(["--extra-symbols", "10000", "--state", ":memory:"]) == 2  # 1..9999: T001USDT..T9999USDT
    assert "extra_symbols" in capsys.readouterr().err
