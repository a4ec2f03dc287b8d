"""The risk model: loading and checking files, scores, explanations, and ``changed``."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paywatch.risk.features import FEATURE_NAMES, CustomerFeatures, evolve, vector
from paywatch.risk.model import (
    MAX_LOGIT,
    Reason,
    RiskModel,
    Score,
    band,
    changed,
    contributions,
    load_model,
    model_from,
    parse_model,
    score,
    sigmoid,
)
from paywatch.schemas.models import (
    Decline,
    DeclineCategory,
    EventType,
    PaymentEvent,
    PaymentMethod,
    RiskBand,
)

NOW = datetime(2026, 6, 1, tzinfo=UTC)
DAY = timedelta(days=1)
E = EventType
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def event(i: int, type: EventType, days_ago: float, invoice: str, **fields: Any) -> PaymentEvent:
    """A PaymentEvent of customer cus_1, ``days_ago`` before NOW."""
    return PaymentEvent(
        event_id=f"ev_{i}",
        type=type,
        tenant="acme",
        provider="stripe",
        source_type="test",
        occurred_at=NOW - days_ago * DAY,
        customer_ref="cus_1",
        invoice_ref=invoice,
        **fields,
    )


def failure(i: int, days_ago: float, invoice: str, category: DeclineCategory) -> PaymentEvent:
    decline = Decline(category=category)
    money = {"amount_minor": 4_900, "currency": "usd"}
    return event(i, E.PAYMENT_FAILED, days_ago, invoice, decline=decline, attempt=1, **money)


def fold(events: list[PaymentEvent]) -> CustomerFeatures:
    state = CustomerFeatures()
    for e in events:
        state = evolve(state, e)
    return state


def logit_of(value: float) -> float:
    return math.log(value) - math.log1p(-value)


def model_json(**changes: Any) -> dict[str, Any]:
    """The packaged risk-v1 file as a dict, with top-level ``changes``."""
    text = (resources.files("paywatch.risk") / "models" / "risk-v1.json").read_text()
    data: dict[str, Any] = json.loads(text)
    return data | changes


# --- loading ------------------------------------------------------------------------------


def test_the_packaged_model_loads_is_cached_and_says_it_is_priors() -> None:
    model = load_model()
    assert model.version == "risk-v1"
    assert load_model("risk-v1") is model
    assert "PRIORS" in model.doc and "NOT TRAINED" in model.doc
    assert set(model.features) == set(FEATURE_NAMES)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            lambda m: m["features"].pop("card_expired"),
            "no weight for features \\['card_expired'\\]",
        ),
        (lambda m: m["features"].update(shoe_size=m["features"]["providers"]), "unknown features"),
        (lambda m: m["features"]["providers"].update(scale=0), "providers: scale must be > 0"),
        (lambda m: m["features"]["providers"].update(scale=-1.5), "providers: scale must be > 0"),
        (lambda m: m["bands"].update(HIGH=0.1), "must increase strictly"),
        (lambda m: m["bands"].update(CRITICAL=1.0), "within \\(0, 1\\)"),
        (lambda m: m["bands"].pop("MEDIUM"), "bands must give exactly"),
        (lambda m: m.update(clip=0), "clip must be > 0"),
        (lambda m: m.update(clip=10), "sum\\|weight\\| is .* > 15"),
        (lambda m: m.update(intercept="high"), "malformed"),
        (lambda m: m.update(extra=1), "malformed.*extra"),
        (lambda m: m.pop("doc"), "malformed.*doc"),
    ],
)
def test_bad_model_files_raise_value_error_with_the_reason(change: Any, reason: str) -> None:
    data = model_json()
    change(data)
    with pytest.raises(ValueError, match=reason):
        parse_model(json.dumps(data))


def test_unknown_and_unsafe_versions_are_refused() -> None:
    with pytest.raises(ValueError, match="no risk model"):
        load_model("risk-v999")
    with pytest.raises(ValueError, match="not a model version"):
        load_model("../../schemas/models")
    with pytest.raises(ValueError, match="malformed"):
        parse_model("{not json")


# --- scores -------------------------------------------------------------------------------


def test_scores_rise_with_the_reference_cases() -> None:
    """Healthy < one soft decline < a hard decline < a hard decline on an expired card."""
    model = load_model()
    paid = [event(0, E.PAYMENT_SUCCEEDED, 31, "in_0")]
    soft = [*paid, failure(1, 1, "in_1", DeclineCategory.SOFT)]
    hard = [*paid, failure(1, 1, "in_1", DeclineCategory.HARD)]
    old_card = PaymentMethod(exp_month=3, exp_year=2026)
    expired = [*hard, event(2, E.PAYMENT_METHOD_UPDATED, 1, "in_1", payment_method=old_card)]
    scores = [score(model, fold(events), NOW) for events in (paid, soft, hard, expired)]
    assert [s.band for s in scores] == [
        RiskBand.LOW,
        RiskBand.MEDIUM,
        RiskBand.HIGH,
        RiskBand.CRITICAL,
    ]
    assert scores == sorted(scores, key=lambda s: s.value)
    assert scores[-1].reasons[0] == Reason("hard_share_90d", 1.0, 1.0)
    assert {r.feature for r in scores[-1].reasons} == {
        "hard_share_90d",
        "open_invoices",
        "card_expired",
    }
    assert (scores[0].model_version, scores[0].as_of) == ("risk-v1", NOW)


@st.composite
def customers(draw: st.DrawFn) -> CustomerFeatures:
    """A customer after up to 60 events of any kind over 200 days."""
    kinds = [E.PAYMENT_FAILED, E.PAYMENT_SUCCEEDED, E.INVOICE_VOIDED, E.PAYMENT_METHOD_UPDATED]
    events = []
    for i in range(draw(st.integers(0, 60))):
        kind = draw(st.sampled_from(kinds))
        exp = PaymentMethod(
            exp_month=draw(st.integers(1, 12)), exp_year=draw(st.integers(2020, 2030))
        )
        events.append(
            event(
                i,
                kind,
                draw(st.floats(-2, 200)),
                f"in_{draw(st.integers(0, 30))}",
                decline=Decline(category=draw(st.sampled_from(DeclineCategory))),
                attempt=draw(st.integers(0, 100)),
                amount_minor=draw(st.integers(0, 10**15)),
                currency=draw(st.sampled_from(["usd", "eur"])),
                payment_method=exp,
            )
        )
    return fold(events)


@PROPERTY
@given(customers())
def test_score_is_a_probability_explained_by_its_contributions(features: CustomerFeatures) -> None:
    model = load_model()
    s = score(model, features, NOW)
    assert 0.0 <= s.value <= 1.0
    terms = contributions(model, vector(features, NOW))
    assert set(terms) == set(FEATURE_NAMES)
    assert math.isclose(
        model.intercept + math.fsum(terms.values()), logit_of(s.value), abs_tol=1e-9
    )
    top = sorted((t for t in terms.values() if t > 0), reverse=True)[:3]
    assert [r.contribution for r in s.reasons] == top
    assert s.band is band(model, s.value)


def _extreme_model(sign: float) -> RiskModel:
    """A legal model at the logit bound: every weight pushes the same way."""
    n = len(FEATURE_NAMES)
    weight = (MAX_LOGIT - 3.0) / (2.0 * n) * (1 - 1e-12)  # at the bound, not above by rounding
    features = {name: {"weight": weight, "mean": 0.0, "scale": 1.0} for name in FEATURE_NAMES}
    return parse_model(json.dumps(model_json(intercept=3.0 * sign, clip=2.0, features=features)))


@PROPERTY
@given(st.lists(st.floats(-1e300, 1e300), min_size=len(FEATURE_NAMES), max_size=len(FEATURE_NAMES)))
def test_the_identity_holds_up_to_the_logit_bound(xs: list[float]) -> None:
    for sign in (1.0, -1.0):
        model = _extreme_model(sign)
        terms = contributions(model, dict(zip(FEATURE_NAMES, xs, strict=True)))
        z = model.intercept + math.fsum(terms.values())
        assert abs(z) <= MAX_LOGIT + 1e-12
        assert math.isclose(z, logit_of(sigmoid(z)), abs_tol=1e-9)


@PROPERTY
@given(customers(), st.sampled_from(FEATURE_NAMES), st.floats(0, 1e6))
def test_raising_a_positive_weight_feature_never_lowers_the_score(
    features: CustomerFeatures, name: str, delta: float
) -> None:
    model = load_model()
    if model.features[name].weight <= 0:
        name = max(model.features, key=lambda n: model.features[n].weight)

    def value(v: dict[str, float]) -> float:
        return sigmoid(model.intercept + math.fsum(contributions(model, v).values()))

    before = vector(features, NOW)
    assert value(before | {name: before[name] + delta}) >= value(before)


def test_bands_by_cut_off() -> None:
    model = load_model()
    cuts = model.bands
    assert band(model, 0.0) is RiskBand.LOW
    assert band(model, math.nextafter(cuts[RiskBand.MEDIUM], 0)) is RiskBand.LOW
    assert band(model, cuts[RiskBand.MEDIUM]) is RiskBand.MEDIUM
    assert band(model, cuts[RiskBand.HIGH]) is RiskBand.HIGH
    assert band(model, cuts[RiskBand.CRITICAL]) is RiskBand.CRITICAL
    assert band(model, 1.0) is RiskBand.CRITICAL


# --- changed ------------------------------------------------------------------------------


def _s(value: float, b: RiskBand = RiskBand.MEDIUM) -> Score:
    return Score(value, b, (), "risk-v1", NOW)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (None, _s(0.3), True),
        (_s(0.3), _s(0.3), False),
        (_s(0.25), _s(0.30), True),  # exactly 0.05, despite 0.30 - 0.25 < 0.05 in floats
        (_s(0.30), _s(0.25), True),
        (_s(0.30), _s(0.349), False),
        (_s(0.30), _s(0.251), False),
        (_s(0.399, RiskBand.MEDIUM), _s(0.4, RiskBand.HIGH), True),  # band change, tiny move
        (_s(0.3), Score(0.3, RiskBand.MEDIUM, (), "risk-v2", NOW), True),  # a new model speaks
    ],
)
def test_changed(old: Score | None, new: Score, expected: bool) -> None:
    assert changed(old, new) is expected


def test_changed_min_delta() -> None:
    assert changed(_s(0.30), _s(0.31), min_delta=0.01)
    assert not changed(_s(0.30), _s(0.31), min_delta=0.02)


# --- the worker's setting: a packaged version or a trained model file -------------------


def test_model_from_a_version_or_a_file(tmp_path: Any) -> None:
    assert model_from("risk-v1") == load_model("risk-v1")
    trained = tmp_path / "acme-1.json"
    doc = json.loads((resources.files("paywatch.risk") / "models" / "risk-v1.json").read_text())
    doc["version"], doc["intercept"] = "acme-1", -2.0
    trained.write_text(json.dumps(doc))
    assert (model_from(str(trained)).version, model_from(str(trained)).intercept) == (
        "acme-1",
        -2.0,
    )
    with pytest.raises(ValueError, match="cannot read risk model file"):
        model_from(str(tmp_path / "missing.json"))
    trained.write_text("{}")
    with pytest.raises(ValueError, match="malformed"):
        model_from(str(trained))
    with pytest.raises(ValueError, match="no risk model"):
        model_from("risk-v9")
