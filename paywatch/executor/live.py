"""Live payment retries: which commands are charged for real, claimed before the charge.

A RETRY_PAYMENT is charged through the provider's API (paywatch/charging) when its tenant
has turned live charging on for its provider (``charge_accounts``, ``paywatch charging
enable``) and it is not schedule-only; every other retry stays with the sandbox simulator.

Exactly once, across executors and crashes:

1. **Claim, committed before the call.** ``claim`` inserts the command into
   ``charge_claims`` with this executor's id and a lease (``PAYWATCH_CHARGE_LEASE_S``), or
   takes over a claim whose lease has run out; a command already journaled is not claimed.
   A claim held by another executor (a rebalance moved the partition while it charged) is
   left alone: the command waits until the lease ends and then finds it journaled.
2. **Charge** with the command id as the idempotency key. A claim taken over (``tries`` >
   1) is a resumed try: its earlier executor may have charged and died before recording,
   so the client resolves it through the provider's idempotency (Stripe, Adyen,
   Checkout.com replay the first answer) or by looking the earlier charge up (Braintree,
   Authorize.Net) instead of charging twice.
3. **Record**: the outcome event and the journal row, in the executor's one transaction
   (effects.py) like a simulated retry.

A provider that does not answer usably (``Unavailable``) or whose circuit is open leaves
the command claimed-but-released (lease ended now, the error kept) and pending: it is
tried again later, nothing is committed past it. A request the provider refuses for good
(``Rejected``) dead-letters the command with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import asyncpg
import httpx

from paywatch.charging.base import ChargeClient, ChargeRequest, Rejected, Unavailable
from paywatch.charging.registry import client_for
from paywatch.schemas.models import RecoveryCommand
from paywatch.tenants.crypto import SecretBox
from paywatch.tenants.store import valid_secrets

log = logging.getLogger(__name__)

Account = tuple[str, str]
"""(tenant, provider)."""
Key = tuple[str, str]
"""(tenant, command_id)."""
ACCOUNTS_TTL_S = 5.0
"""How long the list of live accounts is trusted: enabling or disabling shows within it."""
CLIENT_TTL_S = 60.0
"""A client is rebuilt from the tenant's secrets after this (a credential rotation)."""
MAX_ERROR = 500

_CLAIM = """
INSERT INTO charge_claims AS c (tenant, command_id, provider, invoice_ref, claimed_by, lease_until)
SELECT r.t, r.c, r.p, r.i, $5, now() + $6::float8 * interval '1 second'
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS r(t, c, p, i)
WHERE NOT EXISTS (
    SELECT 1 FROM executed_commands e WHERE e.tenant = r.t AND e.command_id = r.c)
ON CONFLICT (tenant, command_id) DO UPDATE
    SET claimed_by = EXCLUDED.claimed_by, lease_until = EXCLUDED.lease_until,
        tries = c.tries + 1
    WHERE c.lease_until <= now()
RETURNING c.tenant, c.command_id, c.tries
"""
_STATE = """
SELECT r.t AS tenant, r.c AS command_id, e.command_id IS NOT NULL AS journaled,
       c.lease_until
FROM unnest($1::text[], $2::text[]) AS r(t, c)
LEFT JOIN executed_commands e ON e.tenant = r.t AND e.command_id = r.c
LEFT JOIN charge_claims c ON c.tenant = r.t AND c.command_id = r.c
"""
_RELEASE = """
UPDATE charge_claims SET lease_until = now(), last_error = r.e
FROM unnest($1::text[], $2::text[], $3::text[]) AS r(t, c, e)
WHERE tenant = r.t AND command_id = r.c AND claimed_by = $4
"""


def instance_id() -> str:
    """This executor among others: host, pid and start time (a restart is a new one)."""
    return f"{socket.gethostname()[:100]}:{os.getpid()}:{time.time_ns()}"


@dataclass
class Claims:
    """What a claim found: commands now ours (with their try number), already journaled,
    and held by another executor (until when)."""

    ours: dict[Key, int] = field(default_factory=dict)
    journaled: set[Key] = field(default_factory=set)
    held: dict[Key, datetime] = field(default_factory=dict)


def request(command: RecoveryCommand) -> ChargeRequest:
    """The charge a live RETRY_PAYMENT asks for."""
    return ChargeRequest(
        tenant=command.tenant,
        provider=command.provider or "",
        command_id=command.command_id,
        invoice_ref=command.invoice_ref,
        customer_ref=command.customer_ref,
        subscription_ref=command.subscription_ref,
        payment_ref=command.payment_ref,
        amount_minor=command.amount_minor,
        currency=command.currency,
        attempt=command.attempt,
    )


class LiveCharges:
    """Live accounts, claims and provider clients of one executor."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        box: SecretBox,
        *,
        lease_s: float,
        grace: timedelta,
        instance: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._pool, self._box, self._lease_s, self._grace = pool, box, lease_s, grace
        self.instance = instance or instance_id()
        self._transport = transport
        self._accounts: frozenset[Account] = frozenset()
        self._accounts_at = -ACCOUNTS_TTL_S
        self._clients: dict[Account, tuple[ChargeClient, float]] = {}

    @property
    def lease_s(self) -> float:
        """How long a claim is held."""
        return self._lease_s

    async def accounts(self) -> frozenset[Account]:
        """(tenant, provider) pairs charged live (cached for ACCOUNTS_TTL_S)."""
        now = time.monotonic()
        if now - self._accounts_at >= ACCOUNTS_TTL_S:
            async with self._pool.acquire() as conn:
                rows = await conn.fetch("SELECT tenant, provider FROM charge_accounts")
            self._accounts = frozenset((r["tenant"], r["provider"]) for r in rows)
            self._accounts_at = now
        return self._accounts

    async def claim(self, commands: Sequence[RecoveryCommand]) -> Claims:
        """Claim the commands for this executor (one statement), see where the rest stand."""
        if not commands:
            return Claims()
        cols = (
            [c.tenant for c in commands],
            [c.command_id for c in commands],
            [c.provider or "" for c in commands],
            [c.invoice_ref for c in commands],
        )
        claims = Claims()
        async with self._pool.acquire() as conn:
            for row in await conn.fetch(_CLAIM, *cols, self.instance, self._lease_s):
                claims.ours[(row["tenant"], row["command_id"])] = row["tries"]
            rest = [c for c in commands if (c.tenant, c.command_id) not in claims.ours]
            if rest:
                rows = await conn.fetch(
                    _STATE, [c.tenant for c in rest], [c.command_id for c in rest]
                )
                for row in rows:
                    key = (row["tenant"], row["command_id"])
                    if row["journaled"]:
                        claims.journaled.add(key)
                    else:
                        claims.held[key] = row["lease_until"]
        return claims

    async def release(self, failed: Iterable[tuple[Key, str]]) -> None:
        """End this executor's lease on commands that got no outcome, keeping why."""
        rows = list(failed)
        if not rows:
            return
        async with self._pool.acquire() as conn:
            await conn.execute(
                _RELEASE,
                [t for (t, _), _ in rows],
                [c for (_, c), _ in rows],
                [e[:MAX_ERROR] for _, e in rows],
                self.instance,
            )

    async def client(self, account: Account) -> ChargeClient:
        """The tenant's client for the provider, built from its current secrets.

        Missing or unreadable credentials raise ``Unavailable`` (an operator fixes them and
        the waiting commands go on), naming the secret, never a value.
        """
        cached = self._clients.get(account)
        now = time.monotonic()
        if cached is not None and now - cached[1] < CLIENT_TTL_S:
            return cached[0]
        tenant, provider = account
        async with self._pool.acquire() as conn:
            sets = await valid_secrets(conn, self._box, tenant, provider, self._grace)
        try:
            client = client_for(provider, (sets or [{}])[0], transport=self._transport)
        except Rejected as exc:
            raise Unavailable(f"{provider} credentials of tenant {tenant}: {exc}") from None
        if cached is not None:
            await _close(cached[0])
        self._clients[account] = (client, now)
        return client

    async def aclose(self) -> None:
        """Close every client."""
        clients, self._clients = self._clients, {}
        await asyncio.gather(*(_close(c) for c, _ in clients.values()))


async def _close(client: ChargeClient) -> None:
    try:
        await client.aclose()
    except Exception:  # closing must not stop the executor
        log.warning("closing a %s client failed", client.provider, exc_info=True)
