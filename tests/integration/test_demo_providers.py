"""`paywatch demo generate --providers` through the real worker: each customer's events
arrive as its provider's webhooks and come out of normalize as the population's events."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from paywatch.kafka.codec import make_codec
from paywatch.providers.base import event_id
from paywatch.providers.registry import PROVIDERS
from paywatch.risk import population as pop
from paywatch.risk import render
from paywatch.schemas.models import PaymentEvent, RawWebhook
from paywatch.settings import Settings
from tests.integration.test_cli import paywatch
from tests.integration.test_risk_train_cli import ingest as ingest  # the real-ingest fixture
from tests.kafka_helpers import eventually, topic_records
from tests.procs import log_tail, paywatch_process

START = datetime(2025, 1, 1, tzinfo=UTC)
ARGS = ("--customers", "40", "--months", "3", "--seed", "5", "--start", "2025-01-01")


def _canonical(event: PaymentEvent) -> dict[str, Any]:
    decline = event.decline
    return {
        "type": event.type, "invoice_ref": event.invoice_ref,
        "customer_ref": event.customer_ref, "subscription_ref": event.subscription_ref,
        "amount_minor": event.amount_minor, "currency": event.currency,
        "decline": (decline.code, decline.category) if decline else None,
        "attempt": event.attempt, "occurred_at": event.occurred_at,
    }  # fmt: skip


def _expected(tenant: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """event id -> (provider, canonical fields) of what the CLI must have written."""
    people = pop.generate(40, 3, 5, START, tenant=tenant)
    chosen = render.assign(people.customers, render.parse_mix("stripe:1,braintree:1"), 5)
    assert set(chosen.values()) == {"stripe", "braintree"}  # the seed gives both
    found = {}
    for wire in render.render(people, chosen):
        provider = PROVIDERS[wire.provider]
        evt = provider.provider_event_id(provider.parse(wire.body))
        found[event_id(tenant, wire.provider, evt)] = (wire.provider, _canonical(wire.expected))
    return found


async def test_raw_webhooks_of_two_providers_normalize_into_the_populations_events(
    test_settings: Settings, unique: str, tmp_path: Path
) -> None:
    run = paywatch(test_settings, "demo", "generate", "--tenant", unique, *ARGS,
                   "--providers", "stripe:1,braintree:1", "--via", "raw")  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    expected = _expected(unique)
    assert f"wrote {len(expected)} (stripe " in run.stdout and "braintree " in run.stdout
    assert "customers per provider: stripe " in run.stdout, run.stdout

    codec, raw_topic = make_codec(test_settings), test_settings.topic("webhooks.raw")
    records = await topic_records(str(test_settings.kafka_bootstrap), raw_topic)
    for record in records:  # keyed as ingest keys each provider's deliveries
        raw = codec.decode(record.value, RawWebhook, topic=raw_topic)
        assert record.key == f"{unique}/{raw.provider}/{raw.subject}".encode()

    log, topic = tmp_path / "worker.log", test_settings.topic("payments.events")
    with paywatch_process(test_settings, "run", "worker", log=log) as worker:

        async def normalized() -> list[PaymentEvent]:
            assert worker.poll() is None, log_tail(log)
            found = await topic_records(str(test_settings.kafka_bootstrap), topic)
            return [codec.decode(r.value, PaymentEvent) for r in found] if len(found) >= len(
                expected
            ) else []  # fmt: skip

        events = await eventually(normalized, timeout=180, what=f"{len(expected)} events")

    got = {e.event_id: (e.provider, _canonical(e)) for e in events}
    assert got == expected
    assert {p for p, _ in got.values()} >= {"stripe", "braintree"}


SECRETS = {
    "generic": "signing_secret=whsec_ZGVtby1nZW5lcmljLXNlY3JldC0zMi1ieXRlcyEhIQ==",
    "stripe": "signing_secret=whsec_demo_stripe",
    "braintree": "public_key=demo_bt_public\nprivate_key=demo_bt_private",
    "adyen": "hmac_key=" + "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056",
    "checkout": "signature_key=demo_cko_key",
    "authorizenet": "signature_key=" + "A1B2" * 32,
}


def _tenant(settings: Settings, name: str, providers: list[str]) -> None:
    assert paywatch(settings, "tenant", "create", name).returncode == 0
    for provider in providers:
        lines = SECRETS[provider] + "\n"
        run = paywatch(settings, "tenant", "secret", name, provider, "-", input=lines)
        assert run.returncode == 0, run.stdout + run.stderr


async def test_via_ingest_signs_each_providers_webhooks_as_that_provider_does(
    test_settings: Settings, unique: str, ingest: str
) -> None:
    mix = ",".join(render.PROVIDERS)
    args = ("--customers", "30", "--months", "2", "--seed", "3", "--start", "2025-01-01")
    half = f"{unique}h"  # secrets for two of the six providers only
    _tenant(test_settings, half, ["stripe", "generic"])
    run = paywatch(test_settings, "demo", "generate", "--tenant", half, *args,
                   "--providers", mix, "--via", "ingest", "--url", ingest)  # fmt: skip
    assert run.returncode == 2 and "wrote" not in run.stdout, run.stdout + run.stderr
    assert f"tenant {half} has no adyen hmac_key" in run.stderr, run.stderr
    assert f"paywatch tenant secret {half} adyen -" in run.stderr, run.stderr

    _tenant(test_settings, unique, list(render.PROVIDERS))
    run = paywatch(test_settings, "demo", "generate", "--tenant", unique, *args,
                   "--providers", mix, "--via", "ingest", "--url", ingest)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    people = pop.generate(30, 2, 3, START, tenant=unique)
    wires = list(render.render(people, render.assign(people.customers, render.parse_mix(mix), 3)))
    assert f"wrote {len(wires)} (" in run.stdout, run.stdout
    codec, topic = make_codec(test_settings), test_settings.topic("webhooks.raw")
    records = await topic_records(str(test_settings.kafka_bootstrap), topic)
    raws = [codec.decode(r.value, RawWebhook, topic=topic) for r in records]
    assert {r.tenant for r in raws} == {unique}  # the refused run wrote nothing
    assert len(raws) == len(wires)
    sent = {w.provider for w in wires}
    assert {r.provider for r in raws} == sent and len(sent) >= 5, sent


async def test_a_seed_whose_refs_read_as_card_numbers_is_refused_before_anything_is_written(
    test_settings: Settings, unique: str
) -> None:
    args = ("--customers", "30", "--months", "2", "--seed", "2", "--start", "2025-01-01")
    people = pop.generate(30, 2, 2, START, tenant=unique)
    assert any("_26343786_00005" in c.customer_ref for c in people.customers)  # Luhn-valid
    for via in ("raw", "ingest"):  # refused before the ingest is even called
        run = paywatch(test_settings, "demo", "generate", "--tenant", unique, *args,
                       "--providers", "braintree", "--via", via)  # fmt: skip
        assert run.returncode == 2 and "wrote" not in run.stdout, run.stdout + run.stderr
        assert "seed 2 gives braintree webhook gen_26343786_" in run.stderr, run.stderr
        assert "choose another --seed" in run.stderr
    raw = await topic_records(
        str(test_settings.kafka_bootstrap), test_settings.topic("webhooks.raw")
    )
    assert raw == []
