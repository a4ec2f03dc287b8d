"""The email outbox and log (table ``emails``, migration 016): enqueue, claim, record.

``enqueue`` runs inside the executor's journal transaction with the notification commands
it journals: two set-based statements per batch whatever its size. The first inserts each
command of a tenant with email enabled as ``pending``, or as ``suppressed`` when its
customer has no address (``no_address``), unsubscribed or bounced; the partial unique index
``emails_daily_limit`` lets one pending or sent email per (tenant, customer, invoice, UTC
day) in, and ``ON CONFLICT DO NOTHING`` drops the rest. The second records what was dropped
for that index as ``suppressed`` / ``daily_limit`` and answers every command's status. A
command enqueued twice stays one row (UNIQUE (tenant, command_id)). A tenant without email
enabled gets no row at all.

The dispatcher claims due rows with a lease (``FOR UPDATE SKIP LOCKED``, LEASE_S), exactly
as outbound deliveries are claimed, so two executors never send one email at the same time;
an email whose executor died is sent again when its lease ends (at least once). Each
outcome is recorded over the row as it was claimed (same ``attempts``), never twice.
Schedule of transient failures (RETRY_DELAYS_S, divided by PAYWATCH_TIME_SCALE): after 1
min, 5 min, 30 min and 2 h; the fifth failure is final (``failed``). Without an SMTP
server configured an email waits (``pending``, NO_SERVER_S between looks, attempts not
counted) with last_error "no SMTP server configured": mail is not lost by a missing setting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import asyncpg

from paywatch.schemas.models import CommandType, RecoveryCommand

Status = Literal["pending", "sent", "failed", "suppressed", "bounced"]
STATUSES: tuple[Status, ...] = ("pending", "sent", "failed", "suppressed", "bounced")
Reason = Literal["daily_limit", "unsubscribed", "bounced", "no_address", "disabled"]
EMAIL_ID_PATTERN = r"^em_[a-z2-7]{14}$"
RETRY_DELAYS_S = (60.0, 300.0, 1800.0, 7200.0)
"""After the 1st, 2nd, 3rd and 4th failed attempt; the 5th failure is final."""
NO_SERVER_S = 300.0
"""Between two looks at an email no SMTP server is configured for (scaled)."""
LEASE_S = 120.0
"""How long a claimed email is held for its send (real seconds), longer than a send takes."""
MAX_ERROR_CHARS = 500
NO_SERVER = "no SMTP server configured (PAYWATCH_SMTP_URL or the tenant's email/smtp_url)"
DEFAULT_TEMPLATES = {
    CommandType.NOTIFY_CUSTOMER: "payment_failed",
    CommandType.REQUEST_PAYMENT_METHOD_UPDATE: "update_payment_method",
}
"""The template of a command that names none."""

_INPUT = """
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
        $6::text[], $7::text[], $8::int8[], $9::text[], $10::timestamptz[])
        WITH ORDINALITY AS i(command_id, command_type, tenant, invoice_ref, customer_ref,
            template, provider, amount_minor, currency, due_at, ord)
), judged AS (
    SELECT i.*, c.email AS to_address,
        CASE WHEN c.email IS NULL THEN 'no_address'
             WHEN c.unsubscribed_at IS NOT NULL THEN 'unsubscribed'
             WHEN c.bounced_at IS NOT NULL THEN 'bounced' END AS reason
    FROM input AS i JOIN email_settings AS s ON s.tenant = i.tenant AND s.enabled
    LEFT JOIN customer_contacts AS c
        ON c.tenant = i.tenant AND c.customer_ref = i.customer_ref
)"""
_COLUMNS = (
    "tenant, command_id, command_type, invoice_ref, customer_ref, template, provider,"
    " amount_minor, currency, due_at, to_address, status, reason, next_attempt_at"
)
_VALUES = (
    "tenant, command_id, command_type, invoice_ref, customer_ref, template, provider,"
    " amount_minor, currency, due_at, to_address"
)
_ENQUEUE = f"""{_INPUT}
INSERT INTO emails ({_COLUMNS})
SELECT {_VALUES}, CASE WHEN reason IS NULL THEN 'pending' ELSE 'suppressed' END, reason,
    CASE WHEN reason IS NULL THEN now() END
FROM judged ORDER BY ord
ON CONFLICT DO NOTHING
"""  # noqa: S608 (constants)
_OVER_LIMIT = f"""{_INPUT}, over AS (
    INSERT INTO emails ({_COLUMNS})
    SELECT {_VALUES}, 'suppressed', 'daily_limit', NULL FROM judged AS j
    WHERE NOT EXISTS (
        SELECT FROM emails AS e WHERE e.tenant = j.tenant AND e.command_id = j.command_id)
    ON CONFLICT (tenant, command_id) DO NOTHING
    RETURNING command_id, status, reason
)
SELECT command_id, status, reason FROM over
UNION ALL
SELECT e.command_id, e.status, e.reason FROM emails AS e
JOIN judged AS j ON e.tenant = j.tenant AND e.command_id = j.command_id
"""  # noqa: S608 (constants)

_CLAIM = """
WITH due AS (
    SELECT email_id FROM emails
    WHERE status = 'pending' AND next_attempt_at <= now()
      AND (leased_until IS NULL OR leased_until <= now())
    ORDER BY next_attempt_at, email_id LIMIT $1
    FOR UPDATE SKIP LOCKED
), leased AS (
    UPDATE emails AS m SET leased_until = now() + make_interval(secs => $2)
    FROM due WHERE m.email_id = due.email_id
    RETURNING m.email_id, m.tenant, m.command_type, m.invoice_ref, m.customer_ref,
        m.template, m.provider, m.amount_minor, m.currency, m.due_at, m.attempts
)
SELECT l.*, s.enabled, s.from_address, s.reply_to, s.display_name, s.update_url,
    s.link_secret_enc, c.email AS to_address, c.name AS customer_name,
    c.unsubscribed_at IS NOT NULL AS unsubscribed, c.bounced_at IS NOT NULL AS bounced
FROM leased AS l
LEFT JOIN email_settings AS s ON s.tenant = l.tenant
LEFT JOIN customer_contacts AS c ON c.tenant = l.tenant AND c.customer_ref = l.customer_ref
ORDER BY l.tenant, l.email_id
"""
_NEXT_DUE = """
SELECT EXTRACT(EPOCH FROM min(GREATEST(next_attempt_at, leased_until)) - now())::float8
FROM emails WHERE status = 'pending'
"""
_GUARD = "WHERE email_id = $1 AND attempts = $2 AND status = 'pending'"
_SENT = (
    "UPDATE emails SET status = 'sent', attempts = attempts + 1, sent_at = now(),"  # noqa: S608
    " next_attempt_at = NULL, leased_until = NULL, last_error = NULL, to_address = $3,"
    f" message_id = $4 {_GUARD}"
)
_AGAIN = (
    "UPDATE emails SET attempts = attempts + $5::int, leased_until = NULL, last_error = $3,"  # noqa: S608
    f" next_attempt_at = now() + make_interval(secs => $4) {_GUARD}"
)
_FAILED = (
    "UPDATE emails SET status = 'failed', attempts = attempts + 1, next_attempt_at = NULL,"  # noqa: S608
    f" leased_until = NULL, last_error = $3, to_address = coalesce($4, to_address) {_GUARD}"
)
_SUPPRESSED = (
    "UPDATE emails SET status = 'suppressed', reason = $3, next_attempt_at = NULL,"  # noqa: S608
    f" leased_until = NULL, to_address = coalesce($4, to_address) {_GUARD}"
)
# The contact bounces only while it still has the address that bounced.
_BOUNCED = f"""
WITH mail AS (
    UPDATE emails SET status = 'bounced', attempts = attempts + 1, next_attempt_at = NULL,
        leased_until = NULL, last_error = $3, to_address = $4 {_GUARD}
    RETURNING tenant, customer_ref
)
UPDATE customer_contacts AS c SET bounced_at = now(), bounce_reason = $3
FROM mail WHERE c.tenant = mail.tenant AND c.customer_ref = mail.customer_ref AND c.email = $4
"""  # noqa: S608 (constants)


@dataclass(frozen=True)
class Claimed:
    """An email claimed for one send, with what making it needs."""

    email_id: str
    tenant: str
    command_type: str
    invoice_ref: str
    customer_ref: str | None
    template: str
    provider: str | None
    amount_minor: int | None
    currency: str | None
    due_at: datetime | None
    attempts: int
    enabled: bool | None
    from_address: str | None
    reply_to: str | None
    display_name: str | None
    update_url: str | None
    link_secret_enc: bytes | None
    to_address: str | None
    customer_name: str | None
    unsubscribed: bool | None
    bounced: bool | None

    def suppression(self) -> Reason | None:
        """Why it must not be sent now (the tenant or the contact changed since enqueue)."""
        if not self.enabled:
            return "disabled"
        if self.to_address is None:
            return "no_address"
        if self.unsubscribed:
            return "unsubscribed"
        return "bounced" if self.bounced else None


def wanted(command: RecoveryCommand) -> bool:
    """True for a command sent as an email: a customer notification on the email channel
    (or none named)."""
    return command.type in DEFAULT_TEMPLATES and command.channel in (None, "email")


def _columns(commands: Sequence[RecoveryCommand]) -> list[list[Any]]:
    rows = [
        (
            c.command_id,
            c.type.value,
            c.tenant,
            c.invoice_ref,
            c.customer_ref,
            c.template or DEFAULT_TEMPLATES[c.type],
            c.provider,
            c.amount_minor,
            c.currency,
            c.due_at,
        )
        for c in commands
        if wanted(c)
    ]
    return [list(column) for column in zip(*rows, strict=True)] if rows else []


async def enqueue(conn: asyncpg.Connection, commands: Sequence[RecoveryCommand]) -> dict[str, str]:
    """Put the email commands of a batch in the outbox (others are ignored), in the
    caller's transaction; command_id -> ``pending`` or ``suppressed:<reason>`` (or the
    status it already had), nothing for tenants without email enabled."""
    columns = _columns(commands)
    if not columns:
        return {}
    await conn.execute(_ENQUEUE, *columns)
    rows = await conn.fetch(_OVER_LIMIT, *columns)
    return {r["command_id"]: r["status"] + (f":{r['reason']}" if r["reason"] else "") for r in rows}


async def claim(db: Any, limit: int, lease_s: float = LEASE_S) -> list[Claimed]:
    """Lease up to ``limit`` due emails for a send each; rows another executor holds are
    skipped, and no one else claims these for ``lease_s``. ``db``: a pool or connection."""
    rows = await db.fetch(_CLAIM, limit, lease_s)
    return [Claimed(**{name: r[name] for name in Claimed.__dataclass_fields__}) for r in rows]


async def next_due_in(db: Any) -> float | None:
    """Seconds until the next pending email is due (<= 0: now); None when there is none."""
    seconds: float | None = await db.fetchval(_NEXT_DUE)
    return seconds


def clip(error: str) -> str:
    """An error as stored: printable and at most MAX_ERROR_CHARS long."""
    error = "".join(c if c.isprintable() else " " for c in error)
    return error if len(error) <= MAX_ERROR_CHARS else error[: MAX_ERROR_CHARS - 1] + "…"


def retry_delay(attempts_made: int, time_scale: float) -> float | None:
    """Seconds from the ``attempts_made``-th failed attempt to the next, scaled; None when
    it was the last."""
    if attempts_made > len(RETRY_DELAYS_S):
        return None
    return RETRY_DELAYS_S[attempts_made - 1] / time_scale


def _done(tag: str) -> bool:
    return tag.endswith(" 1")


async def record_sent(db: Any, email: Claimed, to: str, message_id: str) -> bool:
    """The email was accepted by the server; False when the claim was lost meanwhile."""
    return _done(await db.execute(_SENT, email.email_id, email.attempts, to, message_id))


async def record_failure(
    db: Any, email: Claimed, error: str, *, time_scale: float, to: str | None = None
) -> Status | None:
    """A transient failure: ``pending`` again (retry scheduled) or ``failed`` (it was the
    last); None when the claim was lost."""
    delay = retry_delay(email.attempts + 1, time_scale)
    if delay is None:
        return await record_failed(db, email, error, to=to)
    tag = await db.execute(_AGAIN, email.email_id, email.attempts, clip(error), delay, 1)
    return "pending" if _done(tag) else None


async def record_failed(
    db: Any, email: Claimed, error: str, *, to: str | None = None
) -> Status | None:
    """A permanent failure (a template error, a refused sender)."""
    tag = await db.execute(_FAILED, email.email_id, email.attempts, clip(error), to)
    return "failed" if _done(tag) else None


async def record_bounced(db: Any, email: Claimed, to: str, error: str) -> Status | None:
    """The server refused the recipient for good: the email and its contact bounce."""
    await db.execute(_BOUNCED, email.email_id, email.attempts, clip(error), to)
    return "bounced"


async def record_suppressed(db: Any, email: Claimed, reason: Reason) -> Status | None:
    """Not sent, for ``reason`` (checked again at send time)."""
    tag = await db.execute(_SUPPRESSED, email.email_id, email.attempts, reason, email.to_address)
    return "suppressed" if _done(tag) else None


async def defer(db: Any, email: Claimed, error: str, *, time_scale: float) -> None:
    """Look again later without counting an attempt (no SMTP server configured)."""
    await db.execute(
        _AGAIN, email.email_id, email.attempts, clip(error), NO_SERVER_S / time_scale, 0
    )
