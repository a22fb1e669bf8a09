"""The application error types that cross between activities, workflows and their callers: what an
activity or a workflow raises as `ApplicationError(type=ErrorType.X)`, and what a retry policy's
`non_retryable_error_types`, a workflow or a test matches.

The values are recorded in histories (failures, retry policies) and read by callers of the workflows
(the trade CLI, tests): they never change. A StrEnum member is its string, so `err.type ==
ErrorType.X` holds for the plain string a decoded failure carries."""

from __future__ import annotations

from enum import StrEnum


class ErrorType(StrEnum):
    # The venue (activities/exchange.py, activities/market.py)
    REJECTED = "Rejected"  # the venue refused the request for good (its code in the details)
    IP_BANNED = "IpBanned"  # retryable, after the ban's Retry-After
    RATE_LIMITED = "RateLimited"  # retryable, after Retry-After
    UNKNOWN_SYMBOL = "UnknownSymbol"  # not a trading symbol on the venue
    ENTRIES_HALTED = "EntriesHalted"  # an entry refused while the IP is banned and nothing was sent
    # The position workflow (workflows/position.py)
    INVALID_INTENT = "InvalidIntent"  # the workflow's input: no trade
    CLOSE_REFUSED = "CloseRefused"  # the `close` update's validator
    # The policy review (activities/policy_review.py): the portfolio refused an approved proposal
    STALE_PROPOSAL = "StaleProposal"
    PROPOSAL_REFUSED = "ProposalRefused"
    # The universe (activities/universe.py): retryable, until market-data stored its first bar
    NO_BARS_STORED = "NoBarsStored"
    # Retrain (activities/learning.py)
    BAD_RETRAIN_INPUT = "BadRetrainInput"
    # Not raised here: the SDK names a workflow's failure_exception_types error by its class
    # (pydantic's ValidationError for a trade intent that does not validate).
    VALIDATION_ERROR = "ValidationError"
