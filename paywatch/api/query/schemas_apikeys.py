"""Request and response models of the admin API-key routes (/v1/apikeys): never the hash."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field

from paywatch.api.query.deps import NO_NUL
from paywatch.api.query.schemas import Public
from paywatch.tenants.api_keys import DURATION_PATTERN
from paywatch.tenants.roles import Role

Duration = Annotated[
    str,
    Field(
        pattern=DURATION_PATTERN,
        description="A whole number from 1 to 999999 and one unit: s, m, h or d.",
        examples=["90d", "12h", "30m"],
    ),
]


class ApiKeyItem(Public):
    """One API key as the tenant's admins see it: its public id and lifecycle."""

    key_id: str = Field(description="Public id, key_ + 10 base32 characters.")
    role: Role
    prefix: str = Field(description="The key's first characters, to recognise it.")
    label: str | None
    state: Literal["active", "expired", "revoked"] = Field(
        description="Whether the key authenticates now (revoked wins over expired)."
    )
    created_at: datetime
    created_by: str | None = Field(
        description="cli:<os user>, api:<key id> or seed; null for keys older than this field."
    )
    expires_at: datetime | None = Field(description="Refused from then on; null: never expires.")
    last_used_at: datetime | None = Field(
        description="Last authenticated request, recorded at most once a minute per API process."
    )
    revoked_at: datetime | None = Field(
        description="Refused from then on; later than now while a rotation's grace period runs."
    )
    revoked_by: str | None
    replaced_by: str | None = Field(description="The key id a rotation made in its place.")


class ApiKeyCreated(ApiKeyItem):
    """A new key: ``key`` is the secret, in this answer only (only its hash is stored)."""

    key: str = Field(description="Send it as `Authorization: Bearer <key>`. Shown once.")


class ApiKeyRotated(ApiKeyCreated):
    """The key a rotation made, and the record of the key it replaces."""

    previous: ApiKeyItem = Field(description="The old key: revoked now or at its grace end.")


class ApiKeyRevoked(ApiKeyItem):
    """The revoked key's record; ``changed`` false when it was already revoked."""

    changed: bool


class NewApiKeyRequest(Public):
    """What POST /v1/apikeys creates."""

    role: Role
    expires_in: Duration | None = Field(default=None, description="Null: it never expires.")
    label: Annotated[str, Field(min_length=1, max_length=100, pattern=NO_NUL)] | None = None


class RotateRequest(Public):
    """How a rotation retires the old key."""

    grace: Duration | None = Field(
        default=None, description="Keep the old key valid this long; null: revoke it now."
    )
