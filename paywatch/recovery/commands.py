"""Recovery commands with deterministic ids, and the rules a tenant's policy contributes.

``command_id`` is the idempotency key executors dedupe on: uuid5 of tenant, invoice,
episode, command type and a slot that is unique within the episode (the retry number, the
dunning day, the n-th payment-method request, ...). The same decision inputs always give
the same id, and a slot is never reused for a second command of the same episode.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from paywatch.recovery.state import Saga, Timer, TimerPurpose
from paywatch.recovery.tenant_policy import TenantPolicy
from paywatch.schemas.models import CommandType, RecoveryCommand, RuleRef

COMMAND_NAMESPACE = uuid.UUID("2b7e4f0c-9d3a-5c61-8e2f-4a0b6c1d7e93")
"""uuid5 namespace of recovery command and timer ids (never change it)."""


def timer_id(saga: Saga, kind: str, slot: str) -> str:
    """Deterministic id of a command or timer of `saga`'s current episode."""
    name = f"{saga.tenant}/{saga.invoice_ref}/{saga.episode}/{kind}/{slot}"
    return str(uuid.uuid5(COMMAND_NAMESPACE, name))


def tenant_rule(policy: TenantPolicy, name: str) -> RuleRef:
    """A rule that comes from the tenant's policy, at the policy's revision."""
    return RuleRef(
        id=f"tenant.{name}",
        edition=f"tenant-policy/{policy.revision}",
        source="tenant policy (paywatch.recovery.tenant_policy)",
    )


def command(
    saga: Saga,
    kind: CommandType,
    slot: str,
    due_at: datetime,
    *,
    reason: str,
    rule: RuleRef,
    cause: str | None,
    attempt: int = 0,
    channel: str | None = None,
    template: str | None = None,
) -> RecoveryCommand:
    """A command of `saga` with its deterministic id."""
    return RecoveryCommand(
        command_id=timer_id(saga, kind.value, slot),
        type=kind,
        tenant=saga.tenant,
        invoice_ref=saga.invoice_ref,
        due_at=due_at,
        attempt=attempt,
        channel=channel,
        template=template,
        reason=reason,
        rule=rule,
        cause_event_id=cause,
    )


def as_timer(cmd: RecoveryCommand, purpose: TimerPurpose) -> Timer:
    """A timer that emits `cmd` when it comes due."""
    return Timer(id=cmd.command_id, due_at=cmd.due_at, purpose=purpose, command=cmd)
