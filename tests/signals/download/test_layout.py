"""Which archive files a range needs, and their addresses, spelled out as data.binance.vision names
them."""

from __future__ import annotations

from datetime import date

import pytest

from signals.download.layout import days_of, maybe_unpublished, normalize_timeframe, plan, rest_interval

BASE = "https://data.binance.vision"
TODAY = date(2026, 5, 20)


def urls(kind: str, tf: str | None, start: str, end: str, today: date = TODAY) -> list[str]:
    return [
        p.url(BASE)
        for p in plan(kind, "BTCUSDT", tf, date.fromisoformat(start), date.fromisoformat(end), today)
    ]


def test_whole_past_months_are_monthly_files() -> None:
    assert urls("klines", "1h", "2024-01-01", "2024-03-31") == [
        f"{BASE}/data/futures/um/monthly/klines/BTCUSDT/1h/BTCUSDT-1h-2024-0{m}.zip" for m in (1, 2, 3)
    ]


def test_partial_months_and_the_current_month_are_daily_files_and_today_is_left_to_rest() -> None:
    got = urls("klines", "15m", "2024-01-30", "2024-02-29")
    assert got[:2] == [
        f"{BASE}/data/futures/um/daily/klines/BTCUSDT/15m/BTCUSDT-15m-2024-01-30.zip",
        f"{BASE}/data/futures/um/daily/klines/BTCUSDT/15m/BTCUSDT-15m-2024-01-31.zip",
    ]
    assert got[2:] == [f"{BASE}/data/futures/um/monthly/klines/BTCUSDT/15m/BTCUSDT-15m-2024-02.zip"]
    current = urls("mark", "1m", "2026-05-18", "2026-05-20")
    assert current == [  # the 20th is today: not in the archive, the REST tail's
        f"{BASE}/data/futures/um/daily/markPriceKlines/BTCUSDT/1m/BTCUSDT-1m-2026-05-18.zip",
        f"{BASE}/data/futures/um/daily/markPriceKlines/BTCUSDT/1m/BTCUSDT-1m-2026-05-19.zip",
    ]


def test_monthly_only_kinds_and_timeframes() -> None:
    assert urls("funding", None, "2024-01-15", "2024-02-10") == [
        f"{BASE}/data/futures/um/monthly/fundingRate/BTCUSDT/BTCUSDT-fundingRate-2024-01.zip",
        f"{BASE}/data/futures/um/monthly/fundingRate/BTCUSDT/BTCUSDT-fundingRate-2024-02.zip",
    ]
    assert urls("klines", "1mo", "2025-11-01", "2026-05-20") == [
        f"{BASE}/data/futures/um/monthly/klines/BTCUSDT/1mo/BTCUSDT-1mo-{ym}.zip"
        for ym in ("2025-11", "2025-12", "2026-01", "2026-02", "2026-03", "2026-04")
    ]  # May has not ended and 1mo has no daily files: REST
    assert urls("klines", "1w", "2026-05-01", "2026-05-19") == []


def test_a_month_not_published_yet_becomes_its_days() -> None:
    (april,) = plan("klines", "BTCUSDT", "1h", date(2026, 4, 1), date(2026, 4, 30), TODAY)
    assert not maybe_unpublished(april, date(2026, 5, 9)) and maybe_unpublished(april, date(2026, 5, 3))
    days = days_of(april)
    assert [d.label for d in days[:2]] == ["2026-04-01", "2026-04-02"] and len(days) == 30
    assert days[-1].end_ms == april.end_ms


def test_timeframe_names() -> None:
    assert normalize_timeframe("1M") == "1mo" and rest_interval("1mo") == "1M"
    assert normalize_timeframe("3d") == "3d"
    for bad in ("7m", "1H", "1s", ""):
        with pytest.raises(ValueError, match="not a timeframe Binance serves"):
            normalize_timeframe(bad)
