"""A stale supervisor.pid whose pid was reused never makes `paywatch down` kill a stranger."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from paywatch.ops.supervisor import running_supervisor, supervisor_pid_file
from paywatch.settings import Settings

LOOKALIKE = "import time; time.sleep(60)"


@contextmanager
def lookalike() -> Iterator[subprocess.Popen[bytes]]:
    """A process whose command line reads like `paywatch up` (it only sleeps)."""
    proc = subprocess.Popen([sys.executable, "-c", LOOKALIKE, "paywatch", "up"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(10)


def _settings(tmp_path: Path) -> Settings:
    return Settings(state_dir=tmp_path, kafka_bootstrap="k:9", database_url=None)


def test_a_live_pid_that_is_not_paywatch_up_is_not_the_supervisor(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    supervisor_pid_file(settings).write_text(str(os.getpid()))  # pytest: alive, a stranger
    assert running_supervisor(settings) is None


def test_a_process_started_after_the_pid_file_was_written_is_not_the_writer(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path)
    pid_file = supervisor_pid_file(settings)
    pid_file.write_text("0")
    old = time.time() - 60
    with lookalike() as proc:
        pid_file.write_text(str(proc.pid))
        os.utime(pid_file, (old, old))  # the file predates the process: a reused pid
        assert running_supervisor(settings) is None
        os.utime(pid_file, None)  # written by this process after it started: ours
        assert running_supervisor(settings) == proc.pid


def test_paywatch_down_leaves_a_stranger_with_the_stale_pid_alone(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    with lookalike() as stranger:
        supervisor_pid_file(settings).write_text(str(stranger.pid))
        old = time.time() - 60
        os.utime(supervisor_pid_file(settings), (old, old))
        env = {**os.environ, "PAYWATCH_STATE_DIR": str(tmp_path)}
        done = subprocess.run(
            [sys.executable, "-m", "paywatch", "down"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "was not running" in done.stdout, done.stdout + done.stderr
        assert stranger.poll() is None  # still alive: no SIGTERM went to it
