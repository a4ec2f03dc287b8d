"""`paywatch up`: infrastructure + every process, supervised; Ctrl-C stops everything.

Children run as `python -m paywatch run <name>` with their output in
`<state>/logs/<name>.log`; a child that dies is restarted with backoff, and so is a dead
embedded Kafka or Postgres (ops/infra.py InfraWatch). Every restart is counted in
`<state>/supervision.json` (read by `paywatch status`). `up -d` runs this same supervisor
detached and returns once it reports ready.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from paywatch.errors import InfraError
from paywatch.ops.infra import Endpoints, InfraWatch, start_infra, stop_infra
from paywatch.ops.pids import log_tail, pid_alive, process_cmdline, process_started
from paywatch.settings import Settings

UP_PROCESSES = ("ingest", "worker", "projector", "api", "executor")
READY_TIMEOUT_S = 120.0


def logs_dir(settings: Settings) -> Path:
    """Where process logs go."""
    path = settings.state_path / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def supervisor_pid_file(settings: Settings) -> Path:
    """Pid of the running supervisor."""
    return settings.state_path / "supervisor.pid"


def running_supervisor(settings: Settings) -> int | None:
    """The pid of this state dir's running supervisor, or None.

    A pid file outlives a supervisor that was killed, and its pid can be reused by any
    process; `paywatch down` would then SIGTERM (and SIGKILL) a stranger. So the pid only
    counts when that process is a `paywatch up` started before the file was written.
    """
    pid_file = supervisor_pid_file(settings)
    try:
        pid = int(pid_file.read_text().strip() or 0)
        written = pid_file.stat().st_mtime
    except (FileNotFoundError, ValueError):
        return None
    if pid <= 0 or not pid_alive(pid):
        return None
    cmdline = process_cmdline(pid)
    ours = "up" in cmdline and any(Path(part).name == "paywatch" for part in cmdline)
    return pid if ours and process_started(pid) <= written + 1.0 else None


def supervision_file(settings: Settings) -> Path:
    """Restarts counted by the supervisor (children and embedded servers)."""
    return settings.state_path / "supervision.json"


def ready_file(settings: Settings) -> Path:
    """Written by the supervisor once every process is ready."""
    return settings.state_path / "ready.json"


@dataclass
class Child:
    """One supervised paywatch process."""

    name: str
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    log: Path = field(default_factory=Path)
    last_exit: str | None = None
    last_restart_at: str | None = None


class Supervisor:
    """Starts, watches, restarts and stops the paywatch processes."""

    def __init__(self, settings: Settings, ends: Endpoints, names: tuple[str, ...] = UP_PROCESSES):
        self.settings = settings
        self.ends = ends
        self.children = [Child(n, log=logs_dir(settings) / f"{n}.log") for n in names]
        self._stopping = False

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        # Children see the endpoints as set variables: they must also be told the env (the
        # one this stack was validated with), or an external-looking bootstrap is refused.
        env["PAYWATCH_ENV"] = self.settings.env
        env["PAYWATCH_KAFKA_BOOTSTRAP"] = self.ends.bootstrap
        env["PAYWATCH_DATABASE_URL"] = self.ends.dsn
        env["PAYWATCH_STATE_DIR"] = str(self.settings.state_path)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _spawn(self, child: Child) -> None:
        with child.log.open("ab") as out:
            child.proc = subprocess.Popen(
                [sys.executable, "-m", "paywatch", "run", child.name],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._env(),
            )

    def start(self) -> None:
        """Start every child."""
        for child in self.children:
            self._spawn(child)
        self._write_pids()

    def _write_pids(self) -> None:
        pids = {c.name: c.proc.pid for c in self.children if c.proc is not None}
        (self.settings.state_path / "processes.json").write_text(json.dumps(pids))

    def poll(self) -> list[str]:
        """Restart children that died (with backoff); return the names restarted."""
        restarted = []
        now = time.monotonic()
        for child in self.children:
            if child.proc is None or child.proc.poll() is None or self._stopping:
                continue
            if child.next_start == 0.0:
                child.next_start = now + min(2.0**child.restarts, 30.0)
                child.last_exit = exit_text(child.proc.returncode)
            elif now >= child.next_start:
                child.restarts += 1
                child.next_start = 0.0
                child.last_restart_at = datetime.now(UTC).isoformat(timespec="seconds")
                self._spawn(child)
                restarted.append(child.name)
        if restarted:
            self._write_pids()
        return restarted

    def report(self) -> dict[str, Any]:
        """Restarts per child, for supervision.json."""
        return {
            c.name: {
                "restarts": c.restarts,
                "last_exit": c.last_exit,
                "last_restart_at": c.last_restart_at,
            }
            for c in self.children
        }

    def dead_on_start(self) -> Child | None:
        """A child that exited before becoming ready, if any."""
        return next(
            (c for c in self.children if c.proc is not None and c.proc.poll() is not None), None
        )

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM every child, SIGKILL what is left after `timeout`."""
        self._stopping = True
        live = [c.proc for c in self.children if c.proc is not None and c.proc.poll() is None]
        for proc in live:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in live:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def exit_text(code: int | None) -> str:
    """How a child ended: its exit code, or the signal that killed it."""
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def write_supervision(settings: Settings, sup: Supervisor, infra: InfraWatch) -> None:
    """supervision.json: what the supervisor restarted (atomically replaced)."""
    data = {"processes": sup.report(), "infra": infra.report()}
    path = supervision_file(settings)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """True when GET url answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (our own loopback URL)
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def local_url(settings: Settings, port: int) -> str:
    """http://host:port for a local process (0.0.0.0 is reached through loopback)."""
    host = "127.0.0.1" if settings.bind_host in ("0.0.0.0", "::") else settings.bind_host
    return f"http://{host}:{port}"


def wait_ready(sup: Supervisor, timeout: float = READY_TIMEOUT_S) -> None:
    """Wait until ingest and api answer /health; raise InfraError with the log tail if not."""
    s = sup.settings
    urls = [f"{local_url(s, s.ingest_port)}/health", f"{local_url(s, s.api_port)}/health"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = sup.dead_on_start()
        if dead is not None:
            raise InfraError(
                f"{dead.name} exited during start-up; last log lines:\n{log_tail(dead.log)}"
            )
        if all(http_ok(u) for u in urls):
            return
        time.sleep(0.25)
    raise InfraError(
        f"paywatch did not become ready within {timeout:.0f}s; see {logs_dir(s)}\n"
        + "\n".join(f"--- {c.name}\n{log_tail(c.log, 10)}" for c in sup.children)
    )


def supervise(settings: Settings, on_ready: object = None) -> int:
    """Run the whole system in the foreground until SIGINT/SIGTERM; returns an exit code."""
    from paywatch.ops.bootstrap import prepare

    stop_requested = False
    ready = False

    def _request_stop(signum: int, frame: object) -> None:
        nonlocal stop_requested
        if not ready:
            raise KeyboardInterrupt  # abort start-up; the finally block cleans up
        stop_requested = True

    signal.signal(signal.SIGTERM, _request_stop)
    signal.signal(signal.SIGINT, _request_stop)
    supervisor_pid_file(settings).parent.mkdir(parents=True, exist_ok=True)
    supervisor_pid_file(settings).write_text(str(os.getpid()))
    ready_file(settings).unlink(missing_ok=True)
    sup: Supervisor | None = None
    try:
        ends = start_infra(settings)
        seeded = prepare(settings, ends)
        sup = Supervisor(settings, ends)
        sup.start()
        wait_ready(sup)
        ready_file(settings).write_text(json.dumps(seeded))
        ready = True
        if callable(on_ready):
            on_ready(seeded)
        watch(settings, sup, InfraWatch(settings, ends), lambda: stop_requested)
        return 0
    finally:
        if sup is not None:
            sup.stop()
        stop_infra(settings)
        ready_file(settings).unlink(missing_ok=True)
        supervision_file(settings).unlink(missing_ok=True)
        supervisor_pid_file(settings).unlink(missing_ok=True)


INFRA_CHECK_S = 1.0


def watch(settings: Settings, sup: Supervisor, infra: InfraWatch, stop: Callable[[], bool]) -> None:
    """Until `stop()`: restart dead infrastructure and children; keep supervision.json."""
    write_supervision(settings, sup, infra)
    next_infra = 0.0
    while not stop():
        changed = False
        if time.monotonic() >= next_infra:
            changed = bool(infra.revive()) or bool(infra.last_failure)
            next_infra = time.monotonic() + INFRA_CHECK_S
        changed = bool(sup.poll()) or changed
        if changed:
            write_supervision(settings, sup, infra)
        time.sleep(0.2)  # the supervision period
