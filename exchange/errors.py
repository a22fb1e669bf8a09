"""The exchange client's typed errors: the class decides what the caller does.

    ExchangeError (code, http_status, message)
    ├── RetryableError          certain failure, nothing happened: retry with backoff
    │   ├── RateLimitedError    429 / -1003: wait `retry_after_s`, then retry
    │   │   └── IpBannedError   418: the IP is banned until `retry_after_s`
    │   └── ClockSkewError      -1021: resync the clock, then retry (the client does this once itself)
    ├── UnknownOutcomeError     the request may have executed: look the order up by client id first
    └── RejectedError           the venue said no: never retry the same request
        ├── OrderNotFoundError  -2013 / -2011 "Unknown order sent."
        └── OrderValidationError  refused locally before anything was sent

`classify()` is the pure mapping from (HTTP status, body, transport exception) to one of these.
Error texts come from the venue's answer or from the exception type, never from the request, so no
API key or secret can appear in them.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

__all__ = [
    "ClockSkewError",
    "ExchangeError",
    "IpBannedError",
    "OrderNotFoundError",
    "OrderValidationError",
    "RateLimitedError",
    "RejectedError",
    "RetryableError",
    "UnknownOutcomeError",
    "classify",
]

MSG_UNKNOWN_503 = "Unknown error, please check your request or try again later."
MSG_SERVICE_UNAVAILABLE = "Service Unavailable."


def _rebuild(cls: type[ExchangeError], state: dict[str, Any]) -> ExchangeError:
    err = cls.__new__(cls)
    Exception.__init__(err, state.get("message", ""))
    err.__dict__.update(state)
    return err


class ExchangeError(Exception):
    """A failed exchange call. `code` is Binance's error code (None when the venue gave none)."""

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        http_status: int | None = None,
        endpoint: str | None = None,
        client_order_id: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.http_status = http_status
        self.endpoint = endpoint
        self.client_order_id = client_order_id
        self.retry_after_s = retry_after_s

    def __str__(self) -> str:
        parts = []
        if self.code is not None:
            parts.append(f"[{self.code}]")
        parts.append(self.message)
        extra = []
        if self.http_status is not None:
            extra.append(f"HTTP {self.http_status}")
        if self.endpoint:
            extra.append(self.endpoint)
        if self.client_order_id:
            extra.append(f"clientOrderId={self.client_order_id}")
        if self.retry_after_s is not None:
            extra.append(f"retry after {self.retry_after_s:g} s")
        if extra:
            parts.append(f"({', '.join(extra)})")
        return " ".join(parts)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, http_status={self.http_status!r}, "
            f"message={self.message!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:  # picklable with keyword-only fields
        return (_rebuild, (type(self), dict(self.__dict__)))


class RetryableError(ExchangeError):
    """Certain failure; nothing executed. Retry with backoff."""


class RateLimitedError(RetryableError):
    """429 / -1003. Wait `retry_after_s` (when known) before the next request."""


class IpBannedError(RateLimitedError):
    """418: the IP is banned (2 minutes to 3 days). Nothing may be sent before `retry_after_s`."""


class ClockSkewError(RetryableError):
    """-1021: the request's timestamp is outside recvWindow. Resync time, then retry."""


class UnknownOutcomeError(ExchangeError):
    """The request may have reached the venue and executed. Look the order up by its client id
    (`client.find_order(symbol, client_order_id)`) before sending anything again."""


class RejectedError(ExchangeError):
    """The venue refused the request. Retrying the same request gives the same answer."""


class OrderNotFoundError(RejectedError):
    """-2013 "Order does not exist." / -2011 "Unknown order sent."."""


class OrderValidationError(RejectedError):
    """Refused locally before sending; `code` is what the venue would have answered (or None)."""


_RETRYABLE_CODES = frozenset({-1001, -1008})
_UNKNOWN_CODES = frozenset({-1000, -1006, -1007})
_NOT_FOUND_CODES = frozenset({-2013, -2011})

# Transport errors raised before any byte of the request left: certain failure.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


def _parse_body(body: Any) -> tuple[int | None, str | None]:
    if body is None:
        return None, None
    if isinstance(body, bytes | bytearray):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        text = body.strip()
        if text.startswith("{"):
            try:
                body = json.loads(text)
            except ValueError:
                return None, text[:300] or None
        else:
            return None, text[:300] or None
    if isinstance(body, dict):
        code = body.get("code")
        try:
            code = int(code) if code is not None else None
        except (TypeError, ValueError):
            code = None
        msg = body.get("msg")
        return code, (str(msg) if msg is not None else None)
    return None, None


def classify(
    http_status: int | None,
    body: Any = None,
    exc: BaseException | None = None,
    *,
    retry_after_s: float | None = None,
    endpoint: str | None = None,
    client_order_id: str | None = None,
) -> ExchangeError:
    """Map one failed exchange call to its typed error (pure: no I/O, no clock).

    `body` is the decoded JSON (`{"code":..,"msg":..}`), the raw text/bytes, or None; `exc` is the
    transport exception when no answer came back.
    """
    kw: dict[str, Any] = {
        "http_status": http_status,
        "endpoint": endpoint,
        "client_order_id": client_order_id,
    }
    if exc is not None:
        detail = str(exc).strip()
        text = type(exc).__name__ + (f": {detail}" if detail else "")
        if isinstance(exc, _NOT_SENT):
            return RetryableError(f"request not sent ({text})", **kw)
        if isinstance(exc, httpx.TimeoutException):
            return UnknownOutcomeError(
                f"no answer before the timeout ({text}); the request may have executed", **kw
            )
        return UnknownOutcomeError(
            f"connection failed mid-request ({text}); the request may have executed", **kw
        )

    code, msg = _parse_body(body)
    kw["code"] = code
    message = msg or (f"HTTP {http_status}" if http_status is not None else "unknown error")

    if http_status == 418:
        return IpBannedError(message, retry_after_s=retry_after_s, **kw)
    if http_status == 429 or code == -1003:
        return RateLimitedError(message, retry_after_s=retry_after_s, **kw)
    if code == -1021:
        return ClockSkewError(message, **kw)
    if code in _UNKNOWN_CODES:
        return UnknownOutcomeError(message, **kw)
    if code in _RETRYABLE_CODES:
        return RetryableError(message, **kw)
    if http_status == 408:
        return UnknownOutcomeError(message, **kw)
    if http_status is not None and http_status >= 500:
        if msg is not None and msg.strip() == MSG_SERVICE_UNAVAILABLE:
            return RetryableError(message, **kw)
        # 503 "Unknown error, …" and any other 5xx: Binance's docs say the execution status is
        # UNKNOWN and could have been a success, so never assume failure.
        return UnknownOutcomeError(message, **kw)
    if code in _NOT_FOUND_CODES:
        return OrderNotFoundError(message, **kw)
    return RejectedError(message, **kw)
