"""Who may call what: parameter merge, API key, HMAC-SHA256 signature, timestamp / recvWindow.

Binance's rules (notes/binance.md §2): the key travels in `X-MBX-APIKEY`; parameters may sit in the
query string, in an `application/x-www-form-urlencoded` body, or both (the query wins on a duplicate
name); the signature is `hex(HMAC_SHA256(secret, totalParams))` where totalParams is the raw query
string concatenated *directly* with the raw body, each without its `signature` pair; a request is
accepted when `timestamp < serverTime + 1000` and `serverTime - timestamp <= recvWindow`.

Nothing here logs or echoes a key, a secret or a signature.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import parse_qsl

from exchange.paper.errors import ApiError

NONE = 0  # public
API_KEY = 1  # USER_STREAM / MARKET_DATA: the key only
SIGNED = 2  # TRADE / USER_DATA: key plus signature

MAX_RECV_WINDOW = 60_000
DEFAULT_RECV_WINDOW = 5_000

_SIG_PREFIX = b"signature="


def split_signature(raw: bytes) -> tuple[bytes, bytes | None]:
    """`raw` without its `signature=...` pair(s), and the signature value (None when absent)."""
    if _SIG_PREFIX not in raw:
        return raw, None
    keep: list[bytes] = []
    sig: bytes | None = None
    for part in raw.split(b"&"):
        if part.startswith(_SIG_PREFIX):
            sig = part[len(_SIG_PREFIX) :]
        else:
            keep.append(part)
    return b"&".join(keep), sig


def merge_params(query: bytes, body: bytes) -> dict[str, str]:
    """Body parameters overlaid by query parameters (the query wins, as on Binance)."""
    params: dict[str, str] = {}
    if body:
        params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    if query:
        params.update(parse_qsl(query.decode("utf-8", "replace"), keep_blank_values=True))
    params.pop("signature", None)
    return params


def _missing(name: str) -> ApiError:
    return ApiError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


class Authenticator:
    """Checks one paper account's key pair."""

    def __init__(self, api_key: str, api_secret: str) -> None:
        self._key = api_key.encode()
        self._secret = api_secret.encode()

    def key_matches(self, key: str | bytes | None) -> bool:
        if not key:
            return False
        if isinstance(key, str):
            key = key.encode()
        return hmac.compare_digest(key, self._key)

    def check_key(self, key: bytes | None) -> None:
        if not key:
            raise ApiError(-2014, "API-key format invalid.", 401)
        if not hmac.compare_digest(key, self._key):
            raise ApiError(-2015, "Invalid API-key, IP, or permissions for action.", 401)

    def sign(self, payload: bytes) -> str:
        return hmac.new(self._secret, payload, hashlib.sha256).hexdigest()

    def check_signed(
        self, key: bytes | None, query: bytes, body: bytes, params: dict[str, str], now_ms: int
    ) -> None:
        """Raise the ApiError Binance would answer, or return when the request is authentic."""
        self.check_key(key)
        q, qsig = split_signature(query)
        b, bsig = split_signature(body)
        sig = qsig if qsig is not None else bsig
        if not sig:
            raise _missing("signature")
        ts_raw = params.get("timestamp")
        if not ts_raw:
            raise _missing("timestamp")
        try:
            ts = int(ts_raw)
        except ValueError:
            raise ApiError(
                -1100, "Illegal characters found in parameter 'timestamp'; legal range is '^[0-9]{1,20}$'."
            ) from None
        rw_raw = params.get("recvWindow")
        if rw_raw:
            try:
                recv_window = float(rw_raw)
            except ValueError:
                raise ApiError(
                    -1100,
                    "Illegal characters found in parameter 'recvWindow'; legal range is '^[0-9]{1,20}$'.",
                ) from None
            if recv_window <= 0 or recv_window > MAX_RECV_WINDOW:
                raise ApiError(-1131, "recvWindow must be less than 60000")
        else:
            recv_window = DEFAULT_RECV_WINDOW
        expected = self.sign(q + b).encode()
        if not hmac.compare_digest(expected, sig.lower()):
            raise ApiError(-1022, "Signature for this request is not valid.")
        if ts >= now_ms + 1000:
            raise ApiError(-1021, "Timestamp for this request was 1000ms ahead of the server's time.")
        if now_ms - ts > recv_window:
            raise ApiError(-1021, "Timestamp for this request is outside of the recvWindow.")
