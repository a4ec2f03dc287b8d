"""Adyen decline classification: precedence, merchant-side refusals, raw network data."""

from __future__ import annotations

import pytest

from paywatch.providers.adyen import declines
from paywatch.schemas.models import DeclineCategory

SOFT, HARD, ACTION, FRAUD, UNKNOWN = (
    DeclineCategory.SOFT,
    DeclineCategory.HARD,
    DeclineCategory.ACTION,
    DeclineCategory.FRAUD,
    DeclineCategory.UNKNOWN,
)


@pytest.mark.parametrize(
    ("reason", "category"),
    [
        ("Refused", SOFT),
        ("Not enough balance", SOFT),
        ("Issuer Unavailable", SOFT),
        ("Blocked Card", HARD),
        ("Revocation Of Auth", HARD),
        ("Transaction blocked by Adyen to prevent excessive retry fees", HARD),
        ("Expired Card", ACTION),
        ("CVC Declined", ACTION),
        ("3D Not Authenticated", ACTION),
        ("Authentication required", ACTION),
        ("FRAUD", FRAUD),
        ("FRAUD-CANCELLED", FRAUD),
        ("Issuer Suspected Fraud", FRAUD),
        ("Acquirer Fraud", FRAUD),
        ("Cancelled", UNKNOWN),
        ("Something new", UNKNOWN),
        (None, UNKNOWN),
    ],
)
def test_refusal_reason_table(reason: str | None, category: DeclineCategory) -> None:
    verdict = declines.explain(reason, None, None, None)
    assert verdict.category is category
    if category is not UNKNOWN:
        assert verdict.rule is not None and "refusal-reasons" in verdict.rule.source


def test_reason_keys_ignore_case_and_punctuation() -> None:
    assert declines.reason_key("FRAUD-CANCELLED") == "fraud_cancelled"
    assert declines.reason_key("  CVC  Declined ") == "cvc_declined"
    assert declines.reason_key("--") is None


@pytest.mark.parametrize("reason", ["Invalid Amount", "Not Submitted"])
def test_merchant_side_refusals_are_hard_and_say_so(reason: str) -> None:
    decline = declines.refusal(reason, {}, "visa")
    assert decline.category is HARD
    assert decline.message == f"merchant-side: {reason}"


def test_merchant_side_beats_network_advice() -> None:
    data = {"merchantAdviceCode": "02: Cannot approve at this time, try again later"}
    assert declines.refusal("Invalid Amount", data, "mastercard").category is HARD


def test_fraud_refusal_beats_a_try_later_advice_code() -> None:
    data = {"merchantAdviceCode": "02"}
    assert declines.refusal("FRAUD", data, "mastercard").category is FRAUD


def test_mastercard_advice_beats_the_static_table() -> None:
    data = {"merchantAdviceCode": "03: Do not try again"}
    decline = declines.refusal("Not enough balance", data, "mastercard")
    assert (decline.category, decline.advice_code) == (HARD, "03")


def test_visa_category_one_code_beats_a_soft_refusal() -> None:
    data = {"refusalReasonRaw": "14 : Invalid card number"}
    decline = declines.refusal("Refused", data, "visa")
    assert (decline.category, decline.network_code) == (HARD, "14")


def test_mastercard_advice_is_not_read_for_visa_cards() -> None:
    data = {"merchantAdviceCode": "03"}
    assert declines.refusal("Not enough balance", data, "visa").category is SOFT


@pytest.mark.parametrize(
    ("code_raw", "reason_raw", "expected"),
    [
        ("05", "05 : Do not honor", "05"),
        (None, "05 : Do not honor", "05"),
        (None, "N7 - Decline for CVV2 failure", "N7"),
        (None, "51", "51"),
        (None, "DECLINED Non Generic", None),
        (None, None, None),
        ("  ", None, None),
    ],
)
def test_raw_code(code_raw: str | None, reason_raw: str | None, expected: str | None) -> None:
    assert declines.raw_code(code_raw, reason_raw) == expected


@pytest.mark.parametrize(
    ("mac", "expected"),
    [
        ("01: New account information available", "01"),
        ("1", "01"),
        ("24 : Retry after 1 hour", "24"),
        ("New account", None),
        ("123", None),
        (None, None),
    ],
)
def test_advice_code(mac: str | None, expected: str | None) -> None:
    assert declines.advice_code(mac) == expected


@pytest.mark.parametrize(
    ("method", "network"),
    [
        ("visa", "visa"),
        ("visadebit", "visa"),
        ("mc", "mastercard"),
        ("mccredit", "mastercard"),
        ("maestro", "mastercard"),
        ("amex", "amex"),
        ("", None),
        (None, None),
    ],
)
def test_network_of(method: str | None, network: str | None) -> None:
    assert declines.network_of(method) == network


@pytest.mark.parametrize(
    ("code", "category"),
    [("10.4", FRAUD), ("4837", FRAUD), ("f29", FRAUD), ("13.1", HARD), (None, HARD)],
)
def test_chargeback_reason_codes(code: str | None, category: DeclineCategory) -> None:
    verdict = declines.explain_chargeback(code)
    assert verdict.category is category
    assert verdict.rule is not None and verdict.rule.id.startswith("adyen.chargeback")
