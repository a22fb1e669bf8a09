"""Client order ids derived from the workflow id and the step: the same step always sends the same id."""

from __future__ import annotations

import hashlib
import re

CLIENT_ID_RE = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
STEP_RE = re.compile(r"^[A-Za-z0-9_-]{1,12}$")
# The workflow part of a hashed id. A workflow whose id has this very form is hashed too: written out it
# would give `qt<20 hex>.<step>`, the id another workflow's hash may already own (two positions, one id).
HASHED_RE = re.compile(r"^qt[0-9a-f]{20}$", re.IGNORECASE)  # in case the venue ignores case


def client_order_id(workflow_id: str, step: str) -> str:
    """`<workflow id>.<step>` when that fits Binance's 36-character pattern, else `qt<hash>.<step>`, a
    stable hash of the workflow id. Steps never contain a dot, so the part before the last dot names the
    workflow; a readable id's part never has the hashed form, so the two forms never meet."""
    if not STEP_RE.fullmatch(step):
        raise ValueError(f"order step {step!r} must match {STEP_RE.pattern}")
    readable = f"{workflow_id}.{step}"
    if CLIENT_ID_RE.fullmatch(readable) and not HASHED_RE.fullmatch(workflow_id):
        return readable
    digest = hashlib.blake2b(workflow_id.encode(), digest_size=10).hexdigest()
    return f"qt{digest}.{step}"
