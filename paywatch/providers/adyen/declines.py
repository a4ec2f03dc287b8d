"""Adyen decline classification: refusal reasons, raw network data, chargebacks.

Inputs (reference/webhooks.md §3.7, §5): the item's ``reason`` (Adyen's mapped refusal
reason, e.g. "Not enough balance"), and when the merchant enabled them in the Customer
Area, ``additionalData.refusalCodeRaw`` / ``refusalReasonRaw`` (the scheme's raw response,
e.g. "05" / "05 : Do not honor") and ``merchantAdviceCode`` (the Mastercard MAC, e.g.
"01: New account information available").

Precedence, as for Stripe (:mod:`paywatch.providers.declines`): fraud refusals -> FRAUD;
merchant-side refusals -> HARD; the card-network guardrails over the live raw data
(Mastercard MAC, Visa response code); Adyen's static refusal-reason table; UNKNOWN.

Merchant-side configuration errors ("Invalid Amount", "Not Submitted") are HARD with a
``Decline.message`` starting ``"merchant-side:"``: the merchant must fix its integration and
the customer must not be dunned. The category of each refusal reason is paywatch's reading of
Adyen's descriptions [U]. Chargebacks are HARD (never re-charge a disputed payment), FRAUD
for the networks' fraud reason codes.
"""

from __future__ import annotations

import re
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

_EDITION = "adyen-refusal-reasons 2026"
_SOURCE = (
    "Adyen refusal reasons (docs.adyen.com/development-resources/refusal-reasons); "
    "categories are paywatch's reading of Adyen's descriptions [U]; reference/webhooks.md §5"
)
_CHARGEBACK_SOURCE = (
    "Card-network chargeback reason codes: Visa dispute group 10 (Fraud), Mastercard "
    "fraud message reason codes, American Express F-codes [S]; Adyen additionalData."
    "chargebackReasonCode [S]"
)


def _rule(rule_id: str, category: DeclineCategory, codes: str, source: str = _SOURCE) -> Rule:
    return Rule(rule_id, category, frozenset(codes.split()), source, _EDITION)


REFUSAL_REASONS = DeclineTable(
    "adyen",
    [
        _rule(
            "adyen.soft",
            SOFT,
            """refused referral acquirer_error issuer_unavailable not_enough_balance
            declined_non_generic withdrawal_amount_exceeded withdrawal_count_exceeded
            pin_validation_not_possible rreq_not_received_from_ds current_aid_is_in_penalty_box""",
        ),
        _rule(
            "adyen.hard",
            HARD,
            """blocked_card not_supported transaction_not_permitted restricted_card
            revocation_of_auth no_checking_account_available_on_card
            no_savings_account_available_on_card
            transaction_blocked_by_adyen_to_prevent_excessive_retry_fees""",
        ),
        _rule("adyen.merchant_side", HARD, "invalid_amount not_submitted"),
        _rule(
            "adyen.action",
            ACTION,
            """expired_card invalid_card_number 3d_not_authenticated shopper_cancelled
            invalid_pin pin_tries_exceeded cvc_declined avs_declined card_requires_online_pin
            mobile_pin_required contactless_fallback authentication_required
            cvm_required_restart_payment 3ds_authentication_error""",
        ),
        _rule(
            "adyen.fraud",
            FRAUD,
            "acquirer_fraud fraud fraud_cancelled issuer_suspected_fraud",
        ),
    ],
)
"""Normalized refusal reason (``reason_key``) -> category."""

CHARGEBACK_FRAUD = _rule(
    "adyen.chargeback.fraud",
    FRAUD,
    """10.1 10.2 10.3 10.4 10.5 4837 4840 4849 4863 4870 4871 F10 F14 F24 F29 F30 F31""",
    _CHARGEBACK_SOURCE,
)
CHARGEBACK = _rule("adyen.chargeback", HARD, "CHARGEBACK", _CHARGEBACK_SOURCE)
MERCHANT_SIDE_RULES = frozenset({"adyen.merchant_side"})

_NOT_KEY = re.compile(r"[^a-z0-9]+")
_RAW_CODE = re.compile(r"\s*([0-9A-Za-z]{2})\s*(?::|-|$)")
_MAC = re.compile(r"\s*([0-9]{1,2})(?![0-9])")
_NETWORKS = (("visa", "visa"), ("mc", "mastercard"), ("maestro", "mastercard"))


def reason_key(text: str | None) -> str | None:
    """A refusal reason as a table key: "CVC Declined" -> "cvc_declined"."""
    if not text:
        return None
    return _NOT_KEY.sub("_", text.lower()).strip("_") or None


def network_of(payment_method: str | None) -> str | None:
    """The card network of an Adyen payment method ("visa", "mc", "visadebit", "amex")."""
    if not payment_method:
        return None
    method = payment_method.strip().lower()
    for prefix, network in _NETWORKS:
        if method.startswith(prefix):
            return network
    return method or None


def raw_code(code_raw: str | None, reason_raw: str | None) -> str | None:
    """The scheme's response code: ``refusalCodeRaw``, else the prefix of ``refusalReasonRaw``."""
    if code_raw and code_raw.strip():
        return code_raw.strip()[:8]
    match = _RAW_CODE.match(reason_raw or "")
    return match.group(1).upper() if match else None


def advice_code(mac: str | None) -> str | None:
    """The two-digit Mastercard MAC of ``merchantAdviceCode`` ("01: New account ..." -> "01")."""
    match = _MAC.match(mac or "")
    return match.group(1).zfill(2) if match else None


def explain(reason: str | None, network: str | None, mac: str | None, raw: str | None) -> Verdict:
    """Classify a refused authorisation and name the rule that decided it."""
    static = REFUSAL_REASONS.lookup(reason_key(reason))
    if static and (static.category is FRAUD or _merchant_side(static)):
        return static
    return network_verdict(network, mac, raw) or static or UNKNOWN_VERDICT


def explain_chargeback(reason_code: str | None) -> Verdict:
    """FRAUD for the networks' fraud chargeback reason codes, else HARD."""
    if (reason_code or "").strip().upper() in CHARGEBACK_FRAUD.codes:
        return Verdict(FRAUD, CHARGEBACK_FRAUD)
    return Verdict(HARD, CHARGEBACK)


def _merchant_side(verdict: Verdict) -> bool:
    return verdict.rule is not None and verdict.rule.id in MERCHANT_SIDE_RULES


def refusal(reason: str | None, additional: dict[str, Any], network: str | None) -> Decline:
    """The Decline of a refused authorisation (or a failed capture)."""
    mac = advice_code(_str(additional.get("merchantAdviceCode")))
    raw = raw_code(_str(additional.get("refusalCodeRaw")), _str(additional.get("refusalReasonRaw")))
    verdict = explain(reason, network, mac, raw)
    return to_decline(
        verdict,
        code=reason_key(reason),
        network=network,
        network_code=raw,
        advice_code=mac,
        message=reason,
        merchant_side=_merchant_side(verdict),
    )


def chargeback(reason: str | None, additional: dict[str, Any], network: str | None) -> Decline:
    """The Decline of a chargeback: HARD, FRAUD for the networks' fraud reason codes."""
    code = _str(additional.get("chargebackReasonCode"))
    return Decline(
        code=f"chargeback:{code}" if code else "chargeback",
        category=explain_chargeback(code).category,
        network=network_of(_str(additional.get("chargebackSchemeCode"))) or network,
        message=f"chargeback: {reason}" if reason else "chargeback",
    )


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
