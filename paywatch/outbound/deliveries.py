"""The delivery log: one row per (endpoint, event), its attempts and outcome (migration 015).

``enqueue`` fans an event out to the tenant's active endpoints subscribed to its type, once:
UNIQUE (endpoint_id, event_id) turns a second enqueue of the same event (a redelivered
record, a restart, a replay) into nothing. The dispatcher (sender.py) then claims due
deliveries endpoint by endpoint (``claim``) and records each attempt (``record_attempt``).

Schedule (RETRY_DELAYS_S, each divided by PAYWATCH_TIME_SCALE): an attempt that fails is
retried after 1 min, 5 min, 30 min and 2 h; the fifth failure marks the delivery failed.
``redeliver`` starts a new round of that schedule now, with the same ``webhook-id``.

A claim leases its rows (``leased_until``, LEASE_S ahead) while the attempt is in flight:
another executor's claim (``FOR UPDATE SKIP LOCKED``) skips them, a redelivery is refused,
and an attempt whose executor died is made again when the lease ends (at least once). An
outcome is recorded only over the row as it was claimed (same ``attempts``), never twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import asyncpg

from paywatch.errors import PaywatchError
from paywatch.outbound.events import EVENT_TYPES, OutboundEvent

DeliveryStatus = Literal["pending", "succeeded", "failed"]
STATUSES: tuple[DeliveryStatus, ...] = ("pending", "succeeded", "failed")
DELIVERY_ID_PATTERN = r"^dlv_[a-z2-7]{14}$"
"""A delivery id (the column's CHECK in migration 015)."""
RETRY_DELAYS_S = (60.0, 300.0, 1800.0, 7200.0)
"""After the 1st, 2nd, 3rd and 4th failed attempt of a round; the 5th failure is final."""
LEASE_S = 60.0
"""How long a claimed delivery is held for its attempt (real seconds: HTTP time is not
scaled); longer than any attempt may take (sender.py's deadline)."""
MAX_ERROR_CHARS = 500

_ENQUEUE = """
INSERT INTO deliveries (tenant, endpoint_id, event_id, event_type, body)
SELECT e.tenant, e.endpoint_id, $2, $3, $4::text::jsonb FROM endpoints AS e
WHERE e.tenant = $1 AND e.status = 'active' AND $3 = ANY (e.events)
ON CONFLICT (endpoint_id, event_id) DO NOTHING
"""
_FIELDS = (
    "delivery_id", "endpoint_id", "event_id", "event_type", "status", "attempts",
    "next_attempt_at", "last_attempt_at", "last_status", "last_error", "created_at",
    "delivered_at", "body",
)  # fmt: skip
LIST_SELECT = f"{', '.join(_FIELDS)} FROM deliveries"
"""Columns and table of the log (the route pages it by created_at, delivery_id)."""
_ONE = (
    f"SELECT {', '.join(f'd.{f}' for f in _FIELDS)}, d.leased_until,"  # noqa: S608
    " e.status AS endpoint_status"
    " FROM deliveries AS d JOIN endpoints AS e USING (endpoint_id)"
    " WHERE d.tenant = $1 AND d.delivery_id = $2"
)
_REDELIVER = (
    "UPDATE deliveries AS d SET status = 'pending', next_attempt_at = now(), round_attempts = 0"  # noqa: S608
    " FROM endpoints AS e WHERE d.tenant = $1 AND d.delivery_id = $2"
    " AND (d.leased_until IS NULL OR d.leased_until <= now())"
    " AND e.endpoint_id = d.endpoint_id AND e.status = 'active'"
    f" RETURNING {', '.join(f'd.{f}' for f in _FIELDS)}"
)
_DUE_ENDPOINTS = """
SELECT e.endpoint_id FROM endpoints AS e
CROSS JOIN LATERAL (
    SELECT d.next_attempt_at FROM deliveries AS d
    WHERE d.endpoint_id = e.endpoint_id AND d.status = 'pending'
      AND (d.leased_until IS NULL OR d.leased_until <= now())
    ORDER BY d.next_attempt_at LIMIT 1
) AS first
WHERE e.status = 'active' AND first.next_attempt_at <= now()
  AND NOT (e.endpoint_id = ANY ($1::text[]))
ORDER BY first.next_attempt_at LIMIT $2
"""
_CLAIM = """
UPDATE deliveries AS d SET leased_until = now() + make_interval(secs => $3)
FROM endpoints AS e
WHERE d.delivery_id IN (
    SELECT delivery_id FROM deliveries
    WHERE endpoint_id = $1 AND status = 'pending' AND next_attempt_at <= now()
      AND (leased_until IS NULL OR leased_until <= now())
    ORDER BY next_attempt_at, delivery_id LIMIT $2
    FOR UPDATE SKIP LOCKED
) AND e.endpoint_id = d.endpoint_id AND e.status = 'active'
RETURNING d.delivery_id, d.tenant, d.endpoint_id, d.event_id, d.event_type, d.body::text AS body,
    d.attempts, d.round_attempts, e.url, e.kind, e.secret_enc,
    CASE WHEN e.previous_valid_until > now() THEN e.previous_secret_enc END
        AS previous_secret_enc
"""
# An attempt in flight is due again when its lease ends (its executor may have died).
_NEXT_DUE = """
SELECT EXTRACT(EPOCH FROM min(GREATEST(next_attempt_at, leased_until)) - now())::float8
FROM deliveries WHERE status = 'pending' AND NOT (endpoint_id = ANY ($1::text[]))
"""
_RECORD = """
UPDATE deliveries SET attempts = attempts + 1, round_attempts = round_attempts + 1,
    last_attempt_at = $3, last_status = $4, last_error = $5, status = $6::text,
    leased_until = NULL,
    next_attempt_at = CASE WHEN $6::text = 'pending' THEN now() + make_interval(secs => $7) END,
    delivered_at = CASE WHEN $6::text = 'succeeded' THEN now() ELSE delivered_at END
WHERE delivery_id = $1 AND attempts = $2 AND status = 'pending'
"""


class UnknownDelivery(PaywatchError):
    """No delivery with that id in that tenant."""


class NotRedeliverable(PaywatchError):
    """An attempt of the delivery is in flight, or its endpoint is disabled."""


@dataclass(frozen=True)
class Delivery:
    """One row of the delivery log."""

    delivery_id: str
    endpoint_id: str
    event_id: str
    event_type: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    body: dict[str, Any]


@dataclass(frozen=True)
class Claimed:
    """A delivery claimed for one attempt, with what sending it needs from its endpoint."""

    delivery_id: str
    tenant: str
    endpoint_id: str
    event_id: str
    event_type: str
    body: bytes
    """The envelope as JSON, exactly the bytes sent and signed."""
    attempts: int
    round_attempts: int
    url: str
    kind: str
    secret_enc: bytes
    previous_secret_enc: bytes | None
    """The previous secret while its rotation grace period runs, else None."""


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to: the HTTP status (None: no answer) and why it failed."""

    succeeded: bool
    http_status: int | None = None
    error: str | None = None


def record(row: Any) -> Delivery:
    """A Delivery from a row of LIST_SELECT's columns."""
    body = row["body"]
    fields = {name: row[name] for name in _FIELDS}
    return Delivery(**{**fields, "body": json.loads(body) if isinstance(body, str) else body})


def body_bytes(envelope: dict[str, Any]) -> bytes:
    """The JSON bytes of an envelope as sent: compact, UTF-8."""
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def retry_delay(round_attempts: int, time_scale: float) -> float | None:
    """Seconds from a failed attempt (the ``round_attempts``-th of its round) to the next
    one, scaled; None when it was the last one."""
    if round_attempts > len(RETRY_DELAYS_S):
        return None
    return RETRY_DELAYS_S[round_attempts - 1] / time_scale


async def enqueue(conn: asyncpg.Connection, event: OutboundEvent) -> int:
    """One pending delivery of ``event`` per active endpoint of its tenant subscribed to its
    type, unless it has one already; how many are new (0 for an event enqueued before)."""
    if event.type not in EVENT_TYPES:
        raise ValueError(f"unknown outbound event type {event.type!r}")
    body = json.dumps(event.envelope(), separators=(",", ":"), ensure_ascii=False)
    status: str = await conn.execute(_ENQUEUE, event.tenant, event.id, event.type, body)
    return int(status.rsplit(" ", 1)[1])


async def redeliver(conn: asyncpg.Connection, tenant: str, delivery_id: str) -> Delivery:
    """A new round of attempts, the first one now (same event id, so the same
    ``webhook-id``): for a succeeded or failed delivery, or a pending one waiting for its
    next retry. NotRedeliverable while an attempt is in flight or when its endpoint is
    disabled; UnknownDelivery for an id the tenant does not have."""
    row = await conn.fetchrow(_REDELIVER, tenant, delivery_id)
    if row is not None:
        return record(row)
    found = await conn.fetchrow(_ONE, tenant, delivery_id)
    if found is None:
        raise UnknownDelivery(f"tenant {tenant} has no delivery {delivery_id!r}")
    if found["endpoint_status"] != "active":
        raise NotRedeliverable(
            f"delivery {delivery_id}: endpoint {found['endpoint_id']} is disabled"
        )
    raise NotRedeliverable(
        f"delivery {delivery_id}: an attempt is in flight (until "
        f"{found['leased_until'].isoformat()} at the latest); retry after it"
    )


async def due_endpoints(db: Any, busy: list[str], limit: int) -> list[str]:
    """Active endpoints with a due delivery, longest waiting first, but not those ``busy``
    (at their concurrency limit here); ``db`` is a pool or a connection."""
    rows = await db.fetch(_DUE_ENDPOINTS, busy, limit)
    return [r["endpoint_id"] for r in rows]


def _claimed(row: Any) -> Claimed:
    fields = {name: row[name] for name in Claimed.__dataclass_fields__}
    return Claimed(**{**fields, "body": row["body"].encode("utf-8")})


async def claim(db: Any, endpoint_id: str, limit: int, lease_s: float = LEASE_S) -> list[Claimed]:
    """Lease up to ``limit`` due deliveries of one endpoint for an attempt each: rows
    another executor holds are skipped, and no one else claims these for ``lease_s``."""
    rows = await db.fetch(_CLAIM, endpoint_id, limit, lease_s)
    return [_claimed(r) for r in rows]


async def next_due_in(db: Any, busy: list[str]) -> float | None:
    """Seconds until the next pending delivery of an endpoint not ``busy`` is due (<= 0:
    now); None when there is none."""
    seconds: float | None = await db.fetchval(_NEXT_DUE, busy)
    return seconds


def _clip(error: str | None) -> str | None:
    """An error as stored: printable (an answer's bytes may hold NUL, which Postgres text
    cannot, or terminal escapes) and at most MAX_ERROR_CHARS long."""
    if error is None:
        return None
    error = "".join(c if c.isprintable() else " " for c in error)
    return error if len(error) <= MAX_ERROR_CHARS else error[: MAX_ERROR_CHARS - 1] + "…"


async def record_attempt(
    db: Any, claimed: Claimed, outcome: Outcome, *, started_at: datetime, time_scale: float
) -> DeliveryStatus | None:
    """Record one attempt: succeeded, pending again (retry scheduled) or failed (the last
    retry failed); that status, or None when the claim was lost meanwhile (the lease ended
    and another executor recorded this attempt), and nothing was written."""
    status: DeliveryStatus = "succeeded"
    delay = 0.0
    if not outcome.succeeded:
        wait = retry_delay(claimed.round_attempts + 1, time_scale)
        status, delay = ("failed", 0.0) if wait is None else ("pending", wait)
    done: str = await db.execute(
        _RECORD, claimed.delivery_id, claimed.attempts, started_at, outcome.http_status,
        _clip(outcome.error), status, delay,
    )  # fmt: skip
    return status if done.endswith(" 1") else None
