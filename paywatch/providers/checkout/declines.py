"""Checkout.com decline classification: the response-code ranges, read directly.

Checkout.com's five-digit ``response_code`` carries its class in its range
(docs.checkout.com/resources/codes/response-codes, reference/webhooks.md §1.8, §5 [S]):
10xxx approved, 20xxx soft decline ("subsequent attempts may be successful"), 30xxx hard
decline ("the issuer or cardholder must rectify"), 4xxxx risk responses (-> FRAUD).

A few 20xxx codes describe something a retry cannot fix; a small override table moves them
(expired card -> ACTION, suspected fraud -> FRAUD, ...). Live data wins over both tables:
``processing.partner_merchant_advice_code`` (the Mastercard MAC) and the scheme's raw code
(``processing.partner_response_code``; for 200xx codes without it, the last two digits,
which Checkout.com documents as the raw code for its common declines [S]) go through the
shared network guardrails, then ``processing.recommendation_code`` (01 update details ->
ACTION, 02 try later -> SOFT, 03 do not try again -> HARD).

Merchant-side configuration errors (20003 invalid merchant, 20058 not permitted to
terminal) are HARD with a ``Decline.message`` starting ``"merchant-side:"``: the merchant
must fix its account and the customer must not be dunned. Override categories are
paywatch's reading of Checkout.com's response texts [U].
"""

from __future__ import annotations

from typing import Any

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

_EDITION = "checkout-response-codes 2025-10"
_RANGE_SOURCE = (
    "Checkout.com API response codes, code ranges "
    "(docs.checkout.com/resources/codes/response-codes); reference/webhooks.md §5 [S]"
)
_CODE_SOURCE = (
    "Checkout.com API response code texts (docs.checkout.com/resources/codes/response-codes, "
    "support.checkout.com 'Common response codes to test'); categories are paywatch's [U]"
)
_RECOMMENDATION_SOURCE = (
    "Checkout.com recommendation codes (docs.checkout.com/resources/codes/recommendation-codes)"
)


def _rule(rule_id: str, category: DeclineCategory, codes: str, source: str) -> Rule:
    return Rule(rule_id, category, frozenset(codes.split()), source, _EDITION)


RANGES: dict[str, Rule] = {
    "2": _rule("checkout.range.soft", SOFT, "", _RANGE_SOURCE),
    "3": _rule("checkout.range.hard", HARD, "", _RANGE_SOURCE),
    "4": _rule("checkout.range.risk", FRAUD, "", _RANGE_SOURCE),
}
"""First digit of a five-digit declined ``response_code`` -> rule (1 = approved)."""

CODES = DeclineTable(
    "checkout",
    [
        _rule("checkout.action", ACTION, "20014 20054 20055 20151 20154", _CODE_SOURCE),
        _rule("checkout.hard", HARD, "20046 20057 20062", _CODE_SOURCE),
        _rule("checkout.merchant_side", HARD, "20003 20058", _CODE_SOURCE),
        _rule("checkout.fraud", FRAUD, "20059 20063 20083 20183", _CODE_SOURCE),
    ],
)
"""Codes whose range misdescribes them."""

RECOMMENDATIONS = DeclineTable(
    "checkout-recommendation",
    [
        _rule("checkout.recommendation.update", ACTION, "01", _RECOMMENDATION_SOURCE),
        _rule("checkout.recommendation.try_later", SOFT, "02", _RECOMMENDATION_SOURCE),
        _rule("checkout.recommendation.do_not_try", HARD, "03", _RECOMMENDATION_SOURCE),
    ],
)
"""``processing.recommendation_code`` -> category (Checkout.com's live advice)."""

MERCHANT_SIDE_RULES = frozenset({"checkout.merchant_side"})


def range_verdict(code: str | None) -> Verdict | None:
    """The verdict of a declined code's range, or None (approved, malformed, unknown)."""
    if not code or len(code) != 5 or not code.isascii() or not code.isdigit():
        return None
    rule = RANGES.get(code[0])
    return Verdict(rule.category, rule) if rule else None


def raw_code(code: str | None, partner_code: str | None) -> str | None:
    """The scheme's raw response code: partner_response_code, else 200xx's last two digits."""
    if partner_code and partner_code.strip():
        return partner_code.strip()[:8]
    if code and len(code) == 5 and code.startswith("200") and code.isdigit():
        return code[3:]
    return None


def explain(
    code: str | None,
    *,
    network: str | None = None,
    advice_code: str | None = None,
    raw: str | None = None,
    recommendation: str | None = None,
) -> Verdict:
    """Classify a declined payment and name the rule that decided it."""
    static = CODES.lookup(code)
    ranged = range_verdict(code)
    for verdict in (static, ranged):
        if verdict and (verdict.category is FRAUD or _merchant_side(verdict)):
            return verdict
    live = network_verdict(network, advice_code, raw)
    advice = RECOMMENDATIONS.lookup(recommendation.strip() if recommendation else None)
    return live or advice or static or ranged or UNKNOWN_VERDICT


def _merchant_side(verdict: Verdict) -> bool:
    return verdict.rule is not None and verdict.rule.id in MERCHANT_SIDE_RULES


def decline(data: dict[str, Any], network: str | None) -> Decline:
    """The Decline of a declined payment's ``data`` object."""
    processing = data.get("processing")
    processing = processing if isinstance(processing, dict) else {}
    code = _code(data.get("response_code"))
    raw = raw_code(code, _code(processing.get("partner_response_code")))
    mac = _code(processing.get("partner_merchant_advice_code"))
    verdict = explain(
        code,
        network=network,
        advice_code=mac,
        raw=raw,
        recommendation=_code(processing.get("recommendation_code")),
    )
    message = (
        data.get("response_summary") if isinstance(data.get("response_summary"), str) else None
    )
    return to_decline(
        verdict,
        code=code,
        network=network,
        network_code=raw,
        advice_code=mac,
        message=message,
        merchant_side=_merchant_side(verdict),
    )


def _code(value: Any) -> str | None:
    """A code sent as a string (or, defensively, an integer)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str):
        return None
    return value.strip() or None
