"""Multi-provider demo history: each provider's body normalizes back into the population's
event (what the provider cannot say aside, declared in ``render``), assignment and bytes are
deterministic, and the default all-generic rendering is the population's own webhooks."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest

from paywatch.providers.adyen import adyen
from paywatch.providers.authorizenet import authorizenet
from paywatch.providers.base import Provider
from paywatch.providers.braintree import braintree
from paywatch.providers.checkout import checkout
from paywatch.providers.generic import generic
from paywatch.providers.stripe import stripe
from paywatch.risk import population as pop
from paywatch.risk import render
from paywatch.schemas.coords import Coords
from paywatch.schemas.models import EventType, PaymentEvent, RawWebhook

START = datetime(2025, 1, 1, tzinfo=UTC)
NORMALIZERS: dict[str, Provider] = {
    p.name: p for p in (stripe, braintree, adyen, checkout, authorizenet, generic)
}
FAILED, PAID = EventType.PAYMENT_FAILED, EventType.PAYMENT_SUCCEEDED
UPDATED, LOST = EventType.PAYMENT_METHOD_UPDATED, EventType.INVOICE_UNCOLLECTIBLE
CANCELED = EventType.SUBSCRIPTION_CANCELED
# What each provider's format cannot carry (render's module doc): anything else must match.
MAY_DIFFER = {
    "stripe": {"decline.code"},
    "braintree": {"invoice_ref", "attempt", "amount_minor", "currency", "decline.code"},
    "adyen": {"subscription_ref", "attempt", "decline.code"},
    "checkout": {"attempt", "decline.code"},
    "authorizenet": {"subscription_ref", "attempt", "decline.code"},
}
FALLBACK_DIFFER = {"braintree": {"invoice_ref"}}  # its generic events name its invoices
NATIVE = {  # event types each provider delivers itself; the rest stay generic
    "stripe": {FAILED, PAID, LOST, CANCELED},
    "braintree": {FAILED, PAID, CANCELED},
    "adyen": {FAILED, PAID},
    "checkout": {FAILED, PAID},
    "authorizenet": {FAILED, PAID},
}


@pytest.fixture(scope="module")
def people() -> pop.Population:
    return pop.generate(700, 8, 11, START, tenant="acme")


def _canonical(event: PaymentEvent) -> dict[str, Any]:
    """The fields the brief compares: type, refs, money, decline, attempt, time."""
    decline = event.decline
    return {
        "type": event.type, "invoice_ref": event.invoice_ref,
        "customer_ref": event.customer_ref, "subscription_ref": event.subscription_ref,
        "amount_minor": event.amount_minor, "currency": event.currency,
        "decline.code": decline.code if decline else None,
        "decline.category": decline.category if decline else None,
        "attempt": event.attempt, "occurred_at": event.occurred_at,
    }  # fmt: skip


def _normalize(wire: render.Wire, offset: int) -> PaymentEvent:
    provider = NORMALIZERS[wire.provider]
    raw = RawWebhook(
        ingest_id=f"ing-{offset}", tenant="acme", provider=wire.provider, received_at=START,
        headers={"webhook-id": wire.msg_id, "content-type": wire.content_type}, body=wire.body,
    )  # fmt: skip
    doc = provider.read(wire.body)  # the ingest's card-number scan, then parse
    assert provider.subject(doc)  # the Kafka key names the invoice or customer
    [event] = provider.normalize_doc(raw, doc, Coords("webhooks.raw", 0, offset))
    return event


@pytest.mark.parametrize("name", sorted(NATIVE))
def test_each_provider_round_trips_into_the_same_canonical_event(
    people: pop.Population, name: str
) -> None:
    assignment = render.assign(people.customers, {name: 1}, seed=11)
    kinds: Counter[tuple[str, EventType]] = Counter()
    codes: set[str] = set()
    for offset, (wire, original) in enumerate(
        zip(render.render(people, assignment), people.events, strict=True)
    ):
        if assignment[original.customer_ref or ""] != name:
            continue  # Authorize.Net bills one currency; the others drew generic
        got, want, was = _normalize(wire, offset), wire.expected, _canonical(original)
        assert got.provider == wire.provider and _canonical(got) == _canonical(want), wire.body
        changed = {k for k, v in _canonical(want).items() if v != was[k]}
        allowed = MAY_DIFFER[name] if wire.provider == name else FALLBACK_DIFFER.get(name, set())
        assert changed <= allowed, (name, original.type, changed)
        kinds[wire.provider, original.type] += 1
        if got.decline and got.provider == name:
            codes.add((original.decline.code if original.decline else None) or "")
    assert {t for p, t in kinds if p == name} == NATIVE[name]
    assert {t for p, t in kinds if p == "generic"} == {UPDATED, LOST, CANCELED} - NATIVE[name]
    assert codes == {c[2] for c in pop._DECLINES} | {"expired_card"}  # every decline met


def test_authorizenet_only_bills_the_workers_currency(people: pop.Population) -> None:
    assignment = render.assign(people.customers, {"authorizenet": 1}, seed=11)
    currency = {p.customer_ref: p.currency for p in people.customers}
    assert {currency[c] for c, p in assignment.items() if p == "authorizenet"} == {"USD"}
    assert {currency[c] for c, p in assignment.items() if p == "generic"} == {"EUR", "GBP"}
    euro = render.assign(people.customers, {"authorizenet": 1}, seed=11, anet_currency="EUR")
    assert {currency[c] for c, p in euro.items() if p == "authorizenet"} == {"EUR"}


def test_the_same_seed_gives_the_same_assignment_and_bytes() -> None:
    mix = render.parse_mix("stripe:5,braintree,adyen:2,checkout,authorizenet,generic")

    def run(seed: int) -> tuple[dict[str, str], list[bytes]]:
        people = pop.generate(120, 6, seed, START, tenant="acme")
        assignment = render.assign(people.customers, mix, seed)
        return assignment, [w.body for w in render.render(people, assignment)]

    first, again, other = run(5), run(5), run(6)
    assert first == again
    assert other[0] != first[0] and other[1] != first[1]
    assert set(first[0].values()) == set(render.PROVIDERS)
    counts = Counter(first[0].values())
    assert counts["stripe"] > counts["adyen"] > counts["checkout"] / 2


def test_a_customer_keeps_its_provider_when_the_mix_is_written_in_another_order() -> None:
    people = pop.generate(80, 2, 3, START)
    one = render.assign(people.customers, render.parse_mix("stripe:3,adyen"), 3)
    two = render.assign(people.customers, render.parse_mix("adyen:1,stripe:3"), 3)
    assert one == two and set(one.values()) == {"stripe", "adyen"}


def test_the_default_all_generic_rendering_is_the_populations_webhooks() -> None:
    people = pop.generate(150, 8, 0, START, tenant="demo")
    assignment = render.assign(people.customers, render.parse_mix("generic"), 0)
    wires = list(render.render(people, assignment))
    hooks = list(pop.webhooks(people))
    assert [w.body for w in wires] == [h.body for h in hooks]
    assert [w.msg_id for w in wires] == [h.msg_id for h in hooks]
    assert {w.provider for w in wires} == {"generic"}
    assert [w.expected for w in wires] == [h.event for h in hooks]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "unknown provider ''"),
        ("stripe,paypal", "unknown provider 'paypal'"),
        ("stripe,stripe:2", "listed twice"),
        ("stripe:0", "whole number 1-1000, not '0'"),
        ("adyen:x", "not 'x'"),
        ("adyen:", "not ''"),
        ("adyen:1001", "not '1001'"),
    ],
)
def test_a_bad_mix_is_refused_with_what_is_wrong(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        render.parse_mix(text)


def test_weights_are_read() -> None:
    assert render.parse_mix("stripe:5, adyen:2,generic") == {"stripe": 5, "adyen": 2, "generic": 1}
