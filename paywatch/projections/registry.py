"""The read models the projector writes, one line each, in write order.

The sink writes them in this order inside each batch's transaction, and the runner reads
the topics they consume. A model that reads rows another writes in the same batch names
it in `after`; `checked` refuses a registry that lists it later.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from paywatch.projections import (
    alerts,
    customers,
    event_log,
    failures,
    invoices,
    metrics_daily,
    ops_audit,
    recovery_log,
    recovery_workflows,
    tenant_policies,
)
from paywatch.projections.base import ReadModel
from paywatch.schemas.models import Frozen


def checked(models: Sequence[ReadModel[Any]]) -> tuple[ReadModel[Any], ...]:
    """The models, once checked: unique names, each listed after the models it reads."""
    seen: set[str] = set()
    for model in models:
        if model.name in seen:
            raise ValueError(f"read model {model.name!r} listed twice")
        missing = set(model.after) - seen
        if missing:
            raise ValueError(f"read model {model.name!r} must come after {sorted(missing)}")
        seen.add(model.name)
    return tuple(models)


READ_MODELS = checked(
    [
        event_log.READ_MODEL,
        failures.READ_MODEL,
        recovery_log.READ_MODEL,
        recovery_workflows.READ_MODEL,
        invoices.READ_MODEL,  # after event_log and recovery_workflows: it reads their rows
        metrics_daily.READ_MODEL,  # after invoices, event_log and the recovery models
        tenant_policies.READ_MODEL,
        customers.READ_MODEL,
        alerts.READ_MODEL,
        ops_audit.READ_MODEL,
    ]
)


def sources(models: Sequence[ReadModel[Any]] = READ_MODELS) -> Mapping[str, type[Frozen]]:
    """Every source topic the models consume, with the one record type of its values."""
    found: dict[str, type[Frozen]] = {}
    for model in models:
        for topic, record_type in model.sources.items():
            if found.setdefault(topic, record_type) is not record_type:
                raise ValueError(f"{topic} read as both {found[topic]} and {record_type}")
    return found
