"""Validation of `/admin/faults` settings: every refusal names the key and the value it refused.

The fault injector's settings arrive as JSON from tests and operators; a typo must be a clear 400
("outage.mode must be one of '5xx', 'refuse', 'hang' (got 'down')"), never a silently ignored key
or a fault that does something else than asked.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

MAX_SECONDS = 86_400.0  # one day: longer windows are typos (ms for s), not tests


class FaultConfigError(ValueError):
    """A fault setting the injector refuses; the message names the key and the bad value."""


def fields(name: str, value: Any, known: Iterable[str]) -> dict[str, Any]:
    """`value` as a JSON object whose keys are all in `known`."""
    names = list(known)
    if not isinstance(value, dict):
        raise FaultConfigError(
            f"{name} must be a JSON object with keys {', '.join(names)} (got {_shown(value)})"
        )
    unknown = sorted(k for k in value if k not in names)
    if unknown:
        raise FaultConfigError(f"unknown key '{name}.{unknown[0]}'; known: {', '.join(names)}")
    return value


def required(name: str, obj: dict[str, Any], key: str) -> Any:
    value = obj.get(key)
    if value is None:
        raise FaultConfigError(f"{name}.{key} is required")
    return value


def number(name: str, value: Any, *, positive: bool = False, maximum: float = MAX_SECONDS) -> float:
    """A finite number >= 0 (> 0 when `positive`), at most `maximum`."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise FaultConfigError(f"{name} must be a number (got {_shown(value)})")
    try:
        v = float(value)
    except ValueError:
        raise FaultConfigError(f"{name} must be a number (got {_shown(value)})") from None
    if not math.isfinite(v):
        raise FaultConfigError(f"{name} must be a finite number (got {_shown(value)})")
    if positive and v <= 0:
        raise FaultConfigError(f"{name} must be > 0 (got {_shown(value)})")
    if v < 0:
        raise FaultConfigError(f"{name} must be >= 0 (got {_shown(value)})")
    if v > maximum:
        raise FaultConfigError(f"{name} must be at most {maximum:g} (got {_shown(value)})")
    return v


def integer(name: str, value: Any, *, minimum: int, maximum: int = 1_000_000) -> int:
    """A whole number between `minimum` and `maximum` (1.0 passes, 1.5 and true do not)."""
    if isinstance(value, bool):
        raise FaultConfigError(f"{name} must be a whole number (got {_shown(value)})")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise FaultConfigError(f"{name} must be a whole number (got {_shown(value)})") from None
    if not math.isfinite(v) or v != int(v):
        raise FaultConfigError(f"{name} must be a whole number (got {_shown(value)})")
    if not minimum <= v <= maximum:
        raise FaultConfigError(f"{name} must be between {minimum} and {maximum} (got {_shown(value)})")
    return int(v)


def choice(name: str, value: Any, options: tuple[str, ...]) -> str:
    v = str(value) if isinstance(value, int | str) and not isinstance(value, bool) else None
    if v not in options:
        listed = ", ".join(f"'{o}'" for o in options)
        raise FaultConfigError(f"{name} must be one of {listed} (got {_shown(value)})")
    return v


def prefixes(name: str, value: Any) -> tuple[str, ...]:
    """One path prefix or a non-empty list of them, each starting with '/'."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise FaultConfigError(
            f"{name} must be a path prefix or a non-empty list of them (got {_shown(value)})"
        )
    for item in items:
        if not isinstance(item, str) or not item.startswith("/"):
            raise FaultConfigError(
                f"{name} entries must be path prefixes starting with '/' (got {_shown(item)})"
            )
    return tuple(items)


def prefix(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise FaultConfigError(f"{name} must be a path prefix starting with '/' (got {_shown(value)})")
    return value


def _shown(value: Any) -> str:
    """The value as the JSON it came in, shortened."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
