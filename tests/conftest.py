"""Shared fixtures: a real Kafka broker and a real Postgres for the whole test run.

Contract for test authors (all session-scoped unless noted):

* ``infra`` -> ``.bootstrap``, ``.dsn`` (migrated database), ``.settings``.
  ``PAYWATCH_KAFKA_BOOTSTRAP`` / ``PAYWATCH_DATABASE_URL`` are used when set;
  otherwise embedded servers start on free ports in
  ``.paywatch/test-infra/run-<pid>`` and are stopped (and the directory
  removed) at the end of the run. Nothing starts unless a test asks for it,
  so unit tests run without Java.
* ``kafka_bootstrap``, ``pg_dsn``: shortcuts.
* ``unique`` (function): ``"t" + 8 hex``, for topic prefixes, tenants, groups.
* ``test_settings`` (function): Settings on the infra with the topic prefix
  ``"<unique>."``, 3 partitions, memory tables; its topics are created.
* ``free_port`` (function): a callable returning a free TCP port on 127.0.0.1.
* Tests under tests/integration are marked ``integration``, under tests/e2e ``e2e``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from paywatch.kafka.admin import ensure_topics
from paywatch.ops.infra import start_infra, stop_infra
from paywatch.ops.kafka import EmbeddedKafka
from paywatch.ops.pids import pid_alive
from paywatch.schemas.topics import topic_specs
from paywatch.settings import Settings

TESTS_DIR = Path(__file__).resolve().parent
REPO = TESTS_DIR.parent
TEST_INFRA_ROOT = REPO / ".paywatch" / "test-infra"
# The jars `make run` fetched for the developer's stack: hard-linked, never fetched twice.
DEV_KAFKA_LIBS = REPO / ".paywatch" / "kafka" / "libs"
TIER_MARKERS = ("integration", "e2e")


@dataclass(frozen=True)
class InfraHandle:
    """Where the test run's Kafka and Postgres answer, and the settings that started them."""

    bootstrap: str
    dsn: str
    settings: Settings


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Serialise concurrent test runs (e.g. two developers) on one step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _embedded_only(state_dir: Path) -> Settings:
    """Settings for the embedded servers of state_dir, whatever the environment says."""
    return Settings(state_dir=state_dir, kafka_bootstrap=None, database_url=None)


def _sweep_stale_runs() -> None:
    """Stop and delete the servers of earlier test runs whose pytest process was killed."""
    for run_dir in TEST_INFRA_ROOT.glob("run-*"):
        pid = run_dir.name.removeprefix("run-")
        if pid.isdigit() and not pid_alive(int(pid)):
            stop_infra(_embedded_only(run_dir))
            shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def kafka_libs() -> Path:
    """A complete Kafka jar directory shared by all test runs (fetched at most once)."""
    holder = EmbeddedKafka(_embedded_only(TEST_INFRA_ROOT / "jars"))
    with _file_lock(TEST_INFRA_ROOT / "jars.lock"):
        return holder.ensure_jars(seed_from=DEV_KAFKA_LIBS)


@pytest.fixture(scope="session")
def infra(request: pytest.FixtureRequest) -> Iterator[InfraHandle]:
    """Real Kafka + real (migrated) Postgres for the whole run: from the env, else embedded."""
    with _file_lock(TEST_INFRA_ROOT / "sweep.lock"):
        _sweep_stale_runs()
    state = TEST_INFRA_ROOT / f"run-{os.getpid()}"
    settings = Settings(
        state_dir=state,
        embedded_kafka_port=free_tcp_port(),
        embedded_kafka_controller_port=free_tcp_port(),
        embedded_pg_port=free_tcp_port(),
        kafka_heap="512m",
    )
    if not settings.kafka_bootstrap:
        libs: Path = request.getfixturevalue("kafka_libs")
        EmbeddedKafka(settings).ensure_jars(seed_from=libs)
    try:
        ends = start_infra(settings)
        yield InfraHandle(ends.bootstrap, ends.dsn, settings)
    finally:
        stop_infra(settings)
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def kafka_bootstrap(infra: InfraHandle) -> str:
    """Bootstrap servers of the test run's broker."""
    return infra.bootstrap


@pytest.fixture(scope="session")
def pg_dsn(infra: InfraHandle) -> str:
    """DSN of the test run's migrated database."""
    return infra.dsn


@pytest.fixture
def unique() -> str:
    """A short unique lowercase id for topic prefixes, tenants and consumer groups."""
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def free_port() -> Callable[[], int]:
    """A callable returning a free TCP port on 127.0.0.1."""
    return free_tcp_port


@pytest.fixture
def test_settings(infra: InfraHandle, unique: str, tmp_path: Path) -> Settings:
    """Settings on the test infra with this test's own topics (created) and app id."""
    settings = Settings(
        kafka_bootstrap=infra.bootstrap,
        database_url=infra.dsn,
        topic_prefix=f"{unique}.",
        app_id=f"paywatch-{unique}",
        topic_partitions=3,
        table_store="memory://",
        table_standby_replicas=0,
        state_dir=tmp_path / "state",
    )
    ensure_topics(infra.bootstrap, topic_specs(settings), timeout=60.0)
    return settings


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests by tier folder so `-m 'not integration'` runs without Kafka or Postgres."""
    for item in items:
        if not item.path.is_relative_to(TESTS_DIR):
            continue
        tier = item.path.relative_to(TESTS_DIR).parts[0]
        if tier in TIER_MARKERS:
            item.add_marker(getattr(pytest.mark, tier))
