"""Training the risk model: labels, no leakage, the time split, the fit and its metrics."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import numpy as np
import pytest

from paywatch.risk.features import FEATURE_NAMES
from paywatch.risk.model import MAX_LOGIT, load_model, parse_model
from paywatch.risk.population import generate
from paywatch.risk.train import Example, evaluate, examples, fit, metrics, time_split
from paywatch.schemas.models import Decline, DeclineCategory, EventType, PaymentEvent

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
E = EventType


def ev(n: int, kind: EventType, day: float, invoice: str, customer: str = "cus_1") -> PaymentEvent:
    failed = kind is E.PAYMENT_FAILED
    return PaymentEvent(
        event_id=f"ev_{n}", type=kind, tenant="acme", provider="generic", source_type="t",
        occurred_at=T0 + day * DAY, customer_ref=customer, invoice_ref=invoice,
        decline=Decline(category=DeclineCategory.SOFT) if failed else None,
        attempt=1 if failed else None,
    )  # fmt: skip


def labels(events: list[PaymentEvent], **kw: Any) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for x in examples(events, **kw):
        out.setdefault(x.invoice_ref, []).append(x.label)
    return out


def test_labels_on_hand_made_histories() -> None:
    events = [
        ev(1, E.PAYMENT_FAILED, 0, "in_quick"),
        ev(2, E.PAYMENT_FAILED, 2, "in_quick"),  # a retry: same episode, no new example
        ev(3, E.PAYMENT_SUCCEEDED, 5, "in_quick"),
        ev(4, E.PAYMENT_FAILED, 1, "in_late"),
        ev(5, E.PAYMENT_SUCCEEDED, 40, "in_late"),  # after the 30-day window: lost
        ev(6, E.PAYMENT_FAILED, 2, "in_void", "cus_2"),
        ev(7, E.INVOICE_UNCOLLECTIBLE, 10, "in_void", "cus_2"),
        ev(8, E.PAYMENT_FAILED, 3, "in_silent", "cus_3"),  # never closed, window over
        ev(9, E.PAYMENT_FAILED, 50, "in_quick"),  # a new episode after the recovery
        ev(10, E.PAYMENT_SUCCEEDED, 51, "in_quick"),
        ev(11, E.PAYMENT_FAILED, 60, "in_recent", "cus_4"),  # window still running: left out
        ev(12, E.PAYMENT_SUCCEEDED, 81, "in_other", "cus_5"),  # the data end
    ]
    assert labels(events) == {
        "in_quick": [0, 0],
        "in_late": [1],
        "in_void": [1],
        "in_silent": [1],
    }
    assert labels(events, window_days=45) == {
        "in_quick": [0],  # the day-50 episode's 45 days are not over at day 81
        "in_late": [0],
        "in_void": [1],
        "in_silent": [1],
    }


def test_features_are_those_as_of_the_first_failure() -> None:
    events = [
        ev(1, E.PAYMENT_SUCCEEDED, 0, "in_0"),
        ev(2, E.PAYMENT_FAILED, 30, "in_1"),
        ev(3, E.PAYMENT_FAILED, 31, "in_1"),
        ev(4, E.PAYMENT_SUCCEEDED, 70, "in_2"),
    ]
    [x] = examples(events)
    values = dict(zip(FEATURE_NAMES, x.features, strict=True))
    assert values["failures_7d"] == 1 and values["open_invoices"] == 1
    assert values["days_since_success"] == 30 and values["invoices_recovered"] == 0


def test_no_leakage_later_events_never_change_an_example() -> None:
    people = generate(600, 12, 5, T0)
    cut = T0 + 200 * DAY
    early = [e for e in people.events if e.occurred_at < cut]
    before = examples(early)
    after = {(x.tenant, x.invoice_ref, x.at): x for x in examples(people.events)}
    assert len(before) > 50 and len(after) > len(before)
    for x in before:
        assert after[(x.tenant, x.invoice_ref, x.at)] == x
    # and the input order does not matter
    assert examples(list(reversed(early))) == before


def test_the_time_split_tests_on_the_latest_and_purges_overlapping_labels() -> None:
    data = examples(generate(800, 12, 9, T0).events)
    train, test = time_split(data, test_share=0.25)
    assert abs(len(test) - round(len(data) * 0.25)) <= 1
    begins = min(x.at for x in test)
    assert all(x.at <= begins and x.decided_at <= begins for x in train)
    purged = [x for x in data if x not in train and x not in test]
    assert purged and all(x.decided_at > begins for x in purged)
    with pytest.raises(ValueError):
        time_split(data, test_share=1.0)


def test_metrics_on_known_scores() -> None:
    y = np.array([0, 0, 1, 1], dtype=np.float64)
    perfect = metrics(np.array([0.1, 0.2, 0.8, 0.9]), y)
    assert perfect.auc == 1.0 and perfect.n == 4 and perfect.positives == 2
    assert perfect.ece == pytest.approx(0.15)
    assert perfect.log_loss == pytest.approx(-(math.log(0.9) + math.log(0.8)) / 2)
    ties = metrics(np.array([0.5, 0.5, 0.5, 0.5]), y)
    assert ties.auc == 0.5 and ties.ece == pytest.approx(0.0)
    assert math.isnan(metrics(np.array([0.3, 0.4]), np.array([1.0, 1.0])).auc)


@pytest.fixture(scope="module")
def trained() -> tuple[Any, list[Example]]:
    train, _ = time_split(examples(generate(3000, 12, 1, T0).events))
    other = examples(generate(3000, 12, 2, T0).events)
    return fit(train, version="acme-test"), other


def test_a_model_trained_on_one_seed_beats_the_prior_on_another(
    trained: tuple[Any, list[Example]],
) -> None:
    model, other = trained
    mine, prior = evaluate(model, other), evaluate(load_model(), other)
    # Measured (seeds 1 -> 2): trained AUC 0.62, prior 0.57; the Bayes bound given the
    # latent truth is 0.74 (bench/bench_risk.py). Across seeds 10-15 the trained AUC was
    # 0.59-0.64 and its log loss always below the prior's.
    assert mine.auc > prior.auc and mine.auc >= 0.58
    assert mine.log_loss < prior.log_loss
    assert mine.n == len(other) > 500


def test_a_written_model_loads_and_keeps_the_prior_bands(
    trained: tuple[Any, list[Example]],
) -> None:
    model, _ = trained
    loaded = parse_model(msgspec.json.encode(model))
    assert loaded == model and loaded.bands == load_model().bands
    assert list(loaded.features) == list(FEATURE_NAMES)


def test_the_logit_bound_is_kept_by_raising_l2() -> None:
    data = examples(generate(800, 12, 3, T0).events)
    model = fit(data, l2=1e-9)
    bound = abs(model.intercept) + model.clip * sum(abs(w.weight) for w in model.features.values())
    assert bound <= MAX_LOGIT
    parse_model(msgspec.json.encode(model))
    if "l2 raised" not in model.doc:
        pytest.fail(f"l2=1e-9 did not need shrinking (bound {bound:.2f}): the test proves nothing")


def test_fit_needs_both_outcomes() -> None:
    data = examples(generate(300, 12, 3, T0).events)
    with pytest.raises(ValueError, match="both outcomes"):
        fit([x for x in data if x.label == 1])
