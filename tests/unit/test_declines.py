"""Decline classification: the §5 table, live advice, network guardrails, fraud precedence."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paywatch.providers.declines import DeclineTable, Rule, network_verdict
from paywatch.providers.stripe.declines import STRIPE_CODES, TABLES, classify_stripe, explain_stripe
from paywatch.schemas.models import DeclineCategory

SOFT, HARD = DeclineCategory.SOFT, DeclineCategory.HARD
ACTION, FRAUD, UNKNOWN = DeclineCategory.ACTION, DeclineCategory.FRAUD, DeclineCategory.UNKNOWN

# Copied from reference/webhooks.md §5 (Stripe column), not from the module under test.
REFERENCE_TABLE = {
    SOFT: "insufficient_funds generic_decline do_not_honor try_again_later processing_error "
    "issuer_not_available reenter_transaction approve_with_id card_velocity_exceeded "
    "withdrawal_count_limit_exceeded no_action_taken call_issuer invalid_amount "
    "duplicate_transaction",
    HARD: "lost_card stolen_card pickup_card restricted_card revocation_of_authorization "
    "revocation_of_all_authorizations stop_payment_order do_not_try_again "
    "invalid_account transaction_not_allowed not_permitted service_not_allowed "
    "card_not_supported currency_not_supported",
    ACTION: "expired_card incorrect_cvc invalid_cvc incorrect_number invalid_number "
    "invalid_expiry_month invalid_expiry_year incorrect_zip incorrect_address "
    "authentication_required new_account_information_available incorrect_pin "
    "invalid_pin offline_pin_required online_or_offline_pin_required pin_try_exceeded",
    FRAUD: "fraudulent merchant_blacklist security_violation highest_risk_level "
    "elevated_risk_level rule",
}
CASES = [(code, category) for category, codes in REFERENCE_TABLE.items() for code in codes.split()]


@pytest.mark.parametrize(("code", "category"), CASES)
def test_stripe_decline_code_table(code: str, category: DeclineCategory) -> None:
    assert classify_stripe(code="card_declined", decline_code=code) is category


@pytest.mark.parametrize("code", ["expired_card", "incorrect_cvc", "incorrect_number"])
def test_failure_code_is_used_when_there_is_no_decline_code(code: str) -> None:
    assert classify_stripe(code=code) is ACTION


def test_processing_error_as_failure_code_is_soft() -> None:
    assert classify_stripe(code="processing_error") is SOFT


def test_decline_code_beats_failure_code() -> None:
    assert classify_stripe(code="expired_card", decline_code="stolen_card") is HARD


def test_codes_are_normalized() -> None:
    assert classify_stripe(decline_code="  Insufficient_Funds ") is SOFT


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"code": "card_declined"},
        {"decline_code": "something_new"},
        {"code": ""},
        {"advice_code": "unheard_of"},
        {"network_advice_code": "99"},
    ],
)
def test_unknown_is_unknown(kwargs: dict[str, str]) -> None:
    assert classify_stripe(**kwargs) is UNKNOWN
    assert explain_stripe(**kwargs).rule is None


@pytest.mark.parametrize(
    ("advice", "static", "category"),
    [
        ("do_not_try_again", "insufficient_funds", HARD),
        ("try_again_later", "lost_card", SOFT),
        ("confirm_card_data", "generic_decline", ACTION),
    ],
)
def test_stripe_advice_code_beats_the_static_table(
    advice: str, static: str, category: DeclineCategory
) -> None:
    assert classify_stripe(decline_code=static, advice_code=advice) is category


@pytest.mark.parametrize(
    ("mac", "category"),
    [
        ("01", ACTION),
        ("02", SOFT),
        ("03", HARD),
        ("21", HARD),
        ("24", SOFT),
        ("30", SOFT),
        ("3", HARD),
        (" 02 ", SOFT),
    ],
)
def test_mastercard_advice_codes(mac: str, category: DeclineCategory) -> None:
    # Network advice beats both the static table and Stripe's advice.
    got = classify_stripe(
        decline_code="insufficient_funds",
        advice_code="confirm_card_data",
        network="mastercard",
        network_advice_code=mac,
    )
    assert got is category


@pytest.mark.parametrize("code", "04 07 12 14 15 41 43 46 57 R0 R1 R3 r1".split())
def test_visa_category_1_is_hard(code: str) -> None:
    got = classify_stripe(
        decline_code="generic_decline",
        advice_code="try_again_later",
        network="visa",
        network_decline_code=code,
    )
    assert got is HARD


@pytest.mark.parametrize("code", "54 55 82 N7 6P".split())
def test_visa_category_3_is_action(code: str) -> None:
    got = classify_stripe(decline_code="generic_decline", network="visa", network_decline_code=code)
    assert got is ACTION


def test_network_rules_apply_only_to_their_network() -> None:
    # A Mastercard MAC on a Visa card, a Visa code on a Mastercard: fall back to the table.
    assert (
        classify_stripe(decline_code="insufficient_funds", network="visa", network_advice_code="03")
        is SOFT
    )
    assert (
        classify_stripe(
            decline_code="insufficient_funds", network="mastercard", network_decline_code="R1"
        )
        is SOFT
    )
    assert (
        classify_stripe(
            decline_code="insufficient_funds",
            network="amex",
            network_advice_code="03",
            network_decline_code="R1",
        )
        is SOFT
    )


def test_unknown_network_gets_the_guardrails() -> None:
    assert classify_stripe(decline_code="insufficient_funds", network_advice_code="03") is HARD
    assert (
        classify_stripe(
            decline_code="insufficient_funds", network="unknown", network_decline_code="R1"
        )
        is HARD
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"outcome_type": "blocked", "advice_code": "try_again_later"},
        {"outcome_type": "blocked", "network_advice_code": "02", "network": "mastercard"},
        {"decline_code": "fraudulent", "advice_code": "try_again_later"},
        {"decline_code": "highest_risk_level", "network_advice_code": "01"},
        {"decline_code": "rule", "network_decline_code": "54"},
        {
            "code": "card_declined",
            "decline_code": "merchant_blacklist",
            "advice_code": "confirm_card_data",
        },
    ],
)
def test_fraud_stays_fraud_whatever_the_advice(kwargs: dict[str, str]) -> None:
    assert classify_stripe(**kwargs) is FRAUD


def test_verdicts_name_their_rule_with_source_and_edition() -> None:
    verdict = explain_stripe(
        decline_code="insufficient_funds", network="mastercard", network_advice_code="03"
    )
    assert verdict.rule is not None
    assert verdict.rule.id == "mastercard.mac.do_not_try_again"
    assert "Mastercard" in verdict.rule.source and verdict.rule.edition
    blocked = explain_stripe(outcome_type="blocked")
    assert blocked.rule is not None and blocked.rule.id == "stripe.outcome.blocked"


def test_every_rule_carries_a_source_and_edition() -> None:
    for table in TABLES.values():
        for rule in table.rules:
            assert rule.source and rule.edition and rule.codes


def test_a_code_may_not_sit_in_two_groups() -> None:
    rule = Rule("x", SOFT, frozenset({"a"}), "src", "ed")
    with pytest.raises(ValueError, match="two groups"):
        DeclineTable("dup", [rule, Rule("y", HARD, frozenset({"a"}), "src", "ed")])


def test_stripe_table_is_registered() -> None:
    assert TABLES["stripe"] is STRIPE_CODES


def test_network_verdict_is_reusable_by_other_providers() -> None:
    verdict = network_verdict("mastercard", "21", None)
    assert verdict is not None and verdict.category is HARD
    assert network_verdict("visa", None, "51") is None


_CODES = st.one_of(
    st.none(),
    st.text(max_size=12),
    st.sampled_from([c for c, _ in CASES] + ["01", "03", "R1", "54"]),
)


@given(
    code=_CODES,
    decline_code=_CODES,
    advice_code=_CODES,
    network=_CODES,
    mac=_CODES,
    response=_CODES,
    outcome=st.one_of(_CODES, st.just("blocked")),
)
def test_classification_is_total_and_blocked_is_always_fraud(
    code: str | None,
    decline_code: str | None,
    advice_code: str | None,
    network: str | None,
    mac: str | None,
    response: str | None,
    outcome: str | None,
) -> None:
    category = classify_stripe(
        code=code,
        decline_code=decline_code,
        advice_code=advice_code,
        network=network,
        network_advice_code=mac,
        network_decline_code=response,
        outcome_type=outcome,
    )
    assert category in DeclineCategory
    if outcome == "blocked" or decline_code in REFERENCE_TABLE[FRAUD].split():
        assert category is FRAUD
