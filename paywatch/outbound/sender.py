"""The delivery loop: sends due deliveries to tenants' endpoints, signed, and records them.

Each turn, ``Dispatcher`` asks which active endpoints have a due delivery and claims, for
each, only as many as that endpoint has free slots here (PER_ENDPOINT at once), then sends
each claimed delivery in its own task. A slow, failing or hanging endpoint therefore holds
its own slots and nothing else: another endpoint's deliveries are claimed and sent on the
next turn whatever the first one does. Claims use ``FOR UPDATE SKIP LOCKED`` and a lease
(deliveries.py), so several executors never make the same attempt at the same time.

One attempt: the target's host is resolved and checked (endpoints.check_target: prod
refuses private addresses, again at every attempt since DNS can change), then the request
goes to the checked address itself, with the URL's host as ``Host`` and TLS server name,
so a second lookup cannot send it elsewhere (DNS rebinding); connections are not reused
for the same reason. Headers: ``webhook-id`` (the event id, the same on every attempt),
``webhook-timestamp``, ``webhook-signature`` (``v1,<base64>`` by the ``standardwebhooks``
library; during a secret rotation the new and the previous secret's signatures, space
separated). Redirects are not followed; of the answer only the status and a few bytes are
read. 2xx: succeeded; any other status, a timeout (the whole attempt within TIMEOUT_S), a
connection error or a refused target: retried on deliveries.RETRY_DELAYS_S, then failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
from prometheus_client import Counter, Gauge
from standardwebhooks import Webhook

from paywatch.errors import ConfigError
from paywatch.outbound import deliveries
from paywatch.outbound.deliveries import Claimed, Outcome
from paywatch.outbound.endpoints import (
    Resolver,
    TargetPolicy,
    TargetRefused,
    check_target,
    open_secret,
    system_resolver,
)
from paywatch.settings import Settings
from paywatch.tenants.crypto import SecretBox

log = logging.getLogger(__name__)

TIMEOUT_S = 10.0
"""One attempt, resolution to the answer's status line, must end within this."""
PER_ENDPOINT = 4
"""Attempts in flight to one endpoint at once, per executor."""
MAX_IN_FLIGHT = 256
"""Attempts in flight in this executor, all endpoints together."""
MAX_POLL_S = 1.0
"""The longest wait between two looks at the delivery log (a redelivery from the API or
another executor's enqueue is seen within this)."""
ANSWER_BYTES = 256
"""How much of an answer is read (kept in last_error when it is not a 2xx)."""
USER_AGENT = "paywatch-webhooks/1"

ATTEMPTS = Counter(
    "paywatch_outbound_attempts_total",
    "Outbound webhook delivery attempts, by outcome"
    " (succeeded, http_error, timeout, connect_error, refused, error)",
    ["outcome"],
)
FINISHED = Counter(
    "paywatch_outbound_deliveries_total",
    "Outbound deliveries that ended, by final status (succeeded, failed)",
    ["status"],
)
IN_FLIGHT = Gauge("paywatch_outbound_in_flight", "Outbound delivery attempts in flight")

Renderer = Callable[[dict[str, Any]], bytes]
"""The request body of an endpoint kind other than ``webhook`` (e.g. ``slack``), made from
the envelope; a webhook endpoint gets the envelope's JSON as stored and signed."""
RETRY_S = 1.0
"""Pause after the database failed a turn (the loop goes on; leases keep claims safe)."""
_DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


def utc_now() -> datetime:
    """The wall clock, timezone-aware."""
    return datetime.now(UTC)


def signature(secrets: list[str], event_id: str, at: datetime, body: bytes) -> str:
    """The ``webhook-signature`` header: one ``v1,`` signature per secret, space separated."""
    return " ".join(Webhook(secret).sign(event_id, at, body) for secret in secrets)


def _pinned(url: httpx.URL, address: str) -> tuple[httpx.URL, dict[str, str], dict[str, Any]]:
    """The request URL aimed at ``address``, with the original host as Host and TLS name."""
    host = url.netloc.decode("ascii")
    extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
    return url.copy_with(host=address), {"Host": host}, extensions


class Dispatcher:
    """Sends due outbound deliveries until ``stop()``; several may run against one database.

    ``transport`` is httpx's (tests inject one); ``renderers`` make the body of endpoint
    kinds other than ``webhook`` (the caller gives ``slack``'s); ``resolver`` resolves
    target hosts (the system's by default).
    """

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        renderers: Mapping[str, Renderer] | None = None,
        resolver: Resolver = system_resolver,
        per_endpoint: int = PER_ENDPOINT,
        max_in_flight: int = MAX_IN_FLIGHT,
        timeout_s: float = TIMEOUT_S,
        box: SecretBox | None = None,
    ) -> None:
        self._settings, self._pool, self._transport = settings, pool, transport
        self._renderers: dict[str, Renderer] = dict(renderers or {})
        self._resolver, self._timeout_s = resolver, timeout_s
        self._per_endpoint, self._max_in_flight = per_endpoint, max_in_flight
        self._box = box or SecretBox.from_settings(settings)
        self._policy = TargetPolicy.from_settings(settings)
        self._in_flight: dict[str, set[asyncio.Task[None]]] = {}
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()

    async def run(self) -> None:
        """Claim and send until ``stop()``; then let attempts in flight end (within the
        attempt deadline) so their outcomes are recorded."""
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
        async with httpx.AsyncClient(
            transport=self._transport, limits=limits, follow_redirects=False,
            timeout=self._timeout_s, trust_env=False,
        ) as client:  # fmt: skip
            log.info("outbound dispatcher started (%s per endpoint)", self._per_endpoint)
            try:
                while not self._stopping.is_set():
                    await self._step(client)
            finally:
                await self._drain()

    def stop(self) -> None:
        """Ask the loop to end after its current turn."""
        self._stopping.set()
        self._wake.set()

    def wake(self) -> None:
        """Look at the log now (e.g. right after an enqueue in this process)."""
        self._wake.set()

    async def _step(self, client: httpx.AsyncClient) -> None:
        try:
            await self._pause(await self._turn(client))
        except _DB_ERRORS as exc:
            log.warning("outbound dispatcher: database unavailable (%s); retrying", exc)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RETRY_S):
                    await self._stopping.wait()

    def _tasks(self) -> list[asyncio.Task[None]]:
        return [task for tasks in self._in_flight.values() for task in tasks]

    async def _turn(self, client: httpx.AsyncClient) -> int:
        """Claim what free slots allow, endpoint by endpoint; how many were claimed."""
        free = self._max_in_flight - len(self._tasks())
        if free <= 0:
            return 0
        busy = [ep for ep, tasks in self._in_flight.items() if len(tasks) >= self._per_endpoint]
        claimed = 0
        for endpoint_id in await deliveries.due_endpoints(self._pool, busy, free):
            slots = min(self._per_endpoint - len(self._in_flight.get(endpoint_id, ())), free)
            rows = await deliveries.claim(self._pool, endpoint_id, slots) if slots > 0 else []
            for row in rows:
                self._start(client, row)
            claimed += len(rows)
            free -= len(rows)
            if free <= 0:
                break
        return claimed

    async def _pause(self, claimed: int) -> None:
        """Wait until the next delivery is due, an attempt ends, or ``wake``/``stop``."""
        busy = [ep for ep, tasks in self._in_flight.items() if len(tasks) >= self._per_endpoint]
        due_in = await deliveries.next_due_in(self._pool, busy)
        wait = MAX_POLL_S if due_in is None else min(MAX_POLL_S, max(due_in, 0.0))
        if len(self._tasks()) >= self._max_in_flight:
            wait = MAX_POLL_S  # nothing can be claimed before an attempt ends (it wakes us)
        elif wait <= 0.0 and claimed == 0:
            wait = 0.05  # due rows another executor holds right now: do not spin on them
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await self._wake.wait()

    def _start(self, client: httpx.AsyncClient, row: Claimed) -> None:
        task = asyncio.create_task(self._attempt(client, row))
        tasks = self._in_flight.setdefault(row.endpoint_id, set())
        tasks.add(task)
        IN_FLIGHT.inc()

        def done(finished: asyncio.Task[None]) -> None:
            tasks.discard(finished)
            if not tasks and self._in_flight.get(row.endpoint_id) is tasks:
                del self._in_flight[row.endpoint_id]
            IN_FLIGHT.dec()
            if not finished.cancelled() and finished.exception() is not None:
                log.error(
                    "delivery %s: attempt crashed; retried when its lease ends",
                    row.delivery_id, exc_info=finished.exception(),
                )  # fmt: skip
            self._wake.set()  # a slot is free

        task.add_done_callback(done)

    async def _drain(self) -> None:
        tasks = self._tasks()
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=self._timeout_s + 5)
        for task in pending:  # their leases end and another turn makes the attempt again
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _attempt(self, client: httpx.AsyncClient, row: Claimed) -> None:
        """Send one claimed delivery and record the outcome."""
        started = utc_now()
        try:
            async with asyncio.timeout(self._timeout_s):
                outcome, label = await self._send(client, row, started)
        except TimeoutError:
            outcome = Outcome(False, None, f"no answer within {self._timeout_s:g} s")
            label = "timeout"
        ATTEMPTS.labels(label).inc()
        status = await deliveries.record_attempt(
            self._pool, row, outcome, started_at=started, time_scale=self._settings.time_scale
        )
        if status in ("succeeded", "failed"):
            FINISHED.labels(status).inc()
        if status == "failed":
            log.warning(
                "delivery %s of %s to endpoint %s failed after its last retry: %s",
                row.delivery_id, row.event_id, row.endpoint_id, outcome.error,
            )  # fmt: skip

    async def _send(
        self, client: httpx.AsyncClient, row: Claimed, at: datetime
    ) -> tuple[Outcome, str]:
        """One request; the outcome and its metrics label (timeouts are the caller's)."""
        if row.kind != "webhook" and row.kind not in self._renderers:
            return Outcome(False, None, f"no body renderer for {row.kind} endpoints here"), "error"
        try:
            body = self._body(row)
            url, headers = self._target(row), self._headers(row, at, body)
        except ConfigError as exc:  # a secret that does not open: the master key changed
            return Outcome(False, None, str(exc)), "error"
        except Exception as exc:  # a renderer that cannot take this event: a failed attempt,
            # recorded and retried on schedule like any other, never a lease loop
            log.exception("delivery %s: the %s body could not be made", row.delivery_id, row.kind)
            return Outcome(False, None, f"body not rendered: {type(exc).__name__}"), "error"
        try:
            addresses = await check_target(url, self._policy, self._resolver)
        except TargetRefused as exc:
            return Outcome(False, None, f"target refused: {exc}"), "refused"
        try:
            request_url, host, extensions = _pinned(httpx.URL(url), addresses[0])
            async with client.stream(
                "POST", request_url, content=body, headers={**headers, **host},
                extensions=extensions,
            ) as answer:  # fmt: skip
                head = await _head(answer)
        except httpx.TimeoutException as exc:
            return Outcome(False, None, f"timed out: {type(exc).__name__}"), "timeout"
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
            return Outcome(False, None, f"{type(exc).__name__}: {exc}"), "connect_error"
        if 200 <= answer.status_code < 300:
            return Outcome(True, answer.status_code), "succeeded"
        said = head.decode("utf-8", "replace")
        return Outcome(
            False, answer.status_code, f"HTTP {answer.status_code}: {said}"
        ), "http_error"

    def _body(self, row: Claimed) -> bytes:
        """What is sent: a webhook gets the envelope's bytes, another kind its rendering."""
        if row.kind == "webhook":
            return row.body
        return self._renderers[row.kind](json.loads(row.body))

    def _target(self, row: Claimed) -> str:
        """Where the delivery goes: a Slack endpoint's URL is its (sealed) secret."""
        if row.kind == "slack":
            return open_secret(self._box, row.tenant, row.endpoint_id, row.secret_enc)
        return row.url

    def _headers(self, row: Claimed, at: datetime, body: bytes) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "webhook-id": row.event_id,
            "webhook-timestamp": str(int(at.timestamp())),
        }
        if row.kind == "webhook":
            secrets = [open_secret(self._box, row.tenant, row.endpoint_id, row.secret_enc)]
            if row.previous_secret_enc is not None:
                previous = row.previous_secret_enc
                secrets.append(
                    open_secret(self._box, row.tenant, row.endpoint_id, previous, previous=True)
                )
            headers["webhook-signature"] = signature(secrets, row.event_id, at, body)
        return headers


async def _head(answer: httpx.Response) -> bytes:
    """The first ANSWER_BYTES of an answer's body; the rest is never read."""
    head = b""
    async for chunk in answer.aiter_raw():
        head += chunk
        if len(head) >= ANSWER_BYTES:
            break
    return head[:ANSWER_BYTES]
