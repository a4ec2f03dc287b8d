"""Decline classification for the generic payload: the sender's own category, guarded.

Precedence: a sender-declared FRAUD stays FRAUD; ``merchant_side: true`` -> HARD with a
``Decline.message`` starting ``"merchant-side:"`` (the merchant must fix its setup, the
customer must not be dunned); the card-network guardrails over ``network`` /
``advice_code`` (Mastercard MAC) / ``network_code`` (Visa response code); the sender's
``category``; UNKNOWN.
"""

from __future__ import annotations

from paywatch.providers.declines import (
    FRAUD,
    HARD,
    UNKNOWN_VERDICT,
    Rule,
    Verdict,
    network_verdict,
    to_decline,
)
from paywatch.providers.declines import MERCHANT_SIDE as MERCHANT_SIDE
from paywatch.schemas.models import Decline, DeclineCategory

_EDITION = "paywatch-generic v1"
_SENDER_SOURCE = "the sender's decline.category (paywatch generic webhook schema v1)"
MERCHANT_SIDE_RULE = Rule(
    "generic.merchant_side",
    HARD,
    frozenset(),
    "the sender's decline.merchant_side (paywatch generic webhook schema v1)",
    _EDITION,
)
SENDER_RULES: dict[DeclineCategory, Rule] = {
    category: Rule(
        f"generic.sender.{category.value.lower()}", category, frozenset(), _SENDER_SOURCE, _EDITION
    )
    for category in DeclineCategory
    if category is not DeclineCategory.UNKNOWN
}


def explain(
    category: DeclineCategory,
    *,
    merchant_side: bool = False,
    network: str | None = None,
    advice_code: str | None = None,
    network_code: str | None = None,
) -> Verdict:
    """Classify a generic decline and name the rule that decided it."""
    sender = SENDER_RULES.get(category)
    if category is FRAUD and sender:
        return Verdict(FRAUD, sender)
    if merchant_side:
        return Verdict(HARD, MERCHANT_SIDE_RULE)
    live = network_verdict(network, advice_code, network_code)
    return live or (Verdict(category, sender) if sender else UNKNOWN_VERDICT)


def decline(
    *,
    code: str | None,
    category: DeclineCategory,
    message: str | None,
    merchant_side: bool,
    network: str | None,
    network_code: str | None,
    advice_code: str | None,
) -> Decline:
    """The canonical Decline of a generic ``decline`` object."""
    verdict = explain(
        category,
        merchant_side=merchant_side,
        network=network,
        advice_code=advice_code,
        network_code=network_code,
    )
    return to_decline(
        verdict,
        code=code,
        network=network,
        network_code=network_code,
        advice_code=advice_code,
        message=message,
        merchant_side=verdict.rule is MERCHANT_SIDE_RULE,
    )
