"""Minor units by currency exponent."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paywatch.errors import PayloadError
from paywatch.providers.money import exponent, to_minor


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [("49.99", "usd", 4999), (49.99, "USD", 4999), ("1000", "JPY", 1000), ("1.234", "TND", 1234),
     ("0.5", "KWD", 500), (12, "EUR", 1200), ("-3.10", "GBP", -310), (" 7.00 ", "CAD", 700)],
)
def test_converts_with_the_currency_exponent(amount: object, currency: str, minor: int) -> None:
    assert to_minor(amount, currency) == minor  # type: ignore[arg-type]


@pytest.mark.parametrize("amount", ["abc", "", "NaN", "Infinity", "1e400", "49.999"])
def test_rejects_what_is_not_an_amount(amount: str) -> None:
    with pytest.raises(PayloadError):
        to_minor(amount, "USD")


def test_jpy_has_no_minor_digits() -> None:
    assert exponent("jpy") == 0
    with pytest.raises(PayloadError):
        to_minor("10.5", "JPY")


@given(st.decimals(min_value=-10**9, max_value=10**9, places=2, allow_nan=False))
def test_round_trips_two_decimal_amounts(value: Decimal) -> None:
    assert to_minor(str(value), "EUR") == int(value * 100)
