"""A local copy of Binance's data archive (data.binance.vision's layout, real-format zip and CHECKSUM
files built here) and of its REST market endpoints, served on a free loopback port from a thread.
Nothing leaves the machine.

The source data is deterministic: `source_bar` / `source_funding` give the row Binance would hold for a
time, so a test can compare what the downloader wrote with what the archive served.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

HOUR = 3_600_000
DAY = 86_400_000
STEP = {"1m": 60_000, "5m": 300_000, "1h": HOUR, "4h": 4 * HOUR, "1d": DAY}
KLINE_HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
    "taker_buy_quote_volume,ignore"
)
FUNDING_HEADER = "calc_time,funding_interval_hours,last_funding_rate"


def ms(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000)


def _h(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "big")


def _cents(x: int) -> str:
    return f"{x // 100}.{x % 100:02d}"


def source_bar(symbol: str, kind: str, t: int) -> tuple[int, str, str, str, str, str]:
    """The bar opening at `t`: (open_time_ms, open, high, low, close, volume) as Binance writes them."""
    h = _h(symbol, kind, t)
    base = 4_000_000 + (t // HOUR) % 5000 * 7
    o, c = base + h % 1000, base + (h >> 10) % 1000
    hi, lo = max(o, c) + (h >> 20) % 300, min(o, c) - (h >> 30) % 300
    vol = "0" if kind == "mark" else f"{(h >> 40) % 100}.{(h >> 50) % 1000:03d}"
    return (t, _cents(o), _cents(hi), _cents(lo), _cents(c), vol)


def source_bars(symbol: str, kind: str, tf: str, a: int, b: int) -> list[tuple[int, str, str, str, str, str]]:
    """Every bar opening in [a, b)."""
    step = STEP[tf]
    return [source_bar(symbol, kind, t) for t in range(-(-a // step) * step, b, step)]


def source_funding(symbol: str, a: int, b: int) -> list[tuple[int, str]]:
    """Funding every 8 h in [a, b): (time_ms, rate), rates of either sign."""
    out = []
    for t in range(-(-a // (8 * HOUR)) * 8 * HOUR, b, 8 * HOUR):
        out.append((t, f"{((_h(symbol, 'funding', t) % 2001) - 1000) / 10**7:.8f}"))
    return out


def kline_csv(rows: list[tuple[int, str, str, str, str, str]], tf: str, header: bool) -> str:
    lines = [KLINE_HEADER] if header else []
    for t, o, hi, lo, c, v in rows:
        lines.append(f"{t},{o},{hi},{lo},{c},{v},{t + STEP[tf] - 1},0,10,0,0,0")
    return "\n".join(lines) + "\n"


def funding_csv(rows: list[tuple[int, str]], header: bool = True) -> str:
    lines = [FUNDING_HEADER] if header else []
    lines += [f"{t},8,{r}" for t, r in rows]
    return "\n".join(lines) + "\n"


@dataclass
class LocalArchive:
    """The served folder plus what was asked of it; `fail_after_zips` makes it answer 500 to everything
    once that many zips were served (a server going down mid-download)."""

    root: Path
    url: str = ""
    requests: list[str] = field(default_factory=list)
    fail_after_zips: int | None = None
    zips_served: int = 0
    symbols: set[str] = field(default_factory=lambda: {"BTCUSDT", "ETHUSDT"})
    lock: threading.Lock = field(default_factory=threading.Lock)

    # --- building the archive's files
    def put(self, rel_path: str, csv_text: str, *, corrupt: bool = False) -> Path:
        """A zip holding one CSV (named like the zip) and its CHECKSUM; `corrupt` flips a byte of the
        zip after the checksum was taken."""
        path = self.root / rel_path
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(path.name.removesuffix(".zip") + ".csv", csv_text)
        data = buf.getvalue()
        checksum = hashlib.sha256(data).hexdigest()
        if corrupt:
            mid = len(data) // 2
            data = data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1 :]
        path.write_bytes(data)
        path.with_name(path.name + ".CHECKSUM").write_text(f"{checksum}  {path.name}\n")
        return path

    def month(
        self,
        symbol: str,
        tf: str,
        ym: str,
        *,
        kind: str = "klines",
        header: bool = True,
        corrupt: bool = False,
    ) -> Path:
        first = date.fromisoformat(ym + "-01")
        nxt = (first + timedelta(days=32)).replace(day=1)
        folder = "klines" if kind == "klines" else "markPriceKlines"
        rows = source_bars(symbol, kind, tf, ms(first), ms(nxt))
        rel = f"data/futures/um/monthly/{folder}/{symbol}/{tf}/{symbol}-{tf}-{ym}.zip"
        return self.put(rel, kline_csv(rows, tf, header), corrupt=corrupt)

    def day(self, symbol: str, tf: str, d: date, *, kind: str = "klines", corrupt: bool = False) -> Path:
        folder = "klines" if kind == "klines" else "markPriceKlines"
        rows = source_bars(symbol, kind, tf, ms(d), ms(d + timedelta(days=1)))
        rel = f"data/futures/um/daily/{folder}/{symbol}/{tf}/{symbol}-{tf}-{d:%Y-%m-%d}.zip"
        return self.put(rel, kline_csv(rows, tf, True), corrupt=corrupt)

    def funding_month(self, symbol: str, ym: str, *, header: bool = True) -> Path:
        first = date.fromisoformat(ym + "-01")
        nxt = (first + timedelta(days=32)).replace(day=1)
        rows = source_funding(symbol, ms(first), ms(nxt))
        rel = f"data/futures/um/monthly/fundingRate/{symbol}/{symbol}-fundingRate-{ym}.zip"
        return self.put(rel, funding_csv(rows, header))

    def zip_requests(self) -> list[str]:
        return [r for r in self.requests if r.endswith(".zip")]


def _rest(archive: LocalArchive, path: str, q: dict[str, str]) -> tuple[int, object]:
    """Binance's public market endpoints over the same source data: klines up to the bar open now
    (as Binance, the open bar included), funding rates up to now."""
    symbol = q.get("symbol", "")
    if symbol not in archive.symbols:
        return 400, {"code": -1121, "msg": "Invalid symbol."}
    now = int(time.time() * 1000)
    start = int(q.get("startTime", "0"))
    end = min(int(q.get("endTime", str(now))), now)
    if path == "/fapi/v1/fundingRate":
        rows = source_funding(symbol, start, end + 1)[: int(q.get("limit", "100"))]
        return 200, [
            {"symbol": symbol, "fundingTime": t, "fundingRate": r, "markPrice": "1"} for t, r in rows
        ]
    kind = "klines" if path == "/fapi/v1/klines" else "mark"
    tf = q["interval"]
    bars = source_bars(symbol, kind, tf, start, end + 1)[: int(q.get("limit", "500"))]
    return 200, [[t, o, h, lo, c, v, t + STEP[tf] - 1, "0", 10, "0", "0", "0"] for t, o, h, lo, c, v in bars]


def _handler(archive: LocalArchive) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        def _send(self, status: int, body: bytes, ctype: str = "application/octet-stream") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            with archive.lock:
                archive.requests.append(parts.path)
                down = archive.fail_after_zips is not None and archive.zips_served >= archive.fail_after_zips
            if down:
                self._send(500, b"down")
                return
            if parts.path.startswith("/fapi/"):
                q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                status, obj = _rest(archive, parts.path, q)
                self._send(status, json.dumps(obj).encode(), "application/json")
                return
            file = (archive.root / parts.path.lstrip("/")).resolve()
            if archive.root.resolve() not in file.parents or not file.is_file():
                self._send(404, b"<Error><Code>NoSuchKey</Code></Error>", "application/xml")
                return
            if file.suffix == ".zip":
                with archive.lock:
                    archive.zips_served += 1
            self._send(200, file.read_bytes())

    return Handler


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[LocalArchive]:
    arch = LocalArchive(tmp_path / "archive")
    arch.root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(arch))
    arch.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="local-archive", daemon=True)
    thread.start()
    try:
        yield arch
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
