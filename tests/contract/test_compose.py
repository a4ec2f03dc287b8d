"""docker-compose.yml stays valid and consistent with ARCHITECTURE §2 and the settings (§4).

No Docker engine is needed: Debian's docker-compose (v1) validates the file, and the
rest is read with PyYAML.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from paywatch.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
PROCESSES = ("ingest", "worker", "projector", "api", "executor")
PUBLISHED = {"ingest": 8080, "api": 8081}
# Interpolated into the DSNs (and the postgres service's role script), never read by paywatch.
COMPOSE_ONLY_VARS = {
    "PAYWATCH_DB_PASSWORD",
    "PAYWATCH_API_DB_PASSWORD",
    "PAYWATCH_PROJECTOR_DB_PASSWORD",
}
TEST_SECRET_KEY = "compose-contract-test-secret-key-40-chars"
TEST_DB_PASSWORD = "compose-contract-test-db-password"
ROLE_PASSWORDS = {
    "PAYWATCH_API_DB_PASSWORD": "compose-contract-test-api-password",
    "PAYWATCH_PROJECTOR_DB_PASSWORD": "compose-contract-test-projector-password",
}


def _docker_compose(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail(
            "docker-compose is not installed: `make test` installs it "
            "(Debian package docker-compose, via `make tools`)"
        )
    return subprocess.run(
        [binary, "-f", str(COMPOSE_FILE), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _env(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PAYWATCH_")}
    return {**clean, **ROLE_PASSWORDS, **extra}


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return dict(doc["services"])


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _published(service: dict[str, Any]) -> set[tuple[int, int]]:
    """(host port, container port) pairs from short-syntax port strings."""
    pairs = set()
    for port in service.get("ports", []):
        *_, host, container = str(port).split("/")[0].split(":")
        pairs.add((int(host), int(container)))
    return pairs


def test_compose_config_is_valid() -> None:
    env = _env(PAYWATCH_SECRET_KEY=TEST_SECRET_KEY, PAYWATCH_DB_PASSWORD=TEST_DB_PASSWORD)
    done = _docker_compose("config", "-q", env=env)
    assert done.returncode == 0, done.stderr


def test_compose_refuses_to_start_without_a_secret_key() -> None:
    done = _docker_compose("config", "-q", env=_env(PAYWATCH_DB_PASSWORD=TEST_DB_PASSWORD))
    assert done.returncode != 0
    assert "PAYWATCH_SECRET_KEY" in done.stderr


def test_compose_refuses_to_start_without_a_database_password() -> None:
    done = _docker_compose("config", "-q", env=_env(PAYWATCH_SECRET_KEY=TEST_SECRET_KEY))
    assert done.returncode != 0
    assert "PAYWATCH_DB_PASSWORD" in done.stderr


def test_every_process_has_a_service_running_it(services: dict[str, Any]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r'^ENTRYPOINT \["paywatch"\]$', dockerfile, re.MULTILINE)
    for name in PROCESSES:
        service = services[name]
        assert service["command"] == ["run", name], name
        assert "build" in service, f"{name} must run the image built from the Dockerfile"


def test_http_processes_publish_their_default_ports(services: dict[str, Any]) -> None:
    for name, port in PUBLISHED.items():
        assert (port, port) in _published(services[name]), name


def test_processes_wait_for_init_and_healthy_infrastructure(services: dict[str, Any]) -> None:
    assert services["init"]["command"] == ["init"]
    for name in PROCESSES:
        deps = services[name]["depends_on"]
        assert deps["kafka"]["condition"] == "service_healthy", name
        assert deps["postgres"]["condition"] == "service_healthy", name
        assert deps["init"]["condition"] == "service_completed_successfully", name


def test_processes_use_the_compose_infrastructure(services: dict[str, Any]) -> None:
    # Without these two a process would try to start embedded Kafka/Postgres in its container.
    for name in (*PROCESSES, "init"):
        env = _environment(services[name])
        assert env["PAYWATCH_KAFKA_BOOTSTRAP"] == "kafka:9092", name
        assert env["PAYWATCH_DATABASE_URL"].endswith("@postgres:5432/paywatch"), name
        assert env["PAYWATCH_ENV"] == "prod", name
        assert env["PAYWATCH_BIND_HOST"] == "0.0.0.0", name


def test_every_paywatch_variable_is_a_setting(services: dict[str, Any]) -> None:
    known = {f"PAYWATCH_{field.upper()}" for field in Settings.model_fields}
    used = set(re.findall(r"\bPAYWATCH_[A-Z0-9_]+", COMPOSE_FILE.read_text(encoding="utf-8")))
    for service in services.values():
        used |= {k for k in _environment(service) if k.startswith("PAYWATCH_")}
    assert used - COMPOSE_ONLY_VARS, "compose sets no PAYWATCH_ variable at all"
    assert sorted(used - COMPOSE_ONLY_VARS - known) == []


def test_prometheus_scrapes_every_process_on_its_metrics_port(services: dict[str, Any]) -> None:
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text(encoding="utf-8"))
    targets = {
        target
        for job in prometheus["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    env = _environment(services["worker"])  # the shared paywatch environment
    metrics = {
        name: env[f"PAYWATCH_{name.upper()}_METRICS_PORT"]
        for name in ("worker", "projector", "executor")
    }
    assert targets == {"ingest:8080", "api:8081"} | {f"{n}:{p}" for n, p in metrics.items()}
    assert set(services["prometheus"]["depends_on"]) == set(PROCESSES)
