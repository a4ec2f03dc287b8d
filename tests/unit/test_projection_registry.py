"""The read-model registry: the topics the projector reads, and the write order it checks."""

from __future__ import annotations

import pytest

from paywatch.projections.base import ReadModel
from paywatch.projections.registry import READ_MODELS, checked, sources
from paywatch.projections.runner import SOURCES
from paywatch.schemas.models import (
    Alert,
    OpsAudit,
    PaymentEvent,
    PolicyChanged,
    RecoveryCommand,
    RiskScore,
    SagaTransition,
)
from paywatch.schemas.topics import (
    ALERTS,
    OPS_AUDIT,
    PAYMENTS_EVENTS,
    RECOVERY_COMMANDS,
    RECOVERY_POLICIES,
    RECOVERY_TRANSITIONS,
    RISK_SCORES,
)


def test_the_runner_reads_the_topics_of_the_registered_models() -> None:
    assert dict(SOURCES) == {
        PAYMENTS_EVENTS: PaymentEvent,
        RECOVERY_TRANSITIONS: SagaTransition,
        RECOVERY_COMMANDS: RecoveryCommand,
        RECOVERY_POLICIES: PolicyChanged,
        RISK_SCORES: RiskScore,
        ALERTS: Alert,
        OPS_AUDIT: OpsAudit,
    }


def test_every_model_comes_after_the_models_it_reads() -> None:
    names = [m.name for m in READ_MODELS]
    for i, model in enumerate(READ_MODELS):
        assert set(model.after) <= set(names[:i]), model.name


def test_a_model_listed_before_what_it_reads_is_refused() -> None:
    reader = ReadModel("reader", {PAYMENTS_EVENTS: PaymentEvent}, after=("writer",))
    writer = ReadModel("writer", {PAYMENTS_EVENTS: PaymentEvent})
    assert checked([writer, reader]) == (writer, reader)
    with pytest.raises(ValueError, match="must come after"):
        checked([reader, writer])


def test_one_topic_read_as_two_record_types_is_refused() -> None:
    one = ReadModel("one", {PAYMENTS_EVENTS: PaymentEvent})
    other = ReadModel("other", {PAYMENTS_EVENTS: SagaTransition})
    with pytest.raises(ValueError, match="read as both"):
        sources([one, other])
