"""PayPal decline classification: tables with sources, fraud and network rules first.

What PayPal tells us about a failed payment (reference/webhooks.md §3.2, §5):

* subscriptions: ``billing_info.last_failed_payment.reason_code`` (8 values);
* v2 captures: ``processor_response.{response_code, payment_advice_code}`` for cards and
  ``status_details.reason``; v1 sales: ``reason_code``.

Precedence (the order of paywatch/providers/declines.py):

1. fraud codes (SUSPECTED_FRAUD, the payee's own risk filters): FRAUD;
2. merchant-side configuration errors (payee account restricted, receiving limit, currency
   not enabled, card type not accepted...): HARD with ``Decline.message`` starting with
   ``"merchant-side:"``: the merchant must fix its account, dunning the customer is wrong;
3. card-network guardrails: ``payment_advice_code`` is the Mastercard Merchant Advice Code
   (PayPal documents it as the network's payment advice code, values 01/02/03/21). PayPal
   gives no raw Visa response code, so ``Decline.network_code`` stays None;
4. static tables: processor response code, then capture/sale reason, then the subscription
   ``reason_code`` (whose grouping is paywatch's own [U]; override per code with the
   provider's ``reason_overrides``);
5. UNKNOWN.
"""

from __future__ import annotations

from collections.abc import Mapping

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

_EDITION = "paypal-docs 2026-07"
_REASON_SOURCE = (
    "PayPal subscriptions last_failed_payment.reason_code (billing_subscriptions_v1.json); "
    "grouping from reference/webhooks.md §5, paywatch's own [U]"
)
_PROCESSOR_SOURCE = (
    "PayPal processor_response.response_code enum (developer.paypal.com serversdk "
    "processor-response-code) via api-evangelist/paypal errors/paypal-decline-codes.yml [S]; "
    "categories are paywatch's from the documented meanings [U]"
)
_CAPTURE_SOURCE = (
    "PayPal capture status_details.reason / sale reason_code (payments_payment_v2.json, "
    "payments_payment_v1.json); grouping is paywatch's [U]"
)


def _rule(rule_id: str, category: DeclineCategory, codes: str, source: str) -> Rule:
    return Rule(rule_id, category, frozenset(codes.split()), source, _EDITION)


SUBSCRIPTION_REASONS = DeclineTable(
    "paypal-subscription",
    [
        _rule("paypal.reason.soft", SOFT, "INTERNAL_SERVER_ERROR PAYMENT_DENIED", _REASON_SOURCE),
        _rule(
            "paypal.reason.action",
            ACTION,
            "PAYER_CANNOT_PAY PAYER_ACCOUNT_RESTRICTED SENDING_LIMIT_EXCEEDED",
            _REASON_SOURCE,
        ),
        _rule(
            "paypal.reason.merchant_side",
            HARD,
            "PAYEE_ACCOUNT_RESTRICTED TRANSACTION_RECEIVING_LIMIT_EXCEEDED CURRENCY_MISMATCH",
            _REASON_SOURCE,
        ),
    ],
)
"""Subscription ``last_failed_payment.reason_code`` -> category (reference §5)."""

CAPTURE_REASONS = DeclineTable(
    "paypal-capture",
    [
        _rule("paypal.capture.fraud", FRAUD, "DECLINED_BY_RISK_FRAUD_FILTERS", _CAPTURE_SOURCE),
        _rule(
            "paypal.capture.merchant_side",
            HARD,
            "RECEIVING_PREFERENCE_MANDATES_MANUAL_ACTION UNILATERAL VERIFICATION_REQUIRED "
            "INTERNATIONAL_WITHDRAWAL",
            _CAPTURE_SOURCE,
        ),
    ],
)
"""Capture ``status_details.reason`` / sale ``reason_code`` -> category."""

PROCESSOR_CODES = DeclineTable(
    "paypal-processor",
    [
        _rule(
            "paypal.processor.soft",
            SOFT,
            "0500 0960 5100 5120 5200 5710 5920 8000 8100 8110 8220 9100 PPDT PPEL PPER PPNL PPNT",
            _PROCESSOR_SOURCE,
        ),
        _rule(
            "paypal.processor.hard",
            HARD,
            "0390 0580 1330 1335 5140 5150 5160 5180 5700 5910 6300 9520 9540 PP06 PPRN",
            _PROCESSOR_SOURCE,
        ),
        _rule(
            "paypal.processor.action",
            ACTION,
            "00N7 1380 1382 5110 5130 5135 5170 5400 5500 5650 5930 5950 PCVV PPAD PPEF PPEX",
            _PROCESSOR_SOURCE,
        ),
        _rule("paypal.processor.fraud", FRAUD, "9500 9510", _PROCESSOR_SOURCE),
        _rule(
            "paypal.processor.merchant_side",
            HARD,
            "1320 1340 1350 1370 8010 8020 PPAE PPCE PPCT PPRR PPUC",
            _PROCESSOR_SOURCE,
        ),
    ],
)
"""Card ``processor_response.response_code`` -> category."""

PROCESSOR_MEANINGS: dict[str, str] = {
    "0390": "ACCOUNT_NOT_FOUND", "0500": "DO_NOT_HONOR", "0580": "UNAUTHORIZED_TRANSACTION",
    "0960": "SYSTEM_MALFUNCTION", "00N7": "CVV2_FAILURE_POSSIBLE_RETRY_WITH_CVV",
    "1320": "INVALID_CURRENCY_CODE", "1330": "INVALID_ACCOUNT", "1335": "INVALID_ACCOUNT_RECURRING",
    "1340": "INVALID_TERMINAL", "1350": "INVALID_MERCHANT", "1370": "INVALID_MCC",
    "1380": "INVALID_EXPIRATION", "1382": "INVALID_CARD_VERIFICATION_VALUE",
    "5100": "GENERIC_DECLINE", "5110": "CVV2_FAILURE", "5120": "INSUFFICIENT_FUNDS",
    "5130": "INVALID_PIN", "5135": "DECLINED_PIN_TRY_EXCEEDED", "5140": "CARD_CLOSED",
    "5150": "PICKUP_CARD_SPECIAL_CONDITIONS", "5160": "UNAUTHORIZED_USER",
    "5170": "AVS_FAILURE", "5180": "INVALID_OR_RESTRICTED_CARD", "5200": "DUPLICATE_TRANSACTION",
    "5400": "EXPIRED_CARD", "5500": "INCORRECT_PIN_REENTER", "5650": "DECLINED_SCA_REQUIRED",
    "5700": "TRANSACTION_NOT_PERMITTED", "5710": "TX_ATTEMPTS_EXCEED_LIMIT",
    "5910": "ISSUER_NOT_AVAILABLE_NOT_RETRIABLE", "5920": "ISSUER_NOT_AVAILABLE_RETRIABLE",
    "5930": "CARD_NOT_ACTIVATED", "5950": "DECLINED_DUE_TO_UPDATED_ACCOUNT",
    "6300": "ACCOUNT_NOT_ON_FILE", "8000": "PROCESSOR_SYSTEM_ERROR", "8010": "HOST_KEY_ERROR",
    "8020": "CONFIGURATION_ERROR", "8100": "FATAL_COMMUNICATION_ERROR",
    "8110": "RETRIABLE_COMMUNICATION_ERROR", "8220": "SYSTEM_UNAVAILABLE",
    "9100": "DECLINED_PLEASE_RETRY", "9500": "SUSPECTED_FRAUD", "9510": "SECURITY_VIOLATION",
    "9520": "LOST_OR_STOLEN", "9540": "REFUSED_CARD", "PCVV": "CVV_FAILURE",
    "PP06": "ACCOUNT_CLOSED", "PPAD": "BILLING_ADDRESS", "PPAE": "AMEX_DISABLED",
    "PPCE": "CE_REGISTRATION_INCOMPLETE", "PPCT": "CARD_TYPE_UNSUPPORTED",
    "PPDT": "DECLINE_THRESHOLD_BREACH", "PPEF": "EXPIRED_FUNDING_INSTRUMENT",
    "PPEL": "EXCEEDS_FREQUENCY_LIMIT", "PPER": "INTERNAL_SYSTEM_ERROR", "PPEX": "EXPIRY_DATE",
    "PPNL": "EXCEEDS_NETWORK_FREQUENCY_LIMIT", "PPNT": "NETWORK_ERROR",
    "PPRN": "REATTEMPT_NOT_PERMITTED", "PPRR": "MERCHANT_NOT_REGISTERED",
    "PPUC": "CURRENCY_CODE_UNSUPPORTED",
}  # fmt: skip
"""Names of the processor response codes in the table (for ``Decline.message``)."""

MERCHANT_RULES = frozenset(
    {
        "paypal.reason.merchant_side",
        "paypal.capture.merchant_side",
        "paypal.processor.merchant_side",
    }
)
"""Rules whose declines the merchant must fix (``Decline.message`` gets MERCHANT_SIDE)."""

_OVERRIDE_SOURCE = "PayPalProvider(reason_overrides=...) set by the operator"


def _code(value: str | None) -> str | None:
    code = value.strip().upper() if value else None
    return code or None


def _override(code: str | None, overrides: Mapping[str, DeclineCategory]) -> Verdict | None:
    category = overrides.get(code) if code else None
    if code is None or category is None:
        return None
    rule = Rule("paypal.override", category, frozenset({code}), _OVERRIDE_SOURCE, "operator")
    return Verdict(category, rule)


def explain_paypal(
    *,
    response_code: str | None = None,
    advice_code: str | None = None,
    reason: str | None = None,
    overrides: Mapping[str, DeclineCategory] | None = None,
) -> Verdict:
    """Classify a PayPal decline and name the rule that decided it.

    ``response_code`` is the card ``processor_response.response_code``; ``advice_code`` its
    ``payment_advice_code``; ``reason`` a subscription ``reason_code``, capture
    ``status_details.reason`` or sale ``reason_code``.
    """
    response, why = _code(response_code), _code(reason)
    processor = PROCESSOR_CODES.lookup(response)
    reasoned = (
        _override(why, overrides or {})
        or CAPTURE_REASONS.lookup(why)
        or SUBSCRIPTION_REASONS.lookup(why)
    )
    for static in (processor, reasoned):
        if static and static.category is FRAUD:
            return static
    for static in (processor, reasoned):
        if static and static.rule and static.rule.id in MERCHANT_RULES:
            return static
    live = network_verdict(None, advice_code, None)
    return live or processor or reasoned or UNKNOWN_VERDICT


def paypal_decline(
    *,
    response_code: str | None = None,
    advice_code: str | None = None,
    reason: str | None = None,
    overrides: Mapping[str, DeclineCategory] | None = None,
) -> Decline:
    """The Decline of a PayPal failure: code, category, advice code and a readable message."""
    verdict = explain_paypal(
        response_code=response_code, advice_code=advice_code, reason=reason, overrides=overrides
    )
    response, why = _code(response_code), _code(reason)
    text = PROCESSOR_MEANINGS.get(response or "") or why
    return to_decline(
        verdict,
        code=response or why,
        advice_code=_code(advice_code),
        message=text,
        merchant_side=verdict.rule is not None and verdict.rule.id in MERCHANT_RULES,
        fallback="PayPal account configuration",
    )
