"""The worker's Faust producer lingers PAYWATCH_WORKER_LINGER_MS before a produce request."""

from __future__ import annotations

from pathlib import Path

from paywatch.settings import Settings
from paywatch.streams.app import create_worker


def test_the_worker_producer_lingers_as_configured(tmp_path: Path) -> None:
    default = create_worker(Settings(state_dir=tmp_path / "a"), "127.0.0.1:1")
    assert default.app.conf.producer_linger == 0.020
    zero = create_worker(Settings(state_dir=tmp_path / "b", worker_linger_ms=0), "127.0.0.1:1")
    assert zero.app.conf.producer_linger == 0.0
