"""The meta-strategy chooser's brain: a contextual bandit over a few strategy arms, context = regime.

Pure (stdlib + pydantic): the caller passes the state in and gets a new state back, and passes the
random generator for Thompson sampling, so the same state and seed give the same choice.

Model. Each (regime, arm) cell keeps discounted sufficient statistics of its rewards (weight n, sum,
sum of squares). Its posterior mean is shrunk towards a prior built from the same arm in the *other*
regimes (itself shrunk towards 0), with `prior_strength` pseudo-observations: a regime seen rarely
borrows what the arm did elsewhere, a regime seen often speaks for itself. The posterior sd of the
mean is s/√(k0 + n), with s² blending `prior_var` and the cell's own variance. Thompson sampling draws
one value per arm from N(mean, sd²) and plays the largest. `discount` < 1 forgets old rewards of a
regime each time it gets a new one, so a strategy that stops working loses its lead (markets drift).

Rewards are the old "RL Feedback V2": PnL over margin (return on equity of the trade), squashed to
(−1, 1) by tanh(ROE / scale), so one liquidation-sized loss cannot dominate a hundred normal trades.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

REWARDS_STREAM = "quantum:stream:rl_rewards"  # written by activities/projections.py, read by the chooser
REWARD_SCALE = 0.25  # ROE at which the reward is tanh(1) ≈ 0.76
REWARD_FIELDS = ("trade_id", "strategy", "regime", "reward")


class RewardError(ValueError):
    """A reward entry is unusable; the message names the field and the value."""


# ------------------------------------------------------------------------------------------- rewards


def trade_margin(entry_notional: Decimal, leverage: int) -> Decimal:
    """Initial margin of a position: entry notional / leverage."""
    if leverage < 1:
        raise RewardError(f"leverage must be >= 1, got {leverage}")
    if not entry_notional.is_finite() or entry_notional <= 0:
        raise RewardError(f"entry notional must be > 0, got {entry_notional}")
    return entry_notional / Decimal(leverage)


def normalize_reward(realized_pnl: Decimal, margin: Decimal, *, scale: float = REWARD_SCALE) -> float:
    """tanh((net PnL / margin) / scale): bounded in (−1, 1), sign of the PnL, monotone in it."""
    if not realized_pnl.is_finite():
        raise RewardError(f"realized_pnl must be finite, got {realized_pnl}")
    if not margin.is_finite() or margin <= 0:
        raise RewardError(f"margin must be > 0, got {margin}")
    if not (scale > 0 and math.isfinite(scale)):
        raise RewardError(f"scale must be > 0, got {scale}")
    roe = float(realized_pnl / margin)
    return math.tanh(roe / scale)


class Reward(BaseModel):
    """One entry of `quantum:stream:rl_rewards` (one per closed trade)."""

    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)

    trade_id: str = Field(min_length=1, max_length=256)  # the position's workflow id
    strategy: str = Field(min_length=1, max_length=64)
    regime: str = Field(min_length=1, max_length=32)
    reward: float = Field(ge=-1.0, le=1.0, allow_inf_nan=False)
    symbol: str | None = None
    realized_pnl: Decimal | None = None
    margin: Decimal | None = None
    roe: float | None = None


def parse_reward(fields: Mapping[str | bytes, str | bytes]) -> Reward:
    """A stream entry's fields → `Reward`, or `RewardError` naming every bad or missing field."""
    d = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in fields.items()
    }
    missing = [f for f in REWARD_FIELDS if not d.get(f, "").strip()]
    if missing:
        raise RewardError(f"missing field(s): {', '.join(missing)} (have {sorted(d)})")
    raw = d["reward"].strip()
    try:
        value = float(raw)
    except ValueError:
        raise RewardError(f"reward: not a number ({raw!r})") from None
    if not math.isfinite(value):
        raise RewardError(f"reward: not a finite number ({raw!r})")
    try:
        return Reward.model_validate({**d, "reward": value})
    except (ValidationError, InvalidOperation) as e:
        problems = (
            "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
            if isinstance(e, ValidationError)
            else str(e)
        )
        raise RewardError(problems) from None


# -------------------------------------------------------------------------------------------- bandit


class ArmStats(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    n: float = Field(0.0, ge=0)  # discounted number of rewards
    total: float = 0.0
    total_sq: float = Field(0.0, ge=0)
    pulls: int = Field(0, ge=0)  # undiscounted count, for reports

    def add(self, reward: float, discount: float) -> ArmStats:
        return ArmStats(
            n=self.n * discount + 1.0,
            total=self.total * discount + reward,
            total_sq=self.total_sq * discount + reward * reward,
            pulls=self.pulls + 1,
        )

    def decay(self, discount: float) -> ArmStats:
        return ArmStats(
            n=self.n * discount,
            total=self.total * discount,
            total_sq=self.total_sq * discount,
            pulls=self.pulls,
        )


class BanditConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    arms: tuple[str, ...] = Field(min_length=1)
    prior_strength: float = Field(2.0, gt=0)  # pseudo-observations behind the pooled prior
    prior_var: float = Field(0.25, gt=0)  # reward variance assumed before data (rewards lie in (−1, 1))
    discount: float = Field(1.0, gt=0, le=1)  # per new reward of the regime; 1 = never forget

    @field_validator("arms")
    @classmethod
    def _distinct(cls, arms: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(arms)) != len(arms) or any(not a.strip() for a in arms):
            raise ValueError(f"arms must be distinct non-empty names, got {arms}")
        return arms


class BanditState(BaseModel):
    """Everything the chooser learned; JSON round-trips exactly (`to_json` / `from_json`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    config: BanditConfig
    cells: dict[str, dict[str, ArmStats]] = Field(default_factory=dict)  # regime → arm → stats
    updates: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _known_arms(self) -> BanditState:
        for regime, arms in self.cells.items():
            unknown = set(arms) - set(self.config.arms)
            if unknown:
                raise ValueError(f"regime {regime!r} has stats for unknown arms {sorted(unknown)}")
        return self

    @classmethod
    def new(cls, arms: tuple[str, ...], **config: float) -> BanditState:
        return cls(config=BanditConfig(arms=arms, **config))

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str | bytes) -> BanditState:
        try:
            return cls.model_validate_json(text)
        except ValidationError as e:
            raise ValueError(f"unreadable bandit state: {e}") from None

    def stats(self, regime: str, arm: str) -> ArmStats:
        return self.cells.get(regime, {}).get(arm, ArmStats())


def update(state: BanditState, regime: str, arm: str, reward: float) -> BanditState:
    """The state after one reward of `arm` in `regime` (older rewards of that regime discounted)."""
    if arm not in state.config.arms:
        raise ValueError(f"{arm!r} is not an arm of this bandit ({', '.join(state.config.arms)})")
    if not (math.isfinite(reward) and -1.0 <= reward <= 1.0):
        raise RewardError(f"reward must be a finite number in [-1, 1], got {reward}")
    d = state.config.discount
    cell = {a: s.decay(d) for a, s in state.cells.get(regime, {}).items()}
    cell[arm] = state.stats(regime, arm).decay(d).add(reward, 1.0)
    return state.model_copy(update={"cells": {**state.cells, regime: cell}, "updates": state.updates + 1})


class ArmView(BaseModel):
    model_config = ConfigDict(frozen=True)

    arm: str
    mean: float  # posterior mean reward
    sd: float  # posterior sd of that mean
    pulls: int


def posterior(state: BanditState, regime: str, arm: str) -> ArmView:
    cfg = state.config
    k0 = cfg.prior_strength
    other_n = other_total = 0.0
    for r, arms in state.cells.items():
        if r != regime and arm in arms:
            other_n += arms[arm].n
            other_total += arms[arm].total
    mu0 = other_total / (other_n + k0)  # the arm elsewhere, shrunk towards 0
    s = state.stats(regime, arm)
    mean = (k0 * mu0 + s.total) / (k0 + s.n)
    own_var = max(s.total_sq - s.total * s.total / s.n, 0.0) if s.n > 0 else 0.0  # n·variance
    var = (k0 * cfg.prior_var + own_var) / (k0 + s.n)
    return ArmView(arm=arm, mean=mean, sd=math.sqrt(var / (k0 + s.n)), pulls=s.pulls)


class BanditChoice(BaseModel):
    model_config = ConfigDict(frozen=True)

    regime: str
    arm: str
    sampled: dict[str, float]
    arms: tuple[ArmView, ...]


def choose(state: BanditState, regime: str, rng: random.Random) -> BanditChoice:
    """Thompson sampling: one draw per arm from its posterior; the largest wins (ties: arm order)."""
    views = tuple(posterior(state, regime, a) for a in state.config.arms)
    sampled = {v.arm: rng.gauss(v.mean, v.sd) for v in views}
    arm = max(state.config.arms, key=lambda a: sampled[a])
    return BanditChoice(regime=regime, arm=arm, sampled=sampled, arms=views)


def best_arm(state: BanditState, regime: str) -> str:
    """The arm with the highest posterior mean (exploitation only: reports and tests)."""
    views = [posterior(state, regime, a) for a in state.config.arms]
    return max(views, key=lambda v: v.mean).arm
