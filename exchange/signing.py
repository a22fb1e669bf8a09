"""HMAC-SHA256 request signing for Binance USDⓈ-M (SIGNED endpoints).

`signature = hex(HMAC_SHA256(secret, totalParams))`, where totalParams is the query string
concatenated directly with the form body (no `&` between them); the signature is sent last.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from decimal import Decimal
from urllib.parse import quote

__all__ = ["Signer", "encode_params", "sign"]


def sign(secret: str, total_params: str) -> str:
    """Hex HMAC-SHA256 of `total_params` (query string + body) under `secret`."""
    return hmac.new(secret.encode(), total_params.encode(), hashlib.sha256).hexdigest()


class Signer:
    """A signer holding the secret's pre-keyed HMAC state, so each request only copies and feeds it.

    The secret is kept in a private attribute and is never shown by `repr`.
    """

    __slots__ = ("_mac",)

    def __init__(self, secret: str) -> None:
        self._mac = hmac.new(secret.encode(), digestmod=hashlib.sha256)

    def sign(self, total_params: str) -> str:
        mac = self._mac.copy()
        mac.update(total_params.encode())
        return mac.hexdigest()

    def __repr__(self) -> str:
        return "Signer(<secret hidden>)"


def _fmt(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        # Plain notation, never exponent form ("1E-3" would be refused by the venue).
        return format(value, "f")
    return str(value)


# Characters Binance (and urlencode's default) leave alone in a query component.
_SAFE = ""


def encode_params(params: Mapping[str, object] | Iterable[tuple[str, object]]) -> str:
    """`k=v&k=v` in the given order, skipping None values; Decimals in plain notation, bools lowercase."""
    items = params.items() if isinstance(params, Mapping) else params
    parts = []
    for key, value in items:
        if value is None:
            continue
        text = _fmt(value)
        # Fast path: most of our values are plain ASCII alphanumerics, dots and dashes.
        if not text.isalnum() and not _plain(text):
            text = quote(text, safe=_SAFE)
        parts.append(f"{key}={text}")
    return "&".join(parts)


_PLAIN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-_")


def _plain(text: str) -> bool:
    return all(ch in _PLAIN for ch in text)
