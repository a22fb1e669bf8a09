"""Where the repository's own files are, known without reading any setting (a module the paper
exchange can import without building the settings class, which cost each of its starts 0.3 s)."""

from __future__ import annotations

from pathlib import Path

# The sample klines the repository ships (data/README.md), located from this file, not the current
# directory: the old default, a folder beside the repository and relative to the current directory,
# left a fresh clone (or a run from another folder) with no data. QT_DATA_DIR points at a fuller one.
SHIPPED_DATA_DIR = Path(__file__).resolve().parents[1] / "data"
