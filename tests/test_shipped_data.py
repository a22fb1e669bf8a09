"""The repository carries the data it needs (`data/`): every default path resolves there from any current
directory, and the sample covers the paper run and a model's first training. A default folder outside
the repository once left a fresh clone with failing tests and nothing to replay."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from signals.data import available, load_aligned, load_klines
from tests.conftest import REPO, SHIPPED_DATA
from trading.config import load_settings
from trading.instruments import DEFAULT_RULES
from workers.run_paper import PAPER_ENV, TRAIN_SYMBOLS

ETTH1_SHA256 = "f18de3ad269cef59bb07b5438d79bb3042d3be49bdeecf01c1cd6d29695ee066"  # the unmodified original


@pytest.fixture(autouse=True)
def _no_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QT_DATA_DIR", raising=False)
    monkeypatch.delenv("PAPER_DATA_DIR", raising=False)


def test_default_paths_are_the_repositorys_data_from_any_directory(tmp_path: Path) -> None:
    code = (
        "import json\n"
        "from exchange.paper.__main__ import build_parser\n"
        "from exchange.paper.prices import DEFAULT_DATA_DIR\n"
        "from signals.data import default_data_dir\n"
        "from trading.config import load_settings\n"
        "print(json.dumps([str(default_data_dir()), str(load_settings().paper_data_dir),\n"
        "    str(DEFAULT_DATA_DIR), str(build_parser().parse_args([]).data_dir)]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("QT_DATA_DIR", "PAPER_DATA_DIR")}
    env["PYTHONPATH"] = str(REPO)  # this checkout, not whichever one the environment installed
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [str(REPO / "data")] * 4


def test_bench_reads_etth1_from_the_repository() -> None:
    from bench.models import etth1_path

    path = etth1_path()
    assert path == SHIPPED_DATA / "ett" / "ETTh1.csv.gz"
    assert hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest() == ETTH1_SHA256  # CC BY-ND


def test_the_sample_covers_the_paper_run_and_a_first_training() -> None:
    settings = load_settings()
    assert settings.paper_data_dir == SHIPPED_DATA
    hourly = {s for s, tf in available() if tf == "1h"}
    assert set(DEFAULT_RULES) <= hourly  # the paper exchange lists and prices every symbol from a file
    # the first champion (`qtrader paper`) and the retrain window learn from the newest bars
    assert load_aligned(TRAIN_SYMBOLS, "1h", last_n=8000).n_bars == 8000
    window = settings.retrain_window_bars
    assert load_aligned(tuple(settings.retrain_symbols), "1h", last_n=window).n_bars == window
    # the paper run replays its allowlist's 1h bars after a backfill window
    replayed = load_aligned(tuple(PAPER_ENV["APPLY_ALLOWLIST"].split(",")), "1h")
    assert replayed.n_bars > settings.market_backfill_bars + 10_000


def test_the_data_readme_describes_the_files() -> None:
    cell = r" \| ([^|]+)"
    rows = re.findall(
        r"^\| `(binance-futures-[A-Z0-9]+-\w+\.csv\.gz)` \| \w+ \| \w+" + cell * 4 + r" \|$",
        (SHIPPED_DATA / "README.md").read_text(),
        re.MULTILINE,
    )
    assert {r[0] for r in rows} == {p.name for p in SHIPPED_DATA.glob("*.csv.gz")}
    for name, n, first, last, size in rows:
        symbol, timeframe = name.removesuffix(".csv.gz").split("-")[2:]
        k = load_klines(symbol, timeframe)  # also checks the interval grid
        iso = [str(t).replace("T", " ")[:16] for t in k.open_time_ms[[0, -1]].astype("datetime64[ms]")]
        assert (len(k), iso[0], iso[1]) == (int(n.replace(",", "")), first.strip(), last.strip()), name
        assert (SHIPPED_DATA / name).stat().st_size == int(size.replace(",", "")), name
