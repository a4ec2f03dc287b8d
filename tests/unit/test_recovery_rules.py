"""Network rules as data: Visa categories by edition, Mastercard MACs, counters, precedence."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from paywatch.recovery.rules import (
    MAC_RULES,
    MASTERCARD_EDITIONS,
    VISA_EDITIONS,
    Action,
    assess,
    network_of,
    normalize_code,
    rulebook,
)
from paywatch.schemas.models import Decline, DeclineCategory

SOFT, HARD, ACTION = DeclineCategory.SOFT, DeclineCategory.HARD, DeclineCategory.ACTION
FRAUD, UNKNOWN = DeclineCategory.FRAUD, DeclineCategory.UNKNOWN
CURRENT = rulebook()
OLD = rulebook("visa-categories-pre-2021-04", "mastercard-excessive-2019")

# Copied from reference/recovery-rules.md §3a, not from the module under test.
VISA_CAT1 = "04 07 12 14 15 41 43 46 57 R0 R1 R3".split()
VISA_CAT2 = "03 19 39 51 52 53 59 61 62 65 75 78 86 91 93 96 5C 9G N3 N4 Z5".split()
VISA_CAT3 = "54 55 82 6P N7".split()
VISA_CAT4 = "01 05 13 58 63".split()
SOURCE_TAG = re.compile(r"^(\[[A-Z]+\d+\])+$")


def visa(code: str, category: DeclineCategory = UNKNOWN) -> Decline:
    return Decline(category=category, network="visa", network_code=code)


def mastercard(mac: str, category: DeclineCategory = UNKNOWN, code: str = "51") -> Decline:
    return Decline(category=category, network="mastercard", network_code=code, advice_code=mac)


@pytest.mark.parametrize("code", VISA_CAT1)
def test_visa_category_1_is_never_retried(code: str) -> None:
    verdict = assess(visa(code, SOFT), CURRENT)
    assert verdict.action is Action.STOP
    assert verdict.rule.id == "visa.category1"
    assert verdict.rule.edition == "visa-core-rules-2026-04-18"
    assert verdict.rule.source == "[NW1][NW3][OS2]"


@pytest.mark.parametrize("code", VISA_CAT2 + VISA_CAT4)
def test_visa_categories_2_and_4_are_retryable(code: str) -> None:
    verdict = assess(visa(code), CURRENT)
    assert verdict.action is Action.RETRY
    assert verdict.rule.id in ("visa.category2", "visa.category4")


@pytest.mark.parametrize("code", VISA_CAT3)
def test_visa_category_3_needs_revalidated_data_first(code: str) -> None:
    verdict = assess(visa(code), CURRENT)
    assert (verdict.action, verdict.rule.id) == (Action.UPDATE, "visa.category3")


@pytest.mark.parametrize("code", ["03", "62", "78", "93"])
def test_codes_moved_from_category_1_to_2_in_april_2021(code: str) -> None:
    assert assess(visa(code), OLD).action is Action.STOP
    assert assess(visa(code), OLD).rule.edition == "visa-categories-pre-2021-04"
    assert assess(visa(code), CURRENT).action is Action.RETRY
    assert assess(visa(code), rulebook("visa-rules-2021-04")).rule.id == "visa.category2"


def test_code_14_was_category_3_in_older_tables_and_is_category_1_now() -> None:
    assert assess(visa("14"), OLD).rule.id == "visa.category3"
    assert assess(visa("14"), CURRENT).rule.id == "visa.category1"


@pytest.mark.parametrize(
    ("edition", "limit"),
    [
        ("visa-categories-pre-2021-04", 15),
        ("visa-rules-2021-04", 15),
        ("visa-2025-05-19", 20),
        ("visa-core-rules-2026-04-18", 20),
    ],
)
def test_visa_reattempt_limit_per_edition(edition: str, limit: int) -> None:
    (visa_limit,) = rulebook(edition).limits("visa")
    assert visa_limit.max_prior == limit  # the original plus `limit` reattempts in 30 days
    assert visa_limit.window == timedelta(days=30)
    assert (visa_limit.rule.id, visa_limit.rule.edition) == ("visa.reattempts", edition)


@pytest.mark.parametrize(
    ("mac", "action", "wait_hours", "rule_source"),
    [
        ("01", Action.UPDATE, 0, "[NW7][NW8]"),
        ("02", Action.WAIT, 72, "[NW8]"),
        ("03", Action.STOP, 0, "[NW10][NW2]"),
        ("04", Action.UPDATE, 0, "[NW7][OS2]"),
        ("21", Action.CANCEL, 0, "[NW2][NW8]"),
        ("24", Action.WAIT, 1, "[NW9][NW7]"),
        ("25", Action.WAIT, 24, "[NW9][NW7]"),
        ("26", Action.WAIT, 48, "[NW9][NW7]"),
        ("27", Action.WAIT, 96, "[NW9][NW7]"),
        ("28", Action.WAIT, 144, "[NW9][NW7]"),
        ("29", Action.WAIT, 192, "[NW9][NW7]"),
        ("30", Action.WAIT, 240, "[NW9][NW7]"),
    ],
)
def test_mastercard_advice_codes(
    mac: str, action: Action, wait_hours: int, rule_source: str
) -> None:
    verdict = assess(mastercard(mac, SOFT), CURRENT)
    assert verdict.action is action
    assert verdict.wait == timedelta(hours=wait_hours)
    assert verdict.rule.id == f"mastercard.mac.{mac}"
    assert verdict.rule.edition == "mastercard-tpe-2022-10"
    assert verdict.rule.source == rule_source


def test_mastercard_informational_macs_add_no_rule() -> None:
    for mac in ("22", "40", "41", "43"):
        assert assess(mastercard(mac, SOFT), CURRENT).rule.id == "paywatch.category.soft"


def test_single_digit_advice_codes_are_read_as_two_digits() -> None:
    assert normalize_code(" 3") == "03"
    assert assess(mastercard("3"), CURRENT).rule.id == "mastercard.mac.03"


def test_mastercard_counters_per_edition() -> None:
    day, amount = CURRENT.limits("mastercard")
    assert (day.max_prior, day.window, day.rule.id) == (
        9,
        timedelta(hours=24),
        "mastercard.declines_24h",
    )
    assert (amount.max_prior, amount.window, amount.same_amount) == (34, timedelta(days=30), True)
    old_day, _ = OLD.limits("mastercard")
    assert (old_day.max_prior, old_day.rule.edition) == (19, "mastercard-excessive-2019")


def test_an_unknown_or_other_network_gets_every_counter() -> None:
    ids = ["visa.reattempts", "mastercard.declines_24h", "mastercard.same_amount_30d"]
    assert [limit.rule.id for limit in CURRENT.limits(None)] == ids
    assert [limit.rule.id for limit in CURRENT.limits("amex")] == ids


def test_network_names_are_normalized() -> None:
    assert [network_of(n) for n in ("Visa", "MC", "maestro", "", None, "Amex")] == [
        "visa",
        "mastercard",
        "mastercard",
        None,
        None,
        "amex",
    ]


def test_mastercard_advice_is_ignored_on_a_visa_card_and_vice_versa() -> None:
    assert assess(Decline(category=SOFT, network="visa", advice_code="03"), CURRENT).action is (
        Action.RETRY
    )
    on_mc = Decline(category=SOFT, network="mastercard", network_code="43")
    assert assess(on_mc, CURRENT).rule.id == "paywatch.category.soft"


def test_unsure_network_applies_both_tables() -> None:
    assert assess(Decline(advice_code="03"), CURRENT).rule.id == "mastercard.mac.03"
    assert assess(Decline(network_code="43"), CURRENT).rule.id == "visa.category1"


def test_strictest_rule_wins() -> None:
    # A soft provider category cannot license a retry the network forbids ...
    assert assess(visa("43", SOFT), CURRENT).action is Action.STOP
    # ... and a network "retry" cannot license what the provider calls hard or fraud.
    assert assess(visa("51", HARD), CURRENT).rule.id == "paywatch.category.hard"
    assert assess(mastercard("24", FRAUD), CURRENT).rule.id == "paywatch.category.fraud"
    # MAC 03 (stop) beats Visa-style code 51 and a soft category; MAC 21 beats everything.
    assert assess(mastercard("21", FRAUD), CURRENT).action is Action.CANCEL


def test_longest_wait_wins_among_waits() -> None:
    verdict = assess(Decline(category=SOFT, advice_code="30", network_code="51"), CURRENT)
    assert (verdict.action, verdict.wait) == (Action.WAIT, timedelta(days=10))


def test_no_advice_means_no_automatic_retry() -> None:
    for decline in (None, Decline(), Decline(category=UNKNOWN, network="amex", network_code="05")):
        verdict = assess(decline, CURRENT)
        assert (verdict.action, verdict.rule.id, verdict.rule.source) == (
            Action.UPDATE,
            "paywatch.no_advice",
            "[NW11]",
        )


@pytest.mark.parametrize(
    ("category", "action"),
    [(SOFT, Action.RETRY), (HARD, Action.STOP), (ACTION, Action.UPDATE), (FRAUD, Action.STOP)],
)
def test_provider_category_without_network_codes(category: DeclineCategory, action: Action) -> None:
    verdict = assess(Decline(category=category), CURRENT)
    assert verdict.action is action
    assert verdict.rule.id == f"paywatch.category.{category.value.lower()}"


def test_every_network_rule_names_a_source_tag_and_an_edition() -> None:
    for _, _, source in MAC_RULES.values():
        assert SOURCE_TAG.match(source), source
    for edition in VISA_EDITIONS.values():
        assert SOURCE_TAG.match(edition.table_source) and SOURCE_TAG.match(edition.limit_source)
        assert edition.edition.startswith("visa-")
    for mc in MASTERCARD_EDITIONS.values():
        assert SOURCE_TAG.match(mc.source) and mc.edition.startswith("mastercard-")


def test_a_code_sits_in_one_visa_category_per_edition() -> None:
    for edition in VISA_EDITIONS.values():
        groups = (edition.category1, edition.category2, edition.category3)
        assert sum(len(g) for g in groups) == len(set().union(*groups)), edition.edition
