"""A real single-node Apache Kafka broker (KRaft) run from the Maven Central jars.

Layout under ``<state>/kafka``: ``libs/`` (jars, fetched once by Maven),
``data/`` (the log, kept across restarts), ``server.properties``,
``log4j.properties``, ``kafka.log`` (broker stdout/stderr) and ``kafka.pid``.
The broker runs in its own session so it outlives the CLI that started it.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import shutil
import subprocess
import time
import uuid
from importlib import resources
from pathlib import Path

from confluent_kafka import KafkaException

from paywatch.errors import ConfigError, InfraError
from paywatch.kafka.admin import admin_client
from paywatch.kafka.security import PLAINTEXT
from paywatch.ops.pids import (
    check_port_free,
    log_tail,
    pid_alive,
    process_cmdline,
    rotate_log,
    stop_pid,
    tcp_open,
)
from paywatch.settings import Settings

log = logging.getLogger(__name__)

JARS_MARKER = ".paywatch-complete"
MAVEN_TIMEOUT_S = 900
_MAIN_CLASS = "kafka.Kafka"

_SERVER_PROPERTIES = """\
# Written by paywatch on every start; edit paywatch/ops/kafka.py instead.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{cport}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data}
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
# The compaction dedupe buffer defaults to 128 MiB of heap: too much for a dev broker.
log.cleaner.dedupe.buffer.size=33554432
"""

_LOG4J_PROPERTIES = """\
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.log.LogCleaner=WARN
"""

_INSTALL_HINT = (
    "install them (Debian/Ubuntu: `apt-get install openjdk-17-jre-headless maven`; "
    "any JDK 17+ works), or set PAYWATCH_KAFKA_BOOTSTRAP to use an existing Kafka broker "
    "instead of the embedded one"
)


class EmbeddedKafka:
    """The embedded broker of one state directory: fetch jars, start, stop, probe."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.state_path / "kafka"
        self.libs_dir = self.home / "libs"
        self.data_dir = self.home / "data"
        self.config_file = self.home / "server.properties"
        self.log4j_file = self.home / "log4j.properties"
        self.log_file = self.home / "kafka.log"
        self.pid_file = self.home / "kafka.pid"
        self._child: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """Bootstrap address of this broker."""
        return f"127.0.0.1:{self.settings.embedded_kafka_port}"

    # -- jars ---------------------------------------------------------------

    def jars_ready(self) -> bool:
        """True when a complete copy of the jars for the current pom is in libs_dir."""
        return _jars_complete(self.libs_dir)

    def ensure_jars(self, seed_from: Path | None = None) -> Path:
        """Make libs_dir complete: hard-link from a complete seed dir, else fetch with Maven."""
        if self.jars_ready():
            return self.libs_dir
        if seed_from is not None and _jars_complete(seed_from):
            _link_tree(seed_from, self.libs_dir)
            return self.libs_dir
        self.ensure_tools()
        _fetch_jars(self.libs_dir)
        return self.libs_dir

    def ensure_tools(self) -> None:
        """Raise one ConfigError naming every missing tool (java, and mvn if jars are needed)."""
        missing = [] if shutil.which("java") else ["java (JDK 17+)"]
        if not self.jars_ready() and not shutil.which("mvn"):
            missing.append("mvn (Apache Maven, fetches the Kafka jars once)")
        if missing:
            raise ConfigError(
                f"the embedded Kafka broker needs {' and '.join(missing)}, not found on PATH: "
                + _INSTALL_HINT
            )

    # -- lifecycle ----------------------------------------------------------

    def pid(self) -> int | None:
        """Pid of our running broker, or None."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        cmdline = process_cmdline(pid) if pid_alive(pid) else []
        # A pid file can outlive its broker and the pid be reused: check it is ours.
        if _MAIN_CLASS in cmdline and str(self.config_file) in cmdline:
            return pid
        return None

    def is_running(self) -> bool:
        """True when our broker process is alive (it may still be starting)."""
        return self.pid() is not None

    def _pid_file_alive(self) -> bool:
        """The pid file names a live process (ours or not: only for a start in progress)."""
        try:
            return pid_alive(int(self.pid_file.read_text().strip()))
        except (FileNotFoundError, ValueError):
            return False

    def start(self, timeout: float = 90.0) -> None:
        """Start the broker unless it runs already; return once it serves metadata."""
        deadline = time.monotonic() + timeout
        if self.is_running():
            self._check_running_port()
        else:
            self._start_fresh()
        self._wait_ready(deadline, timeout)
        log.info("kafka ready at %s (pid %s)", self.bootstrap, self.pid())

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the broker (SIGTERM, SIGKILL after the deadline); True if it was running."""
        pid = self.pid()
        stopped = pid is not None and stop_pid(pid, timeout)
        self.pid_file.unlink(missing_ok=True)
        return stopped

    # -- helpers ------------------------------------------------------------

    def _ports(self) -> list[tuple[int, str]]:
        s = self.settings
        return [
            (s.embedded_kafka_port, "Kafka (PAYWATCH_EMBEDDED_KAFKA_PORT)"),
            (
                s.embedded_kafka_controller_port,
                "the Kafka controller (PAYWATCH_EMBEDDED_KAFKA_CONTROLLER_PORT)",
            ),
        ]

    def _start_fresh(self) -> None:
        self.pid_file.unlink(missing_ok=True)  # stale: its process is gone or not ours
        self.ensure_tools()
        self.ensure_jars()
        for port, what in self._ports():
            check_port_free(port, what)
        self._write_config()
        self._format_storage()
        self._launch()

    def _check_running_port(self) -> None:
        wanted = f"advertised.listeners=PLAINTEXT://{self.bootstrap}"
        if wanted not in self.config_file.read_text(encoding="utf-8").splitlines():
            raise InfraError(
                f"the embedded Kafka in {self.home} runs with another port than {self.bootstrap}: "
                "stop it first (`paywatch down`)"
            )

    def _write_config(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        s = self.settings
        self.config_file.write_text(
            _SERVER_PROPERTIES.format(
                port=s.embedded_kafka_port,
                cport=s.embedded_kafka_controller_port,
                data=self.data_dir,
            ),
            encoding="utf-8",
        )
        self.log4j_file.write_text(_LOG4J_PROPERTIES, encoding="utf-8")

    def _java(self, *args: str, heap: str) -> list[str]:
        return [
            "java",
            "-Xms128m",
            f"-Xmx{heap}",
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{self.log4j_file}",
            "-cp",
            str(self.libs_dir / "*"),
            *args,
        ]

    def _format_storage(self) -> None:
        if (self.data_dir / "meta.properties").exists():
            return
        cmd = self._java(
            "kafka.tools.StorageTool",
            "format",
            "-t",
            new_cluster_id(),
            "-c",
            str(self.config_file),
            heap="256m",
        )
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            output = (done.stdout + done.stderr).strip().splitlines()[-30:]
            raise InfraError("formatting Kafka storage failed:\n" + "\n".join(output))

    def _launch(self) -> None:
        rotate_log(self.log_file)
        cmd = self._java(_MAIN_CLASS, str(self.config_file), heap=self.settings.kafka_heap)
        with self.log_file.open("ab") as out:
            self._child = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.home,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{self._child.pid}\n", encoding="utf-8")

    def _wait_ready(self, deadline: float, timeout: float) -> None:
        port = self.settings.embedded_kafka_port
        # The TCP probe first: librdkafka would log every refused connection.
        while not (tcp_open("127.0.0.1", port) and _has_brokers(self.bootstrap)):
            # Our child alive but not yet recognised (right after the fork, before the exec
            # shows the broker's command line) is still starting, not dead; so is a broker
            # whose pid file names a live process whose command line could not be read
            # (under load /proc may show it empty): declaring it dead would orphan it.
            child_alive = self._child is not None and self._child.poll() is None
            if not self.is_running() and not child_alive and not self._pid_file_alive():
                code = self._child.poll() if self._child else None  # also reaps our child
                self.pid_file.unlink(missing_ok=True)
                raise InfraError(
                    f"Kafka exited (code {code}) while starting; "
                    f"{self.log_file}:\n{log_tail(self.log_file)}"
                )
            if time.monotonic() > deadline:
                if self._child is not None:  # we launched it: do not leave a half-started broker
                    self.stop()
                raise InfraError(
                    f"Kafka was not ready within {timeout:.0f} s; "
                    f"{self.log_file}:\n{log_tail(self.log_file)}"
                )
            time.sleep(0.2)  # polling readiness with a deadline


def _has_brokers(bootstrap: str) -> bool:
    """True when the broker answers a metadata request listing at least one broker."""
    admin = admin_client(bootstrap, security=PLAINTEXT)  # the embedded listener is plaintext
    try:
        return bool(admin.list_topics(timeout=2).brokers)
    except KafkaException:
        return False


def _pom_digest() -> str:
    pom = resources.files("paywatch.ops").joinpath("kafka-pom.xml")
    return hashlib.sha256(pom.read_bytes()).hexdigest()


def _jars_complete(libs: Path) -> bool:
    marker = libs / JARS_MARKER
    return marker.is_file() and marker.read_text(encoding="utf-8").strip() == _pom_digest()


def _link_tree(src: Path, dst: Path) -> None:
    """Copy a complete jar dir by hard links (a plain copy across file systems)."""
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    for item in src.iterdir():
        if item.name == JARS_MARKER:
            continue
        try:
            os.link(item, dst / item.name)
        except OSError:
            shutil.copy2(item, dst / item.name)
    # The marker goes last: an interrupted copy is redone on the next call.
    (dst / JARS_MARKER).write_text(_pom_digest() + "\n", encoding="utf-8")


def _fetch_jars(libs: Path) -> None:
    """Resolve the broker jars with Maven into libs (about 20 s cold, 4 s from ~/.m2)."""
    shutil.rmtree(libs, ignore_errors=True)  # never mix a partial fetch with a new one
    libs.mkdir(parents=True)
    log.info("fetching the Kafka jars with Maven into %s", libs)
    with resources.as_file(resources.files("paywatch.ops").joinpath("kafka-pom.xml")) as pom:
        cmd = [
            "mvn",
            "-B",
            "-q",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={libs}",
            "-DincludeScope=runtime",
        ]
        try:
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=MAVEN_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise InfraError(f"Maven did not finish within {MAVEN_TIMEOUT_S} s") from exc
    if done.returncode != 0 or not any(libs.glob("kafka_2.13-*.jar")):
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-30:])
        raise InfraError(
            f"fetching the Kafka jars failed (exit {done.returncode}): {' '.join(cmd)}\n{tail}\n"
            "Maven Central must be reachable once; or set PAYWATCH_KAFKA_BOOTSTRAP."
        )
    (libs / JARS_MARKER).write_text(_pom_digest() + "\n", encoding="utf-8")


def new_cluster_id() -> str:
    """A random 22-character base64url cluster id that does not start with '-'.

    The storage tool's argument parser takes a leading '-' for an option (1 id in 64 would
    fail to format); Kafka's own Uuid.randomUuid() avoids such ids for the same reason.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id
