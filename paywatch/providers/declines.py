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
the rule behind its decision. Each provider keeps its tables in ``providers/<name>/declines.py``
(Stripe's: :mod:`paywatch.providers.stripe.declines`); the guardrails, the table type and the
``Decline`` a verdict becomes (``to_decline``) are shared here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import ValidationError

from paywatch.errors import PayloadError
from paywatch.schemas.models import Decline, DeclineCategory

SOFT = DeclineCategory.SOFT
HARD = DeclineCategory.HARD
ACTION = DeclineCategory.ACTION
FRAUD = DeclineCategory.FRAUD
UNKNOWN = DeclineCategory.UNKNOWN


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


def rule(rule_id: str, category: DeclineCategory, codes: str, source: str, edition: str) -> Rule:
    """A rule from whitespace-separated codes."""
    return Rule(rule_id, category, frozenset(codes.split()), source, edition)


_MAC_SOURCE = (
    "Mastercard Merchant Advice Codes via processor docs and IanFoxDev/decline-codes "
    "data/mastercard.json; reference/webhooks.md §5, recovery-rules.md §3b"
)
MASTERCARD_ADVICE = DeclineTable(
    "mastercard-mac",
    [
        rule(
            "mastercard.mac.new_account_info", ACTION, "01 04", _MAC_SOURCE, "mastercard-mac 2026"
        ),
        rule(
            "mastercard.mac.try_later",
            SOFT,
            "02 24 25 26 27 28 29 30",
            _MAC_SOURCE,
            "mastercard-mac 2026",
        ),
        rule("mastercard.mac.do_not_try_again", HARD, "03 21", _MAC_SOURCE, "mastercard-mac 2026"),
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
        rule(
            "visa.category1",
            HARD,
            "04 07 12 14 15 41 43 46 57 R0 R1 R3",
            _VISA_SOURCE,
            "visa-core-rules 2026-04-18",
        ),
        rule(
            "visa.category3", ACTION, "54 55 82 N7 6P", _VISA_SOURCE, "visa-core-rules 2026-04-18"
        ),
    ],
)
"""Visa response code (Stripe ``network_decline_code``) -> category, categories 1 and 3."""

# Brands whose advice/response codes the guardrail tables describe; None/unknown networks
# get the guardrails too, since skipping them would risk a fined reattempt.
_UNSURE_NETWORKS = frozenset({None, "", "unknown"})


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


MERCHANT_SIDE = "merchant-side:"
"""Prefix of ``Decline.message`` for declines the merchant, not the customer, must fix."""


def to_decline(
    verdict: Verdict,
    *,
    code: str | None,
    message: str | None,
    network: str | None = None,
    network_code: str | None = None,
    advice_code: str | None = None,
    merchant_side: bool = False,
    fallback: str = "merchant configuration error",
) -> Decline:
    """The canonical Decline of a verdict; a merchant-side one says so in its message.

    The codes and message come from the body: one the model refuses (NUL, too long, a lone
    surrogate) makes the body unreadable (PayloadError, 400), like any other odd field,
    rather than a ValidationError that no caller maps.
    """
    if merchant_side:
        message = f"{MERCHANT_SIDE} {message or fallback}"
    try:
        return Decline(
            code=code,
            category=verdict.category,
            network=network,
            network_code=network_code,
            advice_code=advice_code,
            message=message,
        )
    except ValidationError as exc:
        fields = ", ".join(str(e["loc"][0]) for e in exc.errors(include_input=False)[:3])
        raise PayloadError(f"decline fields refused: {fields}") from exc
