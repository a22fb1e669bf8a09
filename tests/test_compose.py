"""The production-shaped compose stack cannot run here (no Docker engine); check that it hangs together:
every service, port, volume, health check and command refers to something that exists."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

from workers.cli import parse_args

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.temporal.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_has_the_production_services(compose: dict) -> None:
    services = compose["services"]
    for name in ["postgresql", "temporal", "temporal-ui", "redis", "prometheus", "grafana", "paper-exchange"]:
        assert name in services, name
    assert services["temporal"]["environment"]["DB"].startswith("postgres")
    assert "--appendonly" in services["redis"]["command"]


def test_every_service_has_a_healthcheck_or_waits_on_one(compose: dict) -> None:
    for name, svc in compose["services"].items():
        assert "healthcheck" in svc or "depends_on" in svc, name
        if "healthcheck" in svc:
            test = svc["healthcheck"]["test"]
            assert test[0] in {"CMD", "CMD-SHELL"} and len(test) > 1, name


def test_depends_on_names_real_services(compose: dict) -> None:
    services = compose["services"]
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        for dep in deps if isinstance(deps, list) else deps.keys():
            assert dep in services, f"{name} depends on unknown {dep}"
            if isinstance(deps, dict) and deps[dep].get("condition") == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}'s missing health check"


def test_ports_are_loopback_and_unique(compose: dict) -> None:
    seen: set[str] = set()
    for name, svc in compose["services"].items():
        for mapping in svc.get("ports", []):
            host, host_port, _container = mapping.split(":")
            assert host == "127.0.0.1", f"{name} publishes {mapping} beyond loopback"
            assert host_port not in seen, f"port {host_port} published twice"
            seen.add(host_port)


def test_volumes_exist(compose: dict) -> None:
    named = set(compose.get("volumes", {}))
    for name, svc in compose["services"].items():
        for vol in svc.get("volumes", []):
            source = vol.split(":")[0]
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in named, f"{name} uses undeclared volume {source}"


def test_built_services_use_the_repo_dockerfile_and_real_commands(compose: dict) -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["qtrader"]' in dockerfile
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (REPO / src).exists(), f"Dockerfile copies missing {src}"
    built = [(n, s) for n, s in compose["services"].items() if "build" in s]
    assert built, "no service is built from the repo"
    for name, svc in built:
        assert (REPO / svc["build"]["context"] / svc["build"]["dockerfile"]).exists()
        args = parse_args(svc["command"])  # raises SystemExit on an unknown subcommand or option
        assert callable(args.func), name
        assert "BINANCE_API_SECRET" in svc["environment"], name


def test_secrets_come_from_the_environment(compose: dict) -> None:
    text = COMPOSE.read_text()
    for match in re.finditer(r"BINANCE_API_(KEY|SECRET): (.+)", text):
        assert match.group(2).startswith("${"), match.group(0)


def test_prometheus_scrapes_services_that_exist(compose: dict) -> None:
    prom = yaml.safe_load((REPO / "deploy" / "prometheus.yml").read_text())
    for job in prom["scrape_configs"]:
        for target in job["static_configs"][0]["targets"]:
            host, port = target.split(":")
            assert host in compose["services"], target
            service = compose["services"][host]
            published = [shlex.split(p.replace(":", " "))[-1] for p in service.get("ports", [])]
            given = str(service.get("command", "")) + str(service.get("environment", {}))
            assert port in published or port in given, target
            assert job.get("metrics_path", "/metrics") == "/metrics", job["job_name"]


def test_the_trade_journal_has_its_database(compose: dict) -> None:
    from journal.store import POSTGRES, open_journal

    services = compose["services"]
    db = services["journal-db"]
    assert db["image"].startswith("postgres:") and "healthcheck" in db
    env = db["environment"]
    lifecycle = services["lifecycle-worker"]
    url = lifecycle["environment"]["DATABASE_URL"]
    assert url == (
        f"postgresql://{env['POSTGRES_USER']}:${{JOURNAL_DB_PASSWORD:-journal}}@journal-db:5432/{env['POSTGRES_DB']}"
    )
    assert env["POSTGRES_PASSWORD"] == "${JOURNAL_DB_PASSWORD:-journal}"  # one password, from the environment
    assert lifecycle["depends_on"]["journal-db"]["condition"] == "service_healthy"
    assert open_journal(url, REPO).dialect is POSTGRES  # a URL the journal takes (nothing connects yet)


def test_the_image_holds_every_installed_package() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    lines = (REPO / "Dockerfile").read_text().splitlines()
    copied = {line.split()[1] for line in lines if line.startswith("COPY ")}
    for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert pattern.rstrip("*") in copied, f"the Dockerfile does not copy {pattern.rstrip('*')}/"


def test_the_signal_services_run_with_metrics_and_their_data(compose: dict) -> None:
    services = compose["services"]
    prom = yaml.safe_load((REPO / "deploy" / "prometheus.yml").read_text())
    scraped = {t for job in prom["scrape_configs"] for t in job["static_configs"][0]["targets"]}
    market, inference = services["market-data"], services["inference-worker"]
    args = parse_args(market["command"])
    assert args.command == "market-data" and f"market-data:{args.metrics_port}" in scraped
    args = parse_args(inference["command"])
    assert (args.command, args.kind) == ("worker", "inference")
    assert f"inference-worker:{args.metrics_port}" in scraped
    assert market["environment"]["PROMETHEUS_BIND_HOST"] == inference["environment"]["PROMETHEUS_BIND_HOST"]
    assert market["depends_on"]["paper-exchange"]["condition"] == "service_healthy"  # it streams its klines
    assert inference["depends_on"]["temporal"]["condition"] == "service_healthy"
    # the model registry ($QT_HOME/models) outlives the container; both read the klines the venue replays
    dockerfile = (REPO / "Dockerfile").read_text()
    qt_home = re.search(r"ENV QT_HOME=(\S+)", dockerfile).group(1)  # type: ignore[union-attr]
    assert f"inference-data:{qt_home}" in inference["volumes"]
    # the klines are the repository's data/, copied into the image: a named volume starts empty, so
    # a folder in one left the paper exchange nothing to replay
    workdir = re.search(r"^WORKDIR (\S+)", dockerfile, re.MULTILINE).group(1)  # type: ignore[union-attr]
    shipped = f"{workdir}/data"
    assert "COPY data ./data" in dockerfile and f"QT_DATA_DIR={shipped}" in dockerfile
    command = services["paper-exchange"]["command"]
    assert command[command.index("--data-dir") + 1] == shipped
    for svc in (market, inference):  # the same folder the paper exchange replays from
        assert svc["environment"]["QT_DATA_DIR"] == shipped
