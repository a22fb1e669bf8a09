"""Request parameters: Binance's raw string parameters read into values, the errors a missing or
malformed one earns (-1102, -1130), and the vocabularies the order endpoints accept."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from exchange.paper.errors import ApiError
from trading.instruments import FilterViolation

CLIENT_ID_RE = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
DECIMAL_RE = re.compile(r"^-?(\d+\.?\d*|\.\d+)$")
CONDITIONAL_TYPES = frozenset(
    {"STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"}
)
TIFS = frozenset({"GTC", "IOC", "FOK", "GTX"})


def _missing(name: str) -> ApiError:
    return ApiError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def _invalid(name: str) -> ApiError:
    return ApiError(-1130, f"Data sent for parameter '{name}' is not valid.")


def _req(p: dict[str, str], name: str) -> str:
    v = p.get(name)
    if v is None or v == "":
        raise _missing(name)
    return v


def _dec(p: dict[str, str], name: str, *, required: bool = True) -> Decimal | None:
    v = p.get(name)
    if v is None or v == "":
        if required:
            raise _missing(name)
        return None
    if not DECIMAL_RE.match(v):
        raise _invalid(name)
    try:
        return Decimal(v)
    except InvalidOperation:
        raise _invalid(name) from None


def _int(p: dict[str, str], name: str, default: int | None = None) -> int | None:
    v = p.get(name)
    if v is None or v == "":
        return default
    try:
        return int(v)
    except ValueError:
        raise _invalid(name) from None


def _bool(p: dict[str, str], name: str, default: bool = False) -> bool:
    v = p.get(name)
    if v is None or v == "":
        return default
    low = v.lower()
    if low == "true":
        return True
    if low == "false":
        return False
    raise _invalid(name)


def _limit(p: dict[str, str], default: int, maximum: int) -> int:
    n = _int(p, "limit", default)
    assert n is not None
    if n <= 0:
        raise _invalid("limit")
    return min(n, maximum)


def _filter_error(e: FilterViolation) -> ApiError:
    return ApiError(e.code, e.message)
