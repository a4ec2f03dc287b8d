"""Authorize.Net decline classification by ``responseReasonCode`` (reference/webhooks.md §5).

Webhook payloads carry ``responseCode`` (1 approved, 2 declined, 3 error, 4 held) but usually
no reason [U]; a reason is read when present (``responseReasonCode``, e.g. from a payload
enriched with ``getTransactionDetails``). Without one the decline is UNKNOWN, except for
``net.authorize.payment.fraud.declined``, which is FRAUD by its event type.

Merchant-side configuration errors (17 and 28, "card type not accepted") are HARD with a
``Decline.message`` starting ``"merchant-side:"``: the merchant must fix its account, the
customer must not be dunned. The SOFT/HARD/ACTION labels are the reference's own reading of
the response texts [U].
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
    to_decline,
)
from paywatch.providers.declines import MERCHANT_SIDE as MERCHANT_SIDE
from paywatch.schemas.models import Decline, DeclineCategory

_EDITION = "authorizenet-codes 2016"
_SOURCE = (
    "Authorize.Net response reason codes (bradberger/goauthorize transaction/codes.go, "
    "'pulled directly from Authorize.net'); reference/webhooks.md §5 (labels [U])"
)


def _rule(rule_id: str, category: DeclineCategory, codes: str, source: str = _SOURCE) -> Rule:
    return Rule(rule_id, category, frozenset(codes.split()), source, _EDITION)


REASON_CODES = DeclineTable(
    "authorizenet",
    [
        _rule(
            "authorizenet.soft",
            SOFT,
            "2 3 11 19 20 21 22 23 25 26 57 58 59 60 61 62 63 120 121 122",
        ),
        # 36: authorized but settlement failed; the reference says SOFT or investigate.
        _rule("authorizenet.settlement_failed", SOFT, "36"),
        _rule("authorizenet.hard", HARD, "4"),
        _rule("authorizenet.merchant_side", HARD, "17 28"),
        _rule(
            "authorizenet.action",
            ACTION,
            "6 7 8 27 37 44 45 65 78 315 316 317",
        ),
        _rule("authorizenet.fraud", FRAUD, "41 250 251 252 253 254"),
    ],
)
"""``responseReasonCode`` -> category."""

FRAUD_DECLINED = _rule(
    "authorizenet.event.fraud_declined",
    FRAUD,
    "net.authorize.payment.fraud.declined",
    "Authorize.Net event type net.authorize.payment.fraud.declined; reference/webhooks.md §1.4",
)
MERCHANT_SIDE_RULES = frozenset({"authorizenet.merchant_side"})

RESPONSE_TEXTS = {
    2: "This transaction has been declined.",
    3: "There has been an error processing this transaction.",
}
"""Authorize.Net's texts for ``responseCode`` 2 and 3 (when no reason text is sent)."""
FRAUD_DECLINED_TEXT = "Declined after fraud review (net.authorize.payment.fraud.declined)."


def explain(reason_code: str | None, fraud_event: bool) -> Verdict:
    """Classify a decline and name the rule that decided it."""
    if fraud_event:
        return Verdict(FRAUD, FRAUD_DECLINED)
    return REASON_CODES.lookup(reason_code) or UNKNOWN_VERDICT


def decline(
    reason_code: str | None, response_code: int | None, text: str | None, fraud_event: bool
) -> Decline:
    """The canonical Decline of a failed Authorize.Net payment event."""
    verdict = explain(reason_code, fraud_event)
    message = text or RESPONSE_TEXTS.get(response_code or 0)
    if fraud_event and message is None:
        message = FRAUD_DECLINED_TEXT
    return to_decline(
        verdict,
        code=reason_code,
        message=message,
        merchant_side=bool(verdict.rule and verdict.rule.id in MERCHANT_SIDE_RULES),
        fallback="card type not accepted by the merchant",
    )
