"""Client order ids derived from the workflow id and the step: the same step always sends the same id."""

from __future__ import annotations

import hashlib
import re

CLIENT_ID_RE = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
STEP_RE = re.compile(r"^[A-Za-z0-9_-]{1,12}$")


def client_order_id(workflow_id: str, step: str) -> str:
    """`<workflow id>.<step>` when that fits Binance's 36-character pattern, else a stable hash of the
    workflow id. Steps never contain a dot, so two different (workflow, step) pairs never collide."""
    if not STEP_RE.match(step):
        raise ValueError(f"order step {step!r} must match {STEP_RE.pattern}")
    readable = f"{workflow_id}.{step}"
    if CLIENT_ID_RE.match(readable):
        return readable
    digest = hashlib.blake2b(workflow_id.encode(), digest_size=10).hexdigest()
    return f"qt{digest}.{step}"
