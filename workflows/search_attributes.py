"""The position workflow's search attributes, named once. The workflow upserts them (workflows/position.py),
reconcile, the portfolio and the CLI read them from visibility, and `workers.temporal_client` derives
from `SEARCH_ATTRIBUTES` both registrations: the operator service's (a server that lacks them) and the
dev server's `--search-attribute NAME=TYPE` flags. A key added here is registered everywhere."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

SA_SYMBOL = SearchAttributeKey.for_keyword("Symbol")
SA_SIDE = SearchAttributeKey.for_keyword("Side")
SA_STATUS = SearchAttributeKey.for_keyword("PositionStatus")
SA_STRATEGY = SearchAttributeKey.for_keyword("Strategy")
SA_SOURCE = SearchAttributeKey.for_keyword("Source")
SA_REALIZED_PNL = SearchAttributeKey.for_float("RealizedPnl")
SA_OPENED_AT = SearchAttributeKey.for_datetime("OpenedAt")
# The open quantity in visibility lets reconcile list every position in one call instead of one
# query (a workflow task) per position.
SA_OPEN_QTY = SearchAttributeKey.for_float("OpenQty")
SEARCH_ATTRIBUTES = [
    SA_SYMBOL,
    SA_SIDE,
    SA_STATUS,
    SA_STRATEGY,
    SA_SOURCE,
    SA_REALIZED_PNL,
    SA_OPENED_AT,
    SA_OPEN_QTY,
]
