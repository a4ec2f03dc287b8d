"""Everything the scan before issue 12 item 2 refused, the scan after it still refuses.

``_reference_contains_pan`` is paywatch/providers/pan.py as it was before (the
lookbehind-first form of the engine issue, item 8): one space or dash between groups,
nothing glued to letters. Issue 12 item 2 adds forms (separators of any kind, Unicode
digits, glued card numbers, JSON numbers) and never drops one: on the normalized text
(``ascii_view``, what the new scan reads), an old refusal is a new refusal, on random bytes,
JSON bodies, card numbers of every length 13-19 and IIN first digit with and without
separators, digits glued to letters, signs, fractions and provider ids.
"""

from __future__ import annotations

import json
import random
import re
from itertools import accumulate

from hypothesis import example, given, settings
from hypothesis import strategies as st

from paywatch.providers.pan import ascii_view, contains_pan

# -- the reference: pan.py as it was (lookbehinds first) ----------------------------------

_REF_CHAIN = re.compile(
    rb"(?<![0-9A-Za-z+])(?<![0-9][ -])(?<![0-9]\.)(?<![A-Za-z]-)"
    rb"[0-9](?:[ -]?[0-9]){12,}+(?![A-Za-z])(?!-[A-Za-z])"
)
_REF_SEPARATOR = re.compile(rb"[ -]")
_DIGITS = b"0123456789"
_VALUE = bytes.maketrans(_DIGITS, bytes(range(10)))
_DOUBLED = bytes.maketrans(_DIGITS, bytes((0, 2, 4, 6, 8, 1, 3, 5, 7, 9)))


def _reference_contains_pan(body: bytes) -> bool:
    return any(_ref_chain_has_pan(match.group()) for match in _REF_CHAIN.finditer(body))


def _ref_luhn_valid(digits: bytes) -> bool:
    values = digits.translate(_VALUE)
    doubled = digits.translate(_DOUBLED)
    return (sum(values[-1::-2]) + sum(doubled[-2::-2])) % 10 == 0


def _ref_chain_has_pan(chain: bytes) -> bool:
    groups = _REF_SEPARATOR.split(chain)
    if len(groups) == 1:
        return 13 <= len(chain) <= 19 and chain[0] in b"23456" and _ref_luhn_valid(chain)
    digits = b"".join(groups)
    starts: list[int] = []
    is_end = bytearray(len(digits) + 1)
    position = 0
    for group in groups:
        starts.append(position)
        position += len(group)
        is_end[position] = 1
    values = digits.translate(_VALUE)
    doubled = digits.translate(_DOUBLED)
    even = bytearray(values)
    even[1::2] = doubled[1::2]
    odd = bytearray(doubled)
    odd[1::2] = values[1::2]
    even_end, odd_end = [0, *accumulate(even)], [0, *accumulate(odd)]
    for start in starts:
        if digits[start] not in b"23456":
            continue
        for end in range(start + 13, min(start + 19, len(digits)) + 1):
            sums = odd_end if (end - 1) % 2 else even_end
            if is_end[end] and (sums[end] - sums[start]) % 10 == 0:
                return True
    return False


# -- the corpus ----------------------------------------------------------------------------


def _old(body: bytes) -> bool:
    """The old verdict on the text the new scan reads."""
    return _reference_contains_pan(body if body.isascii() else ascii_view(body))


def _luhn_complete(payload: str) -> str:
    return next(payload + d for d in "0123456789" if _ref_luhn_valid((payload + d).encode()))


def _card(rng: random.Random) -> str:
    """A Luhn-valid number of 13-19 digits; mostly a card IIN, sometimes not."""
    length = rng.randint(13, 19)
    first = rng.choice("23456" * 4 + "0123456789")
    middle = "".join(rng.choice("0123456789") for _ in range(length - 2))
    card = _luhn_complete(first + middle)
    if rng.random() < 0.2:  # a near miss: one digit changed
        i = rng.randrange(len(card))
        card = card[:i] + rng.choice("0123456789") + card[i + 1 :]
    return card


def _grouped(rng: random.Random, card: str) -> str:
    out = card[0]
    for digit in card[1:]:
        roll = rng.random()
        gap = " " if roll < 0.15 else "-" if roll < 0.3 else "  " if roll < 0.33 else ""
        out += (rng.choice(["_", "/", ".", "\t", " - "]) if roll > 0.95 else gap) + digit
    return out


# Split on "|": what may stand before or after a number.
_NEIGHBOURS = (
    '| |-|.|+|0.|1 |9-|a|Z|x-|P-|-A|_|"|,|:|\n|\x00|é|12|4|ch_|WH-|in_|$|(|)|/|--|- | -'.split("|")
)
_FILLERS = (
    "in_1RaQ1sLkdIwHu7ixK9pLm2Qw|P-5ML4271244454362WXNWU5NQ|2025-06-15T15:06:40Z|1750000000|"
    "1700000000000|8535296650153317|ch_4242424242424242x|card|4242 4242 4242 4242|"
    "0.4242424242424242|+4930123456789|5 5 5 5 5 5 5 5 5|12-34-56-78-90-12-34|"
    '{"amount": 4900}|4242-4242-4242-4242-4242'
).split("|")


def _token(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.35:
        card = _card(rng)
        text = _grouped(rng, card) if rng.random() < 0.5 else card
        return rng.choice(_NEIGHBOURS) + text + rng.choice(_NEIGHBOURS)
    if roll < 0.55:
        return rng.choice(_FILLERS)
    if roll < 0.8:
        return "".join(rng.choice("0123456789 -") for _ in range(rng.randint(1, 30)))
    return "".join(rng.choice('0123456789 -.+aZx_"') for _ in range(rng.randint(1, 12)))


def _text(rng: random.Random) -> str:
    return "".join(_token(rng) for _ in range(rng.randint(1, 6)))


def _json_body(rng: random.Random) -> bytes:
    doc = {
        "id": f"evt_{rng.getrandbits(64):x}",
        "created": rng.randint(0, 2**41),
        "data": {"object": {f"k{i}": _text(rng) for i in range(rng.randint(1, 5))}},
        "amount": rng.choice([4900, rng.getrandbits(70), _card(rng)]),
    }
    indent = rng.choice([None, 2])
    return json.dumps(doc, indent=indent).encode()


def _random_bytes(rng: random.Random) -> bytes:
    alphabet = rng.choice([bytes(range(256)), b"0123456789 -.+aZ", b"0123456789 -"])
    return bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))


def test_old_refusals_stay_refused_on_a_seeded_corpus() -> None:
    rng = random.Random(20261201)
    old_found = new_only = 0
    for i in range(30_000):
        kind = i % 3
        if kind == 0:
            body = _text(rng).encode("utf-8")
        elif kind == 1:
            body = _json_body(rng)
        else:
            body = _random_bytes(rng)
        old, new = _old(body), contains_pan(body)
        assert new or not old, body
        old_found += old
        new_only += new and not old
    # The corpus exercises both verdicts, and forms only the new scan refuses.
    assert 3_000 < old_found < 27_000
    assert new_only > 100


def test_every_length_and_iin_with_and_without_separators() -> None:
    rng = random.Random(7)
    for length in range(13, 20):
        for first in "0123456789":
            card = _luhn_complete(
                first + "".join(rng.choice("0123456789") for _ in range(length - 2))
            )
            forms = [card, " ".join(card[i : i + 4] for i in range(0, length, 4))]
            forms += ["-".join(card[i : i + 4] for i in range(0, length, 4)), _grouped(rng, card)]
            for form in forms:
                for before in _NEIGHBOURS:
                    for after in _NEIGHBOURS:
                        body = f"{before}{form}{after}".encode()
                        assert contains_pan(body) or not _old(body), body


_INTERESTING = st.sampled_from([*'0123456789  --.+aZ_"x\n/\t', "\x00", "é", "\u00a0", "\uff14"])


@settings(max_examples=1_500)
@given(st.lists(st.one_of(_INTERESTING, st.sampled_from(_FILLERS)), max_size=60))
@example(["0", ".", "4242424242424242"])
@example(["+", "4242424242424242"])
@example(["x", "-", "4242424242424242"])
@example(["4242424242424242", "-", "x"])
@example(["4242424242424242", ".", "5", "e", "3"])
@example(["+", "1", " ", " ", "4242424242424242"])
def test_old_refusals_stay_refused_on_generated_text(parts: list[str]) -> None:
    body = "".join(parts).encode("utf-8")
    assert contains_pan(body) or not _old(body)


@settings(max_examples=800)
@given(st.binary(max_size=300))
def test_old_refusals_stay_refused_on_random_bytes(body: bytes) -> None:
    assert contains_pan(body) or not _old(body)
