"""/v1/customers/{customer_ref}/contact: where a customer's dunning emails go (operator+).

Canonical events carry no email address, so the tenant gives them here (or with
``paywatch contact set``). The viewer never sees an address (it is not granted these
routes: permissions.py). A new address clears the contact's bounce; an unsubscribe stays.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from pydantic import AfterValidator, Field

from paywatch.api.query.deps import FORBIDDEN, ApiError, Caller, Pool
from paywatch.api.query.schemas import ErrorBody, Public
from paywatch.email import store
from paywatch.email.store import ADDRESS_PATTERN, MAX_ADDRESS, MAX_NAME, Contact
from paywatch.errors import ConfigError

router = APIRouter(prefix="/v1/customers", tags=["contacts"], responses=FORBIDDEN)

_CLASS_ESCAPES = frozenset("\\]^-[")


def _class_char(code: int) -> str:
    char = chr(code)
    return "\\" + char if char in _CLASS_ESCAPES else char


def _printable_pattern() -> str:
    """A pattern of exactly the strings ``str.isprintable`` accepts, as code point ranges
    (about 700; the characters themselves, which Python and ECMAScript's ``u`` mode read)."""
    runs: list[tuple[int, int]] = []
    start: int | None = None
    for code in range(0x110001):
        if code <= 0x10FFFF and chr(code).isprintable():
            start = code if start is None else start
        elif start is not None:
            runs.append((start, code - 1))
            start = None
    ranges = "".join(
        _class_char(a) if a == b else f"{_class_char(a)}-{_class_char(b)}" for a, b in runs
    )
    return f"^[{ranges}]*$"


PRINTABLE = _printable_pattern()
"""What a contact's name and customer ref must be: printable text (email/store.py's rule, no
control, format, separator but the space, surrogate, private-use or unassigned character:
Postgres text holds no NUL or lone surrogate, and names end up in mail headers).
Published as the fields' pattern so a client (and the fuzzer) knows the rule; checked with
``str.isprintable`` itself, so an error says it in words."""


def _printable(value: str) -> str:
    if not value.isprintable():
        raise ValueError("printable characters only (no control or unassigned characters)")
    return value


CustomerRef = Annotated[
    str,
    Path(min_length=1, max_length=255, pattern=r"^[^\x00]*$", examples=["cus_123"],
         description="The customer's ref at its provider."),
]  # fmt: skip
StoredRef = Annotated[
    str,
    Path(min_length=1, max_length=255, json_schema_extra={"pattern": PRINTABLE},
         examples=["cus_123"], description="The customer's ref at its provider (printable)."),
    AfterValidator(_printable),
]  # fmt: skip
Name = Annotated[
    str,
    Field(min_length=1, max_length=MAX_NAME, json_schema_extra={"pattern": PRINTABLE}),
    AfterValidator(_printable),
]
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody},
    401: {"model": ErrorBody},
    404: {"model": ErrorBody},
}


class ContactItem(Public):
    """A customer's contact."""

    customer_ref: str
    email: str
    name: str | None
    unsubscribed_at: datetime | None = Field(description="The customer unsubscribed then.")
    bounced_at: datetime | None = Field(
        description="The SMTP server refused the address for good then; set a new address."
    )
    bounce_reason: str | None
    updated_at: datetime


class ContactRequest(Public):
    """What PUT stores."""

    email: Annotated[
        str, Field(pattern=ADDRESS_PATTERN, max_length=MAX_ADDRESS, examples=["ada@example.com"])
    ]
    name: Name | None = None


def _item(c: Contact) -> ContactItem:
    return ContactItem(**{name: getattr(c, name) for name in ContactItem.model_fields})


def _actor(request: Request) -> str:
    key_id = getattr(request.state, "api_key_id", None)
    return f"api:{key_id}" if key_id else "api"


@router.get("/{customer_ref}/contact", responses=_ERRORS, summary="A customer's contact (operator)")
async def get_contact(pool: Pool, caller: Caller, customer_ref: CustomerRef) -> ContactItem:
    """The address the customer's emails go to; 404 when the tenant gave none."""
    found = await store.get_contact(pool, caller.tenant, customer_ref)
    if found is None:
        raise ApiError(404, "not_found", f"no contact for customer {customer_ref!r}")
    return _item(found)


@router.put(
    "/{customer_ref}/contact", responses=_ERRORS, summary="Set a customer's contact (operator)"
)
async def put_contact(
    request: Request, pool: Pool, caller: Caller, customer_ref: StoredRef, body: ContactRequest
) -> ContactItem:
    """Store where the customer's emails go (a new address clears a bounce)."""
    try:
        made = await store.set_contact(
            pool, caller.tenant, customer_ref, body.email, name=body.name, by=_actor(request)
        )
    except ConfigError as exc:
        raise ApiError(400, "invalid_request", str(exc)) from exc
    return _item(made)
