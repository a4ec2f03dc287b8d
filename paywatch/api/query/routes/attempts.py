"""POST /v1/invoices/{invoice_ref}/attempts: the tenant reports a payment attempt it made.

A schedule-only tenant (policy ``charging: schedule_only``) charges paywatch's retries
itself and reports each result here; any tenant may report an attempt its provider's
webhooks do not show. A report becomes one canonical ``PaymentEvent`` on payments.events
(PAYMENT_SUCCEEDED or PAYMENT_FAILED, provider = the invoice's, source_type
``tenant.attempt_report``), so the saga, the card's ledger and every read model take it as
they take a provider's, answered 202 with the event id and its Kafka coordinates once the
broker acknowledged it (Kafka down: 503, nothing written).

Counting, once per attempt:

* the event id is uuid5 of the tenant, the invoice and ``attempt_id``: a retried POST is
  the same event, deduplicated downstream by id; one that finds it already in ``event_log``
  is not appended again (202, ``duplicate``; 409 if it now says something else);
* an ``attempt_id`` naming a RETRY_PAYMENT paywatch scheduled for the invoice (its
  ``command_id``, in ``recovery.retry_due``) reports that retry's outcome: the card's ledger
  counted the retry when it granted it, so the event is a retry outcome
  (``paywatch_retry``) and counts nothing again. Any other attempt counts on the card like
  a provider's retry. (A report that beats the projector to the command is counted as an
  attempt of its own: more, never less.)

Checked in this order: the body's shape (400, FastAPI), the invoice (404: the tenant has no
invoice by that ref), card numbers in free text (400 ``card_data_rejected``, never
written: the query API answers every bad input 400, ingest's 422 is its own contract), the
log (409, 503).
A failure without ``decline_category`` takes the invoice's last one: a retry fails for the
reason the payment failed before, as in the sandbox executor.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request

from paywatch.api.query.attempt_report import (
    AttemptRecorded,
    AttemptReport,
    InvoiceFacts,
    Retry,
    conflicts,
    has_card_number,
    report_event,
    report_event_id,
)
from paywatch.api.query.deps import FORBIDDEN, ApiError, Caller, Pool, storable
from paywatch.api.query.schemas import ErrorBody, KafkaCoordinates
from paywatch.errors import Retryable
from paywatch.schemas.models import DeclineCategory, PaymentEvent
from paywatch.schemas.topics import PAYMENTS_EVENTS, invoice_key
from paywatch.tenants.policy_log import PolicyLog

router = APIRouter(prefix="/v1/invoices", tags=["invoices"], responses=FORBIDDEN)

_INVOICE = (
    "SELECT provider, customer_ref, subscription_ref, amount_minor, currency,"
    " last_decline_category FROM invoices WHERE tenant = $1 AND invoice_ref = $2"
)
_LOGGED = (
    'SELECT topic, partition, "offset", payload FROM event_log WHERE event_id = $1 AND tenant = $2'
)
_RETRY = (
    "SELECT payload->'attempt' AS attempt FROM recovery_log WHERE tenant = $1"
    " AND invoice_ref = $2 AND kind = 'command' AND command_type = 'RETRY_PAYMENT'"
    " AND command_id = $3 LIMIT 1"
)
_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {
        "model": ErrorBody,
        "description": "`invalid_request`: not a report (see the body's schema);"
        " `card_data_rejected`: a field holds a card number, nothing was written.",
    },
    401: {"model": ErrorBody},
    404: {"model": ErrorBody, "description": "`not_found`: the tenant has no such invoice."},
    409: {
        "model": ErrorBody,
        "description": "`attempt_conflict`: this attempt_id was reported with other facts.",
    },
    503: {"model": ErrorBody, "description": "`kafka_unavailable`: nothing was written."},
}
Report = Annotated[AttemptReport, Body(discriminator="outcome")]


def _facts(row: Any) -> InvoiceFacts:
    category = row["last_decline_category"]
    known = category in DeclineCategory.__members__
    return InvoiceFacts(
        provider=row["provider"],
        customer_ref=row["customer_ref"],
        subscription_ref=row["subscription_ref"],
        amount_minor=row["amount_minor"],
        currency=row["currency"],
        last_category=DeclineCategory(category) if known else DeclineCategory.UNKNOWN,
    )


def _logged(row: Any, invoice_ref: str, report: AttemptReport) -> AttemptRecorded:
    """The answer to a report whose event is in the log already (409 if it now differs)."""
    stored = PaymentEvent.model_validate(row["payload"])
    if conflicts(stored, report):
        detail = f"attempt {report.attempt_id!r} was reported before with other facts"
        raise ApiError(409, "attempt_conflict", detail)
    return AttemptRecorded(
        event_id=stored.event_id,
        type=stored.type,
        invoice_ref=invoice_ref,
        attempt_id=report.attempt_id,
        retry_command_id=report.attempt_id if stored.paywatch_retry else None,
        duplicate=True,
        kafka=KafkaCoordinates(topic=row["topic"], partition=row["partition"],
                               offset=row["offset"]),
    )  # fmt: skip


@router.post(
    "/{invoice_ref}/attempts",
    status_code=202,
    responses=_RESPONSES,
    summary="Report a payment attempt the tenant made (operator)",
)
async def report_attempt(
    request: Request, pool: Pool, caller: Caller, invoice_ref: str, report: Report
) -> AttemptRecorded:
    """Append the attempt to payments.events, where the saga and the card's ledger count it."""
    tenant = caller.tenant
    async with pool.acquire() as conn:
        row = await conn.fetchrow(_INVOICE, tenant, invoice_ref) if storable(invoice_ref) else None
        if row is None:
            raise ApiError(404, "not_found", f"no invoice {invoice_ref!r}")
        if has_card_number(report):
            detail = "a field contains a card number (PAN); nothing was stored"
            raise ApiError(400, "card_data_rejected", detail)
        eid = report_event_id(tenant, invoice_ref, report.attempt_id)
        logged = await conn.fetchrow(_LOGGED, eid, tenant)
        if logged is not None:
            return _logged(logged, invoice_ref, report)
        found = await conn.fetchrow(_RETRY, tenant, invoice_ref, report.attempt_id)
    retry = Retry(report.attempt_id, found["attempt"]) if found else None
    event = report_event(tenant, invoice_ref, _facts(row), report, retry)
    return await _append(request, event, report)


async def _append(request: Request, event: PaymentEvent, report: AttemptReport) -> AttemptRecorded:
    """Write the event and wait for the broker's ack (503 when there is none)."""
    log: PolicyLog | None = request.app.state.policy_log  # the API's one producer
    if log is None:
        raise ApiError(503, "kafka_unavailable", "this API process was started without Kafka")
    topic = request.app.state.settings.topic(PAYMENTS_EVENTS)
    key = invoice_key(event.tenant, event.invoice_ref).encode()
    try:
        partition, offset = await log.appender.append(
            topic, key, log.codec.encode(event, topic=topic)
        )
    except Retryable as exc:
        detail = f"{exc}: the attempt was not recorded, retry later"
        raise ApiError(503, "kafka_unavailable", detail, {"Retry-After": "5"}) from exc
    return AttemptRecorded(
        event_id=event.event_id,
        type=event.type,
        invoice_ref=event.invoice_ref,
        attempt_id=report.attempt_id,
        retry_command_id=report.attempt_id if event.paywatch_retry else None,
        duplicate=False,
        kafka=KafkaCoordinates(topic=topic, partition=partition, offset=offset),
    )
