"""The worker's saga clock: its anchor is persisted so open sagas' timers keep their meaning."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from paywatch.recovery.clock import SagaClock


def load_clock(scale: float, state_dir: Path, anchor: datetime | None = None) -> SagaClock:
    """The worker's clock: ``anchor`` when given (shared by several workers), else the one
    in ``state_dir/time-anchor`` (created on first start)."""
    if scale == 1.0:
        return SagaClock()
    if anchor is not None:
        return SagaClock(scale, anchor)
    path = state_dir / "time-anchor"
    try:
        anchor = datetime.fromisoformat(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        anchor = datetime.now(UTC).replace(microsecond=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(anchor.isoformat() + "\n")
    return SagaClock(scale, anchor if anchor.tzinfo else anchor.replace(tzinfo=UTC))
