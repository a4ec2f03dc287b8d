"""Records -> outbound events: which make one, stable ids, bounded documented bodies."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from paywatch.outbound.events import EVENT_TYPES, OutboundEvent
from paywatch.outbound.mapping import InvoiceFacts, Source, timeline_path, to_event
from paywatch.schemas.models import (
    MAX_TEXT,
    Alert,
    AlertStatus,
    AlertWindow,
    CommandType,
    DeclineCategory,
    RecoveryCommand,
    RuleRef,
    SagaState,
    SagaTransition,
    Severity,
)

AT = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
RULE = RuleRef(id="visa.cat2", edition="2024-04", source="Visa reattempt rules")
README = Path(__file__).resolve().parents[2] / "README.md"


def transition(
    to: SagaState, frm: SagaState | None = SagaState.retrying, **changes: Any
) -> SagaTransition:
    values: dict[str, Any] = {
        "tenant": "acme",
        "invoice_ref": "in_1",
        "from_state": frm,
        "to_state": to,
        "cause_event_id": "evt-1",
        "at": AT,
        "rule": RULE,
        "reason": "paid",
        "attempts_used": 2,
        "attempts_allowed": 4,
    }
    return SagaTransition(**{**values, **changes})


def command(kind: CommandType = CommandType.RETRY_PAYMENT, **changes: Any) -> RecoveryCommand:
    values: dict[str, Any] = {
        "command_id": "cmd-1",
        "type": kind,
        "tenant": "acme",
        "invoice_ref": "in_1",
        "due_at": AT + timedelta(days=1),
        "attempt": 2,
        "reason": "retry 2 of 4 (visa category 2)",
        "rule": RULE,
        "provider": "stripe",
        "customer_ref": "cus_1",
        "amount_minor": 4900,
        "currency": "USD",
        "decline_category": DeclineCategory.SOFT,
        "issued_at": AT,
        "first_failed_at": AT - timedelta(days=3),
    }
    return RecoveryCommand(**{**values, **changes})


def alert(status: AlertStatus = AlertStatus.OPEN, end: datetime = AT, **changes: Any) -> Alert:
    values: dict[str, Any] = {
        "tenant": "acme",
        "kind": "PROVIDER_FAILURE_SPIKE",
        "severity": Severity.WARNING,
        "window": AlertWindow(start=AT - timedelta(minutes=14), end=end),
        "observed": 40.0,
        "baseline": 2.5,
        "message": "stripe: 40 failures in 15 min vs 2.5 expected",
        "alert_id": f"acme/PROVIDER_FAILURE_SPIKE/stripe/{int(AT.timestamp())}",
        "status": status,
        "provider": "stripe",
        "opened_at": AT,
        "resolved_at": end if status is AlertStatus.RESOLVED else None,
    }
    return Alert(**{**values, **changes})


def made(record: Source, facts: InvoiceFacts | None = None) -> OutboundEvent:
    event = to_event(record, facts) if facts else to_event(record)
    assert event is not None, record
    return event


@pytest.mark.parametrize(
    ("state", "kind"),
    [
        (SagaState.recovered, "invoice.recovered"),
        (SagaState.awaiting_customer, "invoice.awaiting_customer"),
        (SagaState.exhausted, "invoice.exhausted"),
        (SagaState.canceled, "invoice.canceled"),
    ],
)
def test_entering_a_state_tenants_care_about_makes_its_invoice_event(
    state: SagaState, kind: str
) -> None:
    event = made(transition(state))
    assert (event.type, event.tenant, event.created_at) == (kind, "acme", AT)
    assert event.data["state"] == state.value
    assert event.data["previous_state"] == "retrying"
    assert event.data["attempts"] == {"used": 2, "allowed": 4}
    assert event.data["rule"] == {"id": RULE.id, "edition": RULE.edition, "source": RULE.source}
    assert event.data["timeline"] == "/v1/invoices/in_1/timeline"


def test_staying_or_entering_other_states_makes_nothing() -> None:
    same = transition(SagaState.awaiting_customer, frm=SagaState.awaiting_customer)
    assert to_event(same) is None  # a decision that kept the state is no news
    assert to_event(transition(SagaState.retrying, frm=SagaState.failed)) is None
    assert to_event(transition(SagaState.failed, frm=None)) is None


def test_ids_are_stable_per_source_and_distinct_between_sources() -> None:
    base = transition(SagaState.recovered)
    again = transition(SagaState.recovered, reason="other text, same decision")
    assert made(base).id == made(again).id  # a re-sent transition is the same event
    others = [
        transition(SagaState.recovered, cause_event_id="evt-2"),
        transition(SagaState.recovered, tenant="other"),
        transition(SagaState.recovered, invoice_ref="in_2"),
        transition(SagaState.exhausted),
    ]
    ids = {made(base).id, *(made(t).id for t in others)}
    assert len(ids) == 5
    assert made(command()).id == made(command(reason="changed")).id
    assert made(command()).id != made(command(command_id="cmd-2")).id
    assert all(re.fullmatch(r"evt_[0-9a-f]{32}", i) for i in ids)


def test_retry_due_names_the_attempt_due_time_rule_amount_and_budget() -> None:
    budget = {"attempts_used": 2, "attempts_allowed": 4, "card_retries_left": 13}
    event = made(command(**budget, card_limit="visa.reattempts", schedule_only=True))
    assert event.type == "recovery.retry_due"
    assert event.created_at == AT  # when the saga decided, not when it is due
    data = event.data
    assert (data["attempt"], data["due_at"]) == (2, "2026-11-03T09:00:00Z")
    assert (data["amount_minor"], data["currency"], data["customer_ref"]) == (4900, "USD", "cus_1")
    assert (data["provider"], data["decline_category"]) == ("stripe", "SOFT")
    assert data["rule"]["id"] == "visa.cat2"
    assert data["command"] == "RETRY_PAYMENT"
    assert data["schedule_only"] is True  # the tenant charges this one itself
    assert data["attempts"] == {"used": 2, "allowed": 4}
    assert data["card"] == {"retries_left": 13, "limit": "visa.reattempts"}
    unknown = made(command()).data
    assert (unknown["schedule_only"], unknown["card"]["retries_left"]) == (False, None)


@pytest.mark.parametrize(
    "kind", [CommandType.NOTIFY_CUSTOMER, CommandType.REQUEST_PAYMENT_METHOD_UPDATE]
)
def test_notifications_carry_channel_and_template_but_never_the_reason(kind: CommandType) -> None:
    cmd = command(kind, channel="email", template="card-update", reason="fraud rule visa.cat1")
    event = made(cmd)
    assert event.type == "recovery.notification_due"
    assert (event.data["channel"], event.data["template"]) == ("email", "card-update")
    assert event.data["command"] == kind.value
    assert "fraud" not in json.dumps(event.envelope()).replace(RULE.source, "")


def test_escalation_and_the_commands_without_events() -> None:
    event = made(command(CommandType.ESCALATE, channel="slack", template="esc"))
    assert event.type == "recovery.escalated"
    assert event.data["first_failed_at"] == "2026-10-30T09:00:00Z"
    assert event.data["reason"].startswith("retry 2")
    assert to_event(command(CommandType.CANCEL)) is None
    assert to_event(command(CommandType.WRITE_OFF)) is None


def test_read_model_facts_fill_what_the_record_lacks_and_never_override_it() -> None:
    facts = InvoiceFacts("retrying", "paypal", "cus_9", 100, "EUR")
    moved = made(transition(SagaState.recovered), facts).data
    assert (moved["amount_minor"], moved["currency"], moved["customer_ref"]) == (
        100,
        "EUR",
        "cus_9",
    )
    assert moved["state"] == "recovered"  # the transition's own state, not the read model's
    retry = made(command(), facts).data
    assert (retry["amount_minor"], retry["provider"], retry["state"]) == (
        4900,
        "stripe",
        "retrying",
    )
    bare = made(transition(SagaState.recovered)).data
    assert (bare["amount_minor"], bare["state"]) == (None, "recovered")


def test_alert_first_open_record_opens_updates_say_nothing_resolved_resolves() -> None:
    opened = made(alert())
    assert (opened.type, opened.created_at) == ("alert.opened", AT)
    update = alert(end=AT + timedelta(minutes=3), severity=Severity.CRITICAL, observed=90.0)
    assert to_event(update) is None
    resolved = made(alert(AlertStatus.RESOLVED, end=AT + timedelta(minutes=30)))
    assert resolved.type == "alert.resolved"
    assert resolved.created_at == AT + timedelta(minutes=30)
    assert opened.id != resolved.id
    assert opened.id == made(alert(message="another line")).id
    assert opened.data["window"] == {"start": "2026-11-02T08:46:00Z", "end": "2026-11-02T09:00:00Z"}
    # A record of the high-risk kind (a customer, no provider) opens the same way.
    risky = made(alert(kind="HIGH_RISK_CUSTOMER", provider=None, customer_ref="cus_7"))
    assert (risky.data["customer_ref"], risky.data["provider"]) == ("cus_7", None)


def test_bodies_are_bounded_json() -> None:
    huge = alert(message="x" * 50_000 + "\x00", kind="K" * 5_000, observed=float("nan"))
    event = made(huge)
    body = json.dumps(event.envelope(), allow_nan=False)  # strict JSON: no NaN
    assert len(event.data["message"]) <= MAX_TEXT and len(event.data["kind"]) <= 255
    assert "\\u0000" not in body and event.data["observed"] is None
    assert len(body) < 4_000


def test_timeline_path_encodes_the_whole_ref() -> None:
    assert timeline_path("in 1/../x?y") == "/v1/invoices/in%201%2F..%2Fx%3Fy/timeline"


def _documented() -> dict[str, dict[str, Any]]:
    """type -> example body, from README's "Event types" JSON blocks."""
    text = README.read_text()
    start = text.index("### Event types")
    end = text.find("\n## ", start)
    bodies = [json.loads(b) for b in re.findall(r"```json\n(.*?)\n```", text[start:end], re.S)]
    return {b["type"]: b for b in bodies}


def _examples() -> list[OutboundEvent]:
    records: list[Source] = [
        transition(SagaState.recovered),
        transition(SagaState.awaiting_customer),
        transition(SagaState.exhausted),
        transition(SagaState.canceled),
        command(),
        command(CommandType.NOTIFY_CUSTOMER, channel="email", template="dunning-1"),
        command(CommandType.ESCALATE, channel="slack", template="escalation"),
        alert(),
        alert(AlertStatus.RESOLVED, end=AT + timedelta(minutes=30)),
    ]
    return [made(r) for r in records]


def test_every_type_is_made_and_documented_with_the_same_fields() -> None:
    events = _examples()
    assert sorted(e.type for e in events) == sorted(EVENT_TYPES)
    documented = _documented()
    assert sorted(documented) == sorted(EVENT_TYPES)
    for event in events:
        doc = documented[event.type]
        assert set(doc) == set(event.envelope()), event.type
        assert set(doc["data"]) == set(event.data), event.type
