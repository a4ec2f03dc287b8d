"""The rows of read models `tenant_policies` (each tenant's policy in force) and
`tenant_policy_changes` (every PolicyChanged with its Kafka coordinates).

The policy store (:mod:`paywatch.tenants.policy_store`) writes them right after the broker
ack, so a read right after a change sees it; the projector
(:mod:`paywatch.projections.tenant_policies`) writes them again from `recovery.policies`.

Both statements are idempotent, so the projector and the policy writers (API, CLI, which
upsert right after the broker ack) can write the same record in either order: the history
insert ignores a known (topic, partition, offset), and the upsert only moves the row
forward in (changed_at, topic, partition, offset) order. Writers keep changed_at monotonic
per tenant, so that order is the log order the worker's PolicyView follows.
"""

from __future__ import annotations

import json
from typing import Any

from paywatch.schemas.coords import Coords
from paywatch.schemas.models import PolicyChanged

_COLUMNS = (
    "tenant, policy, revision, previous_revision, changed_at, changed_by, reason, topic,"
    ' partition, "offset"'
)
_ORDER = ("changed_at", "topic", "partition", '"offset"')

INSERT_CHANGE = (
    f"INSERT INTO tenant_policy_changes ({_COLUMNS})"  # noqa: S608 (constant columns)
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
    ' ON CONFLICT (topic, partition, "offset") DO NOTHING'
)
UPSERT = (
    f"INSERT INTO tenant_policies ({_COLUMNS})"  # noqa: S608 (constant columns)
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
    " ON CONFLICT (tenant) DO UPDATE SET policy = EXCLUDED.policy,"
    " revision = EXCLUDED.revision, previous_revision = EXCLUDED.previous_revision,"
    " changed_at = EXCLUDED.changed_at, changed_by = EXCLUDED.changed_by,"
    " reason = EXCLUDED.reason, topic = EXCLUDED.topic, partition = EXCLUDED.partition,"
    ' "offset" = EXCLUDED."offset", updated_at = now()'
    f" WHERE ({', '.join(f'tenant_policies.{c}' for c in _ORDER)})"
    f" < ({', '.join(f'EXCLUDED.{c}' for c in _ORDER)})"
)
"""Both take `row(...)`: the history row, and the tenant's row when the change is newer."""


def row(change: PolicyChanged, at: Coords) -> tuple[Any, ...]:
    """The values of INSERT_CHANGE and UPSERT (the policy as a JSON object for jsonb)."""
    return (
        change.tenant, json.loads(change.policy_json), change.revision,
        change.previous_revision, change.changed_at, change.changed_by, change.reason,
        at.topic, at.partition, at.offset,
    )  # fmt: skip
