"""The REST tail: the bars (or funding rates) the archive does not hold yet, from the venue's public
endpoints — `/fapi/v1/klines`, `/fapi/v1/markPriceKlines`, `/fapi/v1/fundingRate` — page by page.
Only closed bars are kept: the bar still open would be written with its prices of the moment."""

from __future__ import annotations

from signals.data import bar_close_ms
from signals.download.convert import FundingRow, KlineRow, funding_row, kline_row
from signals.download.errors import DownloadError, EndpointMissing, UnknownSymbolError
from signals.download.fetch import Http
from signals.download.layout import REST_PATH, rest_interval

KLINES_LIMIT = 1500  # the most Binance (and the paper exchange) return per request
FUNDING_LIMIT = 1000
MAX_PAGES = 100_000  # a guard against a server that never stops answering the same page


class RestTail:
    def __init__(self, base_url: str, http: Http) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = http

    def _get(self, kind: str, symbol: str, params: dict[str, str]) -> list:
        url = self.base_url + REST_PATH[kind]
        resp = self.http.get(url, params={"symbol": symbol, **params})
        if resp.status_code == 404:
            raise EndpointMissing(f"{self.base_url} does not serve {REST_PATH[kind]} (404)")
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.status_code == 400 and isinstance(body, dict) and body.get("code") == -1121:
            msg = body.get("msg", "Invalid symbol.")
            raise UnknownSymbolError(f"{symbol}: {self.base_url} answers {msg!r}")
        if resp.status_code != 200 or not isinstance(body, list):
            detail = body.get("msg") if isinstance(body, dict) else resp.text[:200]
            raise DownloadError(f"GET {url} ({symbol}): HTTP {resp.status_code}: {detail}")
        return body

    def klines(
        self, kind: str, symbol: str, timeframe: str, start_ms: int, end_ms: int, now_ms: int
    ) -> list[KlineRow]:
        """Closed bars with start_ms <= open < end_ms (closed: close time before `now_ms`)."""
        out: list[KlineRow] = []
        cursor = start_ms
        for _ in range(MAX_PAGES):
            if cursor >= end_ms:
                break
            page = self._get(
                kind,
                symbol,
                {
                    "interval": rest_interval(timeframe),
                    "startTime": str(cursor),
                    "endTime": str(end_ms - 1),
                    "limit": str(KLINES_LIMIT),
                },
            )
            last = cursor - 1
            for fields in page:
                try:
                    row = kline_row([str(x) for x in fields[:6]])
                except (ValueError, IndexError, ArithmeticError):
                    where = self.base_url + REST_PATH[kind]
                    raise DownloadError(f"{where}: not a kline: {fields!r}") from None
                last = max(last, row[0])
                if cursor <= row[0] < end_ms and bar_close_ms(timeframe, row[0]) < now_ms:
                    out.append(row)
            if len(page) < KLINES_LIMIT or last < cursor:
                break
            cursor = last + 1
        return out

    def funding(self, symbol: str, start_ms: int, end_ms: int) -> list[FundingRow]:
        """Funding rates with start_ms <= funding time < end_ms."""
        out: list[FundingRow] = []
        cursor = start_ms
        for _ in range(MAX_PAGES):
            if cursor >= end_ms:
                break
            page = self._get(
                "funding",
                symbol,
                {"startTime": str(cursor), "endTime": str(end_ms - 1), "limit": str(FUNDING_LIMIT)},
            )
            last = cursor - 1
            for item in page:
                try:
                    row = funding_row([str(item["fundingTime"]), str(item["fundingRate"])])
                except (KeyError, TypeError, ValueError, ArithmeticError):
                    where = self.base_url + REST_PATH["funding"]
                    raise DownloadError(f"{where}: not a funding rate: {item!r}") from None
                last = max(last, row[0])
                if cursor <= row[0] < end_ms:
                    out.append(row)
            if len(page) < FUNDING_LIMIT or last < cursor:
                break
            cursor = last + 1
        return out
