"""Read models `tenant_policies` and `tenant_policy_changes`, projected from
`recovery.policies`.

Their SQL lives in :mod:`paywatch.tenants.policy_rows`, because the policy store writes the
same rows right after the broker ack; both statements are idempotent, so either writer may
come first.
"""

from __future__ import annotations

from paywatch.projections.base import ReadModel, each, execute_many
from paywatch.schemas.models import PolicyChanged
from paywatch.schemas.topics import RECOVERY_POLICIES
from paywatch.tenants import policy_rows

READ_MODEL = ReadModel(
    "tenant_policies",
    {RECOVERY_POLICIES: PolicyChanged},
    rows=each(policy_rows.row),
    # In log order, all history rows then all upserts: each upsert only moves its tenant's
    # row forward.
    write=execute_many(policy_rows.INSERT_CHANGE, policy_rows.UPSERT),
)
