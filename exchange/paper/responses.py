"""The paper exchange's answers as bytes: JSON bodies (orjson when installed, else the stdlib; a Decimal
is written as its string) and Binance's answer to an unexpected failure."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from starlette.responses import Response

from exchange.paper.errors import ApiError

try:  # optional speed-up; the stdlib is the fallback
    import orjson

    def dumps(obj: Any) -> bytes:
        return orjson.dumps(obj, default=_default)
except ImportError:  # pragma: no cover - depends on the environment

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":"), default=_default).encode()


def _default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


UNKNOWN_ERROR = ApiError(-1000, "An unknown error occured while processing the request.", 500)


def _json_response(obj: Any, status: int = 200) -> Response:
    return Response(dumps(obj), status_code=status, media_type="application/json")
