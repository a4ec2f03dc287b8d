"""Decline classification as data: one code table per provider, network guardrails first.

Precedence (reference/webhooks.md §5, reference/recovery-rules.md §3):

1. fraud signals (a Radar block, a fraud decline code): FRAUD, whatever any advice says,
   because retrying or explaining a fraud decline helps the fraudster;
2. card-network guardrails: the Mastercard Merchant Advice Code, then the Visa response-code
   category. They are the networks' own rules (reattempts against them are fined), so they
   beat anything a provider derives;
3. the provider's live advice field (Stripe ``advice_code``);
4. the provider's static decline-code table;
5. UNKNOWN.

Every group of codes carries the source and edition that put it there, so a saga can name
the rule behind its decision. Adding a provider means adding one ``DeclineTable`` (and a
small ``classify_<provider>`` reading that provider's fields); the guardrails are shared.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from paywatch.schemas.models import DeclineCategory

SOFT = DeclineCategory.SOFT
HARD = DeclineCategory.HARD
ACTION = DeclineCategory.ACTION
FRAUD = DeclineCategory.FRAUD
UNKNOWN = DeclineCategory.UNKNOWN

_STRIPE_DOCS = (
    "Stripe decline codes (docs.stripe.com/declines/codes) as mirrored in "
    "hideokamoto/stripe-decline-codes and IanFoxDev/decline-codes data/stripe.json; "
    "reference/webhooks.md §5"
)
_STRIPE_EDITION = "stripe-docs 2026-07"


@dataclass(frozen=True)
class Rule:
    """A group of codes that share one category, with the source that says so."""

    id: str
    category: DeclineCategory
    codes: frozenset[str]
    source: str
    edition: str


@dataclass(frozen=True)
class Verdict:
    """A category and the rule that decided it (``rule`` is None for UNKNOWN)."""

    category: DeclineCategory
    rule: Rule | None = None


UNKNOWN_VERDICT = Verdict(UNKNOWN)


class DeclineTable:
    """Code -> rule lookup built from groups; a code may sit in one group only."""

    def __init__(self, name: str, rules: Iterable[Rule]) -> None:
        self.name = name
        self.rules = tuple(rules)
        self._by_code: dict[str, Rule] = {}
        for rule in self.rules:
            for code in rule.codes:
                if code in self._by_code:
                    raise ValueError(f"{name}: code {code!r} is in two groups")
                self._by_code[code] = rule

    def lookup(self, code: str | None) -> Verdict | None:
        """The verdict for ``code`` (already normalized), or None when the table has no row."""
        rule = self._by_code.get(code) if code else None
        return Verdict(rule.category, rule) if rule else None


def _rule(rule_id: str, category: DeclineCategory, codes: str, source: str, edition: str) -> Rule:
    return Rule(rule_id, category, frozenset(codes.split()), source, edition)


STRIPE_CODES = DeclineTable(
    "stripe",
    [
        _rule(
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
        _rule(
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
        _rule(
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
        _rule(
            "stripe.fraud",
            FRAUD,
            "fraudulent merchant_blacklist security_violation",
            _STRIPE_DOCS,
            _STRIPE_EDITION,
        ),
        _rule(
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
        _rule(
            "stripe.advice.hard",
            HARD,
            "do_not_try_again",
            "Stripe advice_code (docs.stripe.com/declines/codes); reference/webhooks.md §5",
            _STRIPE_EDITION,
        ),
        _rule(
            "stripe.advice.soft",
            SOFT,
            "try_again_later",
            "Stripe advice_code (docs.stripe.com/declines/codes); reference/webhooks.md §5",
            _STRIPE_EDITION,
        ),
        _rule(
            "stripe.advice.action",
            ACTION,
            "confirm_card_data",
            "Stripe advice_code (docs.stripe.com/declines/codes); reference/webhooks.md §5",
            _STRIPE_EDITION,
        ),
    ],
)
"""Stripe's live ``advice_code`` -> category (beats the static code table)."""

_MAC_SOURCE = (
    "Mastercard Merchant Advice Codes via processor docs and IanFoxDev/decline-codes "
    "data/mastercard.json; reference/webhooks.md §5, recovery-rules.md §3b"
)
MASTERCARD_ADVICE = DeclineTable(
    "mastercard-mac",
    [
        _rule(
            "mastercard.mac.new_account_info", ACTION, "01 04", _MAC_SOURCE, "mastercard-mac 2026"
        ),
        _rule(
            "mastercard.mac.try_later",
            SOFT,
            "02 24 25 26 27 28 29 30",
            _MAC_SOURCE,
            "mastercard-mac 2026",
        ),
        _rule("mastercard.mac.do_not_try_again", HARD, "03 21", _MAC_SOURCE, "mastercard-mac 2026"),
    ],
)
"""Mastercard MAC (Stripe ``network_advice_code``) -> category."""

_VISA_SOURCE = (
    "Visa Core Rules ID# 0030640 (excessive reattempts) via IanFoxDev/decline-codes "
    "data/visa.json; reference/webhooks.md §5, recovery-rules.md §3a"
)
VISA_RESPONSE = DeclineTable(
    "visa-response",
    [
        _rule(
            "visa.category1",
            HARD,
            "04 07 12 14 15 41 43 46 57 R0 R1 R3",
            _VISA_SOURCE,
            "visa-core-rules 2026-04-18",
        ),
        _rule(
            "visa.category3", ACTION, "54 55 82 N7 6P", _VISA_SOURCE, "visa-core-rules 2026-04-18"
        ),
    ],
)
"""Visa response code (Stripe ``network_decline_code``) -> category, categories 1 and 3."""

BLOCKED_RULE = Rule(
    "stripe.outcome.blocked",
    FRAUD,
    frozenset({"blocked"}),
    "Stripe charge outcome.type=blocked (Radar); reference/webhooks.md §5",
    _STRIPE_EDITION,
)

TABLES: dict[str, DeclineTable] = {"stripe": STRIPE_CODES}
"""Static decline-code table per provider name."""

# Brands whose advice/response codes the guardrail tables describe; None/unknown networks
# get the guardrails too, since skipping them would risk a fined reattempt.
_UNSURE_NETWORKS = frozenset({None, "", "unknown"})


def _provider_code(code: str | None) -> str | None:
    if not code:
        return None
    return code.strip().lower() or None


def _network_code(code: str | None) -> str | None:
    if not code:
        return None
    code = code.strip().upper()
    # Networks send two-character codes; some processors drop the leading zero ("3" for "03").
    return code.zfill(2) if code.isdigit() and len(code) == 1 else code or None


def network_verdict(
    network: str | None, advice_code: str | None, response_code: str | None
) -> Verdict | None:
    """Card-network guardrail for a decline, or None when no network rule applies."""
    network = network.strip().lower() if network else None
    if network in _UNSURE_NETWORKS or network == "mastercard":
        verdict = MASTERCARD_ADVICE.lookup(_network_code(advice_code))
        if verdict:
            return verdict
    if network in _UNSURE_NETWORKS or network == "visa":
        return VISA_RESPONSE.lookup(_network_code(response_code))
    return None


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
