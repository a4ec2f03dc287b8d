"""kill -9 of worker, projector and executor together: nothing lost, nothing twice (item 11).

Real Kafka and Postgres, the three processes as a user runs them (``paywatch run
worker|projector|executor``, rocksdb tables), a stream of signed Stripe failures at a steady
rate and a saga clock of one day per second, so dunning, escalation and deadlines fire
while the processes die. All three are SIGKILLed when the canonical events cover 20 %,
40 % (and the restarted worker again as it asks to join the group) and 60 % of the input,
each restarted at once. Then every raw record must have one event, every invoice its saga
closed, every command journaled once, the read models must equal the projector harness's
folds of what the topics hold, no record may be dead-lettered and every group must end at
the end of what it reads. The full-size run is ``bench/fault_stack.py``.
"""

from __future__ import annotations

from pathlib import Path

from paywatch.settings import Settings
from tests.fault_stack import run_with_kills, stack_settings

EVENTS = 4_000
RATE = 25.0
"""Failures per second: the stream lasts 160 s, longer than the worker's two rejoins after
the first two kills (Faust's 60 s session timeout each), so the third kill lands while the
stream still flows instead of after a catch-up that finished it."""
BATCH = 200
"""The projector's batch: many transactions, so its kills land mid-stream."""


async def test_kill_9_of_the_whole_stack_loses_and_doubles_nothing(
    test_settings: Settings, kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    settings = stack_settings(test_settings.model_copy(update={"projector_batch": BATCH}))
    report = await run_with_kills(
        settings, kafka_bootstrap, unique, EVENTS, RATE, tmp_path, timeout=900
    )
    print(f"fault report: {report.kills}, {report.volume}, resent {report.resent}")

    # Mid-stream: every process had made progress since its last restart when it was killed
    # (the harness waits for that) and each left work for the next one.
    assert len(report.points) == 3, report.kills
    for point in report.points:
        assert 0 < point.events < EVENTS, report.kills
        assert point.event_log < EVENTS, report.kills
        assert point.journaled < report.volume["journaled"], report.kills
    assert report.volume["timer_ticks"] > 0, report.volume  # timers fired during the run
    assert report.ok, "\n".join(report.findings())
