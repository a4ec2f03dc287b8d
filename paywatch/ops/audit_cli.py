"""`paywatch audit invoice|ops`: the evidence trail, read from Kafka itself (ARCHITECTURE §10).

``audit invoice TENANT REF`` reads the invoice's canonical events, saga transitions and
commands on the one partition of each topic its key ``tenant/invoice_ref`` lives on, then
the exact raw webhooks and fetched documents the events name (their ``raw`` coordinates,
and a fetched document's ``source``). Lines come in log-append order (each record's Kafka
timestamp), every one with its topic, partition and offset. A raw body is shown as its
SHA-256 and size (the exact bytes the provider signed); ``--show-body`` adds the text.
Headers are never shown: they hold the provider's signature.

``audit ops`` lists the operator and admin actions of ``ops.audit`` (one tenant's, or all).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from paywatch.errors import PaywatchError
from paywatch.kafka.codec import make_codec
from paywatch.ops.infra import resolve_endpoints
from paywatch.ops.log_scan import LogScanner, open_scanner, partition_of
from paywatch.schemas.codec import Codec
from paywatch.schemas.models import (
    FetchedDocument,
    OpsAudit,
    PaymentEvent,
    RawWebhook,
    RecoveryCommand,
    SagaTransition,
)
from paywatch.schemas.topics import (
    OPS_AUDIT,
    PAYMENTS_EVENTS,
    RECOVERY_COMMANDS,
    RECOVERY_TRANSITIONS,
    WEBHOOKS_FETCHED,
    invoice_key,
    tenant_key,
)
from paywatch.settings import Settings

DEFAULT_MAX_SCAN = 2_000_000
_RANK = {
    "missing": 0,
    "raw_webhook": 0,
    "fetched_document": 1,
    "event": 2,
    "transition": 3,
    "command": 4,
}
Line = dict[str, Any]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="milliseconds") if value is not None else None


def _line(kind: str, record: Any, **fields: Any) -> Line:
    at = datetime.fromtimestamp(record.timestamp / 1000, UTC)
    where = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
    return {"kind": kind, **where, "at": _iso(at), **fields}


def _bytes(body: bytes, show: bool) -> dict[str, Any]:
    shown = {"sha256": hashlib.sha256(body).hexdigest(), "size": len(body)}
    return shown | ({"body": body.decode("utf-8", "replace")} if show else {})


def _rule(rule: Any) -> str:
    return f"{rule.id}@{rule.edition}"


def event_line(record: Any, e: PaymentEvent) -> Line:
    """An event's line: what happened, the decline, and where its raw record sits."""
    raw = e.raw
    return _line(
        "event", record, event_id=e.event_id, type=e.type.value, provider=e.provider,
        occurred_at=_iso(e.occurred_at), amount_minor=e.amount_minor, currency=e.currency,
        decline=None if e.decline is None else
        {"code": e.decline.code, "category": e.decline.category.value},
        raw=None if raw is None else
        {"topic": raw.topic, "partition": raw.partition, "offset": raw.offset},
    )  # fmt: skip


def transition_line(record: Any, t: SagaTransition) -> Line:
    """A transition's line: the states, the rule and edition that decided it."""
    return _line(
        "transition", record, from_state=t.from_state.value if t.from_state else None,
        to_state=t.to_state.value, rule=_rule(t.rule), reason=t.reason,
        cause_event_id=t.cause_event_id, decided_at=_iso(t.at),
    )  # fmt: skip


def command_line(record: Any, c: RecoveryCommand) -> Line:
    """A command's line: its id (the idempotency key), type, due time and rule."""
    return _line(
        "command", record, command_id=c.command_id, type=c.type.value, due_at=_iso(c.due_at),
        attempt=c.attempt, rule=_rule(c.rule), reason=c.reason,
    )  # fmt: skip


async def _keyed(scanner: LogScanner, topic: str, key: bytes) -> list[Any]:
    """The records of ``key`` on its one partition of ``topic``."""
    from aiokafka import TopicPartition

    partitions = await scanner.partitions(topic)
    tp = TopicPartition(topic, partitions[partition_of(key, len(partitions))])
    return [r async for r in scanner.scan([tp]) if r.key == key]


async def invoice_trail(
    scanner: LogScanner, settings: Settings, codec: Codec, tenant: str, ref: str, show: bool
) -> list[Line]:
    """Every record of the invoice, with the raw webhooks and documents behind its events."""
    key = invoice_key(tenant, ref).encode()
    lines: list[Line] = []
    raws: set[tuple[str, int, int]] = set()
    for r in await _keyed(scanner, settings.topic(PAYMENTS_EVENTS), key):
        event = codec.decode(r.value, PaymentEvent, topic=r.topic)
        lines.append(event_line(r, event))
        if event.raw is not None:
            raws.add((event.raw.topic, event.raw.partition, event.raw.offset))
    for r in await _keyed(scanner, settings.topic(RECOVERY_TRANSITIONS), key):
        lines.append(transition_line(r, codec.decode(r.value, SagaTransition, topic=r.topic)))
    for r in await _keyed(scanner, settings.topic(RECOVERY_COMMANDS), key):
        lines.append(command_line(r, codec.decode(r.value, RecoveryCommand, topic=r.topic)))
    lines += await _sources(scanner, settings, codec, sorted(raws), show)
    return sorted(lines, key=lambda x: (x["at"], _RANK[x["kind"]], x["partition"], x["offset"]))


async def _sources(
    scanner: LogScanner, settings: Settings, codec: Codec, at: list[Any], show: bool
) -> list[Line]:
    """The raw webhooks and fetched documents at the given coordinates (a document's own
    raw webhook too), each read once."""
    lines: list[Line] = []
    todo, done = list(at), set()
    fetched = settings.topic(WEBHOOKS_FETCHED)
    while todo:
        topic, partition, offset = todo.pop(0)
        if (topic, partition, offset) in done:
            continue
        done.add((topic, partition, offset))
        r = await scanner.read_at(topic, partition, offset)
        if r is None:
            lines.append({"kind": "missing", "topic": topic, "partition": partition,
                          "offset": offset, "at": ""})  # fmt: skip
        elif topic == fetched:
            doc = codec.decode(r.value, FetchedDocument, topic=topic)
            lines.append(_line("fetched_document", r, provider=doc.provider,
                               resource_id=doc.ref.resource_id, status=doc.status,
                               **_bytes(doc.document, show)))  # fmt: skip
            todo.append((doc.source.topic, doc.source.partition, doc.source.offset))
        else:
            raw = codec.decode(r.value, RawWebhook, topic=topic)
            received = _iso(raw.received_at)
            lines.append(_line("raw_webhook", r, provider=raw.provider, ingest_id=raw.ingest_id,
                               received_at=received, **_bytes(raw.body, show)))  # fmt: skip
    return lines


def _summary(line: Line) -> str:
    """The human table's last column: the fields that tell the record apart."""
    kind = line["kind"]
    if kind == "event":
        decline = line["decline"] or {}
        money = f"{line['amount_minor']} {line['currency']}" if line["amount_minor"] else ""
        parts = (line["type"], money, decline.get("code"), decline.get("category"))
        return "  ".join(p for p in (*parts, line["event_id"]) if p)
    if kind == "transition":
        return f"{line['from_state'] or '-'} -> {line['to_state']}  rule {line['rule']}"
    if kind == "command":
        return f"{line['type']} due {line['due_at']}  rule {line['rule']}  {line['command_id']}"
    if kind == "missing":
        return "named by an event but not in Kafka (retention? another cluster?)"
    return f"{line['provider']} sha256 {line['sha256']} {line['size']} bytes"


def _print(lines: list[Line], as_json: bool) -> None:
    for line in lines:
        if as_json:
            print(json.dumps(line, sort_keys=False))
        else:
            where = f"{line['topic']}[{line['partition']}]@{line['offset']}"
            print(f"{line['at'] or '-':<29}  {line['kind']:<16}  {where:<40}  {_summary(line)}")
            if "body" in line:
                print(f"    body: {line['body']}")


def _scan_bound(value: str) -> int:
    try:
        bound = int(value)
    except ValueError:
        bound = 0
    if bound < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {value!r}")
    return bound


def cmd_audit_invoice(settings: Settings, args: argparse.Namespace) -> int:
    """paywatch audit invoice TENANT REF [--json] [--show-body] [--max-scan N]."""
    ends = resolve_endpoints(settings)

    async def go() -> list[Line]:
        async with open_scanner(settings, ends.bootstrap, max_scan=args.max_scan) as scanner:
            codec = make_codec(settings)
            return await invoice_trail(
                scanner, settings, codec, args.tenant, args.invoice_ref, args.show_body
            )

    lines = asyncio.run(go())
    if not lines:
        raise_nothing(f"no record of invoice {args.invoice_ref!r} of tenant {args.tenant!r}")
    _print(lines, args.json)
    return 0


def raise_nothing(message: str) -> None:
    """Exit 1 with ``message``: an audit that finds nothing says so, never prints nothing."""
    raise PaywatchError(f"{message} in Kafka")


def ops_line(record: Any, entry: OpsAudit) -> Line:
    """An operator action's line."""
    return _line(
        "ops", record, tenant=entry.tenant, actor=entry.actor, action=entry.action,
        subject=entry.subject, done_at=_iso(entry.at), details=dict(entry.details),
    )  # fmt: skip


async def ops_trail(scanner: LogScanner, settings: Settings, tenant: str | None) -> list[Line]:
    """The ops.audit records, of one tenant (its one partition) or of all."""
    from aiokafka import TopicPartition

    topic, codec = settings.topic(OPS_AUDIT), make_codec(settings)
    partitions = await scanner.partitions(topic)
    key = tenant_key(tenant).encode() if tenant is not None else None
    if key is not None:
        partitions = [partitions[partition_of(key, len(partitions))]]
    records = [r async for r in scanner.scan([TopicPartition(topic, p) for p in partitions])]
    lines = [
        ops_line(r, codec.decode(r.value, OpsAudit, topic=topic))
        for r in records
        if key is None or r.key == key
    ]
    return sorted(lines, key=lambda x: (x["at"], x["partition"], x["offset"]))


def cmd_audit_ops(settings: Settings, args: argparse.Namespace) -> int:
    """paywatch audit ops [--tenant T] [--json]: operator and admin actions, oldest first."""
    ends = resolve_endpoints(settings)

    async def go() -> list[Line]:
        async with open_scanner(settings, ends.bootstrap, max_scan=args.max_scan) as scanner:
            return await ops_trail(scanner, settings, args.tenant)

    lines = asyncio.run(go())
    for line in lines:
        if args.json:
            print(json.dumps(line))
        else:
            details = " ".join(f"{k}={v}" for k, v in sorted(line["details"].items()))
            print(
                f"{line['done_at']}  {line['tenant']}  {line['actor']}  {line['action']}  "
                f"{line['subject'] or '-'}  {details}".rstrip()
            )
    if not lines and not args.json:
        print(f"no operator action recorded{f' for tenant {args.tenant}' if args.tenant else ''}")
    return 0


def register(sub: Any) -> None:
    """Add the `audit` command and its subcommands."""
    audit = sub.add_parser("audit", help="the evidence trail, read from Kafka itself")
    cmds = audit.add_subparsers(dest="acmd", required=True)
    bound = f"refuse to read more than this many records (default {DEFAULT_MAX_SCAN})"
    ai = cmds.add_parser(
        "invoice", help="every webhook, event, transition and command of an invoice"
    )
    ai.add_argument("tenant", metavar="TENANT")
    ai.add_argument("invoice_ref", metavar="REF")
    ai.add_argument("--json", action="store_true", help="one JSON object per line")
    ai.add_argument(
        "--show-body", action="store_true",
        help="also print raw bodies and documents (PAN-free, but customer data)",
    )  # fmt: skip
    ai.add_argument("--max-scan", type=_scan_bound, default=DEFAULT_MAX_SCAN, help=bound)
    ai.set_defaults(func=cmd_audit_invoice)
    ao = cmds.add_parser("ops", help="operator and admin actions (ops.audit), oldest first")
    ao.add_argument("--tenant", metavar="TENANT", help="only this tenant's")
    ao.add_argument("--json", action="store_true", help="one JSON object per line")
    ao.add_argument("--max-scan", type=_scan_bound, default=DEFAULT_MAX_SCAN, help=bound)
    ao.set_defaults(func=cmd_audit_ops)
