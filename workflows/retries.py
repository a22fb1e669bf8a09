"""The retry policies of the activity declarations in workflows/calls.py, by what the calls need.

A retry policy is not part of the command a workflow sends (replay does not compare it): a change here
reaches running workflows at their next attempt, with no patch (README, versioning rule)."""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

from workflows.errors import ErrorType

# Venue reads and idempotent writes retry briefly; orders retry only after the activity has looked the
# order up by its client id (the activity does that on every attempt).
VENUE_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=10,
    non_retryable_error_types=[ErrorType.REJECTED, ErrorType.UNKNOWN_SYMBOL],
)
ORDER_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=0,
    non_retryable_error_types=[ErrorType.REJECTED, ErrorType.UNKNOWN_SYMBOL],
)
# The mark timer's read: a few attempts, then the position says the venue is unreachable and goes on
# deciding on the watcher's prices until the next timer (it never blocks the exit loop for long).
MARK_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    maximum_interval=timedelta(seconds=2),
    maximum_attempts=3,
    non_retryable_error_types=[ErrorType.REJECTED, ErrorType.UNKNOWN_SYMBOL],
)
# An order attempt sends nothing in its last (HTTP timeout + recvWindow + 1 s) = 16 s (activities/
# exchange.py: a request sent later could execute after the retry's look-up), so it needs room beyond;
# not much more, since an attempt lost with a killed worker is retried only after it.
ORDER_ATTEMPT_TIMEOUT = timedelta(seconds=30)
# A position's trigger levels: a failed publish waits out a pause in the workflow instead.
LEVELS_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_attempts=3)
# A position's read model and its journal row: retried until their schedule-to-close bound.
RECORD_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=15), maximum_attempts=0
)
# The portfolio's answers to its holders.
DELIVERY_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=5)
)
# Reading what the running positions hold: retried server-side for as long as visibility is down (one
# activity in history however long it takes); requests wait meanwhile.
REBUILD_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
# Training: one retry, none for an input that cannot train.
TRAIN_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=10),
    maximum_attempts=2,
    non_retryable_error_types=[ErrorType.BAD_RETRAIN_INPUT],
)
# The universe's quote volumes wait for the market-data service's first stored bar (a fresh stack) or
# for Redis to come back: every few seconds for up to ten minutes, the schedule's next run skipped.
WAIT_FOR_BARS = RetryPolicy(
    initial_interval=timedelta(milliseconds=500), maximum_interval=timedelta(seconds=5)
)
# The plain ones, shared by calls that only need a few tries.
FIVE_TRIES_FAST = RetryPolicy(initial_interval=timedelta(milliseconds=500), maximum_attempts=5)
FIVE_TRIES = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=5)
THREE_TRIES = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)
TWO_TRIES = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=2)
