"""The transfer-poll limit (docs/DESIGN.md, "Task queues and processes") is raised wherever a
Temporal server is started: the tests' and benchmarks' dev servers, the local stack's and the compose
stack's. At the default of 20 reads per second per shard every step of the one-shard dev server waits
for a 50 ms slot, and a server started without it would measure that limit instead of the system."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from trading.config import load_settings
from workers import stack
from workers.devservers import start_temporal
from workers.temporal_client import DEV_SERVER_DYNAMIC_CONFIG

REPO = Path(__file__).resolve().parents[2]
RAISED = [f"{key}={value}" for key, value in DEV_SERVER_DYNAMIC_CONFIG.items()]


def _dynamic_values(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--dynamic-config-value"]


def test_the_limit_is_raised_well_above_its_default() -> None:
    # 20 is the server's default (one read per 50 ms); the figure here is what the notes measured.
    assert DEV_SERVER_DYNAMIC_CONFIG["history.transferProcessorMaxPollRPS"] >= 1000


def test_a_started_dev_server_runs_with_the_raised_limit(tmp_path: Path) -> None:
    proc, _address = start_temporal(tmp_path)
    try:
        argv = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode().split("\0")
    finally:
        proc.stop()
    assert argv[1:3] == ["server", "start-dev"]
    for value in RAISED:
        assert value in _dynamic_values(argv), f"the dev server started without {value}: {argv}"


def test_the_local_stack_starts_its_server_with_the_raised_limit(tmp_path: Path) -> None:
    (spec,) = [s for s in stack.service_specs(load_settings(qt_home=tmp_path)) if s.name == "temporal"]
    for value in RAISED:
        assert value in _dynamic_values(spec.argv), f"the stack's server lacks {value}: {spec.argv}"


def test_every_server_start_in_the_repository_goes_through_dev_server_argv() -> None:
    # A new `start-dev` written out by hand would start a server at the default limit.
    starts = [
        path.relative_to(REPO).as_posix()
        for path in REPO.rglob("*.py")
        if not path.relative_to(REPO).parts[0].startswith(".")  # .venv, .git
        and path != Path(__file__).resolve()
        and re.search(r"""["']start-dev["']""", path.read_text())
    ]
    assert starts == ["workers/stack.py"]
    source = (REPO / "workers/stack.py").read_text()
    assert source.count('"start-dev"') == 1
    body = source[source.index("def dev_server_argv") :]
    assert body.index('"start-dev"') < body.index("*dynamic_config_flags()") < body.index("\ndef ")


def test_the_compose_server_reads_the_same_limit_from_its_dynamic_config() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.temporal.yml").read_text())
    temporal = compose["services"]["temporal"]
    in_container = "/etc/temporal/" + temporal["environment"]["DYNAMIC_CONFIG_FILE_PATH"]
    (mount,) = [v for v in temporal["volumes"] if v.split(":")[1] == in_container]
    config = yaml.safe_load((REPO / mount.split(":")[0]).read_text())
    for key, value in DEV_SERVER_DYNAMIC_CONFIG.items():
        assert config[key] == [{"value": value, "constraints": {}}], f"compose's {key}: {config.get(key)}"
