"""Decimal provider amounts -> integer minor units with the currency's ISO 4217 exponent."""

from __future__ import annotations

from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal, InvalidOperation, Overflow

from paywatch.errors import PayloadError

# ISO 4217 currencies whose exponent is not 2 (everything else has 2 minor digits).
_EXPONENTS: dict[str, int] = {
    # zero-decimal
    "BIF": 0,
    "CLP": 0,
    "DJF": 0,
    "GNF": 0,
    "ISK": 0,
    "JPY": 0,
    "KMF": 0,
    "KRW": 0,
    "PYG": 0,
    "RWF": 0,
    "UGX": 0,
    "UYI": 0,
    "VND": 0,
    "VUV": 0,
    "XAF": 0,
    "XOF": 0,
    "XPF": 0,
    # three-decimal
    "BHD": 3,
    "IQD": 3,
    "JOD": 3,
    "KWD": 3,
    "LYD": 3,
    "OMR": 3,
    "TND": 3,
    # four-decimal
    "CLF": 4,
    "UYW": 4,
}
_MAX_MINOR = 2**63 - 1
_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)
"""Scaling never rounds in this context: the default one (28 digits, exponents within
+-999999) would turn 1.00000000000000000000000000001 into 100 and 1E-1000001 into 0."""


def exponent(currency: str) -> int:
    """Minor-unit digits of an ISO 4217 currency code (2 unless listed)."""
    return _EXPONENTS.get(currency.upper(), 2)


def to_minor(amount: str | int | float | Decimal, currency: str) -> int:
    """Convert a decimal amount ("49.99", 49.99, 1000) to integer minor units.

    Floats are read through their shortest repr, so 49.99 is 4999, not 4998.
    Raises PayloadError for non-numbers, non-finite values, amounts with more
    digits than the currency has, and amounts beyond 64 bits.
    """
    try:
        value = Decimal(repr(amount)) if isinstance(amount, float) else Decimal(str(amount).strip())
    except InvalidOperation as exc:
        raise PayloadError(f"amount {str(amount)[:32]!r} is not a number") from exc
    if not value.is_finite():
        raise PayloadError("amount is not a finite number")
    try:
        scaled = value.scaleb(exponent(currency), context=_EXACT)
    except (Overflow, InvalidOperation) as exc:  # JSON "1E+999999": beyond any exponent limit
        raise PayloadError("amount out of range") from exc
    if scaled.copy_abs() > _MAX_MINOR:  # checked first: quantize cannot represent huge values
        raise PayloadError("amount out of range")
    if scaled != scaled.to_integral_value():
        raise PayloadError(f"amount has more decimals than {currency.upper()} allows")
    return int(scaled)
