"""The one port every provider implements, with every capability declared and defaulted.

A provider module is pure: no clock (``now`` is passed in), no I/O, no random (PayPal's
``verify_async`` and the thin providers' ``api`` are the declared exceptions). The ingest
route calls ``verify_async`` on the raw bytes before anything else, then ``read`` (card
numbers, then ``parse``) once, and hands the parsed document to ``handshake``, ``subject``
and ``provider_event_id``; the normalize agent parses once and hands the document to
``normalize``. Errors: ``VerificationError`` (401), ``CardDataError`` (422),
``PayloadError`` (400) from :mod:`paywatch.errors`; nothing else may escape for any input.

Capabilities and their defaults (a provider overrides only what differs):

==========================  =========================================================
``verify_async``            calls the pure ``verify`` (PayPal calls out instead)
``contains_pan(body)``      the raw-byte scan of :mod:`paywatch.providers.pan`, with the
                            values of ``not_card_numbers`` masked
``not_card_numbers``        none; JSON keys whose digit-only values are provider-issued
                            ids that pass Luhn by chance (network ids, realm ids)
``scans_card_numbers``      False; True when ``parse`` also scans the decoded document
``handshake(doc)``          False; True for a delivery to acknowledge, not store (Xero)
``answers_challenge``       False; True for ``GET ?bt_challenge=`` (Braintree)
``success_body``            None (JSON acknowledgement); plain text otherwise (Adyen)
``empty_ack``               False; True for 200/401 with no body at all (Xero)
``thin``                    False; True when the worker fetches what a webhook names
==========================  =========================================================
"""

from __future__ import annotations

import json
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from paywatch.errors import CardDataError, PayloadError, VerificationError
from paywatch.providers import pan
from paywatch.schemas.coords import Coords
from paywatch.schemas.models import MAX_REF, PaymentEvent, RawRef, RawWebhook

# Fixed namespace for deterministic event ids: never change it (replay relies on it).
EVENT_NAMESPACE = uuid.UUID("6f1c3c1e-5a7b-4c39-9a0e-70a1e0c0ffee")

Secrets = Sequence[Mapping[str, str]]
"""Every currently valid secret set of a tenant for one provider, newest first
(several during rotation). Each maps secret name -> value."""


def event_id(tenant: str, provider: str, provider_event_id: str, index: int = 0) -> str:
    """Deterministic canonical event id: uuid5(tenant/provider/provider event id/index)."""
    return str(uuid.uuid5(EVENT_NAMESPACE, f"{tenant}/{provider}/{provider_event_id}/{index}"))


def envelope(
    raw: RawWebhook,
    at: Coords,
    provider_event_id: str,
    fields: Mapping[str, Any] | Callable[[], Mapping[str, Any]],
    *,
    source_type: str,
    occurred_at: datetime,
    invalid: str,
    index: int = 0,
) -> PaymentEvent:
    """The canonical event of one draft: deterministic id, tenant, provider, ``raw`` ref.

    ``fields`` are the provider's PaymentEvent fields, or a function building them (their
    own models' refusals then count too); values a model refuses, including the bounds of
    :mod:`paywatch.schemas.models` (no NUL, lengths, amounts, attempts, years), raise
    PayloadError with the ``invalid`` message and the fields refused.
    """
    topic, partition, offset = at
    try:
        ref = RawRef(
            topic=topic, partition=partition, offset=offset, provider_event_id=provider_event_id
        )
        return PaymentEvent(
            event_id=event_id(raw.tenant, raw.provider, provider_event_id, index),
            tenant=raw.tenant,
            provider=raw.provider,
            source_type=source_type,
            occurred_at=occurred_at,
            raw=ref,
            **(fields() if callable(fields) else fields),
        )
    except ValidationError as exc:
        raise PayloadError(f"{invalid}: {refusal(exc)}") from exc


def refusal(exc: ValidationError) -> str:
    """Which fields a model refused and why, without their values (they may be anything)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in error['loc']) or '(event)'}: {error['msg']}"
        for error in exc.errors(include_url=False, include_input=False)[:3]
    )


def subject_ref(value: object) -> str | None:
    """``value`` when it can be the Kafka key's subject (a ``Ref``), else None.

    ``subject`` picks an id out of an attacker-shaped (if signed) body, and the ingest puts
    it straight into ``RawWebhook.subject``: a value the model refuses (NUL, over
    ``MAX_REF`` characters, a lone surrogate that UTF-8 cannot encode) would fail there
    with a 500. ``subject`` is optional ("when cheap to name"), so such a value names none.
    """
    if not isinstance(value, str) or not value or len(value) > MAX_REF or "\x00" in value:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value


def load_json(body: bytes, *, exact: bool = False) -> Any:
    """A JSON body (decimals as ``Decimal`` when ``exact``), or PayloadError."""
    try:
        if exact:
            return json.loads(body.decode("utf-8"), parse_float=Decimal)
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise PayloadError("body is not UTF-8") from exc
    except RecursionError as exc:
        raise PayloadError("JSON nested too deeply") from exc
    except ArithmeticError as exc:  # decimal.InvalidOperation: an exponent Decimal cannot hold
        raise PayloadError("body has a number out of range") from exc
    except ValueError as exc:  # JSONDecodeError, and ints over the digit limit
        raise PayloadError(f"body is not JSON: {exc}") from exc


def reject_card_numbers(doc: object, what: str, skip: frozenset[str] = frozenset()) -> None:
    """CardDataError when a decoded document holds a card number.

    The raw-byte scan cannot see JSON escapes (``\\u0034...``, ``\\/``); they only show
    once decoded. Numbers count by their integer part (``4111111111111111.0``). Digit-only
    values under the ``skip`` keys (network ids that pass Luhn by chance) are left out;
    anything else under them is scanned, since a provider never sends such an id otherwise.
    """
    if pan.contains_pan("\n".join(_texts(doc, skip)).encode("utf-8", "surrogatepass")):
        raise CardDataError(f"{what} contains a card number")


def _texts(doc: object, skip: frozenset[str]) -> list[str]:
    """Every string (keys included) and long number in a JSON document, without recursion."""
    found: list[str] = []
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            found.append(node)
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(v for k, v in node.items() if k not in skip or not _is_digit_id(v))
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, int | float | Decimal) and not isinstance(node, bool):
            digits = pan.integral_digits(node)  # "" unless it has 13-19 digits
            if digits:
                found.append(digits)
    return found


def _is_digit_id(value: object) -> bool:
    if isinstance(value, str):
        return value.isascii() and value.isdigit()
    return isinstance(value, int) and not isinstance(value, bool)


class Provider(ABC):
    """What ingest and the normalize agent need from a provider (see the module doc)."""

    name: str
    secret_names: tuple[str, ...]
    """Secret names a tenant must store (``paywatch tenant secret``)."""
    optional_secret_names: tuple[str, ...] = ()

    scans_card_numbers: bool = False
    not_card_numbers: frozenset[str] = frozenset()
    answers_challenge: bool = False
    success_body: str | None = None
    empty_ack: bool = False
    thin: bool = False

    @abstractmethod
    def verify(
        self, body: bytes, headers: Mapping[str, str], secrets: Secrets, now: datetime
    ) -> None:
        """Raise VerificationError unless the raw body is signed by one of ``secrets``."""

    async def verify_async(
        self, body: bytes, headers: Mapping[str, str], secrets: Secrets, now: datetime
    ) -> None:
        """Verification as ingest runs it: the pure ``verify`` unless the provider calls out."""
        self.verify(body, headers, secrets, now)

    def contains_pan(self, body: bytes) -> bool:
        """True when the raw body holds a card number outside the ``not_card_numbers``."""
        return pan.contains_pan(body, self.not_card_numbers)

    def read(self, body: bytes) -> dict[str, Any]:
        """A verified body -> its document: card numbers first (422), then ``parse`` (400).

        The raw-byte scan runs for every provider, also those whose ``parse`` scans the
        decoded document: it is the one line every body crosses, whatever ``parse`` does.
        A body with a backslash may hide digits behind JSON escapes (``\\u0034``), so it is
        scanned once more with them resolved (a cheap ``in`` test keeps that off the common
        path; resolving them costs a few µs where walking the document would cost ~30).
        """
        escaped = b"\\" in body
        if self.contains_pan(body) or (escaped and self.contains_pan(pan.json_unescaped(body))):
            raise CardDataError("body contains a card number")
        return self.parse(body)

    @abstractmethod
    def parse(self, body: bytes) -> dict[str, Any]:
        """Decode a verified body into a document, or raise PayloadError."""

    def handshake(self, doc: Mapping[str, Any]) -> bool:
        """True for a delivery to acknowledge without storing it (none by default)."""
        return False

    def challenge_response(self, challenge: str, secrets: Secrets) -> str:
        """Answer to a ``GET`` verification challenge (only when ``answers_challenge``)."""
        raise VerificationError(f"{self.name} sends no verification challenge")

    @abstractmethod
    def subject(self, doc: Mapping[str, Any]) -> str | None:
        """Invoice, subscription or customer id for the Kafka key, when cheap to name."""

    @abstractmethod
    def provider_event_id(self, doc: Mapping[str, Any]) -> str:
        """The provider's id for this delivery (or a dedupe key built from its content)."""

    def normalize(
        self,
        raw: RawWebhook,
        topic: str,
        partition: int,
        offset: int,
        doc: Mapping[str, Any] | None = None,
    ) -> list[PaymentEvent]:
        """Canonical events of one raw webhook read at topic[partition]@offset.

        ``doc`` is the body as ``parse`` returned it (the normalize agent has parsed it
        already); without it the body is parsed here.
        """
        parsed = self.parse(raw.body) if doc is None else doc
        return self.normalize_doc(raw, parsed, Coords(topic, partition, offset))

    @abstractmethod
    def normalize_doc(
        self, raw: RawWebhook, doc: Mapping[str, Any], at: Coords
    ) -> list[PaymentEvent]:
        """Canonical events of a parsed body (pure; ``envelope`` builds each one).

        Event types the provider does not handle give ``[]``; a body it cannot read
        raises PayloadError.
        """
