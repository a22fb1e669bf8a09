"""The trading universe: which symbols the bar-close workflow trades, ranked by 24 h quote volume."""

from __future__ import annotations


def top_by_volume(volumes: dict[str, float], allowlist: list[str], n: int) -> list[str]:
    """The `n` highest quote volumes (ties by name) among the allowed symbols, highest first."""
    allowed = [s for s in volumes if "*" in allowlist or s in allowlist]
    return sorted(allowed, key=lambda s: (-volumes[s], s))[:n]
