"""The one base of the message models: the payloads workflows, activities and operators exchange
(trading/execution.py, workflows/messages.py). Unknown fields are refused, so a misspelt field fails by
name instead of being dropped; `FrozenMsg` for those never changed once built (requests to the venue,
the retrain family)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Msg(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FrozenMsg(Msg):
    model_config = ConfigDict(frozen=True)
