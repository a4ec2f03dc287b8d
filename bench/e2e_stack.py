"""The two systems bench_e2e.py loads: `paywatch up` as a user runs it, and the baseline.

Both get their own state directory, free ports and a fresh embedded Kafka and Postgres
(the same broker and database build, started the same way: ``paywatch.ops.infra``). Each
`Stack` says where to send webhooks, which pids play which role (for the sampler), which
checkpoint query shows its read-model commits, and stops everything it started by pid.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import psutil
from bench_ingest import bench_settings, free_port, seed_jars
from e2e_baseline import TABLES
from e2e_sampler import tree

from paywatch.kafka.admin import ensure_topics
from paywatch.ops.infra import Endpoints, read_stack, start_infra, stop_infra
from paywatch.ops.kafka import EmbeddedKafka
from paywatch.ops.pids import stop_pid
from paywatch.ops.postgres import EmbeddedPostgres
from paywatch.schemas.topics import FOREVER, TopicSpec
from paywatch.settings import Settings

BENCH = Path(__file__).resolve().parent
BASELINE_TOPIC = "bench.webhooks"
PAYWATCH_CHECKPOINTS = (
    "SELECT topic, partition, next_offset FROM projection_checkpoints"
    " WHERE projection = 'read_models'"
)
BASELINE_CHECKPOINTS = "SELECT topic, partition, next_offset FROM bench_checkpoints"


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment without the shell's PAYWATCH_* variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYWATCH_")}
    env.update(extra, PYTHONUNBUFFERED="1")
    return env


def http_ok(url: str) -> bool:
    """True when GET url answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


@dataclass
class Stack:
    """One system under test: endpoints, roles, checkpoints; `stop` undoes `start`."""

    name: str
    state: Path
    settings: Settings
    port: int = 0
    secret: str = "unused"
    ends: Endpoints | None = None
    checkpoints: str = ""
    extra: dict[int, str] = field(default_factory=dict)  # pid -> role (load generator)
    exclude: set[int] = field(default_factory=set)  # the bench's own Postgres backends
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    facts: dict[str, str] = field(default_factory=dict)
    metrics_ports: dict[str, int] = field(default_factory=dict)

    @property
    def path(self) -> str:
        """Where webhooks are posted."""
        return "/webhooks/stripe/demo"

    def roles(self) -> dict[int, str]:
        """pid -> role of every process of this system (and the bench's own)."""
        found = {os.getpid(): "bench (probe)", **self.extra}
        found.update(tree(EmbeddedKafka(self.settings).pid(), "kafka", set()))
        found.update(tree(EmbeddedPostgres(self.settings).pid(), "postgres", self.exclude))
        found.update({proc.pid: name for name, proc in self.procs.items()})
        return found

    def start(self) -> None:
        """Start the system (each kind of stack its own way)."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop everything `start` started."""
        raise NotImplementedError

    def dsn(self) -> str:
        """The database URL."""
        assert self.ends is not None
        return str(self.ends.dsn)


class PaywatchStack(Stack):
    """`paywatch up -d` in its own state dir; `paywatch down`."""

    def env(self) -> dict[str, str]:
        """What a user would export to run this stack."""
        s = self.settings
        return clean_env({
            "PAYWATCH_ENV": "dev", "PAYWATCH_STATE_DIR": str(self.state),
            "PAYWATCH_INGEST_PORT": str(self.port), "PAYWATCH_API_PORT": str(s.api_port),
            "PAYWATCH_EMBEDDED_KAFKA_PORT": str(s.embedded_kafka_port),
            "PAYWATCH_EMBEDDED_KAFKA_CONTROLLER_PORT": str(s.embedded_kafka_controller_port),
            "PAYWATCH_EMBEDDED_PG_PORT": str(s.embedded_pg_port),
            **{f"PAYWATCH_{name.upper()}_METRICS_PORT": str(port)
               for name, port in self.metrics_ports.items()},
        })

    def paywatch(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """Run `python -m paywatch ARGS` as a user would."""
        return subprocess.run([sys.executable, "-m", "paywatch", *args], env=self.env(),
                              capture_output=True, text=True, timeout=timeout, check=False)

    def start(self) -> None:
        """`paywatch up -d`, then `paywatch status`; the demo secret from what up seeded."""
        seed_jars(self.settings)
        started = time.monotonic()
        up = self.paywatch("up", "-d")
        if up.returncode != 0:
            raise RuntimeError(f"paywatch up -d failed:\n{up.stdout}\n{up.stderr}")
        self.facts["ready_s"] = f"{time.monotonic() - started:.0f}"
        status = self.paywatch("status", timeout=60)
        self.facts["status"] = status.stdout
        seeded = json.loads((self.state / "ready.json").read_text())
        self.secret = seeded["stripe_signing_secret"]
        stack = read_stack(self.settings) or {}
        self.ends = Endpoints(stack["kafka"]["bootstrap"], stack["postgres"]["dsn"])
        self.checkpoints = PAYWATCH_CHECKPOINTS

    def roles(self) -> dict[int, str]:
        """The supervisor and the processes of processes.json (re-read: restarts)."""
        found = super().roles()
        pid_file = self.state / "supervisor.pid"
        if pid_file.exists() and pid_file.read_text().strip().isdigit():
            found[int(pid_file.read_text())] = "paywatch up (supervisor)"
        try:
            children = json.loads((self.state / "processes.json").read_text())
        except (OSError, ValueError):
            children = {}
        found.update({int(pid): name for name, pid in children.items()})
        return found

    def logs(self) -> Path:
        """Where `paywatch up` writes each process's log."""
        return self.state / "logs"

    def stop(self) -> None:
        """`paywatch down` (then the embedded servers by pid, should down have failed)."""
        self.paywatch("down", timeout=180)
        stop_infra(self.settings)
        orphans = stop_leftovers(self.state)
        if orphans:
            print(f"[bench] stopped processes left running in {self.state}: {orphans}",
                  file=sys.stderr)


class BaselineStack(Stack):
    """Embedded Kafka + Postgres, the bare app and the COPY consumer of e2e_baseline.py."""

    def start(self) -> None:
        """Start the infrastructure, the topic and table, the consumer and the app."""
        seed_jars(self.settings)
        self.ends = start_infra(self.settings)
        ensure_topics(self.ends.bootstrap, [TopicSpec(
            BASELINE_TOPIC, self.settings.topic_partitions, dict(FOREVER))], timeout=60)
        asyncio.run(_create_tables(self.ends.dsn))
        script = str(BENCH / "e2e_baseline.py")
        self._spawn("baseline consumer", [script, "consumer", self.ends.bootstrap,
                                          BASELINE_TOPIC, self.ends.dsn])
        self._spawn("baseline app", [script, "app", str(self.port), self.ends.bootstrap,
                                     BASELINE_TOPIC])
        deadline = time.monotonic() + 60
        log = self.state / "baseline consumer.log"
        while not (http_ok(f"http://127.0.0.1:{self.port}/health")
                   and "started" in log.read_text(errors="replace")):
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"baseline not ready ({dead or 'timeout'}); see {self.state}")
            time.sleep(0.2)
        self.checkpoints = BASELINE_CHECKPOINTS

    def _spawn(self, name: str, argv: list[str]) -> None:
        with (self.state / f"{name}.log").open("ab") as out:
            self.procs[name] = subprocess.Popen(
                [sys.executable, *argv], stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=clean_env({}))

    def stop(self) -> None:
        """SIGTERM the app and the consumer (SIGKILL after 20 s), then Kafka and Postgres."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        stop_infra(self.settings)
        stop_leftovers(self.state)


async def _create_tables(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(TABLES)
    finally:
        await conn.close()


def stop_leftovers(state: Path) -> list[str]:
    """SIGTERM (then SIGKILL) every process whose command line names our state dir.

    `paywatch down` stops what the state dir's pid files name; a process whose pid file is
    gone (seen: an embedded broker declared dead while starting, pid file removed, JVM left
    running) would otherwise outlive the bench.
    """
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.pid != os.getpid() and str(state) in " ".join(proc.info["cmdline"] or ()):
            found.append(f"{proc.pid} {(proc.info['cmdline'] or ['?'])[0]}")
            stop_pid(proc.pid, 20)
    return found


def make_stack(kind: str, root: Path, taken: set[int]) -> Stack:
    """A paywatch or baseline stack in root/<kind> on free ports (not started)."""
    state = root / kind
    state.mkdir(parents=True, exist_ok=True)
    settings = bench_settings(state, taken).model_copy(update={"api_port": free_port(taken)})
    cls = PaywatchStack if kind == "paywatch" else BaselineStack
    metrics = {name: free_port(taken) for name in ("worker", "projector", "executor")}
    return cls(kind, state, settings, port=free_port(taken), metrics_ports=metrics)
