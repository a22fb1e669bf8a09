"""Inputs, results and message types of the workflows (signals, updates, queries) and of the activities
they call (workflows/calls.py declares which activity takes and returns which)."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trading.emergency import EmergencyState, Transition
from trading.execution import OrderOutcome
from trading.exit_policy import ExitState
from trading.exit_profile import ExitProfile
from trading.governor import Denial, Grant, PortfolioBook, ReservationRequest, RiskPolicy
from trading.instruments import SymbolRules
from trading.intents import Side, TradeIntent
from trading.message_base import FrozenMsg, Msg
from trading.pnl import Fill, PositionTally
from trading.policy_review import Proposal, ReviewFacts
from trading.position_state import PositionState, PositionStatus  # PositionStatus re-exported
from trading.promotion import ModelScore, PromotionPolicy, Verdict
from trading.reconcile import VenueOrder, VenuePosition
from trading.risk import RiskLayerPolicy, RiskState

LIFECYCLE_TASK_QUEUE = "trade-lifecycle"
EXCHANGE_TASK_QUEUE = "exchange"
INFERENCE_TASK_QUEUE = "inference"  # signal layer: bar close, universe, retrain
DEFAULT_PORTFOLIO_ID = "portfolio-default"


# --- position ---
class ExitReason(StrEnum):
    MANUAL = "manual"
    STOP_LOSS = "stop_loss"
    TAKE_PROFIT = "take_profit"
    EMERGENCY_LOSS = "emergency_max_unrealized_loss"
    EMERGENCY_FLATTEN = "emergency_flatten"
    HARD_STOP = "hard_stop"
    EXCHANGE_CLOSED = "exchange_closed"
    LIQUIDATION = "liquidation"
    ADL = "adl"
    ENTRY_UNFILLED = "entry_unfilled"
    DRIFT = "drift"  # the venue held more than the position's tally: the excess was closed
    CANCELLED = "cancelled"


class PositionOptions(Msg):
    """Technical knobs of one position workflow. Risk numbers come from the portfolio's grant."""

    mark_check_seconds: float = Field(10.0, gt=0, le=3600)
    # Continue-as-new also when history passes this many events (tests lower it).
    max_history_events: int = Field(4000, ge=100)
    # An entry not executed this long after the intent is looked up and, if nothing executed, denied:
    # after a long outage a 5-minute-bar intent must not execute hours later at another price.
    entry_deadline_seconds: float = Field(60.0, gt=0, le=86_400)


class ClosePositionRequest(Msg):
    """Close all (quantity omitted) or part of the open quantity."""

    quantity: Decimal | None = Field(None, gt=0)
    reason: str = Field("manual", min_length=1, max_length=64)


class CloseResult(Msg):
    closed_qty: Decimal
    avg_price: Decimal
    remaining_qty: Decimal
    noop: bool = False
    detail: str = ""


class FlattenRequest(Msg):
    reason: str = Field("emergency flatten", min_length=1, max_length=200)


class PositionCarry(Msg):
    """What runs continued before the state machine carried (read into a PositionState on resume)."""

    status: PositionStatus
    rules: SymbolRules
    grant: Grant
    fills: list[Fill]
    profile: ExitProfile
    exit_state: ExitState
    hard_stop_id: str | None
    hard_stop_seq: int
    exit_seq: int
    opened_at_ms: int
    levels_version: int = 0
    last_mark: Decimal | None = None


class PriceCrossed(Msg):
    """From the price watcher: a tick crossed one of the position's published trigger levels."""

    model_config = ConfigDict(extra="ignore")

    symbol: str
    price: Decimal = Field(gt=0)
    ts_ms: int = 0
    levels_version: int = 0
    source: str = "watcher"


class ExchangeEvent(Msg):
    """From the user-data stream: what the venue did to a position's symbol."""

    model_config = ConfigDict(extra="ignore")

    kind: str  # order_update | account_update | algo_update | position_snapshot
    symbol: str
    event_ms: int = 0
    client_order_id: str | None = None
    order_status: str | None = None
    exec_type: str | None = None
    position_amt: Decimal | None = None
    reason: str | None = None


class VenueState(Msg):
    positions: list[VenuePosition]
    orders: list[VenueOrder]


class PublishLevelsInput(Msg):
    """The position's next trigger levels for the watcher's table; both None removes the entry."""

    workflow_id: str
    symbol: str
    above: Decimal | None
    below: Decimal | None
    version: int
    remove: bool = False


class ReconcileInput(Msg):
    # A venue position younger than this may belong to a workflow entering right now.
    adopt_after_ms: int = Field(15_000, ge=0)


class AdoptedPosition(Msg):
    """A position found on the venue with no workflow: the adopting workflow takes it as it is."""

    quantity: Decimal = Field(gt=0)
    entry_price: Decimal = Field(gt=0)


class PositionInput(TradeIntent):
    """The position workflow's one argument: the trade intent itself (flat, as an operator types it on
    the Temporal CLI), plus optional technical knobs, plus the state carried over by continue-as-new
    (set by the workflow only; refused on a first run)."""

    options: PositionOptions = Field(default_factory=PositionOptions)
    # The position's state, handed over by its own continue-as-new (PositionCarry: runs continued
    # before the state machine, read field by field).
    carry: PositionState | PositionCarry | None = None
    adopt: AdoptedPosition | None = None  # set by reconcile only, with source "adopted"
    # The portfolio's grant, when it admitted the intent and started this workflow for it. Honoured only
    # in a workflow whose parent is the portfolio (a grant typed on the CLI is ignored: gates apply).
    grant: Grant | None = None

    @model_validator(mode="after")
    def _adoption_is_adopted(self) -> PositionInput:
        if self.adopt is not None and self.source != "adopted":
            raise ValueError("adopt: only for source 'adopted' (set by reconcile)")
        return self


class PositionView(Msg):
    workflow_id: str
    status: PositionStatus
    symbol: str
    side: Side
    open_qty: Decimal
    entry_price: Decimal
    mark_price: Decimal | None
    unrealized_pnl: Decimal | None
    realized_pnl: Decimal
    fees: Decimal
    stop_loss_price: Decimal | None  # the internal stop now (moved by break-even, ratchet, trailing)
    stop_kind: str | None = None
    take_profit_price: Decimal | None  # the next take-profit level
    hard_stop_price: Decimal | None  # the exchange's stop
    next_trigger: str | None
    trigger_above: Decimal | None = None
    trigger_below: Decimal | None = None
    reason: str | None = None
    venue_unreachable_since_ms: int | None = None  # venue reads failing since then (still managed)


class PositionResult(Msg):
    workflow_id: str
    status: PositionStatus
    symbol: str
    side: Side
    intent_id: str | None
    strategy: str
    entry_price: Decimal = Decimal(0)
    exit_price: Decimal = Decimal(0)
    quantity: Decimal = Decimal(0)
    realized_pnl: Decimal = Decimal(0)  # net of fees
    gross_pnl: Decimal = Decimal(0)
    fees: Decimal = Decimal(0)
    exit_reason: str | None = None
    exit_controller: str | None = None
    rejection_gate: str | None = None
    rejection_reason: str | None = None
    fills: list[Fill] = Field(default_factory=list)

    @classmethod
    def from_tally(cls, base: dict, tally: PositionTally) -> PositionResult:
        return cls(
            **base,
            entry_price=tally.avg_entry,
            exit_price=tally.avg_exit,
            quantity=tally.entry_qty,
            realized_pnl=tally.realized_net,
            gross_pnl=tally.realized_gross,
            fees=tally.fees,
        )


class ProjectionInput(Msg):
    """What the projection activity writes to Redis's read model for one position event."""

    kind: str  # "apply_result" | "trade_closed" | "snapshot"
    view: PositionView
    intent: TradeIntent
    action: str | None = None  # "entry" | "exit"
    outcome: OrderOutcome | None = None
    result: PositionResult | None = None
    # Workflow time and a per-run counter: retried projections land out of order, and the snapshot
    # keeps the newest (a late, older write must not overwrite it).
    event_ms: int = 0
    seq: int = 0


# --- portfolio ---
class ReleaseRequest(Msg):
    holder_id: str
    reason: str = "closed"
    cooldown: bool = True  # False when nothing was traded: no symbol cooldown for an entry that never filled


class AdjustRequest(Msg):
    holder_id: str
    notional_usdt: Decimal = Field(ge=0)


class DecisionBatch(Msg):
    decisions: list[Grant | Denial]


class AdmitIntent(Msg):
    """One trade intent for the portfolio to decide before any workflow exists for it: granted, it
    starts `workflow_id` (a PositionWorkflow holding the grant); refused, nothing starts."""

    workflow_id: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:-]+$")
    position: PositionInput
    # When the intent was made (ms): one not decided within its entry deadline is refused, so a late
    # or repeated submission never trades a stale signal. None: when the portfolio hears it.
    at_ms: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _a_new_intent(self) -> AdmitIntent:
        p = self.position
        if p.carry is not None or p.adopt is not None or p.grant is not None:
            raise ValueError("position: a new intent only (no carry, adopt or grant)")
        if p.notional_usdt is None:
            raise ValueError("position: notional_usdt is required (a quantity needs the workflow's price)")
        return self


class PositionStart(Msg):
    """An admitted intent's PositionWorkflow, holding its grant, as the portfolio's `start_positions`
    activity starts it."""

    workflow_id: str
    position: PositionInput
    summary: str


START_BATCH = 200  # position starts per `start_positions` activity (its input stays well under 2 MB)


class PositionStarts(Msg):
    starts: list[PositionStart] = Field(min_length=1, max_length=START_BATCH)


class AdmitBatch(Msg):
    """The portfolio's `admit_intents` signal: intents decided together, in order."""

    intents: list[AdmitIntent] = Field(min_length=1, max_length=1000)


class Refusal(Msg):
    """An admitted intent the portfolio refused (`quantum:stream:intent.refused`)."""

    workflow_id: str
    intent_id: str | None
    symbol: str
    side: Side
    notional_usdt: Decimal
    gate: str
    reason: str
    at_ms: int


class KillSwitchRequest(Msg):
    on: bool
    reason: str = "operator"


class PendingFlatten(Msg):
    """An emergency flatten being told: the holders of the moment it was asked (a position still entering
    included), each told again at the holder checks until it lets its slot go."""

    request: FlattenRequest
    holders: list[str]
    told: bool = False


class RunningHolder(Msg):
    """A running position as a fresh portfolio finds it when it rebuilds its book: what its `state` query
    says or, when it did not answer, what visibility indexes (no status: not even that)."""

    holder_id: str
    status: PositionStatus | None = None
    symbol: str = ""
    side: Side = Side.LONG
    open_qty: Decimal = Decimal(0)
    entry_price: Decimal = Decimal(0)


class MarketInputsRequest(Msg):
    """What MarketInputsWorkflow reads: the newest `window_bars` stored bars of `interval` of every symbol
    with bars (a symbol with fewer than `min_returns` returns gets no cap and is its own cluster)."""

    interval: str = "1h"
    window_bars: int = Field(720, ge=3, le=1500)
    min_returns: int = Field(24, ge=2)

    @model_validator(mode="after")
    def _fits(self) -> MarketInputsRequest:
        if self.min_returns >= self.window_bars:
            raise ValueError("min_returns must be below window_bars (a window has window_bars - 1 returns)")
        return self


class PolicyReviewInput(Msg):
    """One review: the trades and emergency-stop moves of the last `window_hours`; a proposal waits
    `approval_hours` for an operator's verdict, then expires."""

    window_hours: float = Field(24.0, gt=0, le=24 * 90)
    approval_hours: float = Field(24.0, gt=0, le=24 * 30)
    min_trades: int = Field(5, ge=1)


class PolicyVerdict(Msg):
    """An operator's answer to a policy-review proposal."""

    approve: bool
    operator: str = Field(min_length=1, max_length=64)
    reason: str = Field("", max_length=200)


class PolicyReviewResult(Msg):
    outcome: str  # off | no_change | applied | rejected | expired | stale | refused
    detail: str
    proposal: Proposal | None = None
    verdict: PolicyVerdict | None = None


class ReviewContext(ReviewFacts):
    """The facts and the risk policy in force (None: the risk layer is off)."""

    policy: RiskLayerPolicy | None = None


class EssMove(Msg):
    """One transition of the automatic emergency stop, numbered in the portfolio's order (the stream's
    dedupe key: a retried publication adds nothing)."""

    seq: int = Field(ge=1)
    transition: Transition


class EssCommand(Msg):
    """An operator's explicit move of the emergency stop (the only way out of HALTED)."""

    to: EmergencyState
    reason: str = Field(min_length=1, max_length=200)
    operator: str = Field("operator", min_length=1, max_length=64)


class PortfolioInput(Msg):
    policy: RiskPolicy | None = None
    book: PortfolioBook | None = None
    pending: list[ReservationRequest] = Field(default_factory=list)
    holder_check_seconds: float = Field(30.0, gt=0)
    max_history_events: int = Field(3000, ge=100)
    granted_total: int = 0
    denied_total: int = 0
    flattens: list[PendingFlatten] = Field(default_factory=list)  # carried: a flatten outlives the hand-over
    # The risk layer (trading/risk.py); None: the governor's gates alone. Its state, the automatic emergency
    # stop's recent moves (each numbered once) and the trade ids already heard are carried whole.
    risk: RiskLayerPolicy | None = None
    risk_state: RiskState | None = None
    ess_moves: list[EssMove] = Field(default_factory=list)
    ess_unpublished: list[EssMove] = Field(default_factory=list)
    risk_seen: list[str] = Field(default_factory=list)
    admissions: list[AdmitIntent] = Field(default_factory=list)  # carried: admitted, not yet decided


class PortfolioView(Msg):
    policy: RiskPolicy
    book: PortfolioBook
    slots_used: int
    notional_used: Decimal
    granted_total: int
    denied_total: int
    last_decisions: list[Grant | Denial]
    risk: RiskLayerPolicy | None = None
    risk_state: RiskState | None = None
    ess_moves: list[EssMove] = Field(default_factory=list)


# --- signal layer (task queue `inference`): universe, bar close, retrain ---
class UniverseInput(Msg):
    top_n: int = Field(10, ge=1, le=500)
    allowlist: list[str] = Field(default_factory=lambda: ["*"])  # "*": every symbol
    interval: str = "1h"


class QuoteVolumes(Msg):
    volumes: dict[str, float]  # symbol → 24 h quote volume (USDT)
    source: str  # "ticker_24hr" | "bars"


class UniverseResult(Msg):
    symbols: list[str]
    ranked: list[tuple[str, float]]
    source: str


class RetrainWindow(FrozenMsg):
    """Which bars a retrain learns from and is judged on."""

    symbols: list[str] = Field(default_factory=lambda: ["BTCUSDT", "ETHUSDT"], min_length=1)
    timeframe: str = "1h"
    window_bars: int = Field(8000, ge=300, le=200_000)  # the newest bars: training + out-of-sample
    holdout_bars: int = Field(720, ge=24)  # the newest of them, scored out of sample (30 days of 1h)
    until_ms: int | None = Field(None, ge=0)  # the clock: only bars closed by then (None: the newest)
    label_kind: Literal["triple_barrier", "fixed_horizon"] = "triple_barrier"
    horizon: int = Field(24, ge=1, le=500)
    seed: int = 0
    torch_epochs: int = Field(3, ge=1, le=100)

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, v: list[str]) -> list[str]:
        bad = [s for s in v if not (s.isalnum() and s.isupper() and s.endswith("USDT"))]
        if bad:
            raise ValueError(f"not USDT perpetual symbols: {bad}")
        return v


class TrainChallengerInput(FrozenMsg):
    model: str
    window: RetrainWindow


class EvaluateShadowInput(FrozenMsg):
    model: str
    window: RetrainWindow


class ChallengerReport(FrozenMsg):
    model: str
    challenger: ModelScore  # its version is the registered challenger (or the shadow being judged)
    champion: ModelScore | None  # None: no champion
    train_rows: int = 0
    holdout_start_ms: int | None = None
    holdout_end_ms: int | None = None
    seconds: float = 0.0


class SetStageInput(FrozenMsg):
    model: str
    version: str
    stage: Literal["champion", "shadow", "retired"]


class ShadowSignalsInput(FrozenMsg):
    """Shadow predictions for one bar: `bar_open_ms` set (the bar-close path) reads that live bar and
    its history from Redis (signals/bar_store.py); unset, the newest bar of `window`'s klines."""

    models: list[str]
    window: RetrainWindow
    bar_open_ms: int | None = Field(None, ge=0)


KNOWN_MODELS = ("xgboost", "lightgbm", "nhits", "patchtst")


class RetrainInput(FrozenMsg):
    models: list[str] = Field(default_factory=lambda: ["xgboost", "lightgbm"], min_length=1)
    window: RetrainWindow = Field(default_factory=RetrainWindow)
    shadow_mode: bool = False  # winners go to shadow first; promoted only when they win again later
    policy: PromotionPolicy = Field(default_factory=PromotionPolicy)

    @field_validator("models")
    @classmethod
    def _models(cls, v: list[str]) -> list[str]:
        bad = [m for m in v if m not in KNOWN_MODELS]
        if bad or len(set(v)) != len(v):
            raise ValueError(f"models must be distinct names from {KNOWN_MODELS}, got {v}")
        return v


class ModelOutcome(FrozenMsg):
    model: str
    step: Literal["shadow", "challenger"]
    version: str | None
    verdict: Verdict
    stage: Literal["champion", "shadow", "retired", "challenger", "unchanged"]
    reason: str
    challenger: ModelScore  # out of sample, on the same rows as the champion's score
    champion: ModelScore | None


class RetrainResult(FrozenMsg):
    outcomes: list[ModelOutcome]
    shadow_signals: int = 0


class InferenceInput(Msg):
    """Symbols to decide for (None: the universe in Redis, else the allowlist) at one closed bar
    (None: the newest bar every symbol has)."""

    symbols: list[str] | None = None
    interval: str = "1h"
    bar_open_ms: int | None = Field(None, ge=0)


class SymbolDecision(Msg):
    symbol: str
    side: str  # LONG | SHORT | NONE
    p_up: float
    confidence: float
    models_agree: int
    kill_score: float
    regime: str
    price: float
    votes: dict[str, float] = Field(default_factory=dict)
    used: list[str] = Field(default_factory=list)
    missing: dict[str, str] = Field(default_factory=dict)  # model → why it was left out (fallback)
    notional_usdt: Decimal = Decimal(0)
    strategy: str | None = None  # the chooser's pick for this regime (None: no side)
    shadow: bool = False  # a shadow model's prediction: published, never traded
    action: str = "skip"  # "open" | "skip"
    reason: str = ""
    workflow_id: str | None = None
    intent: PositionInput | None = None


class InferenceResult(Msg):
    interval: str
    bar_open_ms: int | None
    symbols: list[str]
    model_versions: dict[str, str] = Field(default_factory=dict)
    decisions: list[SymbolDecision] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    shadow: ShadowSignalsInput | None = None  # set when the registry has shadow challengers


class BarCloseInput(Msg):
    interval: str = "1h"
    symbols: list[str] | None = None
    bar_open_ms: int | None = Field(None, ge=0)


class BarCloseResult(Msg):
    bar_open_ms: int | None
    decisions: int
    started: list[str] = Field(default_factory=list)
    already_started: list[str] = Field(default_factory=list)
    # Sent to the portfolio's admission, which starts a position for each grant (the others: refusals).
    admitted: list[str] = Field(default_factory=list)
    not_tradeable: list[str] = Field(default_factory=list)  # shadow decisions that carried an intent
    shadow_signals: int = 0
    notes: list[str] = Field(default_factory=list)


M = TypeVar("M", bound=BaseModel)


def parse_message(model: type[M], raw: object) -> M:
    """Validate an operator's message into `model`, with an error naming each bad field.

    Update handlers take raw JSON objects and parse them here, because a payload that fails to decode
    before the validator runs only says "Failed decoding arguments"."""
    if isinstance(raw, model):
        return raw
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or model.__name__}: {e['msg']}" for e in err.errors()
        )
        raise ValueError(f"invalid {model.__name__}: {problems}") from None
