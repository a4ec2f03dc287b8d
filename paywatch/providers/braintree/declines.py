"""Braintree decline classification: tables with sources, live fields first.

Precedence (the order of paywatch/providers/declines.py, reference/webhooks.md §5):

1. fraud: ``gateway_rejection_reason`` in {fraud, risk_threshold}, processor codes 2014/2021;
2. merchant-side configuration errors (card type not enabled, invalid merchant id...):
   HARD, and ``Decline.message`` starts with ``"merchant-side:"`` so nobody duns the
   customer for the merchant's setup (the merchant fixes it, then retries);
3. card-network guardrails: Mastercard ``merchant_advice_code``, Visa ``network_response_code``;
4. Braintree's live ``processor_response_type`` (soft_declined -> SOFT, hard_declined -> HARD;
   a HARD the static table calls ACTION stays ACTION: "update the card" refines "do not
   retry these credentials");
5. static tables: gateway rejection reasons, then ``processor_response_code`` (exact codes,
   then the 2109-2999 and 3000-class ranges);
6. UNKNOWN.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    to_decline,
)
from paywatch.providers.declines import MERCHANT_SIDE as MERCHANT_SIDE
from paywatch.schemas.models import Decline, DeclineCategory

_EDITION = "braintree-docs 2026-07"
_REF = "reference/webhooks.md §5 (Braintree column)"
_CODES_SOURCE = (
    "Braintree authorization responses (developer.paypal.com/braintree/docs/reference/general/"
    "processor-responses/authorization-responses) via api-evangelist/braintree "
    f"errors/braintree-decline-codes.yml; {_REF}"
)
_MERCHANT_SOURCE = (
    "account-configuration codes of the same table (api-evangelist/braintree "
    "errors/braintree-decline-codes.yml); merchant-side grouping is paywatch's [U]"
)
_GATEWAY_SOURCE = (
    "Braintree gateway_rejection_reason values (braintree_python transaction.py, "
    f"reference/webhooks.md §3.3); {_REF}; non-fraud groupings are paywatch's [U]"
)
_TYPE_SOURCE = "Braintree processor_response_type (processor_response_types.py); " + _REF


def _rule(rule_id: str, category: DeclineCategory, codes: str, source: str) -> Rule:
    return Rule(rule_id, category, frozenset(codes.split()), source, _EDITION)


PROCESSOR_CODES = DeclineTable(
    "braintree",
    [
        _rule(
            "braintree.soft", SOFT, "2000 2001 2002 2003 2016 2038 2046 2057 3000", _CODES_SOURCE
        ),
        _rule(
            "braintree.hard",
            HARD,
            "2007 2009 2012 2013 2015 2017 2018 2019 2043 2044 2047 2053 2108",
            _CODES_SOURCE,
        ),
        _rule(
            "braintree.action",
            ACTION,
            "2004 2005 2006 2008 2010 2022 2059 2060 2099 2101 2107",
            _CODES_SOURCE,
        ),
        _rule("braintree.fraud", FRAUD, "2014 2021", _CODES_SOURCE),
        _rule(
            "braintree.merchant_side",
            HARD,
            "2023 2024 2025 2026 2028 2030 2040 2042 2045 2055 2058 2064 2079 2087 2088",
            _MERCHANT_SOURCE,
        ),
    ],
)
"""``processor_response_code`` -> category (exact codes)."""

GENERIC_DECLINE = _rule("braintree.range.2109_2999", SOFT, "2109-2999", _CODES_SOURCE)
NETWORK_PROBLEM = _rule(
    "braintree.range.3000_class",
    SOFT,
    "3000-3999",
    "Braintree authorization responses: 3000-class = processor network problem [V]; " + _REF,
)

GATEWAY_REJECTIONS = DeclineTable(
    "braintree-gateway",
    [
        _rule("braintree.gateway.fraud", FRAUD, "fraud risk_threshold", _GATEWAY_SOURCE),
        _rule(
            "braintree.gateway.data", ACTION, "avs avs_and_cvv cvv three_d_secure", _GATEWAY_SOURCE
        ),
        _rule("braintree.gateway.duplicate", SOFT, "duplicate", _GATEWAY_SOURCE),
        _rule("braintree.gateway.excessive_retry", HARD, "excessive_retry", _GATEWAY_SOURCE),
        _rule(
            "braintree.gateway.merchant_side",
            HARD,
            "application_incomplete token_issuance",
            _GATEWAY_SOURCE,
        ),
    ],
)
"""``gateway_rejection_reason`` -> category (the gateway blocked it before the issuer)."""

RESPONSE_TYPES = DeclineTable(
    "braintree-response-type",
    [
        _rule("braintree.type.soft", SOFT, "soft_declined", _TYPE_SOURCE),
        _rule("braintree.type.hard", HARD, "hard_declined", _TYPE_SOURCE),
    ],
)
"""Braintree's live ``processor_response_type`` -> category."""

MERCHANT_SIDE_RULES = frozenset({"braintree.merchant_side", "braintree.gateway.merchant_side"})


@dataclass(frozen=True)
class Facts:
    """The decline fields of one Braintree transaction (all optional)."""

    code: str | None = None
    response_type: str | None = None
    gateway_rejection: str | None = None
    network: str | None = None
    advice_code: str | None = None
    network_code: str | None = None
    text: str | None = None


def _range(code: str | None) -> Verdict | None:
    if not code or not code.isdigit():
        return None
    number = int(code)
    if 2109 <= number <= 2999:
        return Verdict(SOFT, GENERIC_DECLINE)
    if 3000 <= number <= 3999:
        return Verdict(SOFT, NETWORK_PROBLEM)
    return None


def _lower(value: str | None) -> str | None:
    return value.strip().lower() if value else None


def explain(facts: Facts) -> Verdict:
    """Classify a Braintree decline and name the rule that decided it."""
    gateway = GATEWAY_REJECTIONS.lookup(_lower(facts.gateway_rejection))
    static = PROCESSOR_CODES.lookup(facts.code.strip() if facts.code else None)
    for verdict in (gateway, static):
        if (
            verdict
            and verdict.rule
            and (verdict.category is FRAUD or verdict.rule.id in MERCHANT_SIDE_RULES)
        ):
            return verdict
    live = RESPONSE_TYPES.lookup(_lower(facts.response_type))
    if live and live.category is HARD and static and static.category is ACTION:
        live = static
    network = network_verdict(facts.network, facts.advice_code, facts.network_code)
    return network or live or gateway or static or _range(facts.code) or UNKNOWN_VERDICT


def decline(facts: Facts) -> Decline:
    """The canonical Decline of a Braintree transaction."""
    verdict = explain(facts)
    return to_decline(
        verdict,
        code=facts.code or facts.gateway_rejection,
        network=facts.network,
        network_code=facts.network_code,
        advice_code=facts.advice_code,
        message=facts.text,
        merchant_side=bool(verdict.rule and verdict.rule.id in MERCHANT_SIDE_RULES),
        fallback="merchant account configuration",
    )
