"""HTTP with retries, and the archive's files fetched, checked against their `.CHECKSUM` and cached.

A zip is kept in the cache (`<out>/.download/archive/<the archive's path>`, beside its CHECKSUM) only
after its sha256 matched; a later run reuses it without asking the archive again (a download
interrupted half-way resumes there). A cached zip is checked again before use.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from signals.download.errors import ChecksumError, DownloadError
from signals.download.layout import Piece

_CHECKSUM_RE = re.compile(r"^([0-9a-fA-F]{64})\s+\*?(\S+)\s*$")


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder and os.replace: a reader (or a crash) never sees half a
    file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class Http:
    """GET with retries on connection errors, 5xx and 429 (backoff doubling from `backoff_s`)."""

    def __init__(
        self,
        client: httpx.Client,
        retries: int = 3,
        backoff_s: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.retries = retries
        self.backoff_s = backoff_s
        self.sleep = sleep

    def get(self, url: str, params: dict[str, str] | None = None) -> httpx.Response:
        """The response (any status below 500 but 429); DownloadError once the retries are spent."""
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                resp = self.client.get(url, params=params)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
                continue
            if resp.status_code >= 500 or resp.status_code == 429:
                problem = f"HTTP {resp.status_code}"
                continue
            return resp
        raise DownloadError(f"GET {url}: {problem} (after {self.retries + 1} tries)")


@dataclass(frozen=True)
class Fetched:
    data: bytes
    source: str  # "downloaded" or "cached"


def parse_checksum(text: str, name: str) -> str:
    """The sha256 of "<sha256>  <name>"; a file naming another zip is refused."""
    m = _CHECKSUM_RE.match(text.strip())
    if m is None:
        raise ChecksumError(f"{name}.CHECKSUM is not '<sha256>  <file name>': {text.strip()[:80]!r}")
    if m.group(2) != name:
        raise ChecksumError(f"{name}.CHECKSUM names another file, {m.group(2)!r}")
    return m.group(1).lower()


class Archive:
    """The archive at `base_url`, through a cache of verified zips in `cache_dir`."""

    def __init__(self, base_url: str, cache_dir: Path, http: Http) -> None:
        self.base_url = base_url.rstrip("/")
        self.cache_dir = cache_dir
        self.http = http

    def cached_paths(self, piece: Piece) -> tuple[Path, Path]:
        zip_path = self.cache_dir / piece.rel_path
        return zip_path, zip_path.with_name(zip_path.name + ".CHECKSUM")

    def fetch(self, piece: Piece) -> Fetched | None:
        """The verified zip of `piece`, or None when the archive has no such file (404)."""
        zip_path, sum_path = self.cached_paths(piece)
        if zip_path.is_file() and sum_path.is_file():
            data = zip_path.read_bytes()
            try:
                want = parse_checksum(sum_path.read_text(encoding="ascii", errors="replace"), piece.name)
            except ChecksumError:
                want = ""
            if hashlib.sha256(data).hexdigest() == want:
                return Fetched(data, "cached")
            self.forget(piece)  # a damaged cache entry: fetch it again
        url = piece.url(self.base_url)
        resp = self.http.get(url + ".CHECKSUM")
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise DownloadError(f"GET {url}.CHECKSUM: HTTP {resp.status_code}")
        checksum_text = resp.text
        want = parse_checksum(checksum_text, piece.name)
        data = b""
        for _ in range(2):  # a corrupted transfer gets one more try; a corrupted file is refused
            resp = self.http.get(url)
            if resp.status_code == 404:
                raise DownloadError(f"GET {url}: 404, though its CHECKSUM exists")
            if resp.status_code != 200:
                raise DownloadError(f"GET {url}: HTTP {resp.status_code}")
            data = resp.content
            if hashlib.sha256(data).hexdigest() == want:
                atomic_write(zip_path, data)
                atomic_write(sum_path, checksum_text.encode("ascii", errors="replace"))
                return Fetched(data, "downloaded")
        got = hashlib.sha256(data).hexdigest()
        raise ChecksumError(
            f"{piece.name}: sha256 {got} does not match its CHECKSUM {want}: refused (a corrupted file "
            "or mirror); nothing written"
        )

    def forget(self, piece: Piece) -> None:
        """Drop a piece from the cache (its rows are in the output file now, or it was damaged)."""
        for p in self.cached_paths(piece):
            p.unlink(missing_ok=True)
        folder = self.cached_paths(piece)[0].parent
        while folder != self.cache_dir and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent
