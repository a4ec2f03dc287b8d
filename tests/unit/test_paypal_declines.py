"""PayPal decline tables: precedence, merchant-side marking, sources on every row."""

from __future__ import annotations

from typing import Any

import pytest

from paywatch.providers.paypal.declines import (
    CAPTURE_REASONS,
    MERCHANT_RULES,
    MERCHANT_SIDE,
    PROCESSOR_CODES,
    PROCESSOR_MEANINGS,
    SUBSCRIPTION_REASONS,
    explain_paypal,
    paypal_decline,
)
from paywatch.schemas.models import DeclineCategory

SOFT, HARD, ACTION, FRAUD, UNKNOWN = (
    DeclineCategory.SOFT,
    DeclineCategory.HARD,
    DeclineCategory.ACTION,
    DeclineCategory.FRAUD,
    DeclineCategory.UNKNOWN,
)
TABLES = (SUBSCRIPTION_REASONS, CAPTURE_REASONS, PROCESSOR_CODES)


def test_every_row_names_its_source_and_edition() -> None:
    for table in TABLES:
        for rule in table.rules:
            assert rule.source and rule.edition and rule.codes
            assert rule.id.startswith("paypal.")


def test_the_reference_reason_codes_are_all_classified() -> None:
    # reference/webhooks.md §3.2: the eight last_failed_payment.reason_code values.
    documented = {
        "PAYMENT_DENIED", "INTERNAL_SERVER_ERROR", "PAYEE_ACCOUNT_RESTRICTED",
        "PAYER_ACCOUNT_RESTRICTED", "PAYER_CANNOT_PAY", "SENDING_LIMIT_EXCEEDED",
        "TRANSACTION_RECEIVING_LIMIT_EXCEEDED", "CURRENCY_MISMATCH",
    }  # fmt: skip
    assert {c for r in SUBSCRIPTION_REASONS.rules for c in r.codes} == documented


def test_every_processor_code_has_a_meaning() -> None:
    assert {c for r in PROCESSOR_CODES.rules for c in r.codes} == set(PROCESSOR_MEANINGS)


@pytest.mark.parametrize(
    ("kwargs", "category", "rule"),
    [
        ({"reason": "PAYMENT_DENIED"}, SOFT, "paypal.reason.soft"),
        ({"reason": " payer_cannot_pay "}, ACTION, "paypal.reason.action"),
        ({"reason": "CURRENCY_MISMATCH"}, HARD, "paypal.reason.merchant_side"),
        ({"response_code": "5120"}, SOFT, "paypal.processor.soft"),
        ({"response_code": "5400"}, ACTION, "paypal.processor.action"),
        ({"response_code": "5140"}, HARD, "paypal.processor.hard"),
        ({"response_code": "9500"}, FRAUD, "paypal.processor.fraud"),
        ({"response_code": "ppct"}, HARD, "paypal.processor.merchant_side"),
        ({"reason": "DECLINED_BY_RISK_FRAUD_FILTERS"}, FRAUD, "paypal.capture.fraud"),
        # network guardrail (Mastercard MAC) beats the static processor table
        ({"response_code": "5120", "advice_code": "03"}, HARD, "mastercard.mac.do_not_try_again"),
        ({"response_code": "5140", "advice_code": "01"}, ACTION, "mastercard.mac.new_account_info"),
        ({"advice_code": "2"}, SOFT, "mastercard.mac.try_later"),
        # fraud beats the network; merchant-side beats the network
        ({"response_code": "9500", "advice_code": "02"}, FRAUD, "paypal.processor.fraud"),
        ({"response_code": "1350", "advice_code": "02"}, HARD, "paypal.processor.merchant_side"),
        # the processor code beats the reason; fraud in the reason beats the processor code
        ({"response_code": "5400", "reason": "PAYMENT_DENIED"}, ACTION, "paypal.processor.action"),
        ({"response_code": "5120", "reason": "DECLINED_BY_RISK_FRAUD_FILTERS"}, FRAUD,
         "paypal.capture.fraud"),
    ],
)  # fmt: skip
def test_precedence(kwargs: dict[str, Any], category: DeclineCategory, rule: str) -> None:
    verdict = explain_paypal(**kwargs)
    assert verdict.category is category
    assert verdict.rule is not None and verdict.rule.id == rule


@pytest.mark.parametrize("kwargs", [{}, {"reason": "NEW_CODE"}, {"response_code": "0000"}])
def test_unknown_codes_are_unknown(kwargs: dict[str, Any]) -> None:
    assert explain_paypal(**kwargs).category is UNKNOWN
    assert explain_paypal(**kwargs).rule is None


def test_merchant_side_declines_are_hard_and_say_so() -> None:
    decline = paypal_decline(reason="PAYEE_ACCOUNT_RESTRICTED")
    assert decline.category is HARD
    assert decline.message == f"{MERCHANT_SIDE} PAYEE_ACCOUNT_RESTRICTED"
    card = paypal_decline(response_code="8020")
    assert card.message == f"{MERCHANT_SIDE} CONFIGURATION_ERROR" and card.code == "8020"
    for rule_id in MERCHANT_RULES:
        assert rule_id.endswith("merchant_side")


def test_customer_side_declines_do_not_say_merchant_side() -> None:
    for decline in (
        paypal_decline(reason="PAYER_CANNOT_PAY"),
        paypal_decline(response_code="5120"),
    ):
        assert not (decline.message or "").startswith(MERCHANT_SIDE)


def test_decline_keeps_the_advice_code_and_no_invented_network_code() -> None:
    decline = paypal_decline(response_code="5120", advice_code="21")
    assert (decline.code, decline.advice_code, decline.category) == ("5120", "21", HARD)
    assert decline.network is None and decline.network_code is None


def test_overrides_replace_the_reason_grouping_only() -> None:
    overrides = {"PAYER_CANNOT_PAY": SOFT, "CURRENCY_MISMATCH": ACTION}
    soft = explain_paypal(reason="PAYER_CANNOT_PAY", overrides=overrides)
    assert soft.category is SOFT and soft.rule is not None and soft.rule.id == "paypal.override"
    unmarked = paypal_decline(reason="CURRENCY_MISMATCH", overrides=overrides)
    assert unmarked.category is ACTION and unmarked.message == "CURRENCY_MISMATCH"
    fraud = explain_paypal(response_code="9500", reason="PAYER_CANNOT_PAY", overrides=overrides)
    assert fraud.category is FRAUD
