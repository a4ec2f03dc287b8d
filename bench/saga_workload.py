"""What bench_saga feeds the saga: a seeded mix of payment events, and synthetic table state.

``events``: a realistic stream for the throughput rounds. Invoices of a few tenants on
the generic provider (paywatch retries), Stripe (retries by itself) and Adyen; each has
one to three failures, mostly soft declines, some hard and fraud ones, on Visa and
Mastercard cards shared by several invoices (Mastercard advice codes included); about a
third end with a success. Events of different invoices interleave; each invoice's events
keep their order and carry distinct ids, so every one of them is a real decision.

``changelog``: records of the saga table's changelog as the Faust table writes them (key
serialized by Faust's ``json`` codec, the entry's own bytes as the value) for ``count``
open sagas built from one ``shell.step`` entry, each with its own invoice, card, timer and
event ids and the partition payments.events gives its key.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka.partitioner import murmur2
from confluent_kafka import Producer
from faust.serializers import codecs

from paywatch.recovery import entry_codec
from paywatch.recovery.clock import SagaClock
from paywatch.recovery.shell import step
from paywatch.recovery.tenant_policy import TenantPolicy
from paywatch.schemas.codec import Codec
from paywatch.schemas.models import (
    Decline,
    DeclineCategory,
    EventType,
    PaymentEvent,
    PaymentMethod,
)
from paywatch.streams.normalize import event_key

TENANTS = ("acme", "globex", "initech", "umbrella", "hooli")
PROVIDERS = {"generic": 45, "stripe": 35, "adyen": 20}
FAILURES = {1: 30, 2: 40, 3: 30}  # failures per invoice
SUCCESS_SHARE = 0.35
SOFT, HARD, FRAUD = DeclineCategory.SOFT, DeclineCategory.HARD, DeclineCategory.FRAUD
# (weight, category, network response code, Mastercard advice code)
DECLINES = [
    (45, SOFT, "51", None),
    (20, SOFT, "05", None),
    (5, SOFT, "51", "02"),
    (3, SOFT, "51", "25"),
    (11, HARD, "14", None),
    (3, HARD, "51", "03"),
    (8, FRAUD, "43", None),
    (5, FRAUD, "59", None),
]
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TEMPLATE_INVOICE = "in_TEMPLATE"
TEMPLATE_CARD = "fp_TEMPLATE"
TEMPLATE_PARTITION = 987654321
TEMPLATE_EVENT_ID = "0be1c4f0-5a9a-4d2e-9c3b-000000000000"


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Faust's and aiokafka's default partitioner give ``key`` (murmur2)."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


def _decline(rng: random.Random, network: str) -> Decline:
    _, category, code, advice = rng.choices(DECLINES, [d[0] for d in DECLINES])[0]
    return Decline(
        code=code,
        category=category,
        network=network,
        network_code=code,
        advice_code=advice if network == "mastercard" else None,
    )


Placed = list[tuple[float, PaymentEvent]]
"""(sort position, event) pairs; positions order events across invoices."""


def _invoice(rng: random.Random, n: int, cards: list[PaymentMethod], start: datetime) -> Placed:
    """(sort position, event) of one invoice: its failures, then maybe its success."""
    tenant, provider = rng.choice(TENANTS), rng.choices(*zip(*PROVIDERS.items(), strict=True))[0]
    card = rng.choice(cards)
    base: dict[str, Any] = {
        "tenant": tenant,
        "provider": provider,
        "source_type": "bench",
        "customer_ref": f"cus_{n}",
        "invoice_ref": f"in_{n:07d}",
        "amount_minor": rng.choice([900, 2900, 4900, 9900]),
        "currency": rng.choice(["EUR", "USD"]),
    }
    position = rng.random()
    failures = rng.choices(list(FAILURES), list(FAILURES.values()))[0]
    out: Placed = []
    for attempt in range(1, failures + 1):
        at = start + timedelta(minutes=60 * position)
        retry_at = at + timedelta(days=3) if provider == "stripe" else None
        event = PaymentEvent(
            event_id=f"bench-{n}-{attempt}",
            type=EventType.PAYMENT_FAILED,
            occurred_at=at,
            decline=_decline(rng, card.brand or "visa"),
            attempt=attempt,
            payment_method=card,
            provider_retry_at=retry_at,
            **base,
        )
        out.append((position, event))
        position += rng.uniform(0.0005, 0.02)
    if rng.random() < SUCCESS_SHARE:
        at = start + timedelta(minutes=60 * position)
        paid = PaymentEvent(
            event_id=f"bench-{n}-paid",
            type=EventType.PAYMENT_SUCCEEDED,
            occurred_at=at,
            payment_method=card,
            **base,
        )
        out.append((position, paid))
    return out


def events(count: int, seed: int, now: datetime) -> list[PaymentEvent]:
    """``count`` events of about count/2.4 invoices, interleaved, all before ``now``."""
    rng = random.Random(seed)
    cards = [
        PaymentMethod(
            brand=rng.choice(["visa", "visa", "mastercard"]),
            last4=f"{rng.randrange(10_000):04d}",
            fingerprint=f"fp_bench_{i}",
        )
        for i in range(max(1, count // 3))
    ]
    start = now - timedelta(minutes=90)  # positions stay below 1.5: every event is in the past
    placed: Placed = []
    n = 0
    while len(placed) < count:
        placed.extend(_invoice(rng, n, cards, start))
        n += 1
    placed = placed[:count]  # the last invoice may lose its tail: still a valid prefix
    placed.sort(key=lambda pair: pair[0])
    return [event for _, event in placed]


Record = tuple[int, bytes, bytes]
"""(partition, key, value) of one Kafka record."""


def event_records(items: list[PaymentEvent], codec: Codec, topic: str, parts: int) -> list[Record]:
    """payments.events records as ingest's normalize step writes them."""
    out = []
    for event in items:
        key = event_key(event)
        out.append((partition_for(key, parts), key, codec.encode(event, topic=topic)))
    return out


def produce(bootstrap: str, topic: str, records: Iterator[Record] | list[Record]) -> int:
    """Write records with an idempotent acks=all producer; the bytes written (values)."""
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 20,
        "batch.size": 1_000_000,
        "queue.buffering.max.kbytes": 512 * 1024,
    })
    size = 0
    for partition, key, value in records:
        while True:
            try:
                producer.produce(topic, value=value, key=key, partition=partition)
                break
            except BufferError:  # the local queue is full: let it drain
                producer.poll(0.05)
        producer.poll(0)
        size += len(value)
    remaining = producer.flush(120)
    if remaining:
        raise RuntimeError(f"{remaining} records to {topic} were not acked")
    return size


def template_entry(now: datetime) -> bytes:
    """One realistic open-saga table entry: a soft Visa decline on the generic provider."""
    event = PaymentEvent(
        event_id=TEMPLATE_EVENT_ID,  # uuid-shaped: varied per saga like the timer ids
        type=EventType.PAYMENT_FAILED,
        tenant="acme",
        provider="generic",
        source_type="bench",
        occurred_at=now,
        customer_ref="cus_template",
        invoice_ref=TEMPLATE_INVOICE,
        amount_minor=4900,
        currency="EUR",
        decline=Decline(code="51", category=SOFT, network="visa", network_code="51"),
        attempt=1,
        payment_method=PaymentMethod(brand="visa", last4="4242", fingerprint=TEMPLATE_CARD),
    )
    out = step(
        None,
        event,
        partition=TEMPLATE_PARTITION,
        wall_now=now,
        clock=SagaClock(),
        policy=TenantPolicy(),
        cards=lambda _key: None,
    )
    assert out.entry is not None and out.timers, "the template saga must be open with timers"
    return out.entry


def changelog(count: int, partitions: int, now: datetime) -> Iterator[Record]:
    """``count`` saga-table changelog records (see the module docstring).

    The template's varying strings are replaced by others of the same length in its
    bytes (msgpack strings carry their length), the header gets each saga's partition.
    """
    template = template_entry(now)
    head = entry_codec.read_head(template)
    body = template[entry_codec.body_offset(template) :]
    pattern = re.compile(f"{UUID.pattern}|{TEMPLATE_INVOICE}|{TEMPLATE_CARD}".encode())
    for i in range(count):
        invoice = f"in_{i:08d}".encode()
        card = f"fp_s{i % max(1, count * 3 // 4):07d}".encode()
        assert len(invoice) == len(TEMPLATE_INVOICE) and len(card) == len(TEMPLATE_CARD)

        def vary(
            match: re.Match[bytes], i: int = i, invoice: bytes = invoice, card: bytes = card
        ) -> bytes:
            text = match.group(0)
            if text == TEMPLATE_INVOICE.encode():
                return invoice
            if text == TEMPLATE_CARD.encode():
                return card
            return text[:24] + f"{i:012x}".encode()

        key = f"acme/{invoice.decode()}"
        partition = partition_for(key.encode(), partitions)
        first_id = vary(pattern.fullmatch(head.first_id.encode()) or _no_match(head.first_id))
        value = entry_codec.pack_head(
            partition, head.decided_us, head.timers, head.first_due_us, first_id
        ) + pattern.sub(vary, body)
        yield partition, codecs.dumps("json", key), value


def _no_match(text: str) -> re.Match[bytes]:
    raise AssertionError(f"the template's first timer id is not a uuid: {text}")


def now() -> datetime:
    """The wall clock (the saga clock at scale 1)."""
    return datetime.now(UTC)
