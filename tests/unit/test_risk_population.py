"""The seeded population: deterministic, realistic rates, truth that matches its events, and
generic webhook bodies that the generic normalizer turns back into the same events."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest

from paywatch.providers.base import event_id
from paywatch.providers.generic import generic
from paywatch.risk.population import Population, generate, webhooks
from paywatch.schemas.models import DeclineCategory, EventType, RawWebhook

START = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def big() -> Population:
    return generate(2000, 12, 7, START, tenant="acme")


def test_the_same_seed_gives_the_same_population_and_another_seed_another() -> None:
    one, two = generate(50, 6, 3, START), generate(50, 6, 3, START)
    assert one == two
    assert generate(50, 6, 4, START).events != one.events


def test_events_are_time_ordered_with_the_normalizers_ids(big: Population) -> None:
    times = [e.occurred_at for e in big.events]
    assert times == sorted(times)
    assert len({e.event_id for e in big.events}) == len(big.events)
    for msg_id, event in zip(big.webhook_ids[:500], big.events[:500], strict=True):
        assert event.event_id == event_id("acme", "generic", msg_id)


def test_rates_are_in_the_published_ranges(big: Population) -> None:
    failed = len(big.truth)
    assert 0.01 < failed / big.renewals < 0.08  # a few % of renewals fail
    lost = sum(t.lost for t in big.truth) / failed
    assert 0.35 < lost < 0.65  # about half of the failed invoices recover
    categories = Counter(t.category for t in big.truth)
    assert categories.most_common(1)[0][0] is DeclineCategory.SOFT
    assert set(categories) <= {
        DeclineCategory.SOFT, DeclineCategory.HARD, DeclineCategory.ACTION, DeclineCategory.FRAUD,
    }  # fmt: skip
    codes = Counter(e.decline.code for e in big.events if e.decline and e.attempt == 1)
    assert codes.most_common(1)[0][0] == "insufficient_funds"
    assert codes["expired_card"] > 0


def test_the_truth_matches_the_events(big: Population) -> None:
    closes: dict[str, list[tuple[datetime, EventType]]] = {}
    attempts: dict[str, list[int]] = {}
    for e in big.events:
        if e.type is EventType.PAYMENT_FAILED:
            attempts.setdefault(e.invoice_ref, []).append(e.attempt or 0)
        elif e.type is not EventType.PAYMENT_METHOD_UPDATED:
            closes.setdefault(e.invoice_ref, []).append((e.occurred_at, e.type))
    recovery_days = []
    for t in big.truth:
        assert attempts[t.invoice_ref] == list(range(1, len(attempts[t.invoice_ref]) + 1))
        [(at, kind)] = closes[t.invoice_ref]  # exactly one end per failed invoice
        assert (kind is not EventType.PAYMENT_SUCCEEDED) == t.lost
        assert 0 < t.p_lost < 1
        if not t.lost:
            recovery_days.append((at - t.failed_at).days)
    assert max(recovery_days) <= 12 and sorted(recovery_days)[len(recovery_days) // 2] >= 1


def test_the_latent_chance_explains_the_outcomes(big: Population) -> None:
    risky = [t.lost for t in big.truth if t.p_lost > 0.7]
    safe = [t.lost for t in big.truth if t.p_lost < 0.3]
    assert sum(risky) / len(risky) > 0.6 and sum(safe) / len(safe) < 0.4


def test_generic_bodies_normalize_back_into_the_same_events() -> None:
    people = generate(150, 12, 11, START, tenant="acme")
    kinds = Counter()
    for offset, hook in enumerate(webhooks(people)):
        raw = RawWebhook(
            ingest_id=f"ing-{offset}", tenant="acme", provider="generic", received_at=START,
            headers={"webhook-id": hook.msg_id}, body=hook.body,
        )  # fmt: skip
        [event] = generic.normalize(raw, "webhooks.raw", 0, offset)
        assert event.raw is not None and event.raw.provider_event_id == hook.msg_id
        assert event.model_copy(update={"raw": None}) == hook.event
        assert generic.provider_event_id(generic.parse(hook.body)) == hook.msg_id  # dedupe key
        kinds[event.type] += 1
    assert set(kinds) == {
        EventType.PAYMENT_FAILED, EventType.PAYMENT_SUCCEEDED, EventType.PAYMENT_METHOD_UPDATED,
        EventType.INVOICE_UNCOLLECTIBLE, EventType.SUBSCRIPTION_CANCELED,
    }  # fmt: skip


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        generate(0, 3, 1, START)
    with pytest.raises(ValueError):
        generate(3, 3, 1, datetime(2025, 1, 1))  # naive
