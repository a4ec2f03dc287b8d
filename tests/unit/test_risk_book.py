"""RiskBook (streams/risk_view.py): the fold of ``risk.scores`` the saga agent reads bands from."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from paywatch.schemas.codec import SingleObjectCodec
from paywatch.schemas.models import RiskBand, RiskScore
from paywatch.streams.risk_view import RiskBook

CODEC = SingleObjectCodec()
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def score(customer: str, band: RiskBand, tenant: str = "acme") -> bytes:
    value = {RiskBand.LOW: 0.1, RiskBand.MEDIUM: 0.4, RiskBand.HIGH: 0.7, RiskBand.CRITICAL: 0.9}
    record = RiskScore(
        tenant=tenant,
        customer_ref=customer,
        score=value[band],
        band=band,
        model_version="risk-v1",
        as_of=T0,
    )
    return CODEC.encode(record)


def key(customer: str, tenant: str = "acme") -> bytes:
    return f"{tenant}/{customer}".encode()


def test_high_bands_come_in_and_a_lower_band_takes_the_customer_out() -> None:
    book = RiskBook(CODEC)
    book.apply(key("c1"), score("c1", RiskBand.HIGH), "s[0]@0")
    book.apply(key("c2"), score("c2", RiskBand.MEDIUM), "s[1]@0")
    assert (book.get("acme", "c1"), book.get("acme", "c2"), len(book)) == (RiskBand.HIGH, None, 1)
    book.apply(key("c1"), score("c1", RiskBand.LOW), "s[0]@1")
    assert book.get("acme", "c1") is None and len(book) == 0
    book.apply(key("c1"), score("c1", RiskBand.CRITICAL), "s[0]@2")
    assert book.get("acme", "c1") is RiskBand.CRITICAL
    assert book.get("other", "c1") is None  # per tenant


def test_a_tombstone_removes_the_customer() -> None:
    book = RiskBook(CODEC)
    book.apply(key("c1"), score("c1", RiskBand.HIGH), "s[0]@0")
    book.apply(key("c2"), score("c2", RiskBand.HIGH), "s[0]@1")
    book.apply(key("c1"), None, "s[0]@2")
    book.apply(None, None, "s[0]@3")  # no key: nothing to forget
    assert (book.get("acme", "c1"), book.get("acme", "c2")) == (None, RiskBand.HIGH)


def test_an_undecodable_record_is_logged_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    book = RiskBook(CODEC, "t.risk.scores")
    book.apply(key("c1"), score("c1", RiskBand.HIGH), "s[0]@0")
    with caplog.at_level(logging.WARNING, logger="paywatch.streams.risk_view"):
        book.apply(key("c1"), b"garbage", "s[0]@1")
        book.apply(key("c1"), score("c1", RiskBand.LOW)[:-3], "s[0]@2")  # truncated
    assert book.get("acme", "c1") is RiskBand.HIGH  # keeps the band it had
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "skipped risk score s[0]@1",
        "skipped risk score s[0]@2",
    ]
