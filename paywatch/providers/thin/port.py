"""The thin-webhook port: what the worker's fetch step needs from Xero and QuickBooks.

A thin webhook names changed resources without their state. The provider lists them
(``references``, pure), builds the API client that fetches each one (``api``: the only
provider I/O of the worker), names further resources a fetched document points at
(``follow_ups``, pure) and turns a logged document into canonical events
(``normalize_fetched``, pure; replay runs it without calling the provider again).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from paywatch.providers.thin.ledger import RawCoords
from paywatch.providers.thin.refs import ResourceRef
from paywatch.schemas.models import PaymentEvent

if TYPE_CHECKING:  # the client does I/O; this port only names it
    import httpx

    from paywatch.providers.thin.client import ThinApi


@runtime_checkable
class ThinProvider(Protocol):
    """What the fetch step needs from a thin-webhook provider (Xero, QuickBooks)."""

    name: str
    thin: bool

    def references(self, doc: Mapping[str, Any]) -> list[ResourceRef]:
        """Resources a parsed delivery asks to fetch, in delivery order (pure)."""
        ...

    def follow_ups(self, ref: ResourceRef, document: bytes, status: int = 200) -> list[ResourceRef]:
        """Further resources a fetched document names (pure)."""
        ...

    def normalize_fetched(
        self,
        tenant: str,
        ref: ResourceRef,
        document: bytes,
        raw_coords: RawCoords,
        index: int = 0,
        *,
        status: int = 200,
    ) -> list[PaymentEvent]:
        """Canonical events of one fetched document (pure)."""
        ...

    def api(self, http: httpx.AsyncClient, **options: Any) -> ThinApi:
        """An API client on ``http``."""
        ...
