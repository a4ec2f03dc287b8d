"""Process and port helpers shared by the embedded servers and the supervisor."""

from __future__ import annotations

import contextlib
import logging
import socket
from collections import deque
from pathlib import Path

import psutil

from paywatch.errors import InfraError

log = logging.getLogger(__name__)
LOG_ROTATE_BYTES = 20 * 1024 * 1024


def pid_alive(pid: int) -> bool:
    """True if the process exists and is not a zombie."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def process_cmdline(pid: int) -> list[str]:
    """The command line of a process ([] if it is gone or hidden)."""
    try:
        return list(psutil.Process(pid).cmdline())
    except psutil.Error:
        return []


def process_started(pid: int) -> float:
    """When a process started (epoch seconds; +inf if it is gone)."""
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return float("inf")


def stop_pid(pid: int, timeout: float) -> bool:
    """SIGTERM, wait until the deadline, then SIGKILL; True once the process is gone."""
    try:
        proc = psutil.Process(pid)
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except psutil.TimeoutExpired:
            log.warning("pid %d ignored SIGTERM for %.0f s: killing it", pid, timeout)
            proc.kill()
            proc.wait(timeout=10)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired as exc:
        raise InfraError(f"pid {pid} survived SIGKILL") from exc
    return True


def tcp_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections at host:port."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def check_port_free(port: int, what: str) -> None:
    """Raise InfraError if something already listens on 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR as the servers use it: TIME_WAIT leftovers do not count as "in use".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise InfraError(
                f"port {port} on 127.0.0.1, wanted for {what}, is already in use by another "
                "process: stop that process or choose another port with the variable named"
            ) from exc


def log_tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file (empty if it does not exist)."""
    try:
        with path.open("r", encoding="utf-8", errors="replace") as f:
            return "".join(deque(f, maxlen=lines))
    except FileNotFoundError:
        return ""


def rotate_log(path: Path) -> None:
    """Keep one previous log (path.1) once the log grows past LOG_ROTATE_BYTES."""
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_size > LOG_ROTATE_BYTES:
            path.replace(path.with_name(path.name + ".1"))
