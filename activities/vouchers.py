"""The grants a lifecycle worker's `start_positions` started positions with, vouched for to the
position's first workflow task when it runs in the same worker (the `check_symbol` local activity
redeems them). A grant typed into `temporal workflow start` was started by no worker, so nothing
vouches for it and that position asks the portfolio; so does one whose first task ran in another
worker (the portfolio answers a slot it holds with the grant it made)."""

from __future__ import annotations

import time
from decimal import Decimal

VOUCH_TTL_S = 600.0  # a grant nobody redeemed (its position never started, or ran elsewhere) is forgotten


class GrantVouchers:
    def __init__(self, ttl_s: float = VOUCH_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._grants: dict[str, tuple[Decimal, float]] = {}  # workflow id -> (notional, when vouched)

    def vouch(self, workflow_id: str, notional: Decimal) -> None:
        now = time.monotonic()
        self._grants = {k: v for k, v in self._grants.items() if now - v[1] < self.ttl_s}
        self._grants[workflow_id] = (notional, now)

    def forget(self, workflow_id: str) -> None:
        self._grants.pop(workflow_id, None)

    def redeem(self, workflow_id: str) -> Decimal | None:
        """The notional vouched for `workflow_id`, once (None: nothing vouched for it here)."""
        grant = self._grants.pop(workflow_id, None)
        return grant[0] if grant is not None else None
