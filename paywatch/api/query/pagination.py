"""Keyset pagination: opaque cursors, the limit parameter and a parametrized WHERE builder.

A cursor is the urlsafe-base64 (unpadded) JSON of the sort key of the last row
served, e.g. ``["2024-05-01T10:00:00Z","in_123"]``; the next page is the rows
strictly after it in the listing's order. Clients treat it as opaque: the OpenAPI
document promises only "a next_cursor this listing issued", so the format may change.

Decoding never trusts the string: anything that is not a cursor this listing could have
issued (non-ASCII, bad base64, not JSON, the wrong shape, numbers or instants Postgres
cannot hold, NUL characters) is ApiError 400 ``invalid_cursor`` before any query runs.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import (
    AfterValidator,
    AwareDatetime,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)

from paywatch.api.query.deps import NO_NUL, ApiError, pattern_meaning
from paywatch.api.query.schemas import Page

K = TypeVar("K")
T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
_MAX_CURSOR_CHARS = 1024
_INT4_MAX = 2**31 - 1
_INT8_MAX = 2**63 - 1

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"Page size, 1..{MAX_LIMIT}.")]

CURSOR_DOC = (
    "Opaque: the `next_cursor` of the previous page of this same listing, passed back"
    " unchanged (its content is not part of the contract and may change between releases)."
    " Any other value is answered 400 `invalid_cursor`."
)


def _in_utc(value: datetime) -> datetime:
    # An offset can push an instant past year 1 or 9999 in UTC: Python cannot convert it and
    # asyncpg cannot send it, so such a key can never come from a row.
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("instant outside years 1..9999 in UTC") from exc


def instant_bound(value: datetime | None) -> datetime | None:
    """A time filter in UTC; beyond what Python holds in UTC it is +-infinity in Postgres.

    A bound before year 1 (or after 9999) in UTC keeps (or drops) every row, exactly what
    asyncpg's datetime.min/max (sent as -infinity/infinity) do.
    """
    if value is None:
        return None
    try:
        return value.astimezone(UTC)
    except OverflowError:
        edge = datetime.min if value.year == datetime.min.year else datetime.max
        return edge.replace(tzinfo=UTC)


# Parts of cursor keys: exactly the values the columns they are compared with can hold.
Instant = Annotated[AwareDatetime, AfterValidator(_in_utc)]
Ref = Annotated[str, StringConstraints(min_length=1, pattern=NO_NUL)]
Partition = Annotated[int, Field(ge=0, le=_INT4_MAX)]
Offset = Annotated[int, Field(ge=0, le=_INT8_MAX)]


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
        if not cursor.isascii():  # b64decode raises ValueError, not binascii.Error, on these
            raise _bad_cursor("not urlsafe base64")
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
            said = pattern_meaning(first.get("ctx", {}).get("pattern", "")) or first["msg"]
            reason = f"{said} at [{where}]" if where else said
            raise _bad_cursor(reason) from exc

    def query(self, example: K) -> Any:
        """The ``cursor`` query parameter of a listing: opaque, with one of its cursors."""
        return Query(
            min_length=1,
            max_length=_MAX_CURSOR_CHARS,
            description=CURSOR_DOC,
            examples=[self.encode(example)],
        )


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
