"""The `customers` read model's pure parts: which record of a key wins, and its row."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pytest

from paywatch.api.query.deps import ApiError
from paywatch.api.query.routes.customers import CURSOR, parse_band
from paywatch.projections.customers import COLUMNS, WRITE, latest, row
from paywatch.schemas.coords import Coords
from paywatch.schemas.models import RiskBand, RiskContribution, RiskScore

AS_OF = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def score(ref: str, value: float, as_of: datetime = AS_OF, **kw: object) -> RiskScore:
    fields: dict[str, object] = {
        "tenant": "acme",
        "customer_ref": ref,
        "score": value,
        "band": RiskBand.HIGH,
        "model_version": "m1",
        "as_of": as_of,
    }
    return RiskScore.model_validate(fields | kw)


def at(offset: int, partition: int = 0) -> Coords:
    return Coords("risk.scores", partition, offset)


def test_the_greatest_coordinates_of_a_key_win_whatever_the_batch_order() -> None:
    newer, older = score("cus_1", 0.9), score("cus_1", 0.2)
    other = score("cus_2", 0.5)
    for batch in ([(older, at(3)), (newer, at(7)), (other, at(1))],
                  [(newer, at(7)), (other, at(1)), (older, at(3))]):  # fmt: skip
        kept = {(s.customer_ref, s.score, c.offset) for s, c in latest(batch)}
        assert kept == {("cus_1", 0.9, 7), ("cus_2", 0.5, 1)}


def test_offsets_win_over_as_of() -> None:
    """Compaction keeps the last record of a key: a live row must end where a rebuild does."""
    later_offset = score("cus_1", 0.1, as_of=datetime(2020, 1, 1, tzinfo=UTC))
    [(kept, where)] = latest([(score("cus_1", 0.8), at(1)), (later_offset, at(2))])
    assert (kept.score, where.offset) == (0.1, 2)


def test_the_same_key_in_another_tenant_is_another_customer() -> None:
    mine, theirs = score("cus_1", 0.3), score("cus_1", 0.6, tenant="other")
    assert len(latest([(mine, at(1)), (theirs, at(2))])) == 2


def test_row_holds_the_contributions_as_reasons_and_the_words_apart() -> None:
    contributions = [
        RiskContribution(feature="failures_30d", contribution=1.25, value=4.0),
        RiskContribution(feature="open_invoices", contribution=-0.5, value=1.0),
    ]
    record = score("cus_1", 0.75, reasons=["4 failures in 30 days"], contributions=contributions)
    values = dict(zip(COLUMNS, row(record, at(42, partition=2)), strict=True))
    assert json.loads(values.pop("reasons")) == [
        {"feature": "failures_30d", "contribution": 1.25, "value": 4.0},
        {"feature": "open_invoices", "contribution": -0.5, "value": 1.0},
    ]
    assert values == {
        "tenant": "acme",
        "customer_ref": "cus_1",
        "score": 0.75,
        "band": "HIGH",
        "reason_texts": ["4 failures in 30 days"],
        "model_version": "m1",
        "as_of": AS_OF,
        "topic": "risk.scores",
        "partition": 2,
        "offset": 42,
    }


def test_a_non_finite_contribution_is_the_records_fault() -> None:
    bad = RiskContribution(feature="f", contribution=math.inf, value=0.0)
    with pytest.raises(ValueError, match="JSON"):
        row(score("cus_1", 0.5, contributions=[bad]), at(1))


def test_the_write_replaces_a_row_only_from_greater_coordinates() -> None:
    assert 'WHERE (t."topic", t."partition", t."offset") < (EXCLUDED."topic"' in WRITE.merge
    assert WRITE.key == ("tenant", "customer_ref")


@pytest.mark.parametrize(
    ("given", "band"),
    [("high", RiskBand.HIGH), ("CRITICAL", RiskBand.CRITICAL), ("Low", RiskBand.LOW), (None, None)],
)
def test_band_parameter_is_case_insensitive(given: str | None, band: RiskBand | None) -> None:
    assert parse_band(given) is band


@pytest.mark.parametrize("given", ["", "severe", "high ", "x" * 500])
def test_unknown_band_names_the_allowed_ones(given: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_band(given)
    assert caught.value.status_code == 400
    assert "low, medium, high, critical" in caught.value.detail
    assert len(caught.value.detail) < 200


@pytest.mark.parametrize("value", [0.0, 1.0, 0.1 + 0.2, 1e-300, 0.7234567890123456])
def test_the_cursor_carries_a_score_exactly(value: float) -> None:
    assert CURSOR.decode(CURSOR.encode((value, "cus_1"))) == (value, "cus_1")
