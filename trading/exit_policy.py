"""The exit engine as pure functions: harvest, take-profit ladder, stop ratchet, trailing stop, time exit
and the emergency closes, combined in one exit profile.

The position workflow is the only exit owner. It calls `evaluate` with a price and gets at most one
action back (close some quantity, or move the stop); it executes it, then evaluates again, so triggers
that fire in the same instant are handled one after another against the current state and can never
over-close. `trigger_levels` gives the nearest price above and below at which the decision would
change: the price watcher signals the workflow only when a tick crosses one of them.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from trading.exit_profile import ExitProfile, Level
from trading.instruments import SymbolRules
from trading.intents import ExitOverrides, Side

D = Decimal
HUNDRED = D(100)
TAKER_FEE = D("0.0004")


def resolve_profile(
    base: ExitProfile, overrides: ExitOverrides | None, side: Side, entry: Decimal
) -> tuple[ExitProfile, Decimal | None]:
    """The position's profile: the portfolio's default with the intent's overrides applied. Returns the
    profile and the absolute stop price, if the intent gave one."""
    if overrides is None:
        return base, None
    changes: dict[str, object] = dict(overrides.profile or {})
    if overrides.stop_loss_pct is not None:
        changes["stop_pct"] = overrides.stop_loss_pct
    if overrides.hard_stop_pct is not None:
        changes["hard_stop_pct"] = overrides.hard_stop_pct
    tp_pct = overrides.take_profit_pct
    if overrides.take_profit_price is not None:
        tp_pct = (overrides.take_profit_price - entry) * side.sign / entry * HUNDRED
    if tp_pct is not None and tp_pct > 0:
        changes["tp_levels"] = (Level(at=tp_pct, fraction=D(1)),)
    stop_pct = changes.get("stop_pct", base.stop_pct)
    if Decimal(str(changes.get("hard_stop_pct", base.hard_stop_pct))) < Decimal(str(stop_pct)):
        changes["hard_stop_pct"] = stop_pct
    profile = ExitProfile.model_validate({**base.model_dump(), **changes}) if changes else base
    return profile, overrides.stop_loss_price


class ExitState(BaseModel):
    """What the exit engine remembers between decisions (carried through continue-as-new)."""

    model_config = ConfigDict(extra="forbid")

    entry: Decimal
    initial_qty: Decimal
    r_price: Decimal  # one R as a price distance per unit
    stop: Decimal  # the internal stop; never loosens
    stop_kind: str = "stop_loss"  # what set the stop: stop_loss, breakeven_stop, ratchet_stop, trailing_stop
    hard_stop: Decimal
    best: Decimal  # best price seen since entry
    trailing_active: bool = False
    harvests_done: int = 0
    tps_done: int = 0
    harvest_times_ms: list[int] = Field(default_factory=list)
    opened_at_ms: int = 0


class ExitAction(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["close", "move_stop"]  # move_stop: a level passed with nothing to close
    reason: str  # harvest_1, take_profit_2, stop_loss, trailing_stop, emergency_..., time_exit, ...
    controller: str  # harvest, tp_ladder, stop, trailing, emergency, time
    quantity: Decimal = D(0)  # for "close": the quantity to close (already capped and on the step grid)
    close_all: bool = False
    new_stop: Decimal | None = None
    new_stop_kind: str | None = None
    hard_stop: Decimal | None = None  # a new exchange stop to put in place (cancel-and-replace)


def _away(price: Decimal, pct: Decimal, side: Side, *, adverse: bool) -> Decimal:
    direction = -side.sign if adverse else side.sign
    return price * (1 + direction * pct / HUNDRED)


def _better(a: Decimal, b: Decimal, side: Side) -> bool:
    """a is a tighter (more protective) stop than b."""
    return (a - b) * side.sign > 0


def initial_state(
    side: Side,
    entry: Decimal,
    qty: Decimal,
    leverage: int,
    entry_fee: Decimal,
    profile: ExitProfile,
    rules: SymbolRules,
    opened_at_ms: int = 0,
    stop_price: Decimal | None = None,
) -> ExitState:
    """The stop `stop_pct` from entry (or the intent's price), never closer than the minimum distance;
    R = the entry-to-stop risk with fees included (or the margin, in the seed-compatible mode)."""
    stop = stop_price if stop_price is not None else _away(entry, profile.stop_pct, side, adverse=True)
    closest = _away(entry, profile.min_stop_distance_pct, side, adverse=True)
    if _better(stop, closest, side):
        stop = closest
    stop = rules.round_price(stop)
    if profile.r_basis == "margin":
        r_price = entry / D(leverage)
    else:
        risk = abs(entry - stop) * qty + entry_fee + stop * qty * TAKER_FEE
        r_price = risk / qty
    hard_pct = max(profile.hard_stop_pct, profile.stop_pct)
    hard = rules.round_price(_away(entry, hard_pct, side, adverse=True))
    if _better(hard, stop, side):
        hard = stop
    return ExitState(
        entry=entry,
        initial_qty=qty,
        r_price=r_price,
        stop=stop,
        hard_stop=hard,
        best=entry,
        opened_at_ms=opened_at_ms,
    )


def _close_qty(
    fraction: Decimal, state: ExitState, open_qty: Decimal, rules: SymbolRules
) -> tuple[Decimal, bool]:
    """A fraction of the initial quantity, on the step grid, never above what is open; the whole
    position when the remainder would fall below the minimum quantity. Zero when the fraction is
    smaller than one step: the level passes without an order (closing everything instead would turn
    a 25 % harvest into a full exit)."""
    qty = rules.round_qty(state.initial_qty * fraction, market=True)
    if qty <= 0:
        return D(0), False
    if qty >= open_qty or open_qty - qty < rules.market_min_qty:
        return open_qty, True
    return qty, False


def _hard_for(stop: Decimal, side: Side, profile: ExitProfile, rules: SymbolRules) -> Decimal:
    gap = max(profile.hard_stop_pct - profile.stop_pct, D(0))
    return rules.round_price(_away(stop, gap, side, adverse=True))


def evaluate(
    profile: ExitProfile,
    state: ExitState,
    side: Side,
    open_qty: Decimal,
    price: Decimal,
    leverage: int,
    rules: SymbolRules,
    now_ms: int,
) -> tuple[ExitAction | None, ExitState]:
    """At most one action for this price, and the state after it is done. Pure: the caller executes
    the action (an order, or a stop move) and calls again with the same price until None."""
    if open_qty <= 0:
        return None, state
    # Shallow is enough: every field is immutable except `harvest_times_ms`, which is only ever replaced.
    s = state.model_copy()
    if (price - s.best) * side.sign > 0:
        s.best = price
    move = (price - s.entry) * side.sign  # favourable price distance per unit
    loss_pct = -move / s.entry * HUNDRED
    margin_loss_pct = loss_pct * D(leverage)

    # Trailing stop: arms once in profit by the activation distance, then follows the best price.
    if profile.trailing_enabled:
        if not s.trailing_active and move / s.entry * HUNDRED > profile.trailing_activation_pct:
            s.trailing_active = True
        if s.trailing_active:
            trail = rules.round_price(_away(s.best, profile.trailing_pct, side, adverse=True))
            if _better(trail, s.stop, side):
                s.stop, s.stop_kind = trail, "trailing_stop"

    # The stop (internal; the exchange's hard stop is the net behind it).
    if (s.stop - price) * side.sign >= 0:
        controller = "trailing" if s.stop_kind == "trailing_stop" else "stop"
        return _close_all(s.stop_kind, controller, open_qty), s

    # The emergency closes: for when the price is beyond any stop the profile would have set.
    if loss_pct >= profile.max_unrealized_loss_pct:
        return _close_all("emergency_max_unrealized_loss", "emergency", open_qty), s
    if margin_loss_pct >= profile.max_margin_loss_pct:
        return _close_all("emergency_max_margin_loss", "emergency", open_qty), s

    if (
        profile.max_holding_seconds is not None
        and now_ms - s.opened_at_ms >= profile.max_holding_seconds * 1000
    ):
        return _close_all("time_exit", "time", open_qty), s

    # Take-profit ladder, then the stop ratchet.
    if profile.tp_enabled and s.tps_done < len(profile.tp_levels):
        level = profile.tp_levels[s.tps_done]
        target = rules.round_price(_away(s.entry, level.at, side, adverse=False))
        if (price - target) * side.sign >= 0:
            qty, whole = _close_qty(level.fraction, s, open_qty, rules)
            s.tps_done += 1
            action = ExitAction(
                kind="close" if qty > 0 else "move_stop",
                reason=f"take_profit_{s.tps_done}",
                controller="tp_ladder",
                quantity=qty,
                close_all=whole,
            )
            if profile.ratchet_sl_enabled:
                ratchet = (
                    s.entry
                    if s.tps_done == 1
                    else rules.round_price(
                        _away(s.entry, profile.tp_levels[s.tps_done - 2].at, side, adverse=False)
                    )
                )
                if _better(ratchet, s.stop, side):
                    kind = "breakeven_stop" if s.tps_done == 1 else "ratchet_stop"
                    s.stop, s.stop_kind = ratchet, kind
                    s.hard_stop = _hard_for(ratchet, side, profile, rules)
                    action = action.model_copy(
                        update={"new_stop": ratchet, "new_stop_kind": kind, "hard_stop": s.hard_stop}
                    )
            return action, s

    # Harvest at R multiples (rate-capped), then the stop to break-even.
    if profile.harvest_enabled and s.harvests_done < len(profile.harvest_levels):
        level = profile.harvest_levels[s.harvests_done]
        if move >= level.at * s.r_price:
            recent = [t for t in s.harvest_times_ms if now_ms - t < 60_000]
            if len(recent) < profile.harvest_max_actions_per_min:
                qty, whole = _close_qty(level.fraction, s, open_qty, rules)
                s.harvests_done += 1
                s.harvest_times_ms = [*recent, now_ms]
                action = ExitAction(
                    kind="close" if qty > 0 else "move_stop",
                    reason=f"harvest_{s.harvests_done}",
                    controller="harvest",
                    quantity=qty,
                    close_all=whole,
                )
                if profile.move_sl_be and s.harvests_done == 1 and _better(s.entry, s.stop, side):
                    s.stop, s.stop_kind = s.entry, "breakeven_stop"
                    s.hard_stop = _hard_for(s.entry, side, profile, rules)
                    action = action.model_copy(
                        update={
                            "new_stop": s.entry,
                            "new_stop_kind": "breakeven_stop",
                            "hard_stop": s.hard_stop,
                        }
                    )
                return action, s
    return None, s


def _close_all(reason: str, controller: str, open_qty: Decimal) -> ExitAction:
    return ExitAction(kind="close", reason=reason, controller=controller, quantity=open_qty, close_all=True)


def trigger_levels(
    profile: ExitProfile, state: ExitState, side: Side, leverage: int, rules: SymbolRules
) -> tuple[Decimal | None, Decimal | None]:
    """(above, below): the nearest prices above and below at which `evaluate` would act or move the
    stop. Ticks between them change nothing, so the watcher stays silent."""
    favourable: list[Decimal] = []
    adverse: list[Decimal] = [state.stop]
    entry = state.entry
    adverse.append(rules.round_price(_away(entry, profile.max_unrealized_loss_pct, side, adverse=True)))
    adverse.append(
        rules.round_price(_away(entry, profile.max_margin_loss_pct / D(leverage), side, adverse=True))
    )
    if profile.tp_enabled and state.tps_done < len(profile.tp_levels):
        favourable.append(
            rules.round_price(_away(entry, profile.tp_levels[state.tps_done].at, side, adverse=False))
        )
    if profile.harvest_enabled and state.harvests_done < len(profile.harvest_levels):
        level = profile.harvest_levels[state.harvests_done]
        favourable.append(rules.round_price(entry + side.sign * level.at * state.r_price))
    if profile.trailing_enabled:
        if state.trailing_active:
            favourable.append(
                rules.round_price(_away(state.best, profile.trailing_step_pct, side, adverse=False))
            )
        else:
            favourable.append(
                rules.round_price(_away(entry, profile.trailing_activation_pct, side, adverse=False))
            )
    nearest_fav = min(favourable, key=lambda p: (p - entry) * side.sign) if favourable else None
    nearest_adv = max(adverse, key=lambda p: (p - entry) * side.sign)
    if side is Side.LONG:
        return nearest_fav, nearest_adv
    return nearest_adv, nearest_fav
