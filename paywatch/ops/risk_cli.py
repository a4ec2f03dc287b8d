"""`paywatch demo generate` and `paywatch risk train`: a seeded history in, a fitted model out.

``demo generate`` writes a generated population (``paywatch.risk.population``) as generic
webhooks: ``--via raw`` appends RawWebhook records to ``webhooks.raw`` as ingest would
(headers ``webhook-id`` / ``webhook-timestamp``; no signature, since nothing after ingest
verifies one), ``--via ingest`` POSTs them signed with the tenant's generic secret, a few at a
time; the first refusal or unreachable ingest stops the run with the ingest's answer. Event ids
are deterministic, so writing the same population twice is deduplicated by normalize.

``risk train`` reads the whole ``payments.events`` log without a consumer group (nothing is
committed, nothing moves for the worker), keeps one tenant's events in ``[--from, --to)``,
fits on the earlier 80 % of episodes and prints AUC, log loss and calibration error of the
new model and of the packaged prior on the same held-out later 20 %.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from paywatch.errors import ConfigError, InfraError, PaywatchError
from paywatch.ops.infra import resolve_endpoints
from paywatch.risk import population as pop
from paywatch.risk.model import load_model, parse_model
from paywatch.schemas.models import PaymentEvent, RawWebhook
from paywatch.settings import Settings

if TYPE_CHECKING:
    import httpx

    from paywatch.kafka.security import KafkaSecurity
    from paywatch.risk.train import Example, Metrics

MIN_TRAIN, MIN_TEST = 50, 20
POST_CONCURRENCY = 8  # webhooks in flight to the ingest at once
POST_TIMEOUT_S = 30.0  # per request: a stuck ingest fails the command instead of hanging it
USER_AGENT = "paywatch-demo-generate"


def _date(text: str) -> datetime:
    """An ISO date or time (UTC when it names no offset)."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO date: {text!r}") from exc
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def cmd_demo_generate(settings: Settings, args: argparse.Namespace) -> int:
    """paywatch demo generate --tenant T --customers N --months M [--seed S] [--via raw|ingest]"""
    if args.customers < 1 or args.months < 1:
        raise ConfigError("--customers and --months must be at least 1")
    start = args.start or _default_start(args.months)
    people = pop.generate(args.customers, args.months, args.seed, start, tenant=args.tenant)
    hooks = list(pop.webhooks(people))
    if args.via == "raw":
        written = asyncio.run(_append_raw(settings, args.tenant, hooks))
    else:
        written = asyncio.run(_post_ingest(settings, args, hooks))
    lost = sum(t.lost for t in people.truth)
    print(
        f"wrote {written} generic webhooks for tenant {args.tenant} via {args.via}: "
        f"{len(people.customers)} customers, {people.renewals} renewals, "
        f"{len(people.truth)} failed invoices ({lost} lost, {len(people.truth) - lost} recovered)"
    )
    if people.events:
        first, last = people.events[0].occurred_at, people.events[-1].occurred_at
        print(f"seed {args.seed}, events from {first.isoformat()} to {last.isoformat()}")
    return 0


def _default_start(months: int) -> datetime:
    """Today (UTC midnight) minus the population's span, so the history ends about now."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - months * pop.CYCLE - pop.LOST_AFTER


def _raw(tenant: str, hook: pop.Webhook, now: datetime) -> RawWebhook:
    """The record ingest would append for ``hook`` (its key subject chosen as ingest does)."""
    from paywatch.providers.generic import generic

    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": hook.msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
    }
    return RawWebhook(
        ingest_id=str(uuid.uuid4()), tenant=tenant, provider=pop.PROVIDER, received_at=now,
        headers=headers, body=hook.body, subject=generic.subject(generic.parse(hook.body)),
    )  # fmt: skip


async def _append_raw(settings: Settings, tenant: str, hooks: list[pop.Webhook]) -> int:
    """Append every webhook to webhooks.raw; returns the count once all are acknowledged."""
    from paywatch.kafka.clients import reliable_producer
    from paywatch.kafka.codec import make_codec
    from paywatch.kafka.security import kafka_security
    from paywatch.schemas.topics import WEBHOOKS_RAW, raw_key

    codec, topic = make_codec(settings), settings.topic(WEBHOOKS_RAW)
    producer = reliable_producer(
        resolve_endpoints(settings).bootstrap,
        client_id="paywatch-demo",
        security=kafka_security(settings),
    )
    await producer.start()
    try:
        futures = []
        for hook in hooks:
            raw = _raw(tenant, hook, datetime.now(UTC))
            key = raw_key(tenant, pop.PROVIDER, raw.subject).encode()
            futures.append(await producer.send(topic, codec.encode(raw, topic=topic), key=key))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return len(hooks)


async def _post_ingest(
    settings: Settings, args: argparse.Namespace, hooks: list[pop.Webhook]
) -> int:
    """POST every webhook, signed, to the ingest; the first refusal stops them all."""
    import httpx

    from paywatch.providers.generic.signature import secret_key

    key = secret_key(await _generic_secret(settings, args.tenant))
    if key is None:
        raise ConfigError(f"tenant {args.tenant}'s generic signing_secret is not whsec_<base64>")
    base = (args.url or f"http://127.0.0.1:{settings.ingest_port}").rstrip("/")
    url = f"{base}/webhooks/{pop.PROVIDER}/{args.tenant}"
    pending, accepted = iter(hooks), 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal accepted
        for hook in pending:  # one iterator shared by the workers: each hook is sent once
            await _post(client, url, key, hook)
            accepted += 1

    try:
        # A TaskGroup cancels the other workers at the first failure: no hook is sent after it.
        async with httpx.AsyncClient(timeout=POST_TIMEOUT_S) as client, asyncio.TaskGroup() as tg:
            for _ in range(POST_CONCURRENCY):
                tg.create_task(worker(client))
    except ExceptionGroup as group:
        first = group.exceptions[0]
        error = _stopped(first, url, accepted, len(hooks))
        if error is None:
            raise  # not a refusal but a bug: its traceback is wanted
        raise error from first
    return accepted


async def _post(client: httpx.AsyncClient, url: str, key: bytes, hook: pop.Webhook) -> None:
    """POST one webhook signed now (the ingest refuses timestamps over 5 minutes old)."""
    from paywatch.providers.generic.signature import sign

    stamp = str(int(time.time()))
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": hook.msg_id,
        "webhook-timestamp": stamp,
        "webhook-signature": sign(key, hook.msg_id, stamp, hook.body),
    }
    reply = await client.post(url, content=hook.body, headers=headers)
    if not 200 <= reply.status_code < 300:  # 2xx is also the answer to a duplicate
        raise _Refused(reply.status_code, hook.msg_id, reply.text)


class _Refused(Exception):
    """The ingest answered a webhook with a non-2xx status."""

    def __init__(self, status: int, msg_id: str, text: str) -> None:
        super().__init__(f"answered {status} to webhook {msg_id}: {text}")
        self.status = status


def _stopped(exc: Exception, url: str, done: int, total: int) -> PaywatchError | None:
    """The CLI error for the first failure of a run: a refusal (4xx: ConfigError, exit 2;
    5xx: InfraError, exit 1) or an unreachable ingest; None for anything else (a bug)."""
    import httpx

    after = "no webhook was accepted"
    if done:
        after = (
            f"{done} of {total} webhooks were accepted before it; running the same command again "
            "(same --seed and --start) resends those as duplicates, which normalize drops"
        )
    if isinstance(exc, _Refused):
        kind = ConfigError if exc.status < 500 else InfraError
        hint = _HINTS.get(exc.status, "")
        return kind(f"ingest at {url} {exc}{hint}; {after}")
    if isinstance(exc, httpx.HTTPError):
        return InfraError(
            f"no answer from the ingest at {url} ({type(exc).__name__}: {exc}); {after}. Is it "
            "running (`paywatch up` or `paywatch run ingest`), and does --url name it?"
        )
    return None


_HINTS = {
    401: " (does the ingest's generic signing_secret for this tenant match this stack's?)",
    404: " (the ingest's stack has no such tenant, or --url names something else)",
}


async def _generic_secret(settings: Settings, tenant: str) -> str:
    from paywatch.db import create_pool
    from paywatch.tenants.crypto import SecretBox
    from paywatch.tenants.store import valid_secrets

    box = SecretBox.from_settings(settings)
    pool = await create_pool(resolve_endpoints(settings).dsn, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            sets = await valid_secrets(conn, box, tenant, "generic", timedelta(0))
    finally:
        await pool.close()
    if sets is None:
        raise ConfigError(f"unknown tenant {tenant} (paywatch tenant create)")
    if not sets or not sets[0].get("signing_secret"):
        raise ConfigError(f"tenant {tenant} has no generic signing_secret (paywatch tenant secret)")
    return sets[0]["signing_secret"]


async def read_events(
    settings: Settings, tenant: str, since: datetime | None, until: datetime | None
) -> tuple[list[PaymentEvent], int]:
    """The tenant's PaymentEvents in [since, until) from the whole log, and how many records
    could not be decoded (skipped)."""
    from aiokafka import TopicPartition

    from paywatch.errors import CodecError
    from paywatch.kafka.clients import log_reader
    from paywatch.kafka.codec import make_codec
    from paywatch.kafka.security import kafka_security
    from paywatch.schemas.topics import PAYMENTS_EVENTS

    codec, topic = make_codec(settings), settings.topic(PAYMENTS_EVENTS)
    bootstrap, security = resolve_endpoints(settings).bootstrap, kafka_security(settings)
    reader = log_reader(bootstrap, client_id="paywatch-risk-train", security=security)
    await reader.start()
    found, bad = [], 0
    try:
        ids = await asyncio.to_thread(_partition_ids, bootstrap, topic, security)
        tps = [TopicPartition(topic, p) for p in ids]
        if not tps:
            raise ConfigError(f"no topic {topic}: is this the right stack (`paywatch status`)?")
        reader.assign(tps)
        await reader.seek_to_beginning(*tps)
        ends = await reader.end_offsets(tps)
        while [tp for tp in tps if await reader.position(tp) < ends[tp]]:
            for records in (await reader.getmany(timeout_ms=1000, max_records=5000)).values():
                for record in records:
                    try:
                        event = codec.decode(record.value, PaymentEvent, topic=topic)
                    except CodecError:
                        bad += 1
                        continue
                    if event.tenant == tenant and _within(event.occurred_at, since, until):
                        found.append(event)
    finally:
        await reader.stop()
    return found, bad


def _partition_ids(bootstrap: str, topic: str, security: KafkaSecurity) -> list[int]:
    """The topic's partitions from the admin API (aiokafka only knows subscribed topics)."""
    from confluent_kafka import KafkaException

    from paywatch.errors import InfraError
    from paywatch.kafka.admin import admin_client

    try:
        metadata = admin_client(bootstrap, security=security).list_topics(topic, timeout=30)
    except KafkaException as exc:
        raise InfraError(f"Kafka at {bootstrap} did not answer: {exc}") from exc
    found = metadata.topics.get(topic)
    return [] if found is None or found.error is not None else sorted(found.partitions)


def _within(at: datetime, since: datetime | None, until: datetime | None) -> bool:
    return (since is None or at >= since) and (until is None or at < until)


def cmd_risk_train(settings: Settings, args: argparse.Namespace) -> int:
    """paywatch risk train --tenant T [--from DATE] [--to DATE] [--out PATH] [--version NAME]"""
    events, bad = asyncio.run(read_events(settings, args.tenant, args.since, args.until))
    # Imported here: numpy (the fit) is loaded by this command only, not by every `paywatch`.
    from paywatch.risk.train import evaluate, examples, fit, time_split

    data = examples(events, window_days=args.window_days)
    train, test = time_split(data)
    print(
        f"tenant {args.tenant}: {len(events)} events ({bad} undecodable skipped), "
        f"{len(data)} episodes with a known outcome; train {len(train)}, test {len(test)} "
        f"(latest 20 %, from {test[0].at.isoformat() if test else '-'})"
    )
    _require(train, test)
    now = datetime.now(UTC)
    version = args.version or f"{args.tenant}-{now:%Y%m%dt%H%M%Sz}"
    prior = load_model()
    model = fit(train, l2=args.l2, prior=prior, version=version)
    print(_line(f"trained {version}", evaluate(model, test)))
    print(_line(f"prior {prior.version}", evaluate(prior, test)))
    out = Path(args.out or settings.state_path / "risk-models" / f"{version}.json")
    text = msgspec.json.format(msgspec.json.encode(model), indent=2)
    parse_model(text)  # the file must load where a model is loaded
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(text + b"\n")
    print(f"wrote {out}")
    return 0


def _require(train: list[Example], test: list[Example]) -> None:
    """ConfigError (exit 2) when the split cannot fit or measure a model."""
    if len(train) < MIN_TRAIN or len(test) < MIN_TEST:
        raise ConfigError(
            f"too few examples to train: {len(train)} train / {len(test)} test, need at least "
            f"{MIN_TRAIN} / {MIN_TEST} (a longer history or a wider --from/--to)"
        )
    for name, part in (("train", train), ("test", test)):
        if len({x.label for x in part}) < 2:
            raise ConfigError(f"the {name} examples all have one outcome: nothing to learn")


def _line(name: str, m: Metrics) -> str:
    return (
        f"{name}: auc={m.auc:.4f} log_loss={m.log_loss:.4f} ece={m.ece:.4f} "
        f"(n={m.n}, lost={m.positives})"
    )


def register(sub: Any) -> None:
    """Add `demo generate` and `risk train` to the CLI's subcommands."""
    demo = sub.add_parser("demo", help="demo data").add_subparsers(dest="dcmd", required=True)
    gen = demo.add_parser("generate", help="write a seeded population as generic webhooks")
    gen.add_argument("--tenant", required=True)
    gen.add_argument("--customers", type=int, required=True)
    gen.add_argument("--months", type=int, required=True)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--start", type=_date, help="first billing day (default: months ago)")
    gen.add_argument("--via", choices=("raw", "ingest"), default="raw")
    gen.add_argument("--url", help="ingest base URL for --via ingest (default: local ingest)")
    gen.set_defaults(func=cmd_demo_generate)
    risk = sub.add_parser("risk", help="risk model").add_subparsers(dest="rcmd", required=True)
    tr = risk.add_parser("train", help="fit the risk model on a tenant's history")
    tr.add_argument("--tenant", required=True)
    tr.add_argument("--from", dest="since", type=_date, help="first event time kept")
    tr.add_argument("--to", dest="until", type=_date, help="events before this time only")
    tr.add_argument("--out", help="model file (default <state_dir>/risk-models/<version>.json)")
    tr.add_argument("--version", help="model version (default <tenant>-<UTC timestamp>)")
    tr.add_argument("--window-days", type=int, default=30, help="recovery window (default 30)")
    tr.add_argument("--l2", type=float, default=1.0, help="L2 penalty (default 1.0)")
    tr.set_defaults(func=cmd_risk_train)
