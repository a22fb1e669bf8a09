"""The champion/challenger rule and the shadow check: promote only a real out-of-sample win, wait on too
few rows, refuse implausible scores; a shadow prediction is never tradeable, however it is spelled."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from trading.promotion import ModelScore, PromotionPolicy, Verdict, decide_promotion, is_tradeable


def score(
    auc: float | None, logloss: float | None = 0.693, rows: int = 1000, version: str = "v"
) -> ModelScore:
    return ModelScore(version=version, rows=rows, auc=auc, logloss=logloss)


@pytest.mark.parametrize(
    ("challenger", "champion", "verdict", "why"),
    [
        (score(0.53), score(0.52, version="c1"), Verdict.PROMOTE, "beats the champion"),
        (score(0.523), score(0.52), Verdict.REJECT, "does not beat the champion by 0.005"),
        (score(0.52), score(0.52), Verdict.REJECT, "does not beat"),  # equal is not better
        (score(0.51), score(0.52), Verdict.REJECT, "does not beat"),
        (score(0.53, logloss=0.70), score(0.52, logloss=0.69), Verdict.REJECT, "worse log-loss"),
        (score(0.53, rows=120), score(0.50), Verdict.WAIT, "only 120 out-of-sample rows"),
        (score(0.65), None, Verdict.REJECT, "suspected leakage"),
        (score(None), score(0.5), Verdict.REJECT, "no out-of-sample score"),
        (score(0.51), None, Verdict.PROMOTE, "no champion yet"),
        (score(0.51), ModelScore(version="c1", note="file corrupted"), Verdict.PROMOTE, "file corrupted"),
    ],
)
def test_decide_promotion(
    challenger: ModelScore, champion: ModelScore | None, verdict: Verdict, why: str
) -> None:
    d = decide_promotion(challenger, champion)
    assert d.verdict is verdict and why in d.reason, d.reason
    assert d.promote is (verdict is Verdict.PROMOTE)


def test_policy_is_the_operators_to_tune() -> None:
    strict = PromotionPolicy(min_auc_gain=0.02, min_rows=2000)
    assert decide_promotion(score(0.53), score(0.52), strict).verdict is Verdict.WAIT
    assert decide_promotion(score(0.53, rows=5000), score(0.52, rows=5000), strict).verdict is Verdict.REJECT


@dataclass
class Decision:
    side: str
    shadow: bool = False


def test_shadow_predictions_are_never_tradeable() -> None:
    assert is_tradeable(Decision("LONG"))
    assert not is_tradeable(Decision("LONG", shadow=True))
    assert is_tradeable({"symbol": "BTCUSDT", "side": "LONG"})  # a champion's signal has no flag
    for flag in ("true", "True", "1", b"true", True):
        assert not is_tradeable({"side": "LONG", "shadow": flag}), flag
    assert not is_tradeable({b"side": b"LONG", b"shadow": b"true"})  # raw Redis stream fields
    for flag in ("false", "0", b"false", False):
        assert is_tradeable({"side": "LONG", "shadow": flag}), flag
