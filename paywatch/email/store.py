"""What tenants configure: email settings, customer contacts and their own templates.

Addresses come from the tenant (``paywatch contact set``, ``PUT /v1/customers/{ref}/contact``):
canonical events carry none. Setting a contact to a new address clears its bounce (the
old address bounced, not the new one); an unsubscribe stays, since it is the customer's
choice, whatever the address. ``enable`` makes the tenant's link secret the first time (or
with ``new_link_secret``) and returns it that once; it is sealed at rest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from paywatch.email.links import new_link_secret
from paywatch.email.templates import Template, check
from paywatch.errors import ConfigError, UnknownTenant
from paywatch.tenants.crypto import SecretBox
from paywatch.tenants.store import tenant_exists

PROVIDER = "email"
LINK_SECRET = "link_secret"  # noqa: S105 (the secret's name, not a secret)
MAX_ADDRESS = 254
MAX_NAME = 200
MAX_URL = 2048
_LOCAL = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}"
_DOMAIN = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
ADDRESS_PATTERN = rf"^{_LOCAL}@{_DOMAIN}$"
"""An address paywatch sends to: ASCII local part and a dotted host name (no quoted or
internationalized forms: what every SMTP server takes)."""
_ADDRESS = re.compile(ADDRESS_PATTERN)
URL_PATTERN = r"^https?://[!-~]+$"
_URL = re.compile(URL_PATTERN)

_SETTINGS = (
    "tenant, enabled, from_address, reply_to, display_name, update_url, created_at,"
    " created_by, updated_at, updated_by"
)
_ENABLE = f"""
INSERT INTO email_settings (tenant, enabled, from_address, reply_to, display_name, update_url,
    link_secret_enc, created_by, updated_by)
VALUES ($1, true, $2, $3, $4, $5, $6, $7, $7)
ON CONFLICT (tenant) DO UPDATE SET enabled = true, from_address = $2,
    reply_to = coalesce($3, email_settings.reply_to),
    display_name = coalesce($4, email_settings.display_name),
    update_url = coalesce($5, email_settings.update_url),
    link_secret_enc = CASE WHEN $8 THEN $6 ELSE email_settings.link_secret_enc END,
    updated_at = now(), updated_by = $7
RETURNING {_SETTINGS}, (xmax = 0) AS created
"""  # noqa: S608 (constants)
_DISABLE = (
    f"UPDATE email_settings SET enabled = false, updated_at = now(), updated_by = $2"  # noqa: S608
    f" WHERE tenant = $1 RETURNING {_SETTINGS}"
)
_ABANDON = (
    "UPDATE emails SET status = 'suppressed', reason = 'disabled', next_attempt_at = NULL,"
    " leased_until = NULL WHERE tenant = $1 AND status = 'pending'"
    " AND (leased_until IS NULL OR leased_until <= now())"
)
_CONTACT = "customer_ref, email, name, unsubscribed_at, bounced_at, bounce_reason, updated_at"
_SET_CONTACT = f"""
INSERT INTO customer_contacts (tenant, customer_ref, email, name, updated_by)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (tenant, customer_ref) DO UPDATE SET email = $3, name = $4, updated_at = now(),
    updated_by = $5,
    bounced_at = CASE WHEN customer_contacts.email = $3 THEN customer_contacts.bounced_at END,
    bounce_reason = CASE WHEN customer_contacts.email = $3
        THEN customer_contacts.bounce_reason END
RETURNING {_CONTACT}
"""  # noqa: S608 (constants)
_UNSUBSCRIBE = (
    "UPDATE customer_contacts SET unsubscribed_at = coalesce(unsubscribed_at, now())"
    " WHERE tenant = $1 AND customer_ref = $2"
)


@dataclass(frozen=True)
class EmailSettings:
    """A tenant's email settings (never its link secret)."""

    tenant: str
    enabled: bool
    from_address: str
    reply_to: str | None
    display_name: str | None
    update_url: str | None
    created_at: datetime
    created_by: str | None
    updated_at: datetime
    updated_by: str | None


@dataclass(frozen=True)
class Contact:
    """A customer's address, and whether mail to it stopped."""

    customer_ref: str
    email: str
    name: str | None
    unsubscribed_at: datetime | None
    bounced_at: datetime | None
    bounce_reason: str | None
    updated_at: datetime


def _settings(row: Any) -> EmailSettings:
    return EmailSettings(**{name: row[name] for name in EmailSettings.__dataclass_fields__})


def _contact(row: Any) -> Contact:
    return Contact(**{name: row[name] for name in Contact.__dataclass_fields__})


def check_address(address: str, what: str = "address") -> str:
    """The address when paywatch can send to it; ConfigError otherwise."""
    if len(address) > MAX_ADDRESS or not _ADDRESS.fullmatch(address):
        raise ConfigError(f"{what}: not an email address paywatch sends to (local@host.domain)")
    return address


def check_text(value: str | None, what: str, limit: int = MAX_NAME) -> str | None:
    """A name or URL as stored: at most ``limit`` printable characters (no NUL, no line
    breaks: they end up in mail headers)."""
    if value is None:
        return None
    if not 1 <= len(value) <= limit or not value.isprintable():
        raise ConfigError(f"{what}: 1 to {limit} printable characters")
    return value


def check_url(url: str | None) -> str | None:
    """A tenant's update page: http(s), printable ASCII, at most MAX_URL characters."""
    if url is not None and (len(url) > MAX_URL or not _URL.fullmatch(url)):
        raise ConfigError(f"update URL: http(s)://..., printable ASCII, at most {MAX_URL}")
    return url


async def require_tenant(conn: asyncpg.Connection, tenant: str) -> None:
    """UnknownTenant unless the tenant exists."""
    if not await tenant_exists(conn, tenant):
        raise UnknownTenant(
            f"unknown tenant {tenant!r}: create it with `paywatch tenant create {tenant}`"
        )


async def enable(
    conn: asyncpg.Connection,
    box: SecretBox,
    tenant: str,
    *,
    from_address: str,
    reply_to: str | None = None,
    display_name: str | None = None,
    update_url: str | None = None,
    by: str,
    new_secret: bool = False,
) -> tuple[EmailSettings, str | None]:
    """Turn email on, or change its settings (what is not given keeps its value); the
    link secret when one was made now (the first time, or with ``new_secret``)."""
    check_address(from_address, "--from")
    if reply_to is not None:
        check_address(reply_to, "--reply-to")
    check_text(display_name, "--name", 100)
    check_url(update_url)
    await require_tenant(conn, tenant)
    secret = new_link_secret()
    sealed = box.seal(secret, tenant=tenant, provider=PROVIDER, name=LINK_SECRET)
    row = await conn.fetchrow(
        _ENABLE, tenant, from_address, reply_to, display_name, update_url, sealed, by, new_secret
    )
    return _settings(row), secret if (row["created"] or new_secret) else None


async def disable(conn: asyncpg.Connection, tenant: str, *, by: str) -> EmailSettings | None:
    """Send the tenant's customers nothing more: pending emails end ``suppressed`` /
    ``disabled`` (one being sent right now ends as it ends). None: never enabled."""
    await require_tenant(conn, tenant)
    async with conn.transaction():
        row = await conn.fetchrow(_DISABLE, tenant, by)
        await conn.execute(_ABANDON, tenant)
    return _settings(row) if row is not None else None


async def get_settings(db: Any, tenant: str) -> EmailSettings | None:
    """The tenant's email settings; None when email was never enabled."""
    row = await db.fetchrow(f"SELECT {_SETTINGS} FROM email_settings WHERE tenant = $1", tenant)  # noqa: S608
    return _settings(row) if row is not None else None


def open_link_secret(box: SecretBox, tenant: str, sealed: bytes) -> str:
    """The tenant's link secret, as ``enable`` sealed it."""
    return box.open(sealed, tenant=tenant, provider=PROVIDER, name=LINK_SECRET)


async def set_contact(
    db: Any, tenant: str, customer_ref: str, email: str, *, name: str | None, by: str
) -> Contact:
    """Store the customer's address (and name); a new address clears a bounce."""
    check_text(customer_ref, "customer ref", 255)
    check_address(email, "email")
    check_text(name, "name")
    return _contact(await db.fetchrow(_SET_CONTACT, tenant, customer_ref, email, name, by))


async def get_contact(db: Any, tenant: str, customer_ref: str) -> Contact | None:
    """The customer's contact; None when the tenant gave none."""
    row = await db.fetchrow(
        f"SELECT {_CONTACT} FROM customer_contacts WHERE tenant = $1 AND customer_ref = $2",  # noqa: S608
        tenant, customer_ref,
    )  # fmt: skip
    return _contact(row) if row is not None else None


async def list_contacts(db: Any, tenant: str) -> list[Contact]:
    """Every contact of the tenant, by customer ref."""
    rows = await db.fetch(
        f"SELECT {_CONTACT} FROM customer_contacts WHERE tenant = $1 ORDER BY customer_ref",  # noqa: S608
        tenant,
    )
    return [_contact(r) for r in rows]


async def unsubscribe(db: Any, tenant: str, customer_ref: str) -> bool:
    """Record the customer's unsubscribe (the first one's time is kept); False when the
    tenant has no contact for it (then nothing can be sent to it anyway)."""
    tag: str = await db.execute(_UNSUBSCRIBE, tenant, customer_ref)
    return tag.endswith(" 1")


async def set_template(
    conn: asyncpg.Connection, tenant: str, name: str, template: Template, *, by: str
) -> None:
    """Store the tenant's own template ``name`` (checked first: TemplateError)."""
    check(name, template)
    await require_tenant(conn, tenant)
    await conn.execute(
        "INSERT INTO email_templates (tenant, name, subject, text_body, html_body, updated_by)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant, name) DO UPDATE SET"
        " subject = $3, text_body = $4, html_body = $5, updated_at = now(), updated_by = $6",
        tenant, name, template.subject, template.text, template.html, by,
    )  # fmt: skip


async def tenant_templates(db: Any, tenant: str) -> dict[str, Template]:
    """The tenant's own templates by name."""
    rows = await db.fetch(
        "SELECT name, subject, text_body, html_body FROM email_templates WHERE tenant = $1",
        tenant,
    )
    return {r["name"]: Template(r["subject"], r["text_body"], r["html_body"]) for r in rows}


async def list_emails(
    db: Any, tenant: str, status: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """The tenant's email log, newest first."""
    rows = await db.fetch(
        "SELECT email_id, command_id, command_type, invoice_ref, customer_ref, template,"
        " to_address, status, reason, attempts, next_attempt_at, last_error, created_at,"
        " sent_at, message_id FROM emails WHERE tenant = $1 AND ($2::text IS NULL OR"
        " status = $2) ORDER BY created_at DESC, email_id DESC LIMIT $3",
        tenant, status, limit,
    )  # fmt: skip
    return [dict(r) for r in rows]


async def status_counts(db: Any, tenant: str) -> dict[str, int]:
    """How many of the tenant's emails are in each status."""
    rows = await db.fetch(
        "SELECT status, count(*) AS n FROM emails WHERE tenant = $1 GROUP BY status", tenant
    )
    return {r["status"]: r["n"] for r in rows}
