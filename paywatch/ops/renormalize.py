"""`paywatch replay --renormalize --from DATE`: today's normalizers over the logged webhooks.

Reads ``webhooks.raw`` and ``webhooks.fetched`` from DATE, runs the same pure steps the
worker runs (``normalize_record``, ``normalize_fetched``; a thin provider's raw webhook is
left to its fetched documents, and the provider is never called), and compares each event
with the one already in ``payments.events`` under the same deterministic event id. New and
changed events are appended to ``payments.events`` with the same ids and keys: the saga
skips an event id it has seen and the read models are keyed by it, so nothing is counted
twice. ``--dry-run`` only reports. An operator action: before anything is appended, one
``replay.renormalize`` record per tenant affected goes to ``ops.audit``.

A webhook the normalizer now refuses is reported (and never appended), as the worker would
dead-letter it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import TopicPartition

from paywatch.errors import ConfigError, InfraError, Retryable
from paywatch.kafka.appender import KafkaAppender
from paywatch.kafka.codec import make_codec
from paywatch.kafka.security import kafka_security
from paywatch.ops.infra import resolve_endpoints
from paywatch.ops.log_scan import LogScanner, open_scanner
from paywatch.providers.registry import configured_providers
from paywatch.schemas.codec import Codec
from paywatch.schemas.models import FetchedDocument, PaymentEvent
from paywatch.schemas.topics import PAYMENTS_EVENTS, WEBHOOKS_FETCHED, WEBHOOKS_RAW
from paywatch.settings import Settings
from paywatch.streams.fetch import normalize_fetched, thin
from paywatch.streams.normalize import event_key, normalize_record
from paywatch.tenants.api_keys import cli_actor
from paywatch.tenants.ops_audit import OpsEntry, open_ops_log, record_ops

DEFAULT_MAX_SCAN = 5_000_000


@dataclass(frozen=True)
class Change:
    """One event today's normalizers give differently: ``new`` (no event with its id yet)
    or ``changed`` (field -> (before, now))."""

    status: str
    event: PaymentEvent
    diff: dict[str, tuple[Any, Any]]


@dataclass
class Report:
    """What a re-normalization found and did."""

    webhooks: int = 0
    events: int = 0
    unchanged: int = 0
    changes: list[Change] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    appended: int = 0


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out |= _flat(v, f"{prefix}{k}.")
        return out or {prefix.rstrip("."): {}}
    return {prefix.rstrip("."): value}


def field_diff(before: PaymentEvent, now: PaymentEvent) -> dict[str, tuple[Any, Any]]:
    """Field -> (before, now) of every field that differs, nested ones dotted
    (``decline.category``)."""
    old, new = _flat(before.model_dump(mode="json")), _flat(now.model_dump(mode="json"))
    return {k: (old.get(k), new.get(k)) for k in sorted(old | new) if old.get(k) != new.get(k)}


def _mine(key: bytes | None, tenant: str | None) -> bool:
    """Every key of these topics starts with ``tenant/``: filter before decoding."""
    return tenant is None or (key or b"").startswith(f"{tenant}/".encode())


async def _all(scanner: LogScanner, topic: str, since_ms: int) -> list[Any]:
    tps = [TopicPartition(topic, p) for p in await scanner.partitions(topic)]
    return [r async for r in scanner.scan(tps, since_ms)]


async def fresh_events(
    scanner: LogScanner, settings: Settings, codec: Codec, since_ms: int, tenant: str | None,
    report: Report,
) -> dict[str, PaymentEvent]:  # fmt: skip
    """Event id -> the event today's normalizers make of the logged webhooks (first wins)."""
    providers = configured_providers(settings)
    found: dict[str, PaymentEvent] = {}
    raw_topic, fetched_topic = settings.topic(WEBHOOKS_RAW), settings.topic(WEBHOOKS_FETCHED)
    for r in await _all(scanner, raw_topic, since_ms):
        if not _mine(r.key, tenant):
            continue
        report.webhooks += 1
        try:
            result = normalize_record(codec, providers, r.value, r.topic, r.partition, r.offset)
            known = providers.get(result.raw.provider) if result.raw else None
            if known is not None and thin(known) is not None:
                continue  # its events come from the fetched documents below
        except Exception as exc:  # what the worker would dead-letter: reported, not fatal
            report.refused.append(f"{r.topic}[{r.partition}]@{r.offset}: {exc}")
            continue
        _keep(found, result.events)
    for r in await _all(scanner, fetched_topic, since_ms):
        if not _mine(r.key, tenant):
            continue
        report.webhooks += 1
        try:
            doc = codec.decode(r.value, FetchedDocument, topic=r.topic)
            provider = thin(providers[doc.provider])
            if provider is None:
                raise ConfigError(f"{doc.provider!r} is not a thin-webhook provider")
            events = normalize_fetched(provider, doc, (r.topic, r.partition, r.offset))
        except Exception as exc:  # as above: one document's failure is reported
            report.refused.append(f"{r.topic}[{r.partition}]@{r.offset}: {exc}")
            continue
        _keep(found, events)
    return found


def _keep(found: dict[str, PaymentEvent], events: Iterable[PaymentEvent]) -> None:
    for event in events:
        found.setdefault(event.event_id, event)  # a redelivery: the worker drops it too


async def logged_events(
    scanner: LogScanner, settings: Settings, codec: Codec, since_ms: int, tenant: str | None
) -> dict[str, PaymentEvent]:
    """Event id -> the latest event with that id in payments.events since ``since_ms``
    (an event is appended after the webhook it comes from, so nothing older is needed)."""
    latest: dict[str, tuple[int, PaymentEvent]] = {}
    for r in await _all(scanner, settings.topic(PAYMENTS_EVENTS), since_ms):
        if not _mine(r.key, tenant):
            continue
        event = codec.decode(r.value, PaymentEvent, topic=r.topic)
        if event.event_id not in latest or latest[event.event_id][0] <= r.timestamp:
            latest[event.event_id] = (r.timestamp, event)
    return {k: v for k, (_, v) in latest.items()}


def compare(
    fresh: dict[str, PaymentEvent], logged: dict[str, PaymentEvent], report: Report
) -> None:
    """Fill ``report`` with what differs, in the order the webhooks were read."""
    report.events = len(fresh)
    for event_id, event in fresh.items():
        before = logged.get(event_id)
        if before is None:
            report.changes.append(Change("new", event, {}))
        elif before != event:
            report.changes.append(Change("changed", event, field_diff(before, event)))
        else:
            report.unchanged += 1


async def append(settings: Settings, bootstrap: str, since: datetime, report: Report) -> None:
    """The ops.audit records first (one per tenant), then the events, each acked."""
    tenants = sorted({c.event.tenant for c in report.changes})
    codec, topic = make_codec(settings), settings.topic(PAYMENTS_EVENTS)
    async with open_ops_log(settings, bootstrap) as log:
        for tenant in tenants:
            mine = [c for c in report.changes if c.event.tenant == tenant]
            details = {
                "from": since.isoformat(),
                "new": str(sum(c.status == "new" for c in mine)),
                "changed": str(sum(c.status == "changed" for c in mine)),
            }
            entry = OpsEntry(tenant, "replay.renormalize", None, details)
            await record_ops(log, entry, actor=cli_actor())
    appender = KafkaAppender(
        bootstrap, settings.ingest_ack_timeout_s, client_id="paywatch-renormalize",
        security=kafka_security(settings),
    )  # fmt: skip
    await appender.start()
    try:
        for change in report.changes:
            value = codec.encode(change.event, topic=topic)
            await appender.append(topic, event_key(change.event), value)
            report.appended += 1
    finally:
        await appender.stop()


async def renormalize(
    settings: Settings, bootstrap: str, *, since: datetime, tenant: str | None = None,
    dry_run: bool = False, max_scan: int = DEFAULT_MAX_SCAN,
) -> Report:  # fmt: skip
    """Re-normalize the logged webhooks from ``since``; append what changed unless dry."""
    report, codec = Report(), make_codec(settings)
    since_ms = int(since.timestamp() * 1000)
    async with open_scanner(settings, bootstrap, max_scan=max_scan) as scanner:
        fresh = await fresh_events(scanner, settings, codec, since_ms, tenant, report)
        logged = await logged_events(scanner, settings, codec, since_ms, tenant)
    compare(fresh, logged, report)
    if not dry_run and report.changes:
        await append(settings, bootstrap, since, report)
    return report


def parse_since(text: str) -> datetime:
    """``--from``: an ISO date or date-time; a naive one is UTC. ConfigError otherwise."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(f"--from {text!r} is not an ISO date (e.g. 2026-03-01)") from exc
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _shown(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def print_report(report: Report, *, dry_run: bool, as_json: bool) -> None:
    """One line per new or changed event, then the totals."""
    for c in report.changes:
        e = c.event
        if as_json:
            diff = {k: {"before": a, "now": b} for k, (a, b) in c.diff.items()}
            print(json.dumps({"status": c.status, "event_id": e.event_id, "tenant": e.tenant,
                              "invoice_ref": e.invoice_ref, "diff": diff}))  # fmt: skip
            continue
        said = "; ".join(f"{k}: {_shown(a)} -> {_shown(b)}" for k, (a, b) in c.diff.items())
        print(f"{c.status:<8} {e.event_id}  {e.tenant}/{e.invoice_ref}  {said}".rstrip())
    done = "would append" if dry_run else "appended"
    count = len(report.changes) if dry_run else report.appended
    if as_json:
        totals = {
            "webhooks": report.webhooks,
            "events": report.events,
            "unchanged": report.unchanged,
            "refused": report.refused,
            done: count,
        }
        print(json.dumps({"summary": totals}))  # fmt: skip
        return
    for line in report.refused:
        print(f"refused  {line}")
    print(
        f"{report.webhooks} webhook(s) read, {report.events} event(s): {report.unchanged} "
        f"unchanged, {sum(c.status == 'changed' for c in report.changes)} changed, "
        f"{sum(c.status == 'new' for c in report.changes)} new, {len(report.refused)} "
        f"refused; {done} {count} to payments.events"
    )


def cmd_renormalize(settings: Settings, args: argparse.Namespace) -> int:
    """paywatch replay --renormalize --from DATE [--tenant T] [--dry-run] [--json]."""
    if not args.renormalize:
        raise ConfigError("give --renormalize (read-model rebuilds are `--projection`)")
    if args.since is None:
        raise ConfigError("--renormalize needs --from DATE")
    if args.max_scan < 1:
        raise ConfigError(f"--max-scan must be at least 1, got {args.max_scan}")
    since = parse_since(args.since)
    ends = resolve_endpoints(settings)
    try:
        report = asyncio.run(
            renormalize(settings, ends.bootstrap, since=since, tenant=args.tenant,
                        dry_run=args.dry_run, max_scan=args.max_scan)
        )  # fmt: skip
    except Retryable as exc:
        raise InfraError(f"Kafka at {ends.bootstrap} did not take a record ({exc})") from exc
    print_report(report, dry_run=args.dry_run, as_json=args.json)
    return 0


def register_replay(sub: Any) -> None:
    """The `replay` command with ``--renormalize`` only (replay_cli.py merges it later)."""
    p = sub.add_parser("replay", help="re-run today's normalizers over the logged webhooks")
    p.add_argument("--renormalize", action="store_true", help="re-normalize webhooks.raw/fetched")
    p.add_argument("--from", dest="since", metavar="DATE", help="ISO date or time (UTC if naive)")
    p.add_argument("--tenant", metavar="TENANT", help="only this tenant's webhooks")
    p.add_argument("--dry-run", action="store_true", help="report only, append nothing")
    p.add_argument("--json", action="store_true", help="one JSON object per changed event")
    p.add_argument("--max-scan", type=int, default=DEFAULT_MAX_SCAN,
                   help="refuse to read more records than this per topic")  # fmt: skip
    p.set_defaults(func=cmd_renormalize)
