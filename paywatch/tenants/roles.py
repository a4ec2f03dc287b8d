"""The roles an API key can have (what each may do: paywatch.api.query.permissions)."""

from __future__ import annotations

from typing import Literal

Role = Literal["viewer", "support", "analyst", "operator", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "support", "analyst", "operator", "admin")
