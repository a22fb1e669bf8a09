"""The production-shaped compose stack cannot run here (no Docker engine); check that it hangs together:
every service, port, volume, health check and command refers to something that exists."""

from __future__ import annotations

import re
import shlex
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
            assert port in published or port in str(service.get("command", "")), target
            assert job.get("metrics_path", "/metrics") == "/metrics", job["job_name"]
