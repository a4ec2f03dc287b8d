"""kill -9 of the worker while it normalizes and decides: nothing is lost (engine, item 11).

Real Kafka, the worker as a real process (rocksdb tables, as in production), killed with
SIGKILL at 20 %, 40 % (and again right after that restart, before it joined the group)
and 60 % of a backlog of signed Stripe failures. Every raw record must have its canonical
event and every invoice its saga's transition (normalize, saga and card-ledger stages all
batch and commit their own offsets), no record may have two different effects, and every
partition the worker reads (``webhooks.raw``, ``payments.events``, ``recovery.timers``,
``recovery.cards``) must end committed to its end. The full-size run is ``bench/fault_worker.py``.
"""

from __future__ import annotations

from pathlib import Path

from paywatch.settings import Settings
from tests.fault_worker import append_failures, run_with_kills

EVENTS = 20_000


async def test_kill_9_of_the_worker_loses_no_webhook(
    test_settings: Settings, kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    settings = test_settings.model_copy(update={"table_store": "rocksdb://"})
    expected = await append_failures(settings, kafka_bootstrap, unique, EVENTS)
    assert len(expected) == EVENTS

    log = tmp_path / "worker.log"
    report = await run_with_kills(settings, kafka_bootstrap, expected, log, timeout=900)
    print(f"fault report: {report}")  # shown with -s, and kept with the log on failure

    assert len(report.kills) == 4, report.kills  # worker, joiner, worker, restarted
    assert report.lost == [], f"{len(report.lost)} raw records lost: {report.lost[:20]}"
    assert report.split_effects == [] and report.shared_ids == 0, report
    assert report.undecided == [], f"{len(report.undecided)} sagas undecided: {report}"
    assert report.split_decisions == [], report
    assert report.behind == {}, f"partitions left behind: {report.behind}"
