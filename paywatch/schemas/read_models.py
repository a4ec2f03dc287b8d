"""The read models' names (ARCHITECTURE §9), for what may not import the projector's registry.

The query API names them when it starts a rebuild (POST /v1/ops/replay) and may not import
:mod:`paywatch.projections` (a sibling layer); the registry must list exactly these, in any
order (tests/unit/test_rebuild_plan.py), so a new read model is one line here too.
"""

from __future__ import annotations

from paywatch.schemas.topics import ALERTS

NAMES: frozenset[str] = frozenset(
    {
        "event_log",
        "failures",
        "recovery_log",
        "recovery_workflows",
        "invoices",
        "metrics_daily",
        "tenant_policies",
        "customers",
        ALERTS,  # the alerts read model bears its topic's name
        "ops_audit",
    }
)
ALL = "all"
"""Every read model."""
