"""Structure-aware mutators driven by the fuzzer's bytes (pure Python, no atheris needed).

Every choice is read from the input bytes (``Choices``), so the coverage-guided fuzzer can
steer it and a crash reproduces from its input file alone. JSON documents are mutated as
trees (replace values, drop/insert/rename keys, copy values between places) and then as
text (raw tokens json.dumps cannot write: huge integers, ``1e999``, ``NaN``, deep nesting;
byte flips, insertions, truncation); XML documents likewise as element trees and as text.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import Any

_PLACEHOLDER = "\x00RAW{}\x00"

RAW_TOKENS = (
    "1" * 5000,  # over CPython's int digit limit
    "9" * 40,
    "-" + "9" * 25,
    "1e999",
    "-1e999",
    "1E-400",
    "NaN",
    "Infinity",
    "-Infinity",
    "1.7976931348623157e308",
    "-0",
    "0.0000000000000000000001",
    "12345678901234567890.5",
    "4111111111111111",  # a PAN as a bare number: CardDataError is the domain answer
    "[" * 3000 + "]" * 3000,
    '{"a":' * 1500 + "1" + "}" * 1500,
    "[" * 60 + "]" * 60,
    '"\\ud800"',  # lone surrogate, valid JSON, not encodable as UTF-8
    '"\\udfff\\ud800"',
    '"\\u0000"',
    '"4111\\u00201111\\u00201111\\u00201111"',
    '"\\u0034\\u0031\\u0031\\u0031111111111111"',
)

INTERESTING: tuple[Any, ...] = (
    None,
    True,
    False,
    0,
    -1,
    1,
    2**31,
    2**63,
    -(2**63) - 1,
    10**18,
    10**30,
    0.5,
    -0.0,
    1e308,
    1e-320,
    99999999.99,
    "",
    " ",
    "\x00",
    "a\x00b",
    "\u202e",
    "\ufeff",
    "İ",
    "ß",
    "٣٤",
    "\uff11\uff12\uff13",
    "\U0001d518\U0001d52b\U0001d526",
    "\U0010ffff",
    "A" * 10000,
    "-1",
    "0",
    "1e5",
    "NaN",
    "null",
    "true",
    "0x10",
    "12.345",
    "1,000.00",
    "2026-13-45T99:00:00Z",
    "0000-01-01T00:00:00Z",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.9999999+14:00",
    "2026-06-15T09:30:12.123456789Z",
    "2026-06-15",
    "/Date(-99999999999999999)/",
    "/Date(253402300800000+0000)/",
    "/Date(abc)/",
    "XXX",
    "usd",
    "JPY",
    "EUR",
    "4111111111111111",
    "4111 1111 1111 1111",
    "1|2|3",
    "..",
    "%00",
    [],
    {},
    [None],
    {"": None},
)


MAX_NODES = 2000
"""Stop growing a document past this many containers (copies nest, sizes multiply)."""


class Choices:
    """Reads choices from fuzzer bytes; once they run out every choice is 0."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        """The next byte (0 when exhausted)."""
        if self.pos >= len(self.data):
            return 0
        value = self.data[self.pos]
        self.pos += 1
        return value

    def below(self, n: int) -> int:
        """A number in [0, n) (n >= 1), from one or two bytes."""
        if n <= 1:
            return 0
        if n <= 256:
            return self.byte() % n
        return (self.byte() << 8 | self.byte()) % n

    def pick(self, items: Sequence[Any]) -> Any:
        """One of ``items`` (non-empty)."""
        return items[self.below(len(items))]

    def chunk(self, limit: int = 24) -> bytes:
        """A few raw bytes of the input itself."""
        size = self.below(limit + 1)
        out = self.data[self.pos : self.pos + size]
        self.pos += size
        return out


def collect(doc: Any, keys: set[str], values: list[Any]) -> None:
    """Every key and scalar of a seed document, without recursion (the mutators' pools)."""
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            keys.update(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        else:
            values.append(node)


def _containers(doc: Any) -> list[Any]:
    found: list[Any] = []
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict | list):
            found.append(node)
            stack.extend(node.values() if isinstance(node, dict) else node)
    return found


class JsonMutator:
    """Mutates JSON seeds; ``pools`` come from every seed of the provider."""

    def __init__(self, seeds: Sequence[Any]) -> None:
        keys: set[str] = set()
        values: list[Any] = []
        for seed in seeds:
            collect(seed, keys, values)
        self.keys = sorted(keys)
        self._values = values

    def value(self, c: Choices, doc: Any, tokens: list[str]) -> Any:
        """A replacement value: interesting constant, seed value, raw token, bytes or copy."""
        kind = c.below(8)
        if kind == 0:  # a copy: the constants' lists and dicts must never be mutated in place
            return json.loads(json.dumps(c.pick(INTERESTING)))
        if kind == 1 and self._values:
            return c.pick(self._values)
        if kind == 2:
            tokens.append(c.pick(RAW_TOKENS))
            return _PLACEHOLDER.format(len(tokens) - 1)
        if kind == 3:
            return c.chunk().decode("utf-8", "replace")
        if kind == 4:
            return c.chunk().decode("latin-1")
        if kind == 5:
            nodes = _containers(doc)
            return json.loads(json.dumps(c.pick(nodes))) if nodes else None
        if kind == 6 and self._values:
            base = c.pick(self._values)
            return str(base) + c.chunk(4).decode("latin-1")
        return json.loads(json.dumps(c.pick(INTERESTING[:16])))

    def tree(self, c: Choices, doc: Any, tokens: list[str]) -> Any:
        """Apply 1-8 tree mutations to a deep copy of ``doc``; returns the new root."""
        root = json.loads(json.dumps(doc))
        for _ in range(1 + c.below(8)):
            if c.below(16) == 0:
                root = self.value(c, root, tokens)
                continue
            nodes = _containers(root)
            if not nodes or len(nodes) > MAX_NODES:
                break
            node = c.pick(nodes)
            op = c.below(6)
            if isinstance(node, dict):
                names = list(node)
                if op <= 1 and names:
                    node[c.pick(names)] = self.value(c, root, tokens)
                elif op == 2 and names:
                    del node[c.pick(names)]
                elif op == 3 and self.keys:
                    node[c.pick(self.keys)] = self.value(c, root, tokens)
                elif op == 4 and names:
                    old = c.pick(names)
                    node[c.pick(self.keys) if c.byte() & 1 else old.upper()] = node.pop(old)
                else:
                    node[c.chunk(8).decode("latin-1")] = self.value(c, root, tokens)
            else:
                if op <= 1 and node:
                    node[c.below(len(node))] = self.value(c, root, tokens)
                elif op == 2 and node:
                    del node[c.below(len(node))]
                elif op == 3 and node:
                    node.extend(json.loads(json.dumps(node[: 1 + c.below(4)] * 8)))
                else:
                    node.append(self.value(c, root, tokens))
        return root

    def dumps(self, c: Choices, doc: Any, tokens: list[str]) -> bytes:
        """Serialize (compact, indented or ASCII-escaped), then put the raw tokens in."""
        style = c.below(4)
        text = json.dumps(
            doc,
            indent=2 if style == 1 else None,
            separators=(",", ":") if style != 1 else None,
            ensure_ascii=style == 2,
        )
        for i, token in enumerate(tokens):
            text = text.replace(json.dumps(_PLACEHOLDER.format(i)), token)
        return text.encode("utf-8", "surrogatepass")


def bytes_mutation(c: Choices, body: bytes) -> bytes:
    """Byte-level damage: flips, insertions, deletions, truncation, odd bytes."""
    out = bytearray(body)
    for _ in range(1 + c.below(4)):
        op = c.below(6)
        at = c.below(len(out) + 1)
        if op == 0 and out:
            out[min(at, len(out) - 1)] ^= 1 << c.below(8)
        elif op == 1:
            out[at:at] = c.chunk(16)
        elif op == 2:
            del out[at : at + 1 + c.below(32)]
        elif op == 3:
            del out[at:]
        elif op == 4:
            out[at:at] = c.pick((b"\x00", b"\xff", b"\xc3", b"\xed\xa0\x80", b"\\", b'"', b"\r\n"))
        else:
            out[at:at] = c.pick((b"{", b"}", b"[", b"]", b",", b":", b"\\u0000", b"&", b"<", b"="))
    return bytes(out)


def json_body(c: Choices, mutator: JsonMutator, seeds: Sequence[Any]) -> tuple[Any, list[str]]:
    """A mutated document (tree stage only) and its raw tokens."""
    tokens: list[str] = []
    return mutator.tree(c, c.pick(seeds), tokens), tokens


XML_TYPES = ("datetime", "date", "integer", "boolean", "array", "nil", "decimal", "symbol", "x")


def xml_mutation(c: Choices, xml: str, tags: Sequence[str]) -> bytes:
    """Mutate an XML seed as an element tree, then (sometimes) as text."""
    root = ET.fromstring(xml)  # noqa: S314  (our own fixtures)
    for _ in range(1 + c.below(8)):
        nodes = list(root.iter())
        node = c.pick(nodes)
        op = c.below(7)
        if op <= 1:
            value = c.pick(INTERESTING)
            node.text = value if isinstance(value, str) else json.dumps(value)
            node.text = node.text.replace("\x00", "")  # XML cannot carry NUL: text stage may
        elif op == 2:
            node.set("type", c.pick(XML_TYPES))
        elif op == 3 and node is not root:
            parent = next(p for p in nodes if node in list(p))
            parent.remove(node)
        elif op == 4:
            child = ET.SubElement(node, c.pick(tags))
            child.text = c.chunk(12).decode("latin-1").replace("\x00", "")
        elif op == 5:
            node.attrib.pop("type", None)
        else:
            for child in list(node)[: c.below(4)]:
                node.append(child)
    text = ET.tostring(root, encoding="unicode")
    if c.below(4) == 0:
        text = c.pick(('<?xml version="1.0" encoding="UTF-8"?>\n', "", "\ufeff")) + text
    body = text.encode("utf-8")
    if c.below(6) == 0:
        body = bytes_mutation(c, body)
    if c.below(10) == 0:
        entity = b'<!DOCTYPE n [<!ENTITY a "aaaaaaaaaa">]>'
        body = entity + body.replace(b"</kind>", b"&a;</kind>", 1)
    return body
