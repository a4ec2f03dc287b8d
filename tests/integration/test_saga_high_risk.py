"""High-risk customers on a real broker: a real `paywatch run worker` reads ``risk.scores``.

The tenant's stored policy turns ``high_risk`` on; ``risk.scores`` says one customer is HIGH
and another MEDIUM. A failure of the HIGH customer's invoice gets a request for a new
payment method at once and the escalation on day 3 (a saga day lasts a wall second here),
both under rule ``tenant.high_risk``; the MEDIUM customer's invoice gets the default plan.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaProducer

from paywatch.kafka.codec import make_codec
from paywatch.recovery.tenant_policy import TenantPolicy
from paywatch.schemas.models import (
    CommandType,
    PolicyChanged,
    RecoveryCommand,
    RiskBand,
    RiskScore,
)
from paywatch.settings import Settings
from paywatch.tenants.policy_input import canonical_json
from tests.integration.test_saga_agent import commands, failure, publish, scaled, transitions
from tests.kafka_helpers import eventually
from tests.procs import log_tail, paywatch_process

RULE = "tenant.high_risk"
REQUEST = CommandType.REQUEST_PAYMENT_METHOD_UPDATE


async def log_policy_and_scores(
    settings: Settings, bootstrap: str, tenant: str, policy: TenantPolicy
) -> None:
    """What the worker must find logged before its first decision."""
    codec = make_codec(settings)
    policies, scores = settings.topic("recovery.policies"), settings.topic("risk.scores")
    now = datetime.now(UTC)
    change = PolicyChanged(
        tenant=tenant, revision=policy.revision, policy_json=canonical_json(policy),
        changed_at=now, changed_by="test",
    )  # fmt: skip
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(
            policies, codec.encode(change, topic=policies), key=tenant.encode()
        )
        for customer, band, value in (
            ("cus_high", RiskBand.HIGH, 0.8),
            ("cus_mid", RiskBand.MEDIUM, 0.4),
        ):
            score = RiskScore(
                tenant=tenant, customer_ref=customer, score=value, band=band,
                model_version="risk-v1", as_of=now,
            )  # fmt: skip
            await producer.send_and_wait(
                scores, codec.encode(score, topic=scores), key=f"{tenant}/{customer}".encode()
            )
    finally:
        await producer.stop()


async def test_a_high_risk_customer_is_asked_first_and_escalated_early(
    test_settings: Settings, kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    settings = scaled(test_settings)
    policy = TenantPolicy.model_validate({"high_risk": {}})
    await log_policy_and_scores(settings, kafka_bootstrap, unique, policy)
    high = failure(unique, "inv_high", card="fp_high").model_copy(
        update={"customer_ref": "cus_high"}
    )
    mid = failure(unique, "inv_mid", card="fp_mid").model_copy(update={"customer_ref": "cus_mid"})
    log = tmp_path / "worker.log"
    with paywatch_process(settings, "run", "worker", log=log) as worker:
        await publish(settings, kafka_bootstrap, high, mid)

        async def escalated() -> list[RecoveryCommand]:
            assert worker.poll() is None, log_tail(log)
            found = await commands(settings, kafka_bootstrap, "inv_high")
            return [c for c in found if c.type is CommandType.ESCALATE]

        # Day 3 of the saga: about three wall seconds after the failure.
        (escalation,) = await eventually(escalated, timeout=120, what="the early escalation")

        async def mid_decided() -> bool:
            assert worker.poll() is None, log_tail(log)
            return len(await transitions(settings, kafka_bootstrap, "inv_mid")) >= 2

        await eventually(mid_decided, timeout=60, what="the MEDIUM customer's first decision")
        sent_high = await commands(settings, kafka_bootstrap, "inv_high")
        sent_mid = await commands(settings, kafka_bootstrap, "inv_mid")
        moves = await transitions(settings, kafka_bootstrap, "inv_high")
    requests = [c for c in sent_high if c.type is REQUEST]
    assert [(c.rule.id, c.rule.edition) for c in requests] == [
        (RULE, f"tenant-policy/{policy.revision}")  # the stored policy, not the defaults
    ]
    assert "risk band HIGH" in requests[0].reason and requests[0].customer_ref == "cus_high"
    assert escalation.rule.id == RULE and "risk band HIGH" in escalation.reason
    assert escalation.issued_at is not None and requests[0].issued_at is not None
    assert escalation.issued_at > requests[0].issued_at
    assert RULE in {t.rule.id for t in moves}
    # The MEDIUM customer: dunning as usual, no request, nothing under the high-risk rule.
    assert [c for c in sent_mid if c.type is REQUEST] == []
    assert CommandType.NOTIFY_CUSTOMER in {c.type for c in sent_mid}
    assert RULE not in {c.rule.id for c in sent_mid}
