"""Find card numbers (PANs) in raw webhook bytes before they reach the immutable log.

PCI DSS 3.5.1 wants a PAN unreadable wherever it is stored, logs included; Kafka keeps
``webhooks.raw`` forever, so ingest rejects any body that carries one (ARCHITECTURE §6,
reference/reliability.md §6).

What counts as a PAN here:

* 13-19 digits passing the Luhn check;
* written contiguously or in groups joined by one space or one dash
  (``4242 4242 4242 4242``, ``4242-4242-4242-4242``);
* not part of a longer digit run: the digits next to it are not digits (nor a digit
  behind one separator), so a 20-digit id never hides a 16-digit "card";
* first digit 2-6. Card networks issue from these IIN ranges (Mastercard 2/5, Amex 3,
  Visa 4, Discover/Maestro/UnionPay 6). Numbers starting with 1 are millisecond Unix
  timestamps (13 digits until 2286), and 7/8/9 are petroleum, telecom and national
  ranges, not payment cards; excluding them avoids most false positives, which matter
  because a rejected webhook is lost once the provider stops retrying.
* not a decimal fraction (``0.4242...``) nor an E.164 phone number (``+4930...``);
* not glued to letters (directly or through a dash): provider ids such as PayPal's plan
  ``P-5ML4271244454362WXNWU5NQ`` hold Luhn-valid runs, and a false positive loses a
  webhook. A card number pasted into text is still caught (``card 4242 4242 ...``).

Speed: most bodies hold no chain of 13+ digits at all, and two C-speed passes prove it
(``bytes.translate`` marking digits with separators deleted, then one substring search):
~5 µs for a 3 KB webhook. Only when that finds one does a regex walk the runs of digits and
separators that could hold a chain (no nested quantifiers, so no catastrophic
backtracking); the neighbour rules are then checked on the bytes around each chain, and
each chain is checked with prefix sums, so every candidate window costs O(1). A 256 KiB
body takes milliseconds, an adversarial one well under a second.

The regex starts with a digit class, not with the neighbour lookbehinds: lookbehinds first
make the engine try a match at every byte instead of jumping from digit to digit (that cost
~70 µs of a 3 KB Stripe webhook). tests/unit/test_pan_equivalence.py keeps the
lookbehind-first pattern as a reference and fuzzes both to the same verdicts.
"""

from __future__ import annotations

import re
from itertools import accumulate

# A chain of digits joined by at most one separator, holding 13+ digits. The possessive
# ``{12,}+`` takes the whole chain and never backtracks to a shorter one (which would dodge
# the neighbour checks of _is_free_standing). Searched from the start of a run of digits and
# separators (see contains_pan), a match always starts a maximal chain: an earlier start
# inside the same chain would have matched first.
_CHAIN = re.compile(rb"[0-9](?:[ -]?[0-9]){12,}+")
_SEPARATOR = re.compile(rb"[ -]")

_MIN_DIGITS = 13
_THIRTEEN = b"0" * _MIN_DIGITS
_DIGITS = b"0123456789"
_LETTERS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_DASH = ord("-")
_GLUED_BEFORE = frozenset(_DIGITS) | _LETTERS | {ord("+")}
_PAIRS_BEFORE = frozenset(
    {(d, s) for d in _DIGITS for s in b" -."} | {(letter, _DASH) for letter in _LETTERS}
)
# Digits -> "0", everything else -> "." (separators are deleted by the caller).
_DIGIT_MARKS = bytes(ord("0") if b in _DIGITS else ord(".") for b in range(256))
# Digits and separators -> "0", everything else -> ".".
_RUN_MARKS = bytes(ord("0") if b in _DIGITS or b in b" -" else ord(".") for b in range(256))
_MAX_DIGITS = 19
_IIN_FIRST_DIGITS = frozenset(b"23456")
_VALUE = bytes.maketrans(_DIGITS, bytes(range(10)))
# Luhn doubles every second digit from the right; a doubled digit counts its digit sum.
_DOUBLED = bytes.maketrans(_DIGITS, bytes((0, 2, 4, 6, 8, 1, 3, 5, 7, 9)))


def contains_pan(body: bytes) -> bool:
    """True when ``body`` contains a Luhn-valid 13-19 digit card number (see module doc)."""
    # Any chain has 13 digits in a row once the separators are gone: most bodies stop here.
    if _THIRTEEN not in body.translate(_DIGIT_MARKS, b" -"):
        return False
    marks = body.translate(_RUN_MARKS)  # digits and separators -> "0", the rest -> "."
    start = marks.find(_THIRTEEN)
    while start != -1:  # a run of 13+ digits/separators; body[start - 1] is neither
        stop = marks.find(b".", start)
        stop = len(body) if stop == -1 else stop
        for match in _CHAIN.finditer(body, start, stop):
            if _is_free_standing(body, match.start(), match.end()) and _chain_has_pan(
                match.group()
            ):
                return True
        start = marks.find(_THIRTEEN, stop)
    return False


def _is_free_standing(body: bytes, start: int, end: int) -> bool:
    """The neighbour rules of the module doc for the chain ``body[start:end]``.

    Behind it: no digit, letter or ``+``, nor a digit + separator, a digit + ``.`` or a
    letter + ``-``. After it: no letter, nor ``-`` + letter.
    """
    if start:
        before = body[start - 1]
        if before in _GLUED_BEFORE:
            return False
        if start > 1 and (body[start - 2], before) in _PAIRS_BEFORE:
            return False
    if end < len(body):
        after = body[end]
        if after in _LETTERS:
            return False
        if after == _DASH and end + 1 < len(body) and body[end + 1] in _LETTERS:
            return False
    return True


def luhn_valid(digits: bytes) -> bool:
    """Luhn checksum of ASCII digits (True for a well-formed card number)."""
    values = digits.translate(_VALUE)
    doubled = digits.translate(_DOUBLED)
    # From the right: last digit as is, the one before doubled, and so on.
    return (sum(values[-1::-2]) + sum(doubled[-2::-2])) % 10 == 0


def _chain_has_pan(chain: bytes) -> bool:
    groups = _SEPARATOR.split(chain)
    if len(groups) == 1:
        return (
            _MIN_DIGITS <= len(chain) <= _MAX_DIGITS
            and _is_card_start(chain[0])
            and (luhn_valid(chain))
        )
    return _windows_have_pan(b"".join(groups), groups)


def _is_card_start(first: int) -> bool:
    return first in _IIN_FIRST_DIGITS


def _windows_have_pan(digits: bytes, groups: list[bytes]) -> bool:
    # Candidates start and end on group boundaries, so no group is split in two.
    starts: list[int] = []
    is_end = bytearray(len(digits) + 1)
    position = 0
    for group in groups:
        starts.append(position)
        position += len(group)
        is_end[position] = 1
    even_end, odd_end = _luhn_prefix_sums(digits)
    for start in starts:
        if not _is_card_start(digits[start]):
            continue
        last = min(start + _MAX_DIGITS, len(digits))
        for end in range(start + _MIN_DIGITS, last + 1):
            sums = odd_end if (end - 1) % 2 else even_end
            if is_end[end] and (sums[end] - sums[start]) % 10 == 0:
                return True
    return False


def _luhn_prefix_sums(digits: bytes) -> tuple[list[int], list[int]]:
    """Prefix sums of Luhn weights for windows ending on an even / odd index.

    A window ending at index e doubles the digits whose index has the other parity than e,
    so one prefix array per parity of e gives any window's checksum in O(1).
    """
    values = digits.translate(_VALUE)
    doubled = digits.translate(_DOUBLED)
    even = bytearray(values)  # window ends on an even index: odd indexes are doubled
    even[1::2] = doubled[1::2]
    odd = bytearray(doubled)  # window ends on an odd index: even indexes are doubled
    odd[1::2] = values[1::2]
    return [0, *accumulate(even)], [0, *accumulate(odd)]
