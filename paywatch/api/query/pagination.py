"""Keyset pagination: opaque cursors, the limit parameter and a parametrized WHERE builder.

A cursor is the urlsafe-base64 (unpadded) JSON of the sort key of the last row
served, e.g. ``["2024-05-01T10:00:00Z","in_123"]``; the next page is the rows
strictly after it in the listing's order. Clients treat it as opaque.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import ConfigDict, TypeAdapter, ValidationError

from paywatch.api.query.deps import ApiError
from paywatch.api.query.schemas import Page

K = TypeVar("K")
T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
_MAX_CURSOR_CHARS = 1024

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"Page size, 1..{MAX_LIMIT}.")]
CursorParam = Annotated[
    str | None,
    Query(min_length=1, max_length=_MAX_CURSOR_CHARS, description="next_cursor of the last page."),
]


class CursorCodec(Generic[K]):
    """Encodes a listing's sort key into an opaque cursor and back."""

    def __init__(self, key_type: Any) -> None:
        # Strict: an ISO string is a datetime, a number is not (no epoch guessing).
        self._adapter: TypeAdapter[K] = TypeAdapter(key_type, config=ConfigDict(strict=True))

    def encode(self, key: K) -> str:
        """Opaque cursor for a sort key."""
        raw = self._adapter.dump_json(key)
        return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")

    def decode(self, cursor: str) -> K:
        """Sort key of a cursor; ApiError 400 with the reason when it is malformed."""
        padded = cursor + "=" * (-len(cursor) % 4)
        try:
            raw = base64.b64decode(padded, altchars=b"-_", validate=True)
        except binascii.Error as exc:
            raise _bad_cursor("not urlsafe base64") from exc
        try:
            return self._adapter.validate_json(raw)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(part) for part in first["loc"])
            reason = f"{first['msg']} at [{where}]" if where else first["msg"]
            raise _bad_cursor(reason) from exc


def _bad_cursor(reason: str) -> ApiError:
    return ApiError(400, "invalid_cursor", f"malformed cursor: {reason}; pass next_cursor as is")


def build_page(rows: Sequence[T], limit: int, cursor_of: Callable[[T], str]) -> Page[T]:
    """Page of the first ``limit`` rows; rows were fetched with LIMIT limit+1 to detect more."""
    if len(rows) <= limit:
        return Page[T](data=list(rows), next_cursor=None)
    kept = list(rows[:limit])
    return Page[T](data=kept, next_cursor=cursor_of(kept[-1]))


@dataclass(frozen=True)
class Listing:
    """A list route's rows: ``select`` (``"<columns> FROM <table>"``) ordered by ``keys``
    descending, the second breaking ties; each key is also the name of the item's field, so
    the last item served gives the next cursor. Route constants: values never go in here."""

    select: str
    keys: tuple[str, str]
    codec: CursorCodec[Any]

    async def page(
        self, pool: Any, where: Where, cursor: str | None, limit: int, item: Callable[[Any], T]
    ) -> Page[T]:
        """The page after ``cursor`` of the rows ``where`` keeps (built with ``item``)."""
        first, second = self.keys
        if cursor is not None:
            where.add(f"({first}, {second}) < ({{}}, {{}})", *self.codec.decode(cursor))
        fetch = where.param(limit + 1)
        query = (
            f"SELECT {self.select} WHERE {where.sql}"
            f" ORDER BY {first} DESC, {second} DESC LIMIT {fetch}"
        )
        rows = await pool.fetch(query, *where.args)
        return build_page([item(r) for r in rows], limit, self._cursor_of)

    def _cursor_of(self, item: Any) -> str:
        key: Any = tuple(getattr(item, name) for name in self.keys)
        return self.codec.encode(key)


class Where:
    """A WHERE clause of constant SQL fragments; every value travels as a $n parameter.

    It always starts with ``tenant = $1``: no query of the API can leave it out.
    """

    def __init__(self, tenant: str) -> None:
        self.args: list[object] = [tenant]
        self._clauses = ["tenant = $1"]

    def add(self, fragment: str, *values: object) -> None:
        """AND a fragment whose ``{}`` placeholders become the next $n parameters."""
        marks = [f"${len(self.args) + i}" for i in range(1, len(values) + 1)]
        self._clauses.append(fragment.format(*marks))
        self.args.extend(values)

    def add_if(self, fragment: str, value: object) -> None:
        """AND a one-parameter fragment when the filter was given."""
        if value is not None:
            self.add(fragment, value)

    def param(self, value: object) -> str:
        """Register one more parameter (e.g. the LIMIT) and return its $n."""
        self.args.append(value)
        return f"${len(self.args)}"

    @property
    def sql(self) -> str:
        """The clauses joined with AND (without the WHERE keyword)."""
        return " AND ".join(self._clauses)
