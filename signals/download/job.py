"""One download: a kind (klines, mark, funding), a symbol, a timeframe, a range of days.

Plan the archive's files (`layout.plan`), skip what the output file already covers, fetch and verify
the rest (a month not published yet becomes its days; days not published yet, and today, come from
the REST tail), merge with the existing file and write it atomically. What a file covers is kept in
`<out>/.download/<file>.json` (with the file's sha256, so a file changed by hand is measured again);
zips verified before an interruption stay cached there until their rows are written.
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from signals.data import bar_close_ms, funding_path, kline_path, mark_path
from signals.download.convert import Row, archive_rows, merge, read_output, render
from signals.download.errors import EndpointMissing, UnknownSymbolError
from signals.download.fetch import Archive, atomic_write
from signals.download.layout import Piece, day_ms, days_of, has_daily, iso, maybe_unpublished, plan
from signals.download.rest import RestTail

Interval = tuple[int, int]  # [start_ms, end_ms)
STATE_DIR = ".download"


@dataclass(frozen=True)
class Request:
    kind: str  # klines, mark or funding
    symbol: str
    timeframe: str | None  # None for funding
    start: date
    end: date  # inclusive

    @property
    def label(self) -> str:
        return f"{self.symbol} {self.kind}" + (f" {self.timeframe}" if self.timeframe else "")


@dataclass
class Outcome:
    path: Path
    rows: int = 0
    added: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    downloaded: int = 0
    cached: int = 0
    rest_rows: int = 0
    written: bool = False
    warnings: list[str] = field(default_factory=list)


def output_path(req: Request, out_dir: Path) -> Path:
    if req.kind == "funding":
        return funding_path(req.symbol, out_dir)
    assert req.timeframe is not None
    if req.kind == "mark":
        return mark_path(req.symbol, req.timeframe, out_dir)
    return kline_path(req.symbol, req.timeframe, out_dir)


def add_interval(done: list[Interval], new: Interval) -> list[Interval]:
    """`done` with `new` added, sorted and merged."""
    out: list[Interval] = []
    for a, b in sorted([*done, new]):
        if b <= a:
            continue
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def covered(done: list[Interval], a: int, b: int) -> bool:
    return b <= a or any(x <= a and b <= y for x, y in done)


def first_uncovered(done: list[Interval], a: int) -> int:
    for x, y in done:
        if x <= a < y:
            return y
    return a


class Job:
    def __init__(
        self,
        out_dir: Path,
        archive: Archive,
        rest: RestTail | None,
        now_ms: int,
        log: Callable[[str], None],
    ) -> None:
        self.out_dir = out_dir
        self.archive = archive
        self.rest = rest
        self.now_ms = now_ms
        self.today = datetime.fromtimestamp(now_ms / 1000, UTC).date()
        self.log = log

    # ------------------------------------------------------------------ what the file already holds
    def _manifest_path(self, path: Path) -> Path:
        return self.out_dir / STATE_DIR / f"{path.name}.json"

    def _coverage(self, path: Path, rows: list[Row], timeframe: str | None) -> list[Interval]:
        if not path.is_file():
            return []
        try:
            manifest = json.loads(self._manifest_path(path).read_text())
            if manifest.get("sha256") == hashlib.sha256(path.read_bytes()).hexdigest():
                return [(int(a), int(b)) for a, b in manifest["done"]]
        except (OSError, ValueError, KeyError, TypeError):
            pass
        if not rows:
            return []
        last_end = rows[-1][0] + 1 if timeframe is None else bar_close_ms(timeframe, rows[-1][0]) + 1
        return [(rows[0][0], last_end)]

    # ------------------------------------------------------------------ the run
    def run(self, req: Request) -> Outcome:
        path = output_path(req, self.out_dir)
        out = Outcome(path)
        existing = read_output(path, req.kind) if path.is_file() else []
        done = self._coverage(path, existing, req.timeframe)
        start_ms = day_ms(req.start)
        end_ms = min(day_ms(req.end + timedelta(days=1)), self.now_ms)
        planned = plan(req.kind, req.symbol, req.timeframe, req.start, req.end, self.today)
        horizon = planned[-1].end_ms if planned else start_ms  # where the archive's part ends

        def clip(p: Piece) -> Interval:
            return (max(p.start_ms, start_ms), min(p.end_ms, end_ms))

        queue = deque(p for p in planned if not covered(done, *clip(p)))
        skipped = len(planned) - len(queue)
        if skipped:
            self.log(f"{req.label}: {skipped} of {len(planned)} archive files already in {path.name}")
        total, k = len(queue), 0
        archive_rows_: list[Row] = []
        used: list[Piece] = []
        absent_old: list[Piece] = []
        rest_from = horizon
        while queue:
            p = queue.popleft()
            k += 1
            tag = f"[{k}/{total}] {req.label} {p}"
            got = self.archive.fetch(p)
            if got is None:
                if not maybe_unpublished(p, self.today):
                    absent_old.append(p)
                    done = add_interval(done, clip(p))
                    self.log(f"{tag}: not in the archive (404)")
                elif p.period == "monthly" and has_daily(req.kind, req.timeframe):
                    days = [d for d in days_of(p) if d.start_ms < end_ms and not covered(done, *clip(d))]
                    queue.extendleft(reversed(days))
                    total += len(days)
                    self.log(f"{tag}: not published yet; its {len(days)} days instead")
                else:
                    rest_from = min(rest_from, clip(p)[0])
                    self.log(f"{tag}: not published yet; from the REST tail")
                continue
            rows = [r for r in archive_rows(got.data, p.name, req.kind) if start_ms <= r[0] < end_ms]
            archive_rows_.extend(rows)
            used.append(p)
            done = add_interval(done, clip(p))
            out.downloaded += got.source == "downloaded"
            out.cached += got.source == "cached"
            self.log(f"{tag}: {got.source} {len(got.data) / 1000:.1f} kB, checksum ok, {len(rows)} rows")

        rest_rows: list[Row] = []
        rest_unknown: UnknownSymbolError | None = None
        tail_start = first_uncovered(done, max(rest_from, start_ms))
        if tail_start < end_ms:
            rest_rows, rest_unknown = self._tail(req, tail_start, end_ms, out)
            if rest_rows:
                last = rest_rows[-1][0]
                tail_end = last + 1 if req.timeframe is None else bar_close_ms(req.timeframe, last) + 1
                done = add_interval(done, (tail_start, tail_end))
        out.rest_rows = len(rest_rows)

        if not existing and not archive_rows_ and not rest_rows:
            if absent_old or rest_unknown is not None:
                why = (
                    f"every archive file answered 404 ({len(absent_old)} files)"
                    if absent_old
                    else str(rest_unknown)
                )
                raise UnknownSymbolError(
                    f"{req.symbol}: no {req.kind}{' ' + req.timeframe if req.timeframe else ''} from "
                    f"{req.start} to {req.end}: {why}. Not a Binance USDⓈ-M symbol, or not trading then"
                )
            out.warnings.append(f"{req.label}: no closed rows in {req.start} … {req.end}; no file written")
            return out
        final = merge(existing, rest_rows, archive_rows_)  # the archive wins a time the REST tail holds
        out.rows, out.added = len(final), len(final) - len(existing)
        out.first_ms, out.last_ms = final[0][0], final[-1][0]
        if req.timeframe is not None:
            out.warnings.extend(self._gaps(req, final))
        if final != existing or not path.is_file():
            data = render(final, req.kind, req.timeframe)
            atomic_write(path, data)
            out.written = True
            sha = hashlib.sha256(data).hexdigest()
        else:
            sha = hashlib.sha256(path.read_bytes()).hexdigest()
        atomic_write(self._manifest_path(path), json.dumps({"sha256": sha, "done": done}).encode())
        for p in used:  # their rows are in the file now
            self.archive.forget(p)
        return out

    def _tail(
        self, req: Request, a: int, b: int, out: Outcome
    ) -> tuple[list[Row], UnknownSymbolError | None]:
        if self.rest is None:
            out.warnings.append(f"{req.label}: REST tail off; {iso(a)} → {iso(b)} UTC not fetched")
            return [], None
        self.log(f"{req.label}: REST tail {iso(a)} → {iso(b)} UTC from {self.rest.base_url}")
        try:
            if req.kind == "funding":
                rows: list[Row] = list(self.rest.funding(req.symbol, a, b))
            else:
                assert req.timeframe is not None
                rows = list(self.rest.klines(req.kind, req.symbol, req.timeframe, a, b, self.now_ms))
        except EndpointMissing as exc:
            out.warnings.append(f"{req.label}: {exc}; {iso(a)} → {iso(b)} UTC not fetched")
            return [], None
        except UnknownSymbolError as exc:
            out.warnings.append(f"{req.label}: REST tail: {exc}")
            return [], exc
        self.log(f"{req.label}: REST tail: {len(rows)} rows")
        return rows, None

    @staticmethod
    def _gaps(req: Request, rows: list[Row]) -> list[str]:
        """Bars missing between two the sources hold (the venue's own outages): reported, not filled —
        nothing in these files is made up."""
        assert req.timeframe is not None
        gaps = [
            (rows[i][0], rows[i + 1][0])
            for i in range(len(rows) - 1)
            if bar_close_ms(req.timeframe, rows[i][0]) + 1 != rows[i + 1][0]
        ]
        if not gaps:
            return []
        shown = ", ".join(f"{iso(a)} → {iso(b)}" for a, b in gaps[:3])
        more = f" and {len(gaps) - 3} more" if len(gaps) > 3 else ""
        return [f"{req.label}: {len(gaps)} gap(s) in the sources, kept as gaps: after {shown}{more}"]
