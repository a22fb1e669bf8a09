"""Submitting trade intents to the portfolio's admission (workflows/portfolio_admission.py): the
portfolio decides each before any workflow exists for it and starts a PositionWorkflow only for a
grant. Each intent names its position's workflow id, so sending the same intents twice opens nothing
twice. A bad intent is refused here, naming the field, before anything is sent: a signal cannot
answer an error."""

from __future__ import annotations

import time
from collections.abc import Sequence

from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from workflows.messages import DEFAULT_PORTFOLIO_ID, AdmitBatch, AdmitIntent, PositionInput, parse_message

BATCH_MAX = 1000  # intents per signal (AdmitBatch's bound): a bigger list goes as several, in order


class AdmissionError(Exception):
    """The intents were not sent: the message says why."""


def admissions(
    intents: Sequence[tuple[str, PositionInput | dict[str, object]]], *, at_ms: int | None = None
) -> list[AdmitIntent]:
    """(workflow id, intent) pairs checked into AdmitIntents made at `at_ms` (default: now); raises
    AdmissionError naming the first bad one (its position in the list and the field)."""
    made = int(time.time() * 1000) if at_ms is None else at_ms
    out = []
    for i, (workflow_id, position) in enumerate(intents):
        try:
            raw = {"workflow_id": workflow_id, "position": position, "at_ms": made}
            out.append(parse_message(AdmitIntent, raw))
        except ValueError as err:
            raise AdmissionError(f"intent #{i + 1} ({workflow_id}): {err}") from None
    return out


async def admit_intents(client: Client, intents: Sequence[AdmitIntent]) -> None:
    """Send `intents` to the running portfolio, in order."""
    handle = client.get_workflow_handle(DEFAULT_PORTFOLIO_ID)
    for start in range(0, len(intents), BATCH_MAX):
        batch = AdmitBatch(intents=list(intents[start : start + BATCH_MAX]))
        try:
            await handle.signal("admit_intents", batch)
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                raise AdmissionError(
                    "the portfolio is not running: start the lifecycle worker (it starts the portfolio)"
                ) from None
            raise
