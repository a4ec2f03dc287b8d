"""The degraded/healthy rules of paywatch/db/health.py (pure)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from paywatch.db.health import ProcessReport, Thresholds, assess, scrub

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
TH = Thresholds(max_lag=1000, window_s=600, stale_s=30)


def report(process: str = "projector", **kw: object) -> ProcessReport:
    base = ProcessReport(
        process=process,
        instance="host-a",
        pid=100,
        starts=1,
        unclean_restarts=0,
        last_start_unclean=False,
        started_at=NOW - timedelta(hours=2),
        heartbeat_at=NOW - timedelta(seconds=3),
        records_total=500,
        lag={"payments.events[0]": 10},
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def test_fresh_processes_without_findings_are_ok() -> None:
    verdict = assess([report("worker"), report("projector"), report("executor")], NOW, TH)
    assert verdict.status == "ok" and verdict.reasons == ()
    assert set(verdict.processes) == {"worker", "projector", "executor"}
    assert verdict.processes["projector"]["state"] == "running"


def test_no_reports_at_all_is_ok() -> None:
    assert assess([], NOW, TH).status == "ok"


def test_recent_dead_letter_degrades_with_the_reason_and_last_error() -> None:
    r = report(
        "executor",
        dead_letters=2,
        last_dead_letter_at=ago(40),
        last_error="dead letter (decode): CodecError: bad magic",
        last_error_at=ago(40),
    )
    verdict = assess([r, report("worker")], NOW, TH)
    assert verdict.status == "degraded"
    assert verdict.reasons == (
        "executor: dead-lettered 2 record(s) in this run, the last 40 s ago",
    )
    assert verdict.last_error == "executor: dead letter (decode): CodecError: bad magic"
    assert verdict.last_error_at == ago(40)


def test_dead_letter_older_than_the_window_no_longer_degrades() -> None:
    r = report(dead_letters=1, last_dead_letter_at=ago(601), last_error="x", last_error_at=ago(601))
    verdict = assess([r], NOW, TH)
    assert verdict.status == "ok"
    assert verdict.last_error == "projector: x"  # still shown


def test_unclean_restart_within_the_window_degrades_a_clean_one_does_not() -> None:
    unclean = report(starts=3, unclean_restarts=2, last_start_unclean=True, started_at=ago(20))
    assert assess([unclean], NOW, TH).reasons == (
        "projector: restarted 20 s ago after a run that did not stop cleanly "
        "(2 such restart(s) in all)",
    )
    assert assess([replace(unclean, started_at=ago(700))], NOW, TH).status == "ok"
    clean = replace(unclean, last_start_unclean=False)  # a deploy: stopped on request first
    assert assess([clean], NOW, TH).status == "ok"


def test_lag_over_the_threshold_degrades_naming_the_worst_partition() -> None:
    r = report(lag={"payments.events[0]": 1001, "payments.events[1]": 5000, "x[2]": 3})
    verdict = assess([r], NOW, TH)
    assert verdict.reasons == (
        "projector: 5000 records behind on payments.events[1] (2 partition(s) over 1000)",
    )
    assert verdict.processes["projector"]["lag_max"] == 5000
    assert assess([report(lag={"p[0]": 1000})], NOW, TH).status == "ok"  # at the threshold


def test_silent_process_degrades_unless_stopped_or_another_instance_lives() -> None:
    silent = report(heartbeat_at=ago(31))
    verdict = assess([silent], NOW, TH)
    assert verdict.reasons == (
        "projector: no heartbeat for 31 s (dead, stuck or cut off from Postgres)",
    )
    assert verdict.processes["projector"]["state"] == "silent"
    stopped = replace(silent, stopped_at=ago(31))
    assert assess([stopped], NOW, TH).status == "ok"
    assert assess([stopped], NOW, TH).processes["projector"]["state"] == "stopped"
    sibling = report(instance="host-b")
    both = assess([silent, sibling], NOW, TH)
    assert both.status == "ok"
    assert set(both.processes) == {"projector@host-a", "projector@host-b"}


def test_a_silent_process_lag_is_not_judged() -> None:
    r = report(heartbeat_at=ago(31), stopped_at=ago(31), lag={"p[0]": 10**6})
    assert assess([r], NOW, TH).status == "ok"


def test_last_error_is_the_newest_across_processes() -> None:
    a = report("worker", last_error="old", last_error_at=ago(300))
    b = report("executor", last_error="new", last_error_at=ago(5))
    assert assess([a, b], NOW, TH).last_error == "executor: new"


def test_scrub_hides_card_like_digits_and_url_passwords_and_cuts_long_text() -> None:
    assert scrub("value 4242 4242 4242 4242 refused") == "value [digits] refused"
    assert scrub("in_12345 order 2026") == "in_12345 order 2026"  # short ids stay
    assert scrub("postgresql://paywatch:s3cret@db:5432/x") == "postgresql://paywatch:***@db:5432/x"
    assert len(scrub("e" * 2000)) == 500
