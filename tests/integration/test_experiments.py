"""Policy experiments end to end (issue 10 item 7): `paywatch experiment start|status|stop`
against a real `paywatch run worker` and `paywatch run projector` on real Kafka and Postgres.

The challenger's first dunning notice uses its own template, so each saga's arm shows in
its first command as well as in every transition; the projector carries the arm into
`recovery_workflows`, where `experiment status` compares the arms.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from paywatch.recovery.experiments import assign
from paywatch.recovery.tenant_policy import CHALLENGER, CONTROL
from paywatch.schemas.models import CommandType, PaymentMethod, SagaState
from paywatch.settings import Settings
from tests.integration.test_cli import paywatch
from tests.integration.test_saga_agent import (
    commands,
    failure,
    publish,
    scaled,
    success,
    transitions,
)
from tests.kafka_helpers import eventually
from tests.procs import log_tail, paywatch_process

pytestmark = pytest.mark.integration

EXPERIMENT = "early-notice"
CHALLENGER_POLICY = {"dunning": [{"day": 0, "template": "challenger_notice"}]}


def ok(settings: Settings, *args: str) -> str:
    done = paywatch(settings, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


async def test_arms_by_hash_named_on_transitions_projected_and_compared(
    test_settings: Settings, kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    settings = scaled(test_settings)
    ok(settings, "tenant", "create", unique)
    policy_file = tmp_path / "challenger.json"
    policy_file.write_text(json.dumps(CHALLENGER_POLICY))
    refused = paywatch(settings, "experiment", "start", unique, EXPERIMENT, "--policy",
                       str(policy_file), "--share", "1.5")  # fmt: skip
    assert refused.returncode == 2 and "share must be in (0, 1)" in refused.stderr
    started = ok(settings, "experiment", "start", unique, EXPERIMENT, "--policy",
                 str(policy_file), "--share", "0.5")  # fmt: skip
    assert f"experiment {EXPERIMENT} runs the challenger on 50% of new sagas" in started
    again = paywatch(settings, "experiment", "start", unique, "other", "--policy",
                     str(policy_file))  # fmt: skip
    assert again.returncode == 1 and f"already runs experiment '{EXPERIMENT}'" in again.stderr

    invoices = [f"inv_{i}" for i in range(12)]
    arms = {i: assign(unique, i, EXPERIMENT, 0.5) for i in invoices}
    assert set(arms.values()) == {CONTROL, CHALLENGER}  # both arms have sagas
    worker_log, projector_log = tmp_path / "worker.log", tmp_path / "projector.log"
    with (
        paywatch_process(settings, "run", "worker", log=worker_log) as worker,
        paywatch_process(settings, "run", "projector", log=projector_log) as projector,
    ):
        events = []
        for n, invoice in enumerate(invoices):
            event = failure(unique, invoice, card=f"fp_{n}")
            card = PaymentMethod(brand="visa", last4="4242", fingerprint=f"fp_{n}")
            events.append(event.model_copy(update={"payment_method": card}))
        await publish(settings, kafka_bootstrap, *events)

        async def first_notices() -> dict[str, str] | None:
            assert worker.poll() is None, log_tail(worker_log)
            found = {}
            for invoice in invoices:
                notices = [c for c in await commands(settings, kafka_bootstrap, invoice)
                           if c.type is CommandType.NOTIFY_CUSTOMER]  # fmt: skip
                if notices:
                    found[invoice] = notices[0].template or ""
            return found if len(found) == len(invoices) else None

        templates = await eventually(first_notices, timeout=120, what="a notice per saga")
        for invoice, arm in arms.items():
            expected = "challenger_notice" if arm == CHALLENGER else "payment_failed"
            assert templates[invoice] == expected, (invoice, arm)
            moves = await transitions(settings, kafka_bootstrap, invoice)
            assert moves and {(t.experiment, t.arm) for t in moves} == {(EXPERIMENT, arm)}

        # Every challenger saga recovers, no control saga does.
        winners = [i for i, arm in arms.items() if arm == CHALLENGER]
        await publish(settings, kafka_bootstrap, *(success(unique, i) for i in winners))

        async def compared() -> dict[str, object] | None:
            assert projector.poll() is None, log_tail(projector_log)
            done = paywatch(settings, "experiment", "status", unique, "--json")
            if done.returncode != 0:
                return None
            status = json.loads(done.stdout)
            arm = status["arms"][CHALLENGER]
            return status if arm["recovered"] == len(winners) else None

        status = await eventually(compared, timeout=120, what="the arms in the read model")
        text = ok(settings, "experiment", "status", unique)
        stop = ok(settings, "experiment", "stop", unique)
        late = failure(unique, "inv_after", card="fp_after")
        await publish(settings, kafka_bootstrap, late.model_copy(
            update={"payment_method": PaymentMethod(brand="visa", last4="4242",
                                                    fingerprint="fp_after")}))  # fmt: skip

        async def after() -> list[object] | None:
            moves = await transitions(settings, kafka_bootstrap, "inv_after")
            return moves or None

        after_moves = await eventually(after, timeout=60, what="a saga after the stop")
    losers = len(invoices) - len(winners)
    assert status["running"] is True and status["share"] == 0.5
    assert status["arms"][CHALLENGER] == {"sagas": len(winners), "recovered": len(winners),
                                          "recovery_rate": 1.0, "open": 0}  # fmt: skip
    assert status["arms"][CONTROL]["open"] == losers  # still open: not decided yet
    assert status["arms"][CONTROL]["sagas"] == 0 and status["p_value"] is None
    assert f"experiment {EXPERIMENT} (running, challenger share 50%)" in text
    assert "no comparison yet" in text
    assert f"experiment {EXPERIMENT} stopped" in stop
    assert {(t.experiment, t.arm) for t in after_moves} == {(None, None)}
    recovered = [t for i in winners for t in await transitions(settings, kafka_bootstrap, i)
                 if t.to_state is SagaState.recovered]  # fmt: skip
    assert len(recovered) == len(winners)
