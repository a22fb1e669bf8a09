"""Binance USDⓈ-M client (and, under `exchange.paper`, the Binance-compatible paper exchange)."""

from exchange.client import BinanceFuturesClient, new_client_id
from exchange.errors import (
    ClockSkewError,
    ExchangeError,
    IpBannedError,
    OrderNotFoundError,
    OrderValidationError,
    RateLimitedError,
    RejectedError,
    RetryableError,
    UnknownOutcomeError,
    classify,
)
from exchange.signing import sign

__all__ = [
    "BinanceFuturesClient",
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
    "new_client_id",
    "sign",
]
