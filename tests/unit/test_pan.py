"""PAN detection at ingest: Luhn-valid 13-19 digit card numbers, never written to the log."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paywatch.providers.pan import ascii_view, contains_pan, luhn_valid
from tests.builders.stripe import (
    stripe_body,
    stripe_charge_failed,
    stripe_event,
    stripe_invoice,
    stripe_payment_intent_failed,
    stripe_subscription,
)


def _luhn_reference(number: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _with_check_digit(payload: str) -> str:
    return next(payload + d for d in "0123456789" if _luhn_reference(payload + d))


def _grouped4(number: str) -> str:
    return " ".join(number[i : i + 4] for i in range(0, len(number), 4))


# Public test numbers of the card networks (Stripe/Adyen docs).
TEST_CARDS = [
    "4242424242424242",
    "5555555555554444",
    "2223003122003222",
    "378282246310005",
    "6011111111111117",
    "3056930009020004",
    "4000056655665556",
    "6200000000000005",
]


@pytest.mark.parametrize("pan", TEST_CARDS)
def test_contiguous_card_numbers_are_found(pan: str) -> None:
    assert contains_pan(pan.encode())
    assert contains_pan(json.dumps({"description": f"card {pan} please"}).encode())
    assert contains_pan(json.dumps({"number": int(pan)}).encode())


@pytest.mark.parametrize(
    "text",
    [
        "4242 4242 4242 4242",
        "4242-4242-4242-4242",
        "3782 822463 10005",
        "4242-4242 4242-4242",
        "memo: 5555 5555 5555 4444.",
        "(4000-0566-5566-5556)",
        "card: 4242424242424242;",
        # separators of any kind, several in a row (issue 12 item 2)
        "4242  4242 4242 4242",
        "4242 - 4242 - 4242 - 4242",
        "4242.4242.4242.4242",
        "4242_4242_4242_4242",
        "4242/4242/4242/4242",
        "4242\t4242\t4242\t4242",
        "card4242424242424242x",
    ],
)
def test_grouped_card_numbers_are_found(text: str) -> None:
    assert contains_pan(text.encode())


@pytest.mark.parametrize(
    "text",
    [
        "4242424242424241",  # Luhn fails
        "424242424242",  # 12 digits
        "42424242424242424242",  # 20 digits: part of a longer run
        "14242424242424242",  # a PAN inside a longer digit run
        "42424242424242420",
        "1700000000000",
        "1750000000123",  # millisecond timestamps
        _with_check_digit("1" + "0" * 14),
        _with_check_digit("7" + "1" * 14),
        _with_check_digit("8" + "2" * 14),
        _with_check_digit("9" + "3" * 14),
        _grouped4(_with_check_digit("1" + "0" * 14)),
        _grouped4(_with_check_digit("7" + "5" * 14)),
        "4242,4242,4242,4242",  # commas separate list items, not digit groups
        "4242    4242 4242 4242",  # four separators end a number (table columns)
        "4242\n4242\n4242\n4242",  # so do line breaks
        "0.4242424242424242",  # a decimal fraction
        "+4242424242424242",  # an E.164 phone number
        "in_1RaQ1sLkdIwHu7ixK9pLm2Qw",
        "2025-06-15T15:06:40Z",
    ],
)
def test_non_card_digit_strings_are_not_found(text: str) -> None:
    assert not contains_pan(text.encode())


def test_pan_next_to_a_longer_separated_chain_is_still_found() -> None:
    # Windows start and end on group boundaries, so neighbours do not hide it.
    assert contains_pan(b"12 4242 4242 4242 4242")
    assert contains_pan(b"4242 4242 4242 4242 12")


@pytest.mark.parametrize(
    "builder",
    [
        lambda: stripe_invoice(basil=True),
        lambda: stripe_invoice(basil=False),
        lambda: stripe_charge_failed(basil=False),
        stripe_payment_intent_failed,
        stripe_subscription,
    ],
)
def test_realistic_stripe_payloads_have_no_pan(builder: Callable[[], dict[str, Any]]) -> None:
    assert not contains_pan(stripe_body(stripe_event("x", builder())))


@given(st.text(alphabet="0123456789", min_size=1, max_size=30))
def test_luhn_matches_a_reference_implementation(digits: str) -> None:
    assert luhn_valid(digits.encode()) == _luhn_reference(digits)


@st.composite
def _card_numbers(draw: st.DrawFn) -> str:
    length = draw(st.integers(min_value=13, max_value=19))
    first = draw(st.sampled_from("23456"))
    middle = draw(st.text(alphabet="0123456789", min_size=length - 2, max_size=length - 2))
    return _with_check_digit(first + middle)


@st.composite
def _grouped(draw: st.DrawFn, pan: str) -> str:
    cuts = sorted(draw(st.sets(st.integers(min_value=1, max_value=len(pan) - 1), max_size=8)))
    groups = [pan[i:j] for i, j in zip([0, *cuts], [*cuts, len(pan)], strict=True)]
    separators = [draw(st.sampled_from(["", " ", "-"])) for _ in groups[1:]]
    return groups[0] + "".join(s + g for s, g in zip(separators, groups[1:], strict=True))


def _ends_a_number(ch: str) -> bool:
    """Not a digit, letter, separator nor '+', even once normalized (pan.ascii_view)."""
    plain = ascii_view(ch.encode()).decode()
    return bool(plain) and not any(c.isalnum() or c in "+._/- \t" for c in plain)


# Neighbours that end a card number. Letters are left out: a run glued to letters may be
# an id (see test_provider_ids_glued_to_letters...), tests/unit/test_pan_any_form.py.
_NOT_DIGIT = st.text(
    alphabet=st.characters(codec="utf-8").filter(_ends_a_number),
    max_size=20,
)


@settings(max_examples=300)
@given(pan=_card_numbers(), data=st.data(), before=_NOT_DIGIT, after=_NOT_DIGIT)
def test_any_grouped_card_number_is_found(
    pan: str, data: st.DataObject, before: str, after: str
) -> None:
    text = data.draw(_grouped(pan))
    assert contains_pan(f"{before}{text}{after}".encode())


@settings(max_examples=300)
@given(
    pan=_card_numbers(),
    extra=st.text(alphabet="0123456789", min_size=1, max_size=5),
    prepend=st.booleans(),
)
def test_a_card_number_inside_a_longer_digit_run_is_not_found(
    pan: str, extra: str, prepend: bool
) -> None:
    run = extra + pan if prepend else pan + extra
    if len(run) <= 19:
        return  # might be a card number on its own
    assert not contains_pan(run.encode())


@given(st.text(alphabet="0123456789", min_size=13, max_size=19))
def test_contiguous_runs_follow_luhn_and_the_iin_rule(digits: str) -> None:
    expected = digits[0] in "23456" and _luhn_reference(digits)
    assert contains_pan(f'"{digits}"'.encode()) == expected


def test_benchmark_256_kib_bodies(capsys: pytest.CaptureFixture[str]) -> None:
    # Loose benchmark: prints timings, asserts only results (CI machines vary).
    event = stripe_event("invoice.payment_failed", stripe_invoice(basil=True))
    event["data"]["object"]["metadata"] = {
        f"k{i}": f"order {1_700_000_000_000 + i} ref in_1RaQ1sLkdIwHu7ix{i}" for i in range(4_500)
    }
    realistic = stripe_body(event)[: 256 * 1024]
    adversarial = {
        "realistic JSON": realistic,
        "single-digit groups": b"5 " * (128 * 1024),
        "two-digit groups": b"55-" * (85 * 1024),
        "one long run": b"5" * (256 * 1024),
        "fraction": b"0." + b"4" * (256 * 1024 - 2),
    }
    for name, body in adversarial.items():
        started = time.perf_counter()
        assert not contains_pan(body)
        with capsys.disabled():
            print(
                f"\n  contains_pan {name}: {len(body)} B in "
                f"{(time.perf_counter() - started) * 1000:.1f} ms",
                end="",
            )


def test_provider_ids_glued_to_letters_are_not_card_numbers() -> None:
    # PayPal's documented plan id holds the Luhn-valid run 4271244454362.
    assert not contains_pan(b'{"plan_id": "P-5ML4271244454362WXNWU5NQ"}')
    # A UUID's digits are hex digits that happen to be decimal.
    assert not contains_pan(b'{"id": "42424242-4242-4242-4242-42424242424a"}')
    # Upper-case tokens are ids (PayPal's PAY-5437236047802405NKRJ22UA, Adyen aliases).
    assert not contains_pan(b'{"id": "WH-4242424242424242-ABC"}')
    # Glued to lower-case letters a test card is a card (issue 12 item 2): real ids of
    # this shape are random base62/base32 and never hold 16 digits in a row.
    assert contains_pan(b'{"id": "ch_4242424242424242x"}')
    # ...while card numbers in values and prose are still found
    assert contains_pan(b'{"note": "card 4242 4242 4242 4242 was declined"}')
    assert contains_pan(b'{"pan": "4242424242424242"}')
    assert contains_pan(b"4242-4242-4242-4242,")
