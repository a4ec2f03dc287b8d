"""Card-network retry rules as data, each with its source tag and rulebook edition.

``assess(decline, book)`` turns one decline into a ``Verdict``: what the saga may do next
and the rule that says so. Every candidate rule that matches is collected and the
**strictest wins** (reference/recovery-rules.md §3b: "where they disagree, use the stricter
value"; IanFoxDev/decline-codes ADR 0001: "the network's rule is a ceiling, not a setting"):

1. the Mastercard Merchant Advice Code (network ``mastercard``, or an unsure network that
   sent a MAC), then the Visa category of the response code (network ``visa``, or an unsure
   network that sent a response code);
2. the decline category the provider module derived (FRAUD and HARD stop, ACTION waits for
   new credentials, SOFT retries). UNKNOWN adds nothing;
3. nothing matched at all: **no advice, no retry** [NW11]. paywatch does not retry on the
   network's behalf when neither the network nor the provider says a retry may succeed; it
   asks the customer for a payment method instead (``Action.UPDATE``).

A Visa response code is itself advice: category 4 ("everything else") is retryable within
the counters, so an UNKNOWN decline that carries a Visa code is retried within them.

Editions are chosen per tenant (``TenantPolicy.visa_edition`` / ``mastercard_edition``):
the limit (15 vs 20 reattempts) and the code -> category table both move between editions.
Counters (``WindowLimit``) are enforced by ``limits.retry_gate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from paywatch.schemas.models import Decline, DeclineCategory, Frozen, RuleRef


class Action(StrEnum):
    """What a decline allows, from most to least permissive."""

    RETRY = "RETRY"  # retry within the counters
    WAIT = "WAIT"  # retry within the counters, not before `wait` after the decline
    UPDATE = "UPDATE"  # new or fixed credentials first, then retry
    STOP = "STOP"  # never again on this card; another card may be tried
    CANCEL = "CANCEL"  # stop and cancel the recurring agreement


_RANK = {Action.RETRY: 0, Action.WAIT: 1, Action.UPDATE: 2, Action.STOP: 3, Action.CANCEL: 4}


class Verdict(Frozen):
    """The action a decline allows and the rule that decided it."""

    action: Action
    rule: RuleRef
    wait: timedelta = timedelta(0)

    @property
    def retryable(self) -> bool:
        """May the same credentials be retried (within the counters)?"""
        return self.action in (Action.RETRY, Action.WAIT)

    @property
    def needs_customer(self) -> bool:
        """Must the customer act (new or fixed payment method) before any retry?"""
        return self.action in (Action.UPDATE, Action.STOP)

    def describe(self) -> str:
        """One line for a transition's reason."""
        text = {
            Action.RETRY: "retryable within the counters",
            Action.WAIT: f"retryable {self.wait} after the decline at the earliest",
            Action.UPDATE: "a new or fixed payment method first",
            Action.STOP: "never again on this card",
            Action.CANCEL: "stop, and cancel the recurring agreement",
        }[self.action]
        return f"{self.rule.id}: {text}"


PAYWATCH_EDITION = "paywatch-recovery-2026-1"
"""Edition of paywatch's own rules (category fallbacks, defaults)."""
_TAXONOMY = "reference/webhooks.md §5"


def paywatch_rule(rule_id: str, source: str = _TAXONOMY) -> RuleRef:
    """A rule of paywatch's own rulebook."""
    return RuleRef(id=f"paywatch.{rule_id}", edition=PAYWATCH_EDITION, source=source)


NO_ADVICE = Verdict(action=Action.UPDATE, rule=paywatch_rule("no_advice", "[NW11]"))
"""No network advice and no known category: never retry on the network's behalf."""

_CATEGORY = {
    DeclineCategory.FRAUD: Verdict(action=Action.STOP, rule=paywatch_rule("category.fraud")),
    DeclineCategory.HARD: Verdict(action=Action.STOP, rule=paywatch_rule("category.hard")),
    DeclineCategory.ACTION: Verdict(action=Action.UPDATE, rule=paywatch_rule("category.action")),
    DeclineCategory.SOFT: Verdict(action=Action.RETRY, rule=paywatch_rule("category.soft")),
}


# --- Visa ------------------------------------------------------------------------------

_V1 = "04 07 12 14 15 41 43 46 57 R0 R1 R3"
_V2 = "03 19 39 51 52 53 59 61 62 65 75 78 86 91 93 96 5C 9G N3 N4 Z5"
# 1A and 70 are category 3 in Europe/CEMEA only; the region is unknown here, so the
# stricter reading (revalidate first) applies everywhere. 83 joins category 2 on
# 2026-07-25; until then it is category 4, which is treated the same.
_V3 = "54 55 82 6P N7 1A 70"


def _codes(text: str, drop: str = "", add: str = "") -> frozenset[str]:
    return (frozenset(text.split()) - frozenset(drop.split())) | frozenset(add.split())


@dataclass(frozen=True)
class VisaEdition:
    """One edition of Visa's excessive-reattempt rules."""

    edition: str
    reattempts: int  # per card in `window`, after the original attempt
    table_source: str
    limit_source: str
    category1: frozenset[str]
    category3: frozenset[str]
    category2: frozenset[str]
    window: timedelta = timedelta(days=30)

    def category(self, code: str) -> int:
        """Visa decline category (1..4) of a normalized response code; 4 is everything else."""
        for number, codes in ((1, self.category1), (3, self.category3), (2, self.category2)):
            if code in codes:
                return number
        return 4


VISA_EDITIONS: dict[str, VisaEdition] = {
    e.edition: e
    for e in (
        # Older processor tables: 14 in category 3; 03, 62, 78, 93 in category 1 [NW12][OS2].
        VisaEdition(
            "visa-categories-pre-2021-04",
            15,
            "[NW12][OS2]",
            "[NW4][NW5]",
            _codes(_V1, drop="14", add="03 62 78 93"),
            _codes(_V3, add="14"),
            _codes(_V2, drop="03 62 78 93"),
        ),
        VisaEdition(
            "visa-rules-2021-04",
            15,
            "[NW1][OS2]",
            "[NW4][NW5]",
            _codes(_V1),
            _codes(_V3),
            _codes(_V2),
        ),
        # Checkout.com: 20 from 2025-05-19 (separate CIT/MIT counters; paywatch counts both
        # together, which is stricter) [NW2].
        VisaEdition(
            "visa-2025-05-19", 20, "[NW1][OS2]", "[NW2]", _codes(_V1), _codes(_V3), _codes(_V2)
        ),
        # Visa Core Rules 2026-04-18, ID# 0030640, Table 7-2 [OS2].
        VisaEdition(
            "visa-core-rules-2026-04-18",
            20,
            "[NW1][NW3][OS2]",
            "[NW2][OS2]",
            _codes(_V1),
            _codes(_V3),
            _codes(_V2),
        ),
    )
}
VISA_CURRENT = "visa-core-rules-2026-04-18"

_VISA_ACTION = {1: Action.STOP, 2: Action.RETRY, 3: Action.UPDATE, 4: Action.RETRY}


# --- Mastercard ------------------------------------------------------------------------


@dataclass(frozen=True)
class MastercardEdition:
    """One edition of Mastercard's Transaction Processing Excellence limits."""

    edition: str
    declines_per_day: int  # same card, same merchant, 24 h
    same_amount_attempts: int  # same card, merchant and amount, 30 days
    source: str


MASTERCARD_EDITIONS: dict[str, MastercardEdition] = {
    e.edition: e
    for e in (
        MastercardEdition("mastercard-tpe-2022-10", 10, 35, "[NW2][NW9][OS2]"),
        # 20 declines in 24 h until October 2022 [NW13]; the 35-attempt rule is kept, as the
        # stricter reading of an edition whose sources do not mention it.
        MastercardEdition("mastercard-excessive-2019", 20, 35, "[NW13][OS2]"),
    )
}
MASTERCARD_CURRENT = "mastercard-tpe-2022-10"

_H = timedelta(hours=1)
# MAC -> (action, earliest retry after the decline, source) [recovery-rules.md §3b].
MAC_RULES: dict[str, tuple[Action, timedelta, str]] = {
    "01": (Action.UPDATE, timedelta(0), "[NW7][NW8]"),  # new account information
    "02": (Action.WAIT, 72 * _H, "[NW8]"),  # try again later; one processor suggests 72 h
    "03": (Action.STOP, timedelta(0), "[NW10][NW2]"),  # do not try again
    "04": (Action.UPDATE, timedelta(0), "[NW7][OS2]"),  # token requirements not fulfilled
    "21": (Action.CANCEL, timedelta(0), "[NW2][NW8]"),  # cardholder stopped the agreement
    **{
        code: (Action.WAIT, hours * _H, "[NW9][NW7]")
        for code, hours in zip(
            ("24", "25", "26", "27", "28", "29", "30"), (1, 24, 48, 96, 144, 192, 240), strict=True
        )
    },
}
"""MACs 22, 40, 41 and 43 are informational: they add no rule."""


# --- Rulebook and counters -------------------------------------------------------------


@dataclass(frozen=True)
class WindowLimit:
    """A counter: a new attempt is allowed while at most `max_prior` attempts sit in `window`."""

    rule: RuleRef
    window: timedelta
    max_prior: int
    same_amount: bool = False


@dataclass(frozen=True)
class Rulebook:
    """The Visa and Mastercard editions in force for one tenant."""

    visa: VisaEdition
    mastercard: MastercardEdition

    def limits(self, network: str | None) -> tuple[WindowLimit, ...]:
        """Counters for a card of `network`; an unknown or other network gets all of them."""
        visa, mc = self.visa, self.mastercard
        visa_limits = (
            # `reattempts` after the original: the original plus that many may sit in 30 days.
            WindowLimit(
                RuleRef(id="visa.reattempts", edition=visa.edition, source=visa.limit_source),
                visa.window,
                visa.reattempts,
            ),
        )
        mc_limits = (
            # Every attempt may be declined, so attempts are counted as declines (stricter).
            WindowLimit(
                RuleRef(id="mastercard.declines_24h", edition=mc.edition, source=mc.source),
                timedelta(hours=24),
                mc.declines_per_day - 1,
            ),
            WindowLimit(
                RuleRef(id="mastercard.same_amount_30d", edition=mc.edition, source=mc.source),
                timedelta(days=30),
                mc.same_amount_attempts - 1,
                same_amount=True,
            ),
        )
        if network == "visa":
            return visa_limits
        if network == "mastercard":
            return mc_limits
        return visa_limits + mc_limits


def rulebook(
    visa_edition: str = VISA_CURRENT, mastercard_edition: str = MASTERCARD_CURRENT
) -> Rulebook:
    """The rulebook of the named editions (KeyError for an unknown one)."""
    return Rulebook(VISA_EDITIONS[visa_edition], MASTERCARD_EDITIONS[mastercard_edition])


_NETWORKS = {
    "visa": "visa",
    "mastercard": "mastercard",
    "mc": "mastercard",
    "maestro": "mastercard",
}
_UNSURE = frozenset({"", "unknown"})


def network_of(name: str | None) -> str | None:
    """``visa``, ``mastercard``, another network's name, or None when unknown."""
    key = name.strip().lower() if name else ""
    return None if key in _UNSURE else _NETWORKS.get(key, key)


def normalize_code(code: str | None) -> str | None:
    """A network code as the tables spell it: upper case, "3" -> "03"."""
    text = code.strip().upper() if code else ""
    return text.zfill(2) if text.isdigit() and len(text) == 1 else text or None


def _mastercard(decline: Decline, network: str | None, book: Rulebook) -> Verdict | None:
    code = normalize_code(decline.advice_code)
    if network not in (None, "mastercard") or code not in MAC_RULES:
        return None
    action, wait, source = MAC_RULES[code]
    rule = RuleRef(id=f"mastercard.mac.{code}", edition=book.mastercard.edition, source=source)
    return Verdict(action=action, rule=rule, wait=wait)


def _visa(decline: Decline, network: str | None, book: Rulebook) -> Verdict | None:
    code = normalize_code(decline.network_code)
    if network not in (None, "visa") or code is None:
        return None
    category = book.visa.category(code)
    rule = RuleRef(
        id=f"visa.category{category}", edition=book.visa.edition, source=book.visa.table_source
    )
    return Verdict(action=_VISA_ACTION[category], rule=rule)


def strictest(verdicts: list[Verdict]) -> Verdict:
    """The most restrictive verdict; among equals the first, or the longest wait."""
    best = verdicts[0]
    for verdict in verdicts[1:]:
        rank, best_rank = _RANK[verdict.action], _RANK[best.action]
        if rank > best_rank or (rank == best_rank and verdict.wait > best.wait):
            best = verdict
    return best


def assess(decline: Decline | None, book: Rulebook) -> Verdict:
    """What one decline allows next, and the rule that decided it."""
    if decline is None:
        return NO_ADVICE
    network = network_of(decline.network)
    found = [
        v
        for v in (
            _mastercard(decline, network, book),
            _visa(decline, network, book),
            _CATEGORY.get(decline.category),
        )
        if v is not None
    ]
    return strictest(found) if found else NO_ADVICE
