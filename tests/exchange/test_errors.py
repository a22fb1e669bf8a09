"""`classify()`: every code / status family maps to the error class that decides what the caller does."""

from __future__ import annotations

import pickle

import httpx
import pytest

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

UNKNOWN_503 = "Unknown error, please check your request or try again later."


def body(code: int, msg: str = "x") -> dict[str, object]:
    return {"code": code, "msg": msg}


CASES = [
    # retryable: certain failure
    (500, body(-1001, "Internal error; unable to process your request. Please try again."), RetryableError),
    (503, body(-1008, "Request throttled by system-level protection."), RetryableError),
    (503, body(-1001, "Service Unavailable."), RetryableError),
    (503, {"msg": "Service Unavailable."}, RetryableError),
    (503, "Service Unavailable.", RetryableError),
    (503, b"Service Unavailable.", RetryableError),
    # rate limits
    (429, body(-1003, "Too many requests."), RateLimitedError),
    (400, body(-1003, "Way too many requests; IP banned."), RateLimitedError),
    (429, None, RateLimitedError),
    (418, body(-1003, "IP banned"), IpBannedError),
    (418, None, IpBannedError),
    # clock
    (400, body(-1021, "Timestamp for this request is outside of the recvWindow."), ClockSkewError),
    # unknown outcome: look up before resending
    (500, body(-1000, "An unknown error occurred while processing the request."), UnknownOutcomeError),
    (500, body(-1006, "Unexpected response"), UnknownOutcomeError),
    (408, body(-1007, "Timeout waiting for response from backend server."), UnknownOutcomeError),
    (408, None, UnknownOutcomeError),
    (503, body(-1000, UNKNOWN_503), UnknownOutcomeError),
    (503, {"msg": UNKNOWN_503}, UnknownOutcomeError),
    (503, UNKNOWN_503, UnknownOutcomeError),
    (502, "<html>Bad Gateway</html>", UnknownOutcomeError),  # unknown 5xx: never assume failure
    # rejected: never retried
    (400, body(-2019, "Margin is insufficient."), RejectedError),
    (400, body(-2022, "ReduceOnly Order is rejected."), RejectedError),
    (400, body(-4164, "Order's notional must be no smaller than 100"), RejectedError),
    (400, body(-1111, "Precision is over the maximum defined for this asset."), RejectedError),
    (400, body(-1121, "Invalid symbol."), RejectedError),
    (400, body(-1022, "Signature for this request is not valid."), RejectedError),
    (401, body(-2015, "Invalid API-key, IP, or permissions for action"), RejectedError),
    (400, body(-4120, "Order type not supported for this endpoint."), RejectedError),
    (400, body(-4116, "clientOrderId is duplicated"), RejectedError),
    (400, body(-4046, "No need to change margin type."), RejectedError),
    (403, None, RejectedError),
    (400, body(-2013, "Order does not exist."), OrderNotFoundError),
    (400, body(-2011, "Unknown order sent."), OrderNotFoundError),
]


@pytest.mark.parametrize(("status", "payload", "expected"), CASES)
def test_classify_answers(status: int, payload: object, expected: type[ExchangeError]) -> None:
    err = classify(status, payload, None)
    assert type(err) is expected
    assert err.http_status == status
    if isinstance(payload, dict) and "code" in payload:
        assert err.code == payload["code"]


def test_hierarchy_decides_the_caller_action() -> None:
    assert issubclass(RateLimitedError, RetryableError)
    assert issubclass(IpBannedError, RateLimitedError)
    assert issubclass(ClockSkewError, RetryableError)
    assert issubclass(OrderValidationError, RejectedError)
    assert issubclass(OrderNotFoundError, RejectedError)
    assert not issubclass(UnknownOutcomeError, RetryableError | RejectedError)
    assert not issubclass(RejectedError, RetryableError)


def _req() -> httpx.Request:
    return httpx.Request("POST", "http://127.0.0.1:1/fapi/v1/order")


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (httpx.ConnectError("Connection refused", request=_req()), RetryableError),
        (httpx.ConnectTimeout("connect timed out", request=_req()), RetryableError),
        (httpx.PoolTimeout("pool", request=_req()), RetryableError),
        (httpx.ReadTimeout("timed out", request=_req()), UnknownOutcomeError),
        (httpx.WriteTimeout("timed out", request=_req()), UnknownOutcomeError),
        (httpx.ReadError("reset", request=_req()), UnknownOutcomeError),
        (
            httpx.RemoteProtocolError("Server disconnected without sending a response.", request=_req()),
            UnknownOutcomeError,
        ),
    ],
)
def test_classify_transport_errors(exc: Exception, expected: type[ExchangeError]) -> None:
    err = classify(None, None, exc, client_order_id="cid-1")
    assert type(err) is expected
    assert err.code is None and err.client_order_id == "cid-1"
    assert type(exc).__name__ in str(err)


def test_retry_after_endpoint_and_client_id_are_carried() -> None:
    err = classify(
        429,
        body(-1003, "Too many requests."),
        None,
        retry_after_s=7,
        endpoint="POST /fapi/v1/order",
        client_order_id="abc",
    )
    assert isinstance(err, RateLimitedError) and err.retry_after_s == 7
    text = str(err)
    assert "-1003" in text and "HTTP 429" in text and "POST /fapi/v1/order" in text and "abc" in text
    assert "retry after 7 s" in text


def test_errors_pickle_round_trip() -> None:
    err = classify(503, {"msg": UNKNOWN_503}, None, client_order_id="cid-9", endpoint="POST /fapi/v1/order")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is UnknownOutcomeError
    assert (back.code, back.http_status, back.client_order_id, str(back)) == (
        err.code,
        err.http_status,
        err.client_order_id,
        str(err),
    )


def test_garbage_bodies_do_not_crash() -> None:
    assert type(classify(400, "{not json", None)) is RejectedError
    assert type(classify(400, {"code": "abc"}, None)) is RejectedError
    assert type(classify(400, [1, 2], None)) is RejectedError
