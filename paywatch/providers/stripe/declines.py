"""Stripe's decline tables and classification (reference/webhooks.md §5).

Precedence as in :mod:`paywatch.providers.declines`: a Radar block or a fraud code first,
then the card-network guardrails, Stripe's live ``advice_code``, the static code table.
"""

from __future__ import annotations

from paywatch.providers.declines import (
    ACTION,
    FRAUD,
    HARD,
    SOFT,
    UNKNOWN_VERDICT,
    DeclineTable,
    Rule,
    Verdict,
    network_verdict,
    rule,
)
from paywatch.schemas.models import DeclineCategory

_STRIPE_DOCS = (
    "Stripe decline codes (docs.stripe.com/declines/codes) as mirrored in "
    "hideokamoto/stripe-decline-codes and IanFoxDev/decline-codes data/stripe.json; "
    "reference/webhooks.md §5"
)
_STRIPE_EDITION = "stripe-docs 2026-07"


STRIPE_CODES = DeclineTable(
    "stripe",
    [
        rule(
            "stripe.soft",
            SOFT,
            """
        insufficient_funds generic_decline do_not_honor try_again_later processing_error
        issuer_not_available reenter_transaction approve_with_id card_velocity_exceeded
        withdrawal_count_limit_exceeded no_action_taken call_issuer invalid_amount
        duplicate_transaction""",
            _STRIPE_DOCS,
            _STRIPE_EDITION,
        ),
        rule(
            "stripe.hard",
            HARD,
            """
        lost_card stolen_card pickup_card restricted_card revocation_of_authorization
        revocation_of_all_authorizations stop_payment_order do_not_try_again invalid_account
        transaction_not_allowed not_permitted service_not_allowed card_not_supported
        currency_not_supported""",
            _STRIPE_DOCS,
            _STRIPE_EDITION,
        ),
        rule(
            "stripe.action",
            ACTION,
            """
        expired_card incorrect_cvc invalid_cvc incorrect_number invalid_number
        invalid_expiry_month invalid_expiry_year incorrect_zip incorrect_address
        authentication_required new_account_information_available incorrect_pin invalid_pin
        offline_pin_required online_or_offline_pin_required pin_try_exceeded""",
            _STRIPE_DOCS,
            _STRIPE_EDITION,
        ),
        rule(
            "stripe.fraud",
            FRAUD,
            "fraudulent merchant_blacklist security_violation",
            _STRIPE_DOCS,
            _STRIPE_EDITION,
        ),
        rule(
            "stripe.radar",
            FRAUD,
            "highest_risk_level elevated_risk_level rule",
            "Stripe Radar outcome.reason values; reference/webhooks.md §3.1, §5",
            _STRIPE_EDITION,
        ),
    ],
)
"""Stripe ``decline_code`` / ``outcome.reason`` / ``failure_code`` -> category."""

STRIPE_ADVICE = DeclineTable(
    "stripe-advice",
    [
        rule(
            "stripe.advice.hard",
            HARD,
            "do_not_try_again",
            "Stripe advice_code (docs.stripe.com/declines/codes); reference/webhooks.md §5",
            _STRIPE_EDITION,
        ),
        rule(
            "stripe.advice.soft",
            SOFT,
            "try_again_later",
            "Stripe advice_code (docs.stripe.com/declines/codes); reference/webhooks.md §5",
            _STRIPE_EDITION,
        ),
        rule(
            "stripe.advice.action",
            ACTION,
            "confirm_card_data",
            "Stripe advice_code (docs.stripe.com/declines/codes); reference/webhooks.md §5",
            _STRIPE_EDITION,
        ),
    ],
)
"""Stripe's live ``advice_code`` -> category (beats the static code table)."""

BLOCKED_RULE = Rule(
    "stripe.outcome.blocked",
    FRAUD,
    frozenset({"blocked"}),
    "Stripe charge outcome.type=blocked (Radar); reference/webhooks.md §5",
    _STRIPE_EDITION,
)

TABLES: dict[str, DeclineTable] = {"stripe": STRIPE_CODES}
"""Static decline-code table per provider name."""


def _provider_code(code: str | None) -> str | None:
    if not code:
        return None
    return code.strip().lower() or None


def explain_stripe(
    *,
    code: str | None = None,
    decline_code: str | None = None,
    advice_code: str | None = None,
    network: str | None = None,
    network_advice_code: str | None = None,
    network_decline_code: str | None = None,
    outcome_type: str | None = None,
) -> Verdict:
    """Classify a Stripe decline and name the rule that decided it.

    ``code`` is ``failure_code`` / ``last_payment_error.code``; ``decline_code`` is
    ``last_payment_error.decline_code`` or the charge's ``outcome.reason``.
    """
    specific = STRIPE_CODES.lookup(_provider_code(decline_code))
    generic = STRIPE_CODES.lookup(_provider_code(code))
    if outcome_type == "blocked":
        return Verdict(FRAUD, BLOCKED_RULE)
    for static in (specific, generic):
        if static and static.category is FRAUD:
            return static
    live = network_verdict(network, network_advice_code, network_decline_code)
    advice = STRIPE_ADVICE.lookup(_provider_code(advice_code))
    return live or advice or specific or generic or UNKNOWN_VERDICT


def classify_stripe(
    *,
    code: str | None = None,
    decline_code: str | None = None,
    advice_code: str | None = None,
    network: str | None = None,
    network_advice_code: str | None = None,
    network_decline_code: str | None = None,
    outcome_type: str | None = None,
) -> DeclineCategory:
    """Category of a Stripe decline (see ``explain_stripe`` for the rule behind it)."""
    return explain_stripe(
        code=code,
        decline_code=decline_code,
        advice_code=advice_code,
        network=network,
        network_advice_code=network_advice_code,
        network_decline_code=network_decline_code,
        outcome_type=outcome_type,
    ).category
