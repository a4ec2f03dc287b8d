"""Card numbers in any form are refused at ingest's check; provider ids never are.

Issue 12 item 2. ``Provider.read`` is what the ingest route runs on a verified body
(CardDataError -> 422, counted, nothing appended), so every property is checked there, on
real-shaped bodies of every provider (tests/fixtures/<provider>/). The must-not-flag corpus
is tests/fixtures/pan_corpus/ids.json; generated id shapes complete it.
"""

from __future__ import annotations

import json
import re
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paywatch.errors import CardDataError, PayloadError
from paywatch.providers.base import reject_card_numbers
from paywatch.providers.pan import contains_pan, luhn_valid
from paywatch.providers.registry import PROVIDERS
from tests.builders import braintree as bt

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CORPUS: dict[str, Any] = json.loads((FIXTURES / "pan_corpus" / "ids.json").read_text())
ANYWHERE = [(section, i) for section, v in CORPUS["anywhere"].items() for i in v["ids"]]
PLACEHOLDER = "@@value@@"


def _body(name: str, raw: bytes) -> bytes:
    """A fixture as the provider sends it (Braintree: its XML inside a signed form)."""
    return bt.braintree_body(raw.decode()) if name == "braintree" else raw


def _fixtures(name: str) -> list[bytes]:
    paths = sorted((FIXTURES / name).iterdir())
    return [path.read_bytes() for path in paths if path.suffix in (".json", ".xml")]


def _reads(name: str, raw: bytes) -> bool:
    try:
        PROVIDERS[name].read(_body(name, raw))
    except PayloadError:
        return False  # a fetched document or a handshake, not a delivery
    return True


# Real-shaped deliveries each provider's read accepts: the bodies values are put into.
DELIVERIES = {name: [raw for raw in _fixtures(name) if _reads(name, raw)] for name in PROVIDERS}


def _luhn_complete(payload: str) -> str:
    return next(payload + d for d in "0123456789" if luhn_valid((payload + d).encode()))


# -- placing a value in a body ---------------------------------------------------------------


def _dicts(node: object) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            found.append(current)
            stack.extend(current.values())
        elif isinstance(current, list):
            stack.extend(current)
    return found


def _with_value(name: str, raw: bytes, key: str, text: str, where: int = 0) -> bytes:
    """The body of fixture ``raw`` with ``text``, verbatim, as the value of ``key``.

    ``text`` is a JSON string literal (quotes included) or a JSON number, put in one of
    the document's objects; for Braintree it is XML text, put in a new element.
    """
    if name == "braintree":
        element = f"<{key}>{text}</{key}></notification>"
        return _body(name, raw.replace(b"</notification>", element.encode()))
    doc = json.loads(raw)
    objects = _dicts(doc)
    objects[where % len(objects)][key] = PLACEHOLDER
    return json.dumps(doc, indent=2).encode().replace(f'"{PLACEHOLDER}"'.encode(), text.encode())


def _xml_text(text: str, entities: bool) -> str:
    """``text`` as XML character data, its digits as ``&#NN;`` references when ``entities``."""
    if not entities:
        return escape(text)
    return "".join(f"&#{ord(c)};" if c.isdecimal() else escape(c) for c in text)


# -- card numbers in any form ----------------------------------------------------------------

# Issued IIN prefixes (2-series Mastercard inside 2221-2720, as pan.py holds new forms to).
_PREFIXES = ["4", "51", "55", "2221", "2720", "34", "37", "36", "3528", "6011", "62", "65"]
_SEPARATORS = [" ", "-", ".", "_", "/", "\t", "\u00a0", "  ", "   ", " - ", " / ", "\u2013"]
_SEPARATORS += ["\u2014", "\u2212", "\u2009", "\u202f", "\u3000", "-\u200b", "\u00ad"]
_NOT_A_DOT = [s for s in _SEPARATORS if s != "."]
# Zero digits of decimal scripts; U+1D7CE (mathematical bold) becomes ASCII by NFKC.
_ZEROS = [0x30, 0xFF10, 0x0660, 0x06F0, 0x0966, 0x09E6, 0x0E50, 0x1D7CE]
_WORDS = ["card", "pan", "visa", "cardnumber", "x", "kartennr", "tarjeta", "exp", "no"]


@st.composite
def card_numbers(draw: st.DrawFn) -> str:
    """A Luhn-valid 13-19 digit number with a card network's prefix."""
    prefix = draw(st.sampled_from(_PREFIXES))
    length = draw(st.integers(min_value=max(13, len(prefix) + 1), max_value=19))
    middle = draw(st.text("0123456789", min_size=length - len(prefix) - 1, max_size=19))
    return _luhn_complete((prefix + middle)[: length - 1])


@st.composite
def written(draw: st.DrawFn, pan: str) -> str:
    """``pan`` as a person or a system might write it: groups, separators, scripts, glue."""
    if draw(st.booleans()):
        cuts = list(range(4, len(pan), 4))
    else:
        cuts = sorted(draw(st.sets(st.integers(1, len(pan) - 1), max_size=8)))
    groups = [pan[i:j] for i, j in zip([0, *cuts], [*cuts, len(pan)], strict=True)]
    if draw(st.booleans()):  # one separator throughout; a lone dot would be a decimal point
        separator = draw(st.sampled_from(_NOT_A_DOT if len(groups) < 3 else _SEPARATORS))
        gaps = [separator] * (len(groups) - 1)
    else:
        gaps = [draw(st.sampled_from(["", *_NOT_A_DOT])) for _ in cuts]
    zero = draw(st.sampled_from(_ZEROS))
    script = [chr(zero + int(d)) if draw(st.booleans()) else d for d in "".join(groups)]
    text, i = "", 0
    for group, gap in zip(groups, [*gaps, ""], strict=True):
        text += "".join(script[i : i + len(group)]) + gap
        i += len(group)
    before = draw(st.sampled_from(["", *_WORDS, "card ", "Card: ", "paid with "]))
    after = draw(st.sampled_from(["", *_WORDS, ".", " thanks", "-x"]))
    return before + text + after


def _escaped(text: str, everything: bool) -> str:
    """A JSON string literal of ``text`` with its digits (or all of it) as ``\\uXXXX``."""
    return (
        '"'
        + "".join(
            f"\\u{ord(c):04x}"
            if ord(c) < 0x10000 and (everything or c.isdecimal())
            else json.dumps(c)[1:-1]  # astral characters as a surrogate pair
            for c in text
        )
        + '"'
    )


@st.composite
def json_values(draw: st.DrawFn, pan: str) -> str:
    """``pan`` as a JSON value in any encoding: string, escaped string, number, nested."""
    form = draw(st.sampled_from(["utf-8", "ascii", "escaped digits", "escaped", "number"]))
    if form == "number":
        number = draw(
            st.sampled_from(
                [pan, f"{pan}.0", f"{pan}.00", f"-{pan}", f"{pan[0]}.{pan[1:]}e{len(pan) - 1}"]
            )
        )
        return number if draw(st.booleans()) else f'[{{"n": {number}}}]'
    text = draw(written(pan))
    if form == "utf-8":
        return json.dumps(text, ensure_ascii=False)
    if form == "ascii":
        return json.dumps(text)
    return _escaped(text, everything=form == "escaped")


@pytest.mark.parametrize("name", sorted(PROVIDERS))
@settings(max_examples=150, deadline=None)
@given(pan=card_numbers(), data=st.data())
def test_card_numbers_in_any_form_are_refused_by_every_provider(
    name: str, pan: str, data: st.DataObject
) -> None:
    raw = data.draw(st.sampled_from(DELIVERIES[name]))
    if name == "braintree":
        value = _xml_text(data.draw(written(pan)), entities=data.draw(st.booleans()))
    else:
        value = data.draw(json_values(pan))
    body = _with_value(name, raw, "note", value, where=data.draw(st.integers(0, 50)))
    with pytest.raises(CardDataError):
        PROVIDERS[name].read(body)


def test_every_provider_has_deliveries_to_test_with() -> None:
    assert all(DELIVERIES[name] for name in PROVIDERS), {n: len(b) for n, b in DELIVERIES.items()}


@pytest.mark.parametrize(
    "text",
    [
        "4111.1111.1111.1111",
        "4111_1111_1111_1111",
        "4111\t1111\t1111\t1111",
        "4111  1111  1111  1111",
        "4111 / 1111 / 1111 / 1111",
        "4111\u00a01111\u00a01111\u00a01111",
        "".join(chr(0xFF10 + int(d)) for d in "4111111111111111"),  # full-width digits
        "card4111111111111111x",
        "4111111111111111exp1229",
        "visa-4111-1111-1111-1111",
        "2223 0031 2200 3222",
    ],
)
def test_the_forms_of_the_issue_are_refused(text: str) -> None:
    assert contains_pan(text.encode())
    with pytest.raises(CardDataError):  # the decoded document, as parse scans it
        reject_card_numbers({"note": text}, "event")
    with pytest.raises(CardDataError):  # in JSON the tab is escaped: read resolves it
        PROVIDERS["stripe"].read(
            _with_value("stripe", DELIVERIES["stripe"][0], "n", json.dumps(text))
        )


@pytest.mark.parametrize(
    "doc",
    [
        {"n": 4111111111111111},
        {"n": 4111111111111111.0},
        {"n": Decimal("4111111111111111.00")},
        {"n": Decimal("4.111111111111111E+15")},
        {"a": [{"b": -4111111111111111}]},
    ],
)
def test_card_numbers_as_decoded_json_numbers_are_refused(doc: dict[str, Any]) -> None:
    with pytest.raises(CardDataError):
        reject_card_numbers(doc, "event")


@pytest.mark.parametrize(
    "doc", [{"n": True}, {"n": 1750000000000}, {"n": 0.4242424242424242}, {"n": float("inf")}]
)
def test_other_decoded_numbers_are_not_card_numbers(doc: dict[str, Any]) -> None:
    reject_card_numbers(doc, "event")


def test_skipped_keys_skip_digit_ids_only() -> None:
    skip = frozenset({"networkTxReference"})
    reject_card_numbers({"networkTxReference": "4111111111111111"}, "item", skip)
    with pytest.raises(CardDataError):  # not a network id's shape: a card written by someone
        reject_card_numbers({"networkTxReference": "4111 1111 1111 1111"}, "item", skip)


@pytest.mark.parametrize("name", ["adyen", "checkout"])
def test_the_raw_byte_scan_runs_before_parse_for_providers_that_scan_documents(name: str) -> None:
    # A body parse refuses (400) but holding a card is refused as card data (422) first.
    provider = PROVIDERS[name]
    assert provider.scans_card_numbers
    with pytest.raises(CardDataError):
        provider.read(b'{"not": "a notification", "note": "4111 1111 1111 1111"}')


_MC_2024 = _luhn_complete("202411111111111")  # 20xx: no card is issued there


@pytest.mark.parametrize(
    "text",
    [
        "CARD4111111111111111",  # upper-case tokens are ids (Adyen aliases, PayPal)
        "deadbeef4111111111111111",  # a 24+ character hex token is a hex id
        "4111 1111.1111 1111",  # a lone dot between spaces is a decimal point
        "/".join(_MC_2024[i : i + 4] for i in range(0, 16, 4)),  # 20xx in a new form
        f"inv{_MC_2024}",  # ...or glued
    ],
)
def test_documented_misses(text: str) -> None:
    # What pan.py's docstring says is not caught: changing one is a decision to document.
    assert not contains_pan(text.encode())


# -- never flagged -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_no_fixture_is_refused(name: str) -> None:
    for raw in _fixtures(name):
        assert not PROVIDERS[name].contains_pan(_body(name, raw))
        _reads(name, raw)  # CardDataError if its decoded document held a "card"


@pytest.mark.parametrize(("section", "value"), ANYWHERE)
def test_corpus_ids_are_never_card_numbers(section: str, value: str) -> None:
    for text in (value, f"ref {value} ok", f"https://api.example.com/v1/x/{value}/refund"):
        assert not contains_pan(text.encode()), text
    literal = json.dumps(value, ensure_ascii=False)
    for name, provider in PROVIDERS.items():
        text = _xml_text(value, entities=False) if name == "braintree" else literal
        for raw in DELIVERIES[name][:3]:
            provider.read(_with_value(name, raw, "ref", text, where=len(value)))


def test_constructed_corpus_ids_do_hold_card_shaped_runs() -> None:
    # Else they would test nothing: each must fail pan.py but for its id rules.
    runs = re.compile(r"[0-9](?:-?[0-9]){12,}")
    for section, value in ANYWHERE:
        if "constructed" in section:
            candidates = [r.replace("-", "") for r in runs.findall(value)]
            assert any(contains_pan(c.encode()) for c in candidates), value


@pytest.mark.parametrize(
    ("name", "field", "value"),
    [
        (name, field, value)
        for name, entry in CORPUS["in_field"].items()
        for field, values in entry["fields"].items()
        for value in values
    ],
)
def test_network_ids_pass_in_their_field_only(name: str, field: str, value: str) -> None:
    provider = PROVIDERS[name]
    for raw in DELIVERIES[name]:
        doc = json.loads(raw)
        for holder in [d for d in _dicts(doc) if field in d] or _dicts(doc)[:1]:
            holder[field] = value
        provider.read(json.dumps(doc).encode())
        if contains_pan(value.encode()):  # card-shaped: refused under any other key
            with pytest.raises(CardDataError):
                provider.read(_with_value(name, raw, "note", json.dumps(value)))


_HEX = "0123456789abcdef"


@st.composite
def id_shapes(draw: st.DrawFn) -> str:
    """Ids that hold a Luhn-valid card-length run: hex ids, upper-case provider ids."""
    run = draw(card_numbers())
    kind = draw(st.sampled_from(["hex", "HEX", "paypal", "alias", "uuid"]))
    if kind == "uuid":
        return str(draw(st.uuids())) if draw(st.booleans()) else str(draw(st.uuids())).upper()
    if kind == "alias":
        return draw(st.sampled_from("ABFHMQ")) + run
    if kind == "paypal":
        prefix = draw(st.sampled_from(["PAY-", "PAY-1B", "P-5ML", "WH-", "I-"]))
        return prefix + run + draw(st.text("ABCDEFGHJKLMNPQRSTUVWXYZ", min_size=4, max_size=8))
    letters = draw(st.text("abcdef", min_size=1, max_size=6))
    before = draw(st.text(_HEX, max_size=20)) + letters[0]
    after = letters[1:] + draw(st.text(_HEX, min_size=max(0, 24 - len(run) - 1), max_size=30))
    token = before + run + (after or "a")
    return token.upper() if kind == "HEX" else token


@settings(max_examples=400, deadline=None)
@given(id_shapes())
def test_generated_id_shapes_are_never_card_numbers(value: str) -> None:
    assert not contains_pan(json.dumps({"id": value}).encode())


@settings(max_examples=300, deadline=None)
@given(
    day=st.dates(min_value=date(1970, 1, 1), max_value=date(2199, 12, 31)),
    other=st.dates(),
    gap=st.sampled_from([" - ", " \u2013 ", " / ", "  ", " to "]),
    millis=st.integers(min_value=10**12, max_value=2 * 10**12 - 1),
    fraction=st.floats(allow_nan=False, allow_infinity=False, min_value=-1e11, max_value=1e11),
)
def test_dates_timestamps_and_fractions_are_never_card_numbers(
    day: date, other: date, gap: str, millis: int, fraction: float
) -> None:
    texts = [
        f"{day.isoformat()}{gap}{other.isoformat()}",
        f"{day:%Y%m%d}{gap}{other:%Y%m%d}",
        json.dumps({"ts": millis, "x": fraction, "us": millis * 1000}),
    ]
    for text in texts:
        assert not contains_pan(text.encode()), text


def test_stripe_network_transaction_ids_are_not_card_numbers_elsewhere_they_are() -> None:
    """Visa's 15-digit network transaction ids pass Luhn one time in ten: in their own
    field a Stripe webhook is accepted; the same digits in any other field are refused."""
    from paywatch.providers.stripe.provider import StripeProvider

    network_id = "400000000000006"  # Luhn-valid, starts with 4
    doc = json.loads((FIXTURES / "stripe" / "charge.failed.json").read_text())
    card = doc["data"]["object"].setdefault("payment_method_details", {}).setdefault("card", {})
    card["network_transaction_id"] = network_id
    stripe = StripeProvider()
    assert not stripe.contains_pan(json.dumps(doc).encode())
    doc["data"]["object"]["description"] = network_id
    assert stripe.contains_pan(json.dumps(doc).encode())


def test_fetched_thin_documents_are_scanned_with_json_escapes_resolved() -> None:
    """Xero and QuickBooks documents come from their APIs, not the webhook: the fetch
    refuses a card number in them, JSON-escaped digits included."""
    from paywatch.providers.thin.client import _holds_pan

    assert _holds_pan(b'{"Memo": "4111111111111111"}')
    assert _holds_pan(b'{"Memo": "\\u0034111111111111111"}')
    assert not _holds_pan(b'{"Memo": "\\u0034 is four", "Id": "145"}')
