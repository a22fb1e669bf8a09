"""The README's table of every setting is the one generated from trading/config.py, and the generator
shows what the class says (never what the environment holds)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from trading.config import Settings
from workers import settings_table
from workers.settings_table import END, START, TableError, env_names, render

REPO = Path(__file__).resolve().parents[2]


def generator(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.settings_table", *args],
        cwd=REPO,
        env=env if env is not None else dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_readme_table_is_the_generated_one() -> None:
    assert settings_table.current() == render(), (
        "README.md's settings table differs from trading/config.py: run "
        "`python -m workers.settings_table --write` and commit the README"
    )


def test_every_setting_has_one_row_with_a_description() -> None:
    table = render()
    first_cells = [line.split(" | ")[0].removeprefix("| ") for line in table.splitlines()[2:]]
    expected = [
        " or ".join(f"`{v}`" for v in env_names(name, field)) for name, field in Settings.model_fields.items()
    ]
    assert first_cells == expected
    assert all(field.description for field in Settings.model_fields.values())
    ports = [n.upper() for n in Settings.model_fields if n.endswith("_port")]
    assert {"INFERENCE_METRICS_PORT", "MARKET_DATA_METRICS_PORT", "PERFORMANCE_METRICS_PORT"} <= set(ports)
    assert all(f"| `{p}` |" in table for p in ports)
    row = next(line for line in table.splitlines() if line.startswith("| `PAPER_DATA_DIR` or `QT_DATA_DIR`"))
    assert "| `data/` | path |" in row  # the repository's folder, the same on every machine


def test_table_comes_from_the_class_not_the_environment() -> None:
    """Set variables (a secret among them) change nothing in the table, and no value set shows."""
    env = {
        **os.environ,
        "BINANCE_API_SECRET": "s3cr3t-value-never-shown",
        "DATABASE_URL": "postgresql://u:pw-never-shown@h/db",
        "GOV_MAX_OPEN_POSITIONS": "7",
        "BINANCE_WEIGHT_BUDGET_ID": "some-host",
    }
    printed = generator(env=env)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == render()
    assert "never-shown" not in printed.stdout and "some-host" not in printed.stdout
    row = next(line for line in printed.stdout.splitlines() if line.startswith("| `BINANCE_API_SECRET`"))
    assert "| not set | secret, optional |" in row
    via_cli = subprocess.run(
        [sys.executable, "-m", "workers.cli", "config", "--table"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert via_cli.returncode == 0 and via_cli.stdout == render(), via_cli.stderr


def test_check_fails_on_a_stale_table_and_write_fixes_only_the_table(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    before, after = "# Title\n\nIntro.\n\n", "\nAfter the table.\n"
    stale = render().replace("Metrics port of the inference worker.", "an old description")
    readme.write_text(f"{before}{START}\n{stale}{END}\n{after}")

    check = generator("--check", "--readme", str(readme))
    assert check.returncode == 1
    assert "python -m workers.settings_table --write" in check.stderr

    wrote = generator("--write", "--readme", str(readme))
    assert wrote.returncode == 0 and "updated" in wrote.stdout, wrote.stderr
    assert readme.read_text() == f"{before}{START}\n{render()}{END}\n{after}"
    assert generator("--check", "--readme", str(readme)).returncode == 0
    again = generator("--write", "--readme", str(readme))
    assert again.returncode == 0 and "already up to date" in again.stdout


@pytest.mark.parametrize(
    "text",
    ["# no markers\n", f"{END}\n{START}\n", f"{START}\n{START}\n{END}\n"],
    ids=["missing", "reversed", "twice"],
)
def test_a_readme_without_one_pair_of_markers_is_refused(tmp_path: Path, text: str) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(text)
    result = generator("--write", "--readme", str(readme))
    assert result.returncode == 2 and (START in result.stderr or "comes before" in result.stderr)
    assert readme.read_text() == text  # nothing half-written


def test_a_setting_without_a_description_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    class Undocumented(Settings):
        new_knob_seconds: float = 1.0

    monkeypatch.setattr(settings_table, "Settings", Undocumented)
    with pytest.raises(TableError, match="new_knob_seconds has no description"):
        render()
