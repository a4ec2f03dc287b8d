"""kill -9 of the projector while it writes the read models: exactly-once effect (engine, item 11).

Real Kafka and Postgres, the projector as a real process (``paywatch run projector``),
killed with SIGKILL when event_log holds 20 %, 40 % (and again as the restarted process
asks to join the group, before it could write) and 60 % of a backlog of payment events and
saga transitions of four tenants, some records appended twice. Small batches, so every
kill lands mid-stream. Every record must have its rows, no event two rows, ``invoices`` and
``recovery_workflows`` must equal the project's pure folds of the input column by column,
and every partition the projector reads must end checkpointed to its end offset. The
full-size run is ``bench/fault_projector.py``.
"""

from __future__ import annotations

from pathlib import Path

from paywatch.settings import Settings
from tests.fault_projector import append_input, run_with_kills

EVENTS = 4_000
BATCH = 200
"""About 70 batches for the whole input, so each kill finds the projector mid-stream."""


async def test_kill_9_of_the_projector_loses_and_doubles_nothing(
    test_settings: Settings, kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    settings = test_settings.model_copy(update={"projector_batch": BATCH})
    given = await append_input(settings, kafka_bootstrap, unique, EVENTS)
    assert given.distinct_events == EVENTS

    log = tmp_path / "projector.log"
    report = await run_with_kills(settings, kafka_bootstrap, given, log, timeout=300)

    assert len(report.kills) == 4, report.kills  # 20 %, 40 % + as it rejoined, 60 %
    assert all(0 < n < EVENTS for n in report.killed_at), report.kills  # mid-stream
    assert report.early_writes == 0, report.kills  # the early kill came before any write
    assert report.lost == [], f"{len(report.lost)} records lost: {report.lost[:20]}"
    assert report.duplicated == [], report.duplicated[:20]
    assert report.unexplained == [], report.unexplained[:20]
    assert report.invoice_mismatches == [], report.invoice_mismatches[:20]
    assert report.workflow_mismatches == [], report.workflow_mismatches[:20]
    assert report.behind == {}, f"partitions left behind: {report.behind}"
    print(f"{report.records} records, {report.invoices} invoices; " + "; ".join(report.kills))
