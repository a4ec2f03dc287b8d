"""Tenants' endpoints: where their events go, which types, and the secret that signs them.

An endpoint is named by its public id (``ep_`` + 14 base32 characters, drawn by Postgres:
migration 015). A webhook endpoint has a Standard Webhooks signing secret (``whsec_`` +
base64 of 32 random bytes), shown once when it is made or rotated and sealed at rest
(tenants/crypto.py, bound to tenant / ``endpoint`` / endpoint id). A rotation keeps the
old secret for a grace period, sealed as ``<endpoint id>/previous``: both sign meanwhile,
so receivers can switch without a rejected delivery. A Slack endpoint's secret is its
incoming-webhook URL itself: sealed the same way, listed as ``scheme://host/…`` only.

Targets (``check_target``): http or https, https only in prod; in prod the host must not
resolve to a loopback, private, link-local, multicast, reserved or unspecified address
(SSRF: a tenant must not make paywatch call into its own network) unless
PAYWATCH_OUTBOUND_ALLOW_PRIVATE=true. Checked when an endpoint is added and again before
every attempt (sender.py), since DNS can change in between.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import re
import secrets
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

import asyncpg

from paywatch.errors import ConfigError, PaywatchError, UnknownTenant
from paywatch.outbound.events import EVENT_TYPES, EventType
from paywatch.schemas.models import MAX_TEXT
from paywatch.settings import Settings
from paywatch.tenants.crypto import SecretBox, token_key_id
from paywatch.tenants.store import tenant_exists

Kind = Literal["webhook", "slack"]
KINDS: tuple[Kind, ...] = ("webhook", "slack")
Status = Literal["active", "disabled"]
ENDPOINT_ID_PATTERN = r"^ep_[a-z2-7]{14}$"
"""An endpoint id (the column's CHECK in migration 015)."""
MAX_URL = 2048
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PORT = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
URL_PATTERN = rf'^https?://{_LABEL}(?:\.{_LABEL})*(?::{_PORT})?(?:[/?][!"$-~]*)?$'
"""A target URL: http(s), a host name or IPv4 address, an optional port, then printable
ASCII without spaces or a fragment. The API publishes it as is, so what its schema allows
is exactly what is accepted (in dev; prod also wants https and a public address)."""
_URL = re.compile(URL_PATTERN)
PROVIDER = "endpoint"
"""The provider name endpoint secrets are sealed under (tenants/crypto.py binding)."""
_SECRET_BYTES = 32

_COLUMNS = (
    "endpoint_id, tenant, url, kind, events, status, created_at, created_by,"
    " secret_rotated_at, rotated_by, disabled_at, disabled_by,"
    " CASE WHEN previous_valid_until > now() THEN previous_valid_until END"
    " AS previous_valid_until"
)
LIST_SELECT = f"{_COLUMNS} FROM endpoints"
"""Columns and table of an endpoint listing (the admin route pages it)."""
_ONE = f"SELECT {_COLUMNS}, secret_enc FROM endpoints WHERE tenant = $1 AND endpoint_id = $2"  # noqa: S608
_INSERT = (
    "INSERT INTO endpoints (endpoint_id, tenant, url, kind, events, secret_enc, created_by)"  # noqa: S608
    f" VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {_COLUMNS}"
)
_NEW_ID = "SELECT paywatch_new_public_id('ep_')"
_DISABLE = (
    "UPDATE endpoints SET status = 'disabled', disabled_at = now(), disabled_by = $3"  # noqa: S608
    f" WHERE tenant = $1 AND endpoint_id = $2 AND status = 'active' RETURNING {_COLUMNS}"
)
# A disabled endpoint is sent nothing more: its pending deliveries end as failed.
_ABANDON = (
    "UPDATE deliveries SET status = 'failed', next_attempt_at = NULL, leased_until = NULL,"
    " last_error = 'endpoint disabled before delivery'"
    " WHERE tenant = $1 AND endpoint_id = $2 AND status = 'pending'"
)
_ROTATE = (
    "UPDATE endpoints SET secret_enc = $3, previous_secret_enc = $4,"  # noqa: S608
    " previous_valid_until = now() + $5::interval, secret_rotated_at = now(), rotated_by = $6"
    f" WHERE tenant = $1 AND endpoint_id = $2 RETURNING {_COLUMNS}"
)

Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""Host and port -> the IP addresses a connection would go to."""


class UnknownEndpoint(PaywatchError):
    """No endpoint with that id in that tenant (another tenant's endpoint is unknown too)."""


class EndpointNotRotatable(PaywatchError):
    """A Slack endpoint (its secret is its URL) or a disabled endpoint."""


class TargetRefused(ConfigError):
    """A URL that may not be an endpoint's target (scheme, form, or address)."""


@dataclass(frozen=True)
class Endpoint:
    """Everything stored about an endpoint except its secrets."""

    endpoint_id: str
    tenant: str
    url: str
    kind: Kind
    events: tuple[EventType, ...]
    status: Status
    created_at: datetime
    created_by: str | None
    secret_rotated_at: datetime | None
    rotated_by: str | None
    disabled_at: datetime | None
    disabled_by: str | None
    previous_valid_until: datetime | None
    """While a rotation's grace period runs: until when the previous secret still signs."""


@dataclass(frozen=True)
class WithSecret:
    """An endpoint just made or rotated, and its new signing secret (None for Slack)."""

    endpoint: Endpoint
    secret: str | None


@dataclass(frozen=True)
class TargetPolicy:
    """What a target must be: https only, and no private address, both in prod."""

    require_https: bool
    refuse_private: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> TargetPolicy:
        """Prod: https and public addresses (private ones with OUTBOUND_ALLOW_PRIVATE)."""
        prod = settings.env == "prod"
        return cls(require_https=prod, refuse_private=prod and not settings.outbound_allow_private)


def record(row: Any) -> Endpoint:
    """An Endpoint from a row of LIST_SELECT's columns."""
    fields = {name: row[name] for name in Endpoint.__dataclass_fields__}
    return Endpoint(**{**fields, "events": tuple(row["events"])})


def audit_details(e: Endpoint) -> dict[str, str]:
    """The ops.audit details of an action on ``e``: kind, events and URL, never a secret (a
    Slack endpoint's URL is its origin here).

    An audit detail holds MAX_TEXT characters, fewer than a target may have (MAX_URL, the
    published contract): a longer URL is recorded clipped, ending in "…", rather than the
    action failing. The record's subject, the endpoint id, names the endpoint whole.
    """
    url = e.url if len(e.url) <= MAX_TEXT else e.url[: MAX_TEXT - 1] + "…"
    return {"kind": e.kind, "events": ",".join(e.events), "url": url}


def new_secret() -> str:
    """A Standard Webhooks signing secret: ``whsec_`` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(_SECRET_BYTES)).decode("ascii")


def parse_events(given: Iterable[str]) -> tuple[EventType, ...]:
    """The event types subscribed to, in EVENT_TYPES order, duplicates dropped;
    ConfigError for an unknown one or none."""
    wanted = {name.strip() for name in given if name.strip()}
    unknown = sorted(wanted - set(EVENT_TYPES))
    if unknown:
        raise ConfigError(
            f"unknown event type(s) {', '.join(unknown)}: one of {', '.join(EVENT_TYPES)}"
        )
    if not wanted:
        raise ConfigError(f"subscribe to at least one event type: {', '.join(EVENT_TYPES)}")
    return tuple(t for t in EVENT_TYPES if t in wanted)


def check_url(url: str, policy: TargetPolicy) -> tuple[str, int]:
    """The host and port of a target URL; TargetRefused when it is not one (the URL is not
    repeated: a Slack URL is a secret)."""
    if len(url) > MAX_URL or not _URL.fullmatch(url):
        raise TargetRefused(
            f"not a target URL: http(s)://host[:port][/path], a host name or IPv4 address, "
            f"printable ASCII without spaces or #fragment, at most {MAX_URL} characters"
        )
    parts = urlsplit(url)
    if policy.require_https and parts.scheme != "https":
        raise TargetRefused("endpoints must use https in prod (PAYWATCH_ENV=prod)")
    host = parts.hostname or ""
    return host, parts.port or (443 if parts.scheme == "https" else 80)


_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_CATEGORIES = ("loopback", "link_local", "unspecified", "multicast", "reserved", "private")


def address_refusal(address: str) -> str | None:
    """Why a target address is refused in prod (None: it is public), for IPv6 forms that
    carry an IPv4 address (mapped, 6to4, Teredo, NAT64) judged by that address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        inner = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if inner is None and ip in _NAT64:
            inner = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if inner is not None:
            return address_refusal(str(inner))
    for category in _CATEGORIES:
        if getattr(ip, f"is_{category}"):
            return category.replace("_", "-")
    return None if ip.is_global else "not globally routable"


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses the system resolver gives ``host``, in its order, without repeats."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def check_target(
    url: str, policy: TargetPolicy, resolver: Resolver = system_resolver
) -> list[str]:
    """The addresses ``url``'s host resolves to, all of them allowed by ``policy``;
    TargetRefused naming the first refused one (or why the host does not resolve)."""
    host, port = check_url(url, policy)
    try:
        addresses = list(await resolver(host, port))
    except OSError as exc:
        raise TargetRefused(f"cannot resolve the host {host!r}: {exc}") from exc
    if not addresses:
        raise TargetRefused(f"the host {host!r} resolves to no address")
    for address in addresses if policy.refuse_private else ():
        why = address_refusal(address)
        if why is not None:
            raise TargetRefused(
                f"the host {host!r} resolves to {address}, a {why} address: refused in prod "
                "(PAYWATCH_OUTBOUND_ALLOW_PRIVATE=true allows it)"
            )
    return addresses


def shown_url(url: str, kind: Kind) -> str:
    """What is stored and listed as the URL: a Slack URL is a secret, so only its origin."""
    if kind != "slack":
        return url
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/…"


def _name(endpoint_id: str, previous: bool = False) -> str:
    return f"{endpoint_id}/previous" if previous else endpoint_id


def seal(
    box: SecretBox, tenant: str, endpoint_id: str, value: str, previous: bool = False
) -> bytes:
    """A secret sealed for its endpoint (the current one, or the previous one)."""
    return box.seal(value, tenant=tenant, provider=PROVIDER, name=_name(endpoint_id, previous))


def open_secret(
    box: SecretBox, tenant: str, endpoint_id: str, token: bytes, previous: bool = False
) -> str:
    """The secret ``seal`` sealed; ConfigError when it was sealed for another endpoint."""
    return box.open(token, tenant=tenant, provider=PROVIDER, name=_name(endpoint_id, previous))


async def _require_tenant(conn: asyncpg.Connection, tenant: str) -> None:
    if not await tenant_exists(conn, tenant):
        raise UnknownTenant(
            f"unknown tenant {tenant!r}: create it with `paywatch tenant create {tenant}`"
        )


async def add_endpoint(
    conn: asyncpg.Connection,
    box: SecretBox,
    tenant: str,
    url: str,
    events: Iterable[str],
    *,
    kind: Kind = "webhook",
    policy: TargetPolicy,
    created_by: str | None = None,
    resolver: Resolver = system_resolver,
) -> WithSecret:
    """Add an endpoint; its new signing secret is returned here only (None for Slack)."""
    if kind not in KINDS:
        raise ConfigError(f"unknown endpoint kind {kind!r}: one of {', '.join(KINDS)}")
    subscribed = parse_events(events)
    if policy.refuse_private:
        await check_target(url, policy, resolver)
    else:
        check_url(url, policy)
    await _require_tenant(conn, tenant)
    endpoint_id: str = await conn.fetchval(_NEW_ID)
    secret = new_secret() if kind == "webhook" else url
    row = await conn.fetchrow(
        _INSERT, endpoint_id, tenant, shown_url(url, kind), kind, list(subscribed),
        seal(box, tenant, endpoint_id, secret), created_by,
    )  # fmt: skip
    return WithSecret(record(row), secret if kind == "webhook" else None)


async def list_endpoints(conn: asyncpg.Connection, tenant: str) -> list[Endpoint]:
    """Every endpoint of the tenant, newest first, disabled ones included."""
    await _require_tenant(conn, tenant)
    rows = await conn.fetch(
        f"SELECT {LIST_SELECT} WHERE tenant = $1 ORDER BY created_at DESC, endpoint_id DESC",
        tenant,
    )
    return [record(r) for r in rows]


async def _known(
    conn: asyncpg.Connection, tenant: str, endpoint_id: str, *, lock: bool = False
) -> Any:
    row = await conn.fetchrow(_ONE + (" FOR UPDATE" if lock else ""), tenant, endpoint_id)
    if row is None:
        await _require_tenant(conn, tenant)
        raise UnknownEndpoint(f"tenant {tenant} has no endpoint {endpoint_id!r}")
    return row


async def disable_endpoint(
    conn: asyncpg.Connection, tenant: str, endpoint_id: str, *, by: str
) -> tuple[Endpoint, bool]:
    """Send the endpoint nothing more (its pending deliveries end as failed); the endpoint
    and whether this call disabled it (False: it already was). Idempotent."""
    async with conn.transaction():
        row = await conn.fetchrow(_DISABLE, tenant, endpoint_id, by)
        if row is None:
            return record(await _known(conn, tenant, endpoint_id)), False
        await conn.execute(_ABANDON, tenant, endpoint_id)
    return record(row), True


async def rotate_secret(
    conn: asyncpg.Connection,
    box: SecretBox,
    tenant: str,
    endpoint_id: str,
    *,
    by: str,
    grace: timedelta,
) -> WithSecret:
    """A new signing secret; the current one keeps signing (next to it) for ``grace``.
    A previous secret still in its grace period is dropped: at most two sign."""
    async with conn.transaction():
        row = await _known(conn, tenant, endpoint_id, lock=True)  # one rotation at a time
        if row["kind"] != "webhook":
            raise EndpointNotRotatable(
                f"endpoint {endpoint_id} is a Slack endpoint: its secret is its URL; "
                "disable it and add the new URL instead"
            )
        if row["status"] != "active":
            raise EndpointNotRotatable(f"endpoint {endpoint_id} is disabled")
        current = open_secret(box, tenant, endpoint_id, row["secret_enc"])
        secret = new_secret()
        rotated = await conn.fetchrow(
            _ROTATE, tenant, endpoint_id, seal(box, tenant, endpoint_id, secret),
            seal(box, tenant, endpoint_id, current, previous=True), grace, by,
        )  # fmt: skip
    return WithSecret(record(rotated), secret)


async def reseal_secrets(conn: asyncpg.Connection, box: SecretBox) -> int:
    """Re-seal every endpoint secret (current and previous) not under the current master key,
    in one transaction (endpoints are few): ``paywatch secrets rotate-key`` runs it after the
    provider secrets. How many were re-sealed; a value that opens under neither key raises
    ConfigError naming the endpoint, and nothing changes."""
    done = 0
    async with conn.transaction():
        rows = await conn.fetch(
            "SELECT endpoint_id, tenant, secret_enc, previous_secret_enc FROM endpoints "
            "ORDER BY endpoint_id FOR UPDATE"
        )
        for row in rows:
            update: dict[str, bytes] = {}
            for column, previous in (("secret_enc", False), ("previous_secret_enc", True)):
                token = row[column]
                if token is None or token_key_id(token) == box.key_id:
                    continue
                tenant, endpoint_id = row["tenant"], row["endpoint_id"]
                try:
                    value = open_secret(box, tenant, endpoint_id, token, previous)
                except ConfigError as exc:
                    raise ConfigError(f"endpoint {endpoint_id} of tenant {tenant}: {exc}") from exc
                update[column] = seal(box, tenant, endpoint_id, value, previous)
            if update:
                await conn.execute(
                    "UPDATE endpoints SET secret_enc = coalesce($2, secret_enc), "
                    "previous_secret_enc = coalesce($3, previous_secret_enc) "
                    "WHERE endpoint_id = $1",
                    row["endpoint_id"],
                    update.get("secret_enc"),
                    update.get("previous_secret_enc"),
                )
                done += len(update)
    return done
