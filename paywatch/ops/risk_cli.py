"""`paywatch demo generate` and `paywatch risk train`: a seeded history in, a fitted model out.

``demo generate`` writes a generated population (``paywatch.risk.population``) as webhooks of
each customer's provider (``--providers``, ``paywatch.risk.render``; generic by default):
``--via raw`` appends RawWebhook records to ``webhooks.raw`` as ingest would (generic ones with
headers ``webhook-id`` / ``webhook-timestamp``; no signature, since nothing after ingest
verifies one), ``--via ingest`` POSTs them signed with the tenant's secret for each provider
(all checked before the first is sent), a few at a time; the first refusal or unreachable
ingest stops the run with the ingest's answer. Event ids are deterministic, so writing the
same population twice is deduplicated by normalize.

``risk train`` reads the whole ``payments.events`` log without a consumer group (nothing is
committed, nothing moves for the worker), keeps one tenant's events in ``[--from, --to)``,
fits on the earlier 80 % of episodes and prints AUC, log loss and calibration error of the
new model and of the packaged prior on the same held-out later 20 %.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode

import msgspec

from paywatch.errors import ConfigError, InfraError, PaywatchError
from paywatch.ops.infra import resolve_endpoints
from paywatch.risk import population as pop
from paywatch.risk import render
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


def _mix(text: str) -> dict[str, int]:
    """--providers: a usage error (exit 2) that says what is wrong with the list."""
    try:
        return render.parse_mix(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def cmd_demo_generate(settings: Settings, args: argparse.Namespace) -> int:
    """paywatch demo generate --tenant T --customers N --months M [--seed S] [--via raw|ingest]"""
    if args.customers < 1 or args.months < 1:
        raise ConfigError("--customers and --months must be at least 1")
    start = args.start or _default_start(args.months)
    people = pop.generate(args.customers, args.months, args.seed, start, tenant=args.tenant)
    mix = args.providers or {"generic": 1}
    chosen = render.assign(people.customers, mix, args.seed, settings.authorizenet_currency)
    hooks = list(render.render(people, chosen))
    _readable(hooks, args.via, args.seed)
    if args.via == "raw":
        written = asyncio.run(_append_raw(settings, args.tenant, hooks))
    else:
        written = asyncio.run(_post_ingest(settings, args, hooks))
    lost = sum(t.lost for t in people.truth)
    print(
        f"wrote {written} {_kinds(hooks)} webhooks for tenant {args.tenant} via {args.via}: "
        f"{len(people.customers)} customers, {people.renewals} renewals, "
        f"{len(people.truth)} failed invoices ({lost} lost, {len(people.truth) - lost} recovered)"
    )
    if people.events:
        first, last = people.events[0].occurred_at, people.events[-1].occurred_at
        print(f"seed {args.seed}, events from {first.isoformat()} to {last.isoformat()}")
    if set(mix) != {"generic"}:
        print("customers per provider: " + _counts(Counter(chosen.values())))
    return 0


def _readable(hooks: list[render.Wire], via: str, seed: int) -> None:
    """ConfigError before anything is written when a body would be refused downstream.

    A population's refs can hold a Luhn-valid digit run (``cus_26343786_00005``, when the
    seed's 8-hex prefix happens to be all digits): the ingest refuses such a body as a card
    number (422), and so does every ``parse`` but Stripe's (this command's raw records and
    the worker's normalize); found halfway, the run would stop with part of it written.
    ``parse`` is what the raw path runs; ``read`` adds the ingest's raw-byte scan.
    """
    from paywatch.errors import CardDataError
    from paywatch.providers.registry import PROVIDERS

    for hook in hooks:
        provider = PROVIDERS[hook.provider]
        try:
            provider.read(hook.body) if via == "ingest" else provider.parse(hook.body)
        except CardDataError as exc:
            raise ConfigError(
                f"seed {seed} gives {hook.provider} webhook {hook.msg_id} a ref that reads as a "
                f"card number ({exc}); the {via} path would refuse it: choose another --seed"
            ) from exc


def _kinds(hooks: list[render.Wire]) -> str:
    """``generic`` alone (today's wording), else the webhooks per provider."""
    counts = Counter(h.provider for h in hooks)
    return "generic" if set(counts) <= {"generic"} else f"({_counts(counts)})"


def _counts(counts: Counter[str]) -> str:
    return ", ".join(f"{name} {counts[name]}" for name in render.PROVIDERS if counts[name])


def _default_start(months: int) -> datetime:
    """Today (UTC midnight) minus the population's span, so the history ends about now."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - months * pop.CYCLE - pop.LOST_AFTER


def _raw(tenant: str, hook: render.Wire, now: datetime) -> RawWebhook:
    """The record ingest would append for ``hook`` (its key subject chosen as ingest does)."""
    from paywatch.providers.registry import PROVIDERS

    provider = PROVIDERS[hook.provider]
    headers = {"content-type": hook.content_type, "user-agent": USER_AGENT}
    if hook.provider == "generic":
        headers |= {"webhook-id": hook.msg_id, "webhook-timestamp": str(int(now.timestamp()))}
    return RawWebhook(
        ingest_id=str(uuid.uuid4()), tenant=tenant, provider=hook.provider, received_at=now,
        headers=headers, body=hook.body, subject=provider.subject(provider.parse(hook.body)),
    )  # fmt: skip


async def _append_raw(settings: Settings, tenant: str, hooks: list[render.Wire]) -> int:
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
            key = raw_key(tenant, hook.provider, raw.subject).encode()
            futures.append(await producer.send(topic, codec.encode(raw, topic=topic), key=key))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return len(hooks)


async def _post_ingest(
    settings: Settings, args: argparse.Namespace, hooks: list[render.Wire]
) -> int:
    """POST every webhook, signed, to the ingest; the first refusal stops them all."""
    import httpx

    names = sorted({h.provider for h in hooks})
    secrets = await _secrets(settings, args.tenant, names)
    base = (args.url or f"http://127.0.0.1:{settings.ingest_port}").rstrip("/")
    url = f"{base}/webhooks/{{}}/{args.tenant}"
    pending, accepted = iter(hooks), 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal accepted
        for hook in pending:  # one iterator shared by the workers: each hook is sent once
            secret = secrets[hook.provider]
            await _post(client, url.format(hook.provider), hook, secret, settings)
            accepted += 1

    try:
        # A TaskGroup cancels the other workers at the first failure: no hook is sent after it.
        async with httpx.AsyncClient(timeout=POST_TIMEOUT_S) as client, asyncio.TaskGroup() as tg:
            for _ in range(POST_CONCURRENCY):
                tg.create_task(worker(client))
    except ExceptionGroup as group:
        first = group.exceptions[0]
        error = _stopped(first, url.format("…"), accepted, len(hooks))
        if error is None:
            raise  # not a refusal but a bug: its traceback is wanted
        raise error from first
    return accepted


async def _post(
    client: httpx.AsyncClient,
    url: str,
    hook: render.Wire,
    secret: Mapping[str, str],
    settings: Settings,
) -> None:
    """POST one webhook signed now (Stripe and generic refuse timestamps over 5 minutes old)."""
    headers = {"content-type": hook.content_type, "user-agent": USER_AGENT}
    body, signed = _SIGNERS[hook.provider](hook, secret, settings, int(time.time()))
    reply = await client.post(url, content=body, headers=headers | signed)
    if not 200 <= reply.status_code < 300:  # 2xx is also the answer to a duplicate
        raise _Refused(reply.status_code, f"{hook.provider} {hook.msg_id}", reply.text)


Signed = tuple[bytes, dict[str, str]]
"""The body as sent (Braintree and Adyen sign inside it) and the signature headers."""


def _sign_generic(hook: render.Wire, secret: Mapping[str, str], _: Settings, now: int) -> Signed:
    from paywatch.providers.generic.signature import secret_key, sign

    key = secret_key(secret["signing_secret"])
    if key is None:  # _usable checked it before the first was sent
        raise ConfigError("the generic signing_secret is not whsec_<base64>")
    stamp = str(now)
    signature = sign(key, hook.msg_id, stamp, hook.body)
    return hook.body, {"webhook-id": hook.msg_id, "webhook-timestamp": stamp,
                       "webhook-signature": signature}  # fmt: skip


def _sign_stripe(hook: render.Wire, secret: Mapping[str, str], _: Settings, now: int) -> Signed:
    mac = hmac.new(secret["signing_secret"].encode(), b"%d." % now + hook.body, hashlib.sha256)
    return hook.body, {"stripe-signature": f"t={now},v1={mac.hexdigest()}"}


def _sign_checkout(hook: render.Wire, secret: Mapping[str, str], _: Settings, now: int) -> Signed:
    from paywatch.providers.checkout.provider import sign

    return hook.body, {"cko-signature": sign(hook.body, secret["signature_key"])}


def _sign_anet(hook: render.Wire, secret: Mapping[str, str], cfg: Settings, now: int) -> Signed:
    from paywatch.providers.authorizenet.signature import hmac_keys, sign

    key = hmac_keys(secret["signature_key"], cfg.authorizenet_key_form)[0]
    return hook.body, {"x-anet-signature": "sha512=" + sign(hook.body, key).decode()}


def _sign_braintree(hook: render.Wire, secret: Mapping[str, str], _: Settings, now: int) -> Signed:
    from paywatch.providers.braintree.signature import sign_payload

    [payload] = parse_qs(hook.body.decode("ascii"))["bt_payload"]
    signature = f"{secret['public_key']}|{sign_payload(payload, secret['private_key'])}"
    form = urlencode({"bt_signature": signature, "bt_payload": payload})
    return form.encode("ascii"), {}


def _sign_adyen(hook: render.Wire, secret: Mapping[str, str], _: Settings, now: int) -> Signed:
    from paywatch.providers.adyen.signature import sign

    doc = json.loads(hook.body)
    for entry in doc["notificationItems"]:
        item = entry["NotificationRequestItem"]
        item["additionalData"]["hmacSignature"] = sign(item, _adyen_key(secret)).decode()
    return json.dumps(doc, separators=(",", ":")).encode(), {}


def _adyen_key(secret: Mapping[str, str]) -> bytes:
    return bytes.fromhex(secret["hmac_key"].strip())


_SIGNERS: dict[str, Callable[[render.Wire, Mapping[str, str], Settings, int], Signed]] = {
    "generic": _sign_generic,
    "stripe": _sign_stripe,
    "checkout": _sign_checkout,
    "authorizenet": _sign_anet,
    "braintree": _sign_braintree,
    "adyen": _sign_adyen,
}


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
    401: " (does the ingest's secret for this provider and tenant match this stack's?)",
    404: " (the ingest's stack has no such tenant, or --url names something else)",
}


async def _secrets(settings: Settings, tenant: str, names: list[str]) -> dict[str, dict[str, str]]:
    """The tenant's current secret set per provider, each usable for signing, or ConfigError
    naming the `paywatch tenant secret` to run: checked before anything is sent."""
    from paywatch.db import create_pool
    from paywatch.tenants.crypto import SecretBox
    from paywatch.tenants.store import valid_secrets

    box = SecretBox.from_settings(settings)
    pool = await create_pool(resolve_endpoints(settings).dsn, min_size=1, max_size=1)
    found: dict[str, dict[str, str]] = {}
    try:
        async with pool.acquire() as conn:
            for name in names:
                sets = await valid_secrets(conn, box, tenant, name, timedelta(0))
                if sets is None:
                    raise ConfigError(f"unknown tenant {tenant} (paywatch tenant create)")
                found[name] = _usable(tenant, name, sets[0] if sets else {})
    finally:
        await pool.close()
    return found


def _usable(tenant: str, provider: str, secret: dict[str, str]) -> dict[str, str]:
    """``secret`` when it holds what signing for ``provider`` needs, else ConfigError."""
    from paywatch.providers.generic.signature import secret_key
    from paywatch.providers.registry import PROVIDERS

    needed = PROVIDERS[provider].secret_names
    missing = [n for n in needed if not secret.get(n)]
    if missing:
        raise ConfigError(
            f"tenant {tenant} has no {provider} {' and '.join(missing)}: store it with "
            f"`paywatch tenant secret {tenant} {provider} -` ({'=… '.join(needed)}=… on stdin)"
        )
    if provider == "generic" and secret_key(secret["signing_secret"]) is None:
        raise ConfigError(f"tenant {tenant}'s generic signing_secret is not whsec_<base64>")
    if provider == "adyen":
        try:
            _adyen_key(secret)
        except ValueError:
            raise ConfigError(f"tenant {tenant}'s adyen hmac_key is not hex") from None
    return secret


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
    gen = demo.add_parser("generate", help="write a seeded population as provider webhooks")
    gen.add_argument("--tenant", required=True)
    gen.add_argument("--customers", type=int, required=True)
    gen.add_argument("--months", type=int, required=True)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--start", type=_date, help="first billing day (default: months ago)")
    gen.add_argument("--via", choices=("raw", "ingest"), default="raw")
    gen.add_argument(
        "--providers",
        type=_mix,
        help="customers' providers, weights optional: stripe:5,adyen:2,generic (default generic)",
    )
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
