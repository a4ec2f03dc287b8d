"""Process health: what each worker, projector and executor reports, and the verdict.

Every one of those processes writes a heartbeat row (``process_health``, see
:mod:`paywatch.db.heartbeats`) every few seconds; ``/health`` of ingest and api and
``paywatch status`` read the rows of their ``app_id`` and call :func:`assess`. Pure: no
clock, no I/O; ``now`` and the thresholds come in.

A stack is ``degraded`` (with one reason per finding) when, within ``window_s``:

* a process restarted after a run that did not stop cleanly (killed, crashed, OOM), or
* a process dead-lettered a record, or
* a live process is more than ``max_lag`` records behind on one of its partitions, or
* a process that did not stop cleanly has sent no heartbeat for ``stale_s`` (dead, stuck,
  or unable to reach Postgres) and no other instance of it is alive.

A process stopped on request (``stopped_at`` set) is reported as stopped, not degraded: a
deploy or ``paywatch down`` is not a fault. Nothing else degrades the stack; the last error
is shown whatever its age.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

MAX_ERROR_CHARS = 500
_DIGITS = re.compile(r"\d(?:[ -]?\d){11,}")
_URL_PASSWORD = re.compile(r"(//[^/:@\s]+:)[^@\s]+@")


def scrub(text: str) -> str:
    """An error text safe to store and show: no card-like digit runs, no URL passwords, short."""
    text = _URL_PASSWORD.sub(r"\1***@", text)
    text = _DIGITS.sub("[digits]", text)
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


@dataclass(frozen=True)
class Thresholds:
    """When a stack counts as degraded (settings: PAYWATCH_HEALTH_MAX_LAG / _WINDOW_S)."""

    max_lag: int = 10_000
    window_s: float = 900.0
    stale_s: float = 30.0


@dataclass(frozen=True)
class ProcessReport:
    """One heartbeat row: the latest state one process instance reported."""

    process: str
    instance: str
    pid: int
    starts: int
    unclean_restarts: int
    last_start_unclean: bool
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None = None
    records_total: int = 0
    records_per_s: float = 0.0
    dead_letters: int = 0
    last_dead_letter_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    lag: Mapping[str, int] = field(default_factory=dict)
    batches: Mapping[str, Any] = field(default_factory=dict)

    def live(self, now: datetime, th: Thresholds) -> bool:
        """Not stopped and heard from within `stale_s`."""
        return self.stopped_at is None and _age(now, self.heartbeat_at) <= th.stale_s

    def state(self, now: datetime, th: Thresholds) -> str:
        """running, stopped or silent."""
        if self.stopped_at is not None:
            return "stopped"
        return "running" if self.live(now, th) else "silent"


@dataclass(frozen=True)
class Verdict:
    """What /health and `paywatch status` report about the processes."""

    status: Literal["ok", "degraded"]
    reasons: tuple[str, ...]
    last_error: str | None
    last_error_at: datetime | None
    processes: Mapping[str, Mapping[str, Any]]

    def as_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        at = self.last_error_at.isoformat() if self.last_error_at else None
        return {
            "status": self.status,
            "reasons": list(self.reasons),
            "last_error": {"error": self.last_error, "at": at} if self.last_error else None,
            "processes": {k: dict(v) for k, v in self.processes.items()},
        }


def assess(reports: Iterable[ProcessReport], now: datetime, th: Thresholds) -> Verdict:
    """The stack's verdict from its processes' latest reports."""
    rows = sorted(reports, key=lambda r: (r.process, r.instance))
    live = {r.process for r in rows if r.live(now, th)}
    reasons = [reason for r in rows for reason in _reasons(r, now, th, r.process in live)]
    errors = [r for r in rows if r.last_error and r.last_error_at]
    newest = max(errors, key=lambda r: r.last_error_at or now, default=None)
    return Verdict(
        status="degraded" if reasons else "ok",
        reasons=tuple(reasons),
        last_error=f"{newest.process}: {newest.last_error}" if newest else None,
        last_error_at=newest.last_error_at if newest else None,
        processes={_name(r, rows): summary(r, now, th) for r in rows},
    )


def _reasons(r: ProcessReport, now: datetime, th: Thresholds, sibling_live: bool) -> list[str]:
    found = []
    if r.stopped_at is None and not r.live(now, th) and not sibling_live:
        found.append(
            f"{r.process}: no heartbeat for {_age(now, r.heartbeat_at):.0f} s "
            "(dead, stuck or cut off from Postgres)"
        )
    if r.last_start_unclean and _age(now, r.started_at) <= th.window_s:
        found.append(
            f"{r.process}: restarted {_age(now, r.started_at):.0f} s ago after a run that "
            f"did not stop cleanly ({r.unclean_restarts} such restart(s) in all)"
        )
    if r.last_dead_letter_at is not None and _age(now, r.last_dead_letter_at) <= th.window_s:
        found.append(
            f"{r.process}: dead-lettered {r.dead_letters} record(s) in this run, the last "
            f"{_age(now, r.last_dead_letter_at):.0f} s ago"
        )
    if r.live(now, th):
        behind = {tp: n for tp, n in r.lag.items() if n > th.max_lag}
        if behind:
            worst = max(behind, key=lambda tp: behind[tp])
            found.append(
                f"{r.process}: {behind[worst]} records behind on {worst} "
                f"({len(behind)} partition(s) over {th.max_lag})"
            )
    return found


def summary(r: ProcessReport, now: datetime, th: Thresholds) -> dict[str, Any]:
    """One process's figures for /health and `paywatch status` (JSON-ready)."""
    return {
        "state": r.state(now, th),
        "pid": r.pid,
        "started_at": r.started_at.isoformat(),
        "heartbeat_age_s": round(_age(now, r.heartbeat_at), 1),
        "restarts": r.starts - 1,
        "unclean_restarts": r.unclean_restarts,
        "records_total": r.records_total,
        "records_per_s": round(r.records_per_s, 1),
        "batches": dict(r.batches),
        "lag_max": max(r.lag.values(), default=0),
        "lag": dict(r.lag),
        "dead_letters": r.dead_letters,
        "last_dead_letter_at": _iso(r.last_dead_letter_at),
        "last_error": r.last_error,
        "last_error_at": _iso(r.last_error_at),
    }


def _name(r: ProcessReport, rows: list[ProcessReport]) -> str:
    """The process name, with the instance when several instances of it report."""
    alone = sum(1 for x in rows if x.process == r.process) == 1
    return r.process if alone else f"{r.process}@{r.instance}"


def _age(now: datetime, then: datetime) -> float:
    return max(0.0, (now - then).total_seconds())


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at else None
