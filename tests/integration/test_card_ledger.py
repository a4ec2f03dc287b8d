"""One ledger per card, on the production store: invoices of one card on different
partitions, and on two workers, never exceed Visa's limit together.

Before the card-ledger agent, the card table was read from each invoice's partition on
rocksdb, which sees that partition only: one Visa card on 12 invoices got 45 retries in 8
days (Visa allows the original plus 20 reattempts in 30 days). Here 12 invoices of one
card fail at once (12 counted attempts), paywatch owns the retries (provider ``generic``)
and wants 4 each (48); the test plays the executor and fails every retry. Every retry the
card's ledger lets through is counted against the same window, so at most 21 - 12 = 9 may
go in any 30-day window (saga time), and the refused ones name the Visa rule. A retry
refused until the first attempts leave the window may still go near the end of the saga.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from paywatch.recovery.clock import SagaClock
from paywatch.schemas.models import CommandType, RecoveryCommand, SagaState
from paywatch.settings import Settings
from tests.integration.test_saga_agent import (
    commands,
    failure,
    outcome,
    publish,
    scaled,
    transitions,
)
from tests.kafka_helpers import eventually, topic_records
from tests.procs import log_tail, paywatch_process

VISA_ATTEMPTS_IN_30_DAYS = 21  # the original plus 20 reattempts (Visa Core Rules 2026-04-18)
VISA_WINDOW = timedelta(days=30)
INVOICES = 12


def _settings(test_settings: Settings, tmp_path: Path, name: str) -> Settings:
    return scaled(test_settings).model_copy(
        update={"table_store": "rocksdb://", "state_dir": tmp_path / name}
    )


async def _all_retries(settings: Settings, bootstrap: str) -> list[RecoveryCommand]:
    found: dict[str, RecoveryCommand] = {}
    for inv in (f"inv_card_{i}" for i in range(INVOICES)):
        for c in await commands(settings, bootstrap, inv):
            if c.type is CommandType.RETRY_PAYMENT:
                found.setdefault(c.command_id, c)
    return list(found.values())


async def _warmed_up(
    settings: Settings, bootstrap: str, tenant: str, procs: list[Any], logs: list[Path]
) -> None:
    """Wait until the workers decide on every partition: at 86400 a second of start-up lag
    is a saga day, and a failure the ledger learns of days late cannot be counted in time."""
    warm = [f"warm_{i}" for i in range(4 * settings.topic_partitions)]
    await publish(settings, bootstrap, *(failure(tenant, inv, card=f"fp_{inv}") for inv in warm))

    async def decided() -> bool:
        for proc, log in zip(procs, logs, strict=True):
            assert proc.poll() is None, log_tail(log)
        return all([await transitions(settings, bootstrap, inv) for inv in warm])

    await eventually(decided, timeout=90, what="the workers decide on every partition")


@pytest.mark.parametrize("workers", [1, 2])
async def test_one_card_on_many_invoices_never_exceeds_visas_limit(
    test_settings: Settings, kafka_bootstrap: str, unique: str, tmp_path: Path, workers: int
) -> None:
    anchor = datetime.now(UTC)
    runs = [
        _settings(test_settings, tmp_path, f"w{n}").model_copy(update={"time_anchor": anchor})
        for n in range(workers)
    ]
    base = runs[0]
    invoices = [f"inv_card_{i}" for i in range(INVOICES)]
    logs = [tmp_path / f"w{n}.log" for n in range(workers)]
    answered: set[str] = set()
    with contextlib.ExitStack() as stack:
        procs = [
            stack.enter_context(paywatch_process(s, "run", "worker", log=log))
            for s, log in zip(runs, logs, strict=True)
        ]
        await _warmed_up(base, kafka_bootstrap, unique, procs, logs)
        failures = [failure(unique, inv, card="fp_shared") for inv in invoices]
        await publish(base, kafka_bootstrap, *failures)

        async def settled() -> bool:
            for proc, log in zip(procs, logs, strict=True):
                assert proc.poll() is None, log_tail(log)
            # Play the executor: every retry fails, so each saga keeps wanting more.
            emitted = await _all_retries(base, kafka_bootstrap)
            fresh = [c for c in emitted if c.command_id not in answered]
            if fresh:
                await publish(base, kafka_bootstrap, *(outcome(c, succeeded=False) for c in fresh))
                answered.update(c.command_id for c in fresh)
            for inv in invoices:
                moves = await transitions(base, kafka_bootstrap, inv)
                if not moves or moves[-1].to_state is not SagaState.exhausted:
                    return False
            return True

        await eventually(settled, timeout=180, what="every saga reached its deadline")
    records = await topic_records(kafka_bootstrap, base.topic("payments.events"))
    partitions = {r.partition for r in records if r.key.decode().split("/", 1)[1] in invoices}
    assert len(partitions) > 1, "the invoices should sit on several partitions"
    retries = await _all_retries(base, kafka_bootstrap)
    clock = SagaClock(base.time_scale, anchor)
    originals = [clock.to_saga(e.occurred_at) for e in failures]
    attempts = sorted([*originals, *(clock.to_saga(c.due_at) for c in retries)])
    for c in retries:
        at = clock.to_saga(c.due_at)
        window = [a for a in attempts if at - VISA_WINDOW < a <= at]
        days = [round((a - attempts[0]) / timedelta(days=1), 3) for a in attempts]
        assert len(window) <= VISA_ATTEMPTS_IN_30_DAYS, (c.command_id, len(window), days)
    assert retries, "the card's ledger let no retry through"
    refused = [
        t
        for inv in invoices
        for t in await transitions(base, kafka_bootstrap, inv)
        if t.rule.id == "visa.reattempts" and (t.reason or "").startswith("card ledger:")
    ]
    assert refused, "the card's ledger refused nothing"
