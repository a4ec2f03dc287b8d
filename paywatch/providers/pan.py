"""Find card numbers (PANs) in webhook bodies before they reach the immutable log.

PCI DSS 3.5.1 wants a PAN unreadable wherever it is stored, logs included; Kafka keeps
``webhooks.raw`` forever, so ingest rejects any body that carries one (ARCHITECTURE §6,
reference/reliability.md §6). A false positive costs too: a rejected webhook is lost once
the provider stops retrying. Every rule below trades the two; the ids that must pass are
in tests/fixtures/pan_corpus/ids.json.

Caught: 13-19 digits passing the Luhn check, first digit 2-6 (the card IINs: Mastercard
2/5, Amex/Diners/JCB 3, Visa 4, Discover/Maestro/UnionPay 6), written

* contiguously, or in groups joined by up to three separator characters of any kind:
  space, tab, NBSP and the other Unicode spaces, ``-`` and the Unicode dashes, ``.``,
  ``_``, ``/`` (``4111.1111.1111.1111``, ``4111 - 1111 ...``, ``4111  1111 ...``);
* in any decimal digits: a non-ASCII body is NFKC-normalized (full-width digits
  U+FF10-FF19) and every other Unicode decimal digit (Arabic-Indic, Devanagari...) read as
  its ASCII digit; invisible format characters (zero-width space, soft hyphen) are dropped;
* as JSON numbers: ``4111111111111111``, ``4111111111111111.0`` and, by its integer part,
  ``4.111111111111111e15`` (when its mantissa has 13+ digits);
* glued to lower-case letters, directly or through one ``-`` (``card4111111111111111x``,
  ``visa-4111111111111111``): words in prose are lower case.

Not caught, and why:

* a run inside a longer digit run (a 20-digit id never hides a 16-digit "card"): a
  candidate starts and ends on group boundaries, never splitting a group;
* first digit 0, 1, 7, 8, 9: millisecond timestamps start with 1 until 2286, 7-9 are
  petroleum, telecom and national ranges (Adyen's numeric pspReferences start with 7-9);
* a run behind ``+``: an E.164 phone number, as far as one space or dash joins it;
* a decimal fraction: a lone ``.`` with no lone ``.`` next to it is a decimal point, and
  no candidate starts right after one or runs across it (``0.4242424242424242``,
  ``4.8999999999999995``, ``52.5200066 13.404954``). Dots group digits only in a row of
  dots (``4111.1111.1111.1111``), so ``4111 1111.1111 1111`` is missed;
* digits joined by commas, colons, line breaks or four+ separators: lists, times, table
  columns and JSON arrays (``[4, 2, 4, ...]``) would read as cards;
* ids: a run glued to letters in a token (letters, digits, dashes) that has no lower-case
  letter (provider ids: PayPal's ``P-5ML4271244454362WXNWU5NQ`` holds a Luhn-valid run,
  ``PAY-5437236047802405NKRJ22UA`` a 16-digit one, Adyen's card aliases are a letter and
  15 digits) or is hexadecimal and 24+ characters long (UUIDs, digests, ObjectIds, 0x...: their
  digits are hex digits). So a card glued to an upper-case word (``CARD4111111111111111``)
  or to hex letters in a long token (``deadbeef4111111111111111``) is missed, while a
  merchant reference made of a lower-case word and a Luhn-valid card-length number is
  refused;
* glued runs, and candidates using separators other than one space or one dash, that
  start with 20, 21, 28 or 29: no card is issued there (Mastercard 2221-2720, Mir
  2200-2204), while ``inv20240615123456`` and ``2025-06-15 - 2025-07-15`` are dates;
* candidates in a glued group of numbers that do not touch its letters
  (``DE89 3704 0044 0532 0130 00`` is an IBAN): the scan before kept them out too;
* digits behind escapes, by ``contains_pan`` alone: JSON's (``\\u0034``, ``\\t``) are
  resolved by ``json_unescaped`` (``Provider.read`` scans a body with a backslash again
  through it), XML's (``&#52;``) by Braintree's parse, URL encoding's (``%34``) nowhere.

Speed: most bodies hold no chain of 13+ digits at all, and two C-speed passes prove it
(``bytes.translate`` marking digits with separators deleted, then one substring search):
~2 µs for a 3 KB webhook; a non-ASCII body is normalized first. Only when a chain is found
does a regex walk the runs of digits and separators (no nested quantifiers, so no
catastrophic backtracking); each candidate window is then checked in O(1) with prefix
sums: a 256 KiB adversarial body takes well under a second.
tests/unit/test_pan_equivalence.py keeps the scan before issue 12 as a reference:
everything it refused is still refused.
"""

from __future__ import annotations

import math
import re
import unicodedata
from bisect import bisect_left
from decimal import Decimal
from functools import lru_cache
from itertools import accumulate

_MIN_DIGITS, _MAX_DIGITS = 13, 19
_DIGITS = b"0123456789"
_SEPARATORS = b" \t-./_"
# A chain of digits joined by up to three separators, holding 13+ digits. Possessive: it
# never backtracks to a shorter chain that would dodge the neighbour rules. Searched from
# the start of a run of digits and separators, a match always starts a maximal chain.
_CHAIN = re.compile(rb"[0-9](?:[ \t./_-]{0,3}[0-9]){12,}+")
_GAP = re.compile(rb"([ \t./_-]+)")
_OLD_GAPS = frozenset({b" ", b"-"})  # the separators of the scan before issue 12
_THIRTEEN = b"0" * _MIN_DIGITS
_LETTERS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_DASH, _PLUS = ord("-"), ord("+")
# Digits -> "0", everything else -> "." (separators are deleted by the caller).
_DIGIT_MARKS = bytes(ord("0") if b in _DIGITS else ord(".") for b in range(256))
# Digits and separators -> "0", everything else -> ".".
_RUN_MARKS = bytes(ord("0") if b in _DIGITS + _SEPARATORS else ord(".") for b in range(256))
_IIN_FIRST_DIGITS = frozenset(b"23456")
_ISSUED_AFTER_2 = frozenset(b"234567")  # 22xx-27xx: Mir and Mastercard's 2-series
_VALUE = bytes.maketrans(_DIGITS, bytes(range(10)))
# Luhn doubles every second digit from the right; a doubled digit counts its digit sum.
_DOUBLED = bytes.maketrans(_DIGITS, bytes((0, 2, 4, 6, 8, 1, 3, 5, 7, 9)))

_ASCII = bytes(range(128))
_JSON_ESCAPE = re.compile(
    rb"\\(?:u([dD][89abAB][0-9a-fA-F]{2})\\u([dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|u([0-9a-fA-F]{4})|([^u]))"
)
_SIMPLE_ESCAPES = {b"t": b"\t", b"/": b"/"}
_PLAIN_CHARS = "0123456789 \t-./_"
_EXPONENT = re.compile(rb"[eE][+-]?[0-9]{1,3}(?![0-9A-Za-z])")
_PLAIN_NUMBER = re.compile(rb"[0-9]+(?:\.[0-9]+)?")
_TOKEN = re.compile(rb"[A-Za-z0-9-]*")
_TOKEN_REACH = 64  # ids are shorter; bounds the work per chain
_HEX_TOKEN = b"0123456789abcdefABCDEF-"
_HEX_ID_LENGTH = 24  # MongoDB ObjectIds; UUIDs and digests are longer, "cc" + a card shorter


def contains_pan(body: bytes, not_card_numbers: frozenset[str] = frozenset()) -> bool:
    """True when ``body`` contains a card number (see the module doc).

    ``not_card_numbers``: JSON keys whose digit-only values are provider-issued ids that
    pass Luhn by chance (network transaction ids, realm ids); those values are masked.
    """
    if not body.isascii():
        body = ascii_view(body)
    # Any chain has 13 digits in a row once the separators are gone: most bodies stop here.
    if _THIRTEEN not in body.translate(_DIGIT_MARKS, _SEPARATORS):
        return False
    if not_card_numbers:
        body = _field_mask(not_card_numbers).sub(b'""', body)
    marks = body.translate(_RUN_MARKS)
    start = marks.find(_THIRTEEN)
    while start != -1:  # a run of 13+ digits/separators; body[start - 1] is neither
        stop = marks.find(b".", start)
        stop = len(body) if stop == -1 else stop
        for match in _CHAIN.finditer(body, start, stop):
            if _chain_has_pan(body, match.start(), match.end()):
                return True
        start = marks.find(_THIRTEEN, stop)
    return False


def ascii_view(body: bytes) -> bytes:
    """``body`` with every character that stands for a digit, space or dash in ASCII.

    Only the characters that change are replaced, byte for byte (UTF-8 never splits a
    character's bytes across ASCII ones), so a body with accents but no such character
    costs two C-speed passes, not a decode, a normalization and an encode.
    """
    for ch in set(body.translate(None, _ASCII).decode("utf-8", "replace")):
        plain = _plain(ch)
        if plain != ch:
            body = body.replace(ch.encode("utf-8"), plain.encode("ascii"))
    return body


@lru_cache(maxsize=4096)
def _plain(ch: str) -> str:
    """What a non-ASCII character stands for in a card number, else itself."""
    if ch.isdecimal():  # any script's digits, full-width and mathematical ones included
        return str(unicodedata.decimal(ch))
    category = unicodedata.category(ch)
    if category == "Pd" or ch == "\u2212":  # dashes, minus sign
        return "-"
    if category == "Zs":  # NBSP, thin, figure, ideographic... spaces
        return " "
    if category == "Cf":  # zero-width space, soft hyphen and other invisible characters
        return ""
    compatible = unicodedata.normalize("NFKC", ch)  # superscripts, circled digits, full-width ./_
    return compatible if compatible and not compatible.strip(_PLAIN_CHARS) else ch


def json_unescaped(body: bytes) -> bytes:
    """JSON text with the escapes that can hide digits or separators resolved.

    ``\\u0034``, surrogate pairs, ``\\t`` and ``\\/`` become what they stand for, so the
    raw-byte scan reads escaped card numbers as it reads plain ones. Quotes and backslashes
    stay escaped: an escaped ``"realmId": "..."`` inside a string must not turn into a key
    whose value ``not_card_numbers`` would mask.
    """
    return _JSON_ESCAPE.sub(_unescape, body)


def _unescape(match: re.Match[bytes]) -> bytes:
    high, low, code, simple = match.groups()
    if high:
        pair = 0x10000 + ((int(high, 16) - 0xD800) << 10) + int(low, 16) - 0xDC00
        return chr(pair).encode("utf-8")
    if code:
        ch = chr(int(code, 16))
        return match.group() if ch in '"\\' else ch.encode("utf-8", "surrogatepass")
    return _SIMPLE_ESCAPES.get(simple, match.group())


@lru_cache(maxsize=32)
def _field_mask(keys: frozenset[str]) -> re.Pattern[bytes]:
    names = b"|".join(re.escape(key.encode("utf-8")) for key in sorted(keys))
    return re.compile(rb'"(?:' + names + rb')"\s*:\s*(?:"[0-9]*"|[0-9]+(?![0-9.eE]))')


def _chain_has_pan(body: bytes, start: int, end: int) -> bool:
    glued_before = start > 0 and _letter_at(body, start - 1, -1)
    glued_after = end < len(body) and _letter_at(body, end, 1)
    if not glued_before and _scientific_pan(body, start, end):
        return True
    chain = body[start:end]
    if (glued_before or glued_after) and _is_id(body, start, end, chain):
        return False
    phone = start > 0 and body[start - 1] == _PLUS
    return _windows_have_pan(chain, glued_before, glued_after, phone)


def _letter_at(body: bytes, at: int, step: int) -> bool:
    """A letter at ``at``, or a dash there with a letter one more ``step`` away."""
    if body[at] in _LETTERS:
        return True
    beyond = at + step
    return body[at] == _DASH and 0 <= beyond < len(body) and body[beyond] in _LETTERS


def _scientific_pan(body: bytes, start: int, end: int) -> bool:
    """A JSON number like ``4.111111111111111e15`` whose integer part is a card number."""
    exponent = _EXPONENT.match(body, end)
    if exponent is None or not _PLAIN_NUMBER.fullmatch(body, start, end):
        return False
    digits = integral_digits(Decimal(body[start : exponent.end()].decode("ascii")))
    return _is_pan(digits.encode("ascii"), strict=True)


def integral_digits(number: int | float | Decimal) -> str:
    """The digits of a number's integer part when it has 13-19 of them, else ``""``."""
    if isinstance(number, float | Decimal) and not (
        math.isfinite(number) and abs(number) < 10**_MAX_DIGITS
    ):
        return ""  # infinities, NaN, and huge exponents that int() would expand
    whole = abs(int(number))
    return str(whole) if 10 ** (_MIN_DIGITS - 1) <= whole < 10**_MAX_DIGITS else ""


def _is_id(body: bytes, start: int, end: int, chain: bytes) -> bool:
    """The chain sits in a hexadecimal or an upper-case id (module doc)."""
    if chain.translate(None, _DIGITS + b"-") or b"--" in chain:
        return False  # ids join digit groups by single dashes only
    reach = body[max(0, start - _TOKEN_REACH) : start][::-1]
    before = reach[: _token_end(reach, 0, len(reach))][::-1]
    after = body[end : _token_end(body, end, end + _TOKEN_REACH)]
    hex_before = before[2:] if before[:2] in (b"0x", b"0X") else before
    letters = before + after
    if letters == letters.upper():
        return True
    is_long = len(letters) + len(chain) >= _HEX_ID_LENGTH
    return is_long and not (hex_before + after).translate(None, _HEX_TOKEN)


def _token_end(data: bytes, start: int, stop: int) -> int:
    match = _TOKEN.match(data, start, stop)
    return match.end() if match else start


def luhn_valid(digits: bytes) -> bool:
    """Luhn checksum of ASCII digits (True for a well-formed card number)."""
    values = digits.translate(_VALUE)
    doubled = digits.translate(_DOUBLED)
    # From the right: last digit as is, the one before doubled, and so on.
    return (sum(values[-1::-2]) + sum(doubled[-2::-2])) % 10 == 0


def _is_pan(digits: bytes, strict: bool) -> bool:
    return (
        _MIN_DIGITS <= len(digits) <= _MAX_DIGITS
        and _is_card_start(digits, 0, strict)
        and luhn_valid(digits)
    )


def _is_card_start(digits: bytes, at: int, strict: bool) -> bool:
    first = digits[at]
    if first not in _IIN_FIRST_DIGITS:
        return False
    return not strict or first != ord("2") or digits[at + 1] in _ISSUED_AFTER_2


def _windows_have_pan(chain: bytes, glued_before: bool, glued_after: bool, phone: bool) -> bool:
    """A card number among the chain's windows that start and end on group boundaries.

    Gap ``k`` joins group ``k`` to group ``k + 1``. Groups joined by the old separators
    (one space or dash) form a segment. A window touching a glued end is held to the strict
    IIN; one inside a glued end segment without touching the letters is an id's digits.
    """
    parts = _GAP.split(chain)
    groups, gaps = parts[0::2], parts[1::2]
    if not gaps:
        return not phone and _is_pan(chain, glued_before or glued_after)
    count = len(groups)
    digits = b"".join(groups)
    offsets = [0, *accumulate(len(group) for group in groups)]
    new = [gap not in _OLD_GAPS for gap in gaps]
    new_before = [0, *accumulate(new)]  # new-style gaps among gaps[:k]
    first_segment_end = new.index(True) + 1 if True in new else count
    last_segment_start = count - new[::-1].index(True) - 1 if True in new else 0
    limits = _decimal_limits(gaps, count)
    even_end, odd_end = _luhn_prefix_sums(digits)
    for a in range(count):
        if (a and limits[a - 1] == a) or (phone and a < first_segment_end):
            continue  # right after a decimal point, or in a phone number
        if glued_before and 0 < a < first_segment_end:
            continue  # inside a glued number, away from its letters
        start = offsets[a]
        last = min(limits[a], count)
        for b in range(max(a + 1, bisect_left(offsets, start + _MIN_DIGITS)), last + 1):
            stop = offsets[b]
            if stop - start > _MAX_DIGITS:
                break
            if glued_after and last_segment_start <= b - 1 < count - 1:
                continue  # inside a glued number, away from its letters
            strict = (
                (glued_before and a == 0)
                or (glued_after and b == count)
                or new_before[b - 1] > new_before[a]
            )
            sums = odd_end if (stop - 1) % 2 else even_end
            if (sums[stop] - sums[start]) % 10 == 0 and _is_card_start(digits, start, strict):
                return True
    return False


def _decimal_limits(gaps: list[bytes], count: int) -> list[int]:
    """Per group: the last group a window starting there may end with (exclusive end).

    A decimal point is a lone ``.`` gap with no lone ``.`` next to it: no window runs
    across one, nor starts right after one (``limits[k - 1] == k`` then).
    """
    dots = [gap == b"." for gap in gaps]
    last = len(dots) - 1
    limits = [count] * count
    for k in range(last, -1, -1):
        point = dots[k] and not (k > 0 and dots[k - 1]) and not (k < last and dots[k + 1])
        limits[k] = k + 1 if point else limits[k + 1]
    return limits


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
