"""`qtrader data download` against a local copy of the archive: checksums verified, a corrupted zip
refused with nothing written, an interrupted download resumed without fetching verified files again,
an existing file extended, the recent days from the REST tail, and the files read back by the loaders
equal to the rows the archive served."""

from __future__ import annotations

import gzip
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from signals.data import HEADER, kline_path, load_funding, load_klines, load_mark_klines
from signals.download import command
from tests.signals.download.conftest import (
    HOUR,
    LocalArchive,
    ms,
    source_bars,
    source_funding,
)
from workers.cli import main as qtrader


@pytest.fixture(autouse=True)
def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QT_HOME", str(tmp_path / "qt"))
    monkeypatch.delenv("QT_DATA_DIR", raising=False)
    monkeypatch.delenv("BINANCE_ARCHIVE_URL", raising=False)
    monkeypatch.setattr(command, "BACKOFF_S", 0.01)  # retries stay, without the waiting


def run(archive: LocalArchive, out: Path, *args: str, rest: bool = False) -> int:
    argv = ["data", "download", "--archive-url", archive.url, "--out", str(out), *args]
    argv += ["--rest-url", archive.url] if rest else ["--no-rest"]
    return qtrader(argv)


def assert_loads_as_source(out: Path, symbol: str, tf: str, a: int, b: int) -> None:
    k = load_klines(symbol, tf, out)
    src = source_bars(symbol, "klines", tf, a, b)
    assert k.open_time_ms.tolist() == [r[0] for r in src]
    for col, i in (("open", 1), ("high", 2), ("low", 3), ("close", 4), ("volume", 5)):
        assert getattr(k, col).tolist() == [float(r[i]) for r in src], col


def test_monthly_and_daily_files_verified_converted_and_loaded(
    archive: LocalArchive, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive.month("BTCUSDT", "1h", "2024-01", header=False)  # older files have no header line
    archive.month("BTCUSDT", "1h", "2024-02")
    for d in range(1, 6):
        archive.day("BTCUSDT", "1h", date(2024, 3, d))
    out = tmp_path / "data"
    assert run(archive, out, "--symbols", "btcusdt", "--start", "2024-01-01", "--end", "2024-03-05") == 0
    assert_loads_as_source(out, "BTCUSDT", "1h", ms(date(2024, 1, 1)), ms(date(2024, 3, 6)))
    # every zip was checked against its CHECKSUM, which was fetched first
    zips = archive.zip_requests()
    assert len(zips) == 7
    for z in zips:
        assert archive.requests.index(z + ".CHECKSUM") < archive.requests.index(z)
    with gzip.open(kline_path("BTCUSDT", "1h", out), "rt") as fh:
        lines = fh.read().splitlines()
    assert lines[0] == HEADER and len(lines) == 1 + (31 + 29 + 5) * 24
    first = lines[1].split(",")
    assert int(first[6]) == int(first[0]) + HOUR - 1  # close time: open + interval − 1 ms
    err = capsys.readouterr().err
    assert "[1/7] BTCUSDT klines 1h monthly 2024-01: downloaded" in err and "checksum ok, 744 rows" in err
    assert "[7/7] BTCUSDT klines 1h daily 2024-03-05" in err
    # nothing but the output file and the resume state: the verified zips are dropped once written
    assert sorted(p.name for p in out.iterdir()) == [".download", "binance-futures-BTCUSDT-1h.csv.gz"]
    assert not list(out.rglob("*.zip"))


def test_a_corrupted_zip_is_refused_and_nothing_is_written_or_changed(
    archive: LocalArchive, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "data"
    archive.month("BTCUSDT", "1h", "2024-01")
    archive.month("BTCUSDT", "1h", "2024-02", corrupt=True)
    assert run(archive, out, "--symbols", "BTCUSDT", "--start", "2024-02-01", "--end", "2024-02-29") == 1
    err = capsys.readouterr().err
    assert "BTCUSDT-1h-2024-02.zip: sha256" in err and "does not match its CHECKSUM" in err
    # neither an output file nor the refused zip in the cache
    assert not list(out.rglob("*.csv.gz")) and not list(out.rglob("*.zip"))
    assert len([r for r in archive.zip_requests() if r.endswith("2024-02.zip")]) == 2  # one retry

    # an existing file is left exactly as it was
    assert run(archive, out, "--symbols", "BTCUSDT", "--start", "2024-01-01", "--end", "2024-01-31") == 0
    before = kline_path("BTCUSDT", "1h", out).read_bytes()
    capsys.readouterr()
    assert run(archive, out, "--symbols", "BTCUSDT", "--start", "2024-01-01", "--end", "2024-02-29") == 1
    assert "does not match its CHECKSUM" in capsys.readouterr().err
    assert kline_path("BTCUSDT", "1h", out).read_bytes() == before
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_an_interrupted_download_resumes_without_fetching_verified_files_again(
    archive: LocalArchive, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for m in range(1, 7):
        archive.month("ETHUSDT", "1h", f"2024-0{m}")
    out = tmp_path / "data"
    archive.fail_after_zips = 3  # the server goes down after the third file
    assert run(archive, out, "--symbols", "ETHUSDT", "--start", "2024-01-01", "--end", "2024-06-30") == 1
    err = capsys.readouterr().err
    assert "HTTP 500" in err and "again resumes" in err
    first_run = archive.zip_requests()
    assert len(set(first_run)) == 3 and not kline_path("ETHUSDT", "1h", out).exists()

    archive.fail_after_zips = None
    archive.requests.clear()
    assert run(archive, out, "--symbols", "ETHUSDT", "--start", "2024-01-01", "--end", "2024-06-30") == 0
    second_run = archive.zip_requests()
    assert len(second_run) == 3 and not set(second_run) & set(first_run)  # only the three missing months
    assert not [r for r in archive.requests if any(r == z + ".CHECKSUM" for z in first_run)]
    assert capsys.readouterr().err.count(": cached ") == 3
    assert_loads_as_source(out, "ETHUSDT", "1h", ms(date(2024, 1, 1)), ms(date(2024, 7, 1)))


def test_an_existing_file_is_extended_not_fetched_again(
    archive: LocalArchive, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for m in (1, 2, 3):
        archive.month("BTCUSDT", "4h", f"2024-0{m}")
    out = tmp_path / "data"
    assert (
        run(
            archive,
            out,
            "--symbols",
            "BTCUSDT",
            "--timeframe",
            "4h",
            "--start",
            "2024-02-01",
            "--end",
            "2024-02-29",
        )
        == 0
    )
    archive.requests.clear()
    assert (
        run(
            archive,
            out,
            "--symbols",
            "BTCUSDT",
            "--timeframe",
            "4h",
            "--start",
            "2024-01-01",
            "--end",
            "2024-03-31",
        )
        == 0
    )
    assert sorted(archive.zip_requests()) == [
        "/data/futures/um/monthly/klines/BTCUSDT/4h/BTCUSDT-4h-2024-01.zip",
        "/data/futures/um/monthly/klines/BTCUSDT/4h/BTCUSDT-4h-2024-03.zip",
    ]
    assert_loads_as_source(out, "BTCUSDT", "4h", ms(date(2024, 1, 1)), ms(date(2024, 4, 1)))
    archive.requests.clear()
    assert (
        run(
            archive,
            out,
            "--symbols",
            "BTCUSDT",
            "--timeframe",
            "4h",
            "--start",
            "2024-01-01",
            "--end",
            "2024-03-31",
        )
        == 0
    )
    assert archive.requests == []  # all of it in place already
    assert "unchanged" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--symbols", "BTC-USDT"], "'BTC-USDT' is not a Binance USDⓈ-M symbol"),
        (["--symbols", "BTCUSDT,BTC"], "'BTC' is not a Binance USDⓈ-M symbol"),
        (["--symbols", " , "], "--symbols: give at least one symbol"),
        (["--timeframe", "7m"], "--timeframe: '7m' is not a timeframe Binance serves"),
        (["--start", "2024-13-01"], "--start: '2024-13-01' is not a date (YYYY-MM-DD)"),
        (["--end", "yesterday"], "--end: 'yesterday' is not a date"),
        (["--start", "2024-03-01", "--end", "2024-02-01"], "--end 2024-02-01 is before --start 2024-03-01"),
        (["--end", "2999-01-01"], "--end 2999-01-01 is in the future"),
        (["--kind", "trades"], "--kind: trades: choose from klines, mark, funding"),
        (["--archive-url", "ftp://mirror"], "--archive-url: 'ftp://mirror' is not an http(s) URL"),
    ],
)
def test_bad_arguments_are_refused_before_any_request(
    archive: LocalArchive, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], problem: str
) -> None:
    base = {"--symbols": "BTCUSDT", "--start": "2024-01-01", "--end": "2024-01-31"}
    for i in range(0, len(args), 2):
        base[args[i]] = args[i + 1]
    argv = ["data", "download", "--out", str(tmp_path / "data")]
    if "--archive-url" not in base:
        argv += ["--archive-url", archive.url]
    argv += [x for kv in base.items() for x in kv]
    assert qtrader(argv) == 2
    err = capsys.readouterr().err
    assert problem in err, err
    assert archive.requests == [] and not (tmp_path / "data").exists()


def test_a_symbol_the_archive_does_not_know_is_refused(
    archive: LocalArchive, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive.month("BTCUSDT", "1h", "2024-01")
    out = tmp_path / "data"
    code = run(archive, out, "--symbols", "NOPEUSDT,BTCUSDT", "--start", "2024-01-01", "--end", "2024-01-31")
    assert code == 2
    err = capsys.readouterr().err
    assert "NOPEUSDT: no klines 1h from 2024-01-01 to 2024-01-31: every archive file answered 404" in err
    assert "Not a Binance USDⓈ-M symbol" in err
    assert sorted(p.name for p in out.glob("*.csv.gz")) == ["binance-futures-BTCUSDT-1h.csv.gz"]


def test_the_recent_days_come_from_the_rest_tail_and_join_the_archive(
    archive: LocalArchive, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = int(time.time() * 1000)
    today = datetime.fromtimestamp(now / 1000, UTC).date()
    start = today - timedelta(days=4)
    for k in (4, 3):  # the archive has days D-4 and D-3; D-2 and D-1 are "not published yet"
        archive.day("BTCUSDT", "1h", today - timedelta(days=k))
    out = tmp_path / "data"
    plan = command.Plan(("klines",), ("BTCUSDT",), "1h", start, today, out, archive.url, archive.url)
    assert command.download(plan, now_ms=now, log=lambda line: print(line)) == 0
    log = capsys.readouterr().out
    assert "not published yet; from the REST tail" in log and "REST tail" in log
    last_closed = (now - HOUR) // HOUR * HOUR  # the open bar is never written
    k = load_klines("BTCUSDT", "1h", out)
    src = source_bars("BTCUSDT", "klines", "1h", ms(start), last_closed + 1)
    assert k.open_time_ms.tolist() == [r[0] for r in src]
    assert k.close.tolist() == [float(r[4]) for r in src]
    assert np.all(np.diff(k.open_time_ms) == HOUR)
    rest_calls = [r for r in archive.requests if r.startswith("/fapi/v1/klines")]
    assert rest_calls  # and the archive's days were not asked of REST:
    assert k.open_time_ms[0] == ms(start) and len(archive.zip_requests()) == 2


def test_mark_prices_and_funding_rates_have_files_of_their_own(archive: LocalArchive, tmp_path: Path) -> None:
    archive.month("BTCUSDT", "1h", "2024-01", kind="mark")
    archive.funding_month("BTCUSDT", "2024-01", header=False)
    archive.funding_month("BTCUSDT", "2024-02")
    out = tmp_path / "data"
    args = ("--symbols", "BTCUSDT", "--start", "2024-01-01", "--end", "2024-01-31", "--kind", "mark,funding")
    assert run(archive, out, *args) == 0
    m = load_mark_klines("BTCUSDT", "1h", out)
    src = source_bars("BTCUSDT", "mark", "1h", ms(date(2024, 1, 1)), ms(date(2024, 2, 1)))
    assert m.open_time_ms.tolist() == [r[0] for r in src] and m.high.tolist() == [float(r[2]) for r in src]
    f = load_funding("BTCUSDT", out)
    fsrc = source_funding("BTCUSDT", ms(date(2024, 1, 1)), ms(date(2024, 2, 1)))
    assert f.time_ms.tolist() == [t for t, _ in fsrc] and [str(r) for r in f.rate] == [r for _, r in fsrc]
    assert len(f) == 93 and any(r < 0 for r in f.rate) and any(r > 0 for r in f.rate)
    # the trade-kline loader does not mistake them for klines
    assert not kline_path("BTCUSDT", "1h", out).exists()


def test_funding_of_the_current_month_from_rest(archive: LocalArchive, tmp_path: Path) -> None:
    now = int(time.time() * 1000)
    today = datetime.fromtimestamp(now / 1000, UTC).date()
    start = today - timedelta(days=2)
    out = tmp_path / "data"
    plan = command.Plan(("funding",), ("BTCUSDT",), "1h", start, today, out, archive.url, archive.url)
    assert command.download(plan, now_ms=now, log=lambda line: None) == 0
    f = load_funding("BTCUSDT", out)
    assert f.time_ms.tolist() == [t for t, _ in source_funding("BTCUSDT", ms(start), now + 1)]
    assert any(r.endswith("fundingRate") for r in archive.requests)


def test_default_folder_is_qt_home_data_and_the_user_is_told_to_point_qt_data_dir_at_it(
    archive: LocalArchive, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive.month("BTCUSDT", "1d", "2024-01")
    argv = ["data", "download", "--archive-url", archive.url, "--no-rest", "--symbols", "BTCUSDT"]
    argv += ["--timeframe", "1d", "--start", "2024-01-01", "--end", "2024-01-31"]
    assert qtrader(argv) == 0
    folder = tmp_path / "qt" / "data"
    assert len(load_klines("BTCUSDT", "1d", folder)) == 31
    assert f"export QT_DATA_DIR={folder.resolve()}" in capsys.readouterr().out
