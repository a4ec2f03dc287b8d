"""Where tenant policy changes go: ``PolicyChanged`` records on ``recovery.policies``.

A change counts only once the broker acknowledged it (an idempotent acks=all producer);
Kafka down means ``Retryable`` and nothing changed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from paywatch.schemas.models import PolicyChanged
from paywatch.schemas.topics import RECOVERY_POLICIES
from paywatch.settings import Settings
from paywatch.tenants.tenant_log import Appender, TenantLog, open_tenant_log

__all__ = ["Appender", "PolicyLog", "open_policy_log"]


class PolicyLog(TenantLog[PolicyChanged]):
    """Where policy changes go: ``recovery.policies``, keyed by tenant."""


@asynccontextmanager
async def open_policy_log(settings: Settings, bootstrap: str) -> AsyncIterator[PolicyLog]:
    """A PolicyLog on its own idempotent producer (reconnecting while Kafka is down)."""
    async with open_tenant_log(
        PolicyLog, settings, bootstrap, RECOVERY_POLICIES, "paywatch-policy"
    ) as log:
        yield log
