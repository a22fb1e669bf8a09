"""HMAC-SHA256 signing: Binance's documented vector and the parameter encoding we sign."""

from __future__ import annotations

from decimal import Decimal

from exchange.signing import Signer, encode_params, sign

SECRET = "2b5eb11e18796d12d88f13dc27dbbd02c2cc51ff7059765ed9821957d82bb4d9"
PAYLOAD = (
    "symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=9000&timeInForce=GTC"
    "&recvWindow=5000&timestamp=1591702613943"
)
EXPECTED = "3c661234138461fcc7a7d8746c6558c9842d4e10870d2ecbedf7777cad694af9"


def test_documented_vector_reproduces() -> None:
    assert sign(SECRET, PAYLOAD) == EXPECTED


def test_prekeyed_signer_matches_and_is_reusable() -> None:
    signer = Signer(SECRET)
    assert signer.sign(PAYLOAD) == EXPECTED
    assert signer.sign(PAYLOAD) == EXPECTED  # the keyed state is copied, not consumed
    assert SECRET not in repr(signer)


def test_query_plus_body_concatenated_without_separator() -> None:
    query, body = "symbol=BTCUSDT&side=BUY&type=LIMIT", "&quantity=1"
    # totalParams is the plain concatenation: split placement signs the same string.
    assert sign(SECRET, query + body) == sign(SECRET, "symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1")


def test_encode_params_builds_the_documented_payload() -> None:
    params = {
        "symbol": "BTCUSDT",
        "side": "BUY",
        "type": "LIMIT",
        "quantity": Decimal("1"),
        "price": Decimal("9000"),
        "timeInForce": "GTC",
        "recvWindow": 5000,
        "timestamp": 1591702613943,
    }
    assert encode_params(params) == PAYLOAD
    assert sign(SECRET, encode_params(params)) == EXPECTED


def test_encode_params_formats_values() -> None:
    assert encode_params({"a": None, "q": Decimal("1E-3"), "r": True, "s": False}) == "q=0.001&r=true&s=false"
    assert encode_params({"p": Decimal("0.00000100")}) == "p=0.00000100"
    # Characters outside the unreserved set are percent-encoded (what is sent is what is signed).
    assert encode_params({"c": "a:b/c d"}) == "c=a%3Ab%2Fc%20d"
    assert encode_params([("x", 1), ("y", "A-b_c.9")]) == "x=1&y=A-b_c.9"
