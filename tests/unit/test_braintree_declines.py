"""Braintree decline classification: table rows, live fields, guardrails, merchant-side."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from paywatch.providers.braintree import braintree
from paywatch.providers.braintree.declines import (
    GATEWAY_REJECTIONS,
    MERCHANT_SIDE,
    PROCESSOR_CODES,
    RESPONSE_TYPES,
    Facts,
    decline,
    explain,
)
from paywatch.schemas.models import Decline, DeclineCategory, RawWebhook
from tests.builders.braintree import (
    braintree_body,
    braintree_failure,
    braintree_transaction_xml,
)

SOFT, HARD, ACTION, FRAUD, UNKNOWN = (
    DeclineCategory.SOFT,
    DeclineCategory.HARD,
    DeclineCategory.ACTION,
    DeclineCategory.FRAUD,
    DeclineCategory.UNKNOWN,
)


@pytest.mark.parametrize(
    ("code", "category"),
    [
        ("2000", SOFT),
        ("2001", SOFT),
        ("2016", SOFT),
        ("2046", SOFT),
        ("3000", SOFT),
        ("2007", HARD),
        ("2013", HARD),
        ("2018", HARD),
        ("2047", HARD),
        ("2108", HARD),
        ("2004", ACTION),
        ("2005", ACTION),
        ("2010", ACTION),
        ("2022", ACTION),
        ("2099", ACTION),
        ("2014", FRAUD),
        ("2021", FRAUD),
        ("2500", SOFT),  # 2109-2999 range: generic processor decline
        ("3004", SOFT),  # 3000-class: network problem
        ("1000", UNKNOWN),
        ("9999", UNKNOWN),
        (None, UNKNOWN),
    ],
)
def test_static_processor_codes(code: str | None, category: DeclineCategory) -> None:
    assert explain(Facts(code=code)).category is category


@pytest.mark.parametrize(
    ("code", "response_type", "category"),
    [
        ("2000", "hard_declined", HARD),  # live field beats the static SOFT
        ("2007", "soft_declined", SOFT),  # and the static HARD
        ("9999", "soft_declined", SOFT),
        ("2004", "hard_declined", ACTION),  # HARD refined to ACTION by the table
        ("2004", "soft_declined", SOFT),
        ("2014", "soft_declined", FRAUD),  # fraud is never softened
        ("2001", " Soft_Declined ", SOFT),
        ("2001", "approved", SOFT),  # not an advice value: static table
    ],
)
def test_live_processor_response_type_is_preferred(
    code: str, response_type: str, category: DeclineCategory
) -> None:
    assert explain(Facts(code=code, response_type=response_type)).category is category


@pytest.mark.parametrize(
    ("reason", "category"),
    [
        ("fraud", FRAUD),
        ("risk_threshold", FRAUD),
        ("avs", ACTION),
        ("cvv", ACTION),
        ("avs_and_cvv", ACTION),
        ("three_d_secure", ACTION),
        ("duplicate", SOFT),
        ("excessive_retry", HARD),
        ("application_incomplete", HARD),
        ("something_new", UNKNOWN),
    ],
)
def test_gateway_rejection_reasons(reason: str, category: DeclineCategory) -> None:
    assert explain(Facts(gateway_rejection=reason)).category is category


def test_gateway_fraud_beats_a_soft_response_type_and_network_advice() -> None:
    facts = Facts(
        code="2000", response_type="soft_declined", gateway_rejection="fraud", advice_code="02"
    )
    verdict = explain(facts)
    assert verdict.category is FRAUD
    assert verdict.rule is not None and verdict.rule.id == "braintree.gateway.fraud"


@pytest.mark.parametrize(
    ("network", "advice", "network_code", "category"),
    [
        ("mastercard", "03", None, HARD),  # MAC 03: do not try again
        ("mastercard", "01", None, ACTION),
        ("mastercard", "02", None, SOFT),
        ("visa", None, "14", HARD),  # Visa category 1
        ("visa", None, "54", ACTION),  # Visa category 3
        ("visa", "03", "51", SOFT),  # a MAC does not apply to Visa: live type decides
        (None, "21", None, HARD),  # unknown network: guardrails apply
    ],
)
def test_network_guardrails_beat_the_response_type(
    network: str | None, advice: str | None, network_code: str | None, category: DeclineCategory
) -> None:
    facts = Facts(
        code="2001",
        response_type="soft_declined",
        network=network,
        advice_code=advice,
        network_code=network_code,
    )
    assert explain(facts).category is category


@pytest.mark.parametrize("code", ["2024", "2045", "2026", "2058", "2064"])
def test_merchant_side_codes_are_hard_and_say_so(code: str) -> None:
    result = decline(Facts(code=code, response_type="soft_declined", text="Card Type Not Enabled"))
    assert result.category is HARD
    assert result.message == f"{MERCHANT_SIDE} Card Type Not Enabled"


def test_merchant_side_gateway_rejection_without_text() -> None:
    result = decline(Facts(gateway_rejection="application_incomplete"))
    assert result.category is HARD
    assert result.message is not None and result.message.startswith(MERCHANT_SIDE)
    assert result.code == "application_incomplete"


def test_customer_declines_carry_no_merchant_side_prefix() -> None:
    result = decline(Facts(code="2001", text="Insufficient Funds"))
    assert result.message == "Insufficient Funds"


def test_network_data_is_kept_on_the_decline() -> None:
    result = decline(
        Facts(
            code="2046", network="mastercard", advice_code="24", network_code="05", text="Declined"
        )
    )
    assert (result.network, result.advice_code, result.network_code) == ("mastercard", "24", "05")
    assert (result.code, result.category) == ("2046", SOFT)


def test_every_rule_names_its_source_and_edition() -> None:
    for table in (PROCESSOR_CODES, GATEWAY_REJECTIONS, RESPONSE_TYPES):
        for rule in table.rules:
            assert rule.source and rule.edition and rule.id.startswith("braintree.")


def _decline_of(transaction: str) -> Decline:
    raw = RawWebhook(
        ingest_id="i",
        tenant="acme",
        provider="braintree",
        received_at=datetime(2026, 6, 15, tzinfo=UTC),
        body=braintree_body(braintree_failure(transaction=transaction)),
    )
    result = braintree.normalize(raw, "webhooks.raw", 0, 0)[0].decline
    assert result is not None
    return result


def test_the_webhook_fields_reach_the_classifier() -> None:
    mastercard = braintree_transaction_xml(
        response_code="2001",
        response_type="hard_declined",
        card_type="MasterCard",
        merchant_advice_code="01",
        network_response_code="51",
    )
    result = _decline_of(mastercard)
    assert result.category is ACTION  # MAC 01 on a Mastercard
    assert (result.network, result.advice_code, result.network_code) == ("mastercard", "01", "51")
    fraud = braintree_transaction_xml(
        response_code=None, response_type=None, gateway_rejection_reason="fraud"
    )
    assert (_decline_of(fraud).category, _decline_of(fraud).code) == (FRAUD, "fraud")
