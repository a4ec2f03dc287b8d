"""The compatibility checker follows the Avro schema-resolution rules."""

from __future__ import annotations

from typing import Any

import pytest

from paywatch.schemas.compat import check_backward, check_defaults, check_forward


def record(*fields: dict[str, Any], name: str = "R", **extra: Any) -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": "t", "fields": list(fields), **extra}


def field(name: str, type_: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **extra}


@pytest.mark.parametrize(
    ("writer", "reader"),
    [
        ("int", "long"),
        ("int", "double"),
        ("long", "float"),
        ("float", "double"),
        ("string", "bytes"),
        ("bytes", "string"),
    ],
)
def test_promotions_are_readable(writer: str, reader: str) -> None:
    assert check_backward(record(field("x", reader)), record(field("x", writer))) == []


@pytest.mark.parametrize(
    ("writer", "reader"), [("long", "int"), ("double", "long"), ("string", "long")]
)
def test_narrowing_or_unrelated_types_are_not(writer: str, reader: str) -> None:
    problems = check_backward(record(field("x", reader)), record(field("x", writer)))
    assert problems == [f"R.x: type changed from {writer} to {reader}"]


def test_a_reader_field_missing_in_the_writer_needs_a_default() -> None:
    old = record(field("a", "string"))
    with_default = record(field("a", "string"), field("b", ["null", "long"], default=None))
    without = record(field("a", "string"), field("b", "long"))
    assert check_backward(with_default, old) == []
    assert check_backward(without, old) == ["R.b: new field without a default (old data lacks it)"]
    # A field the writer has and the reader dropped is skipped: always fine.
    assert check_backward(old, without) == []


def test_a_field_alias_counts_as_the_writers_name() -> None:
    old = record(field("amount", "long"))
    renamed = record(field("amount_minor", "long", aliases=["amount"]))
    assert check_backward(renamed, old) == []


def test_enum_symbols_need_to_be_known_or_defaulted() -> None:
    def enum(*symbols: str, **extra: Any) -> dict[str, Any]:
        return record(field("e", {"type": "enum", "name": "E", "symbols": list(symbols), **extra}))

    assert check_backward(enum("A", "B", "C"), enum("A", "B")) == []
    assert check_forward(enum("A", "B", "C"), enum("A", "B")) == [
        "R.e: enum symbols ['C'] unknown to the reader, which has no default"
    ]
    assert check_forward(enum("A", "B", "C", default="A"), enum("A", "B", default="A")) == []


def test_every_writer_union_branch_must_be_readable() -> None:
    optional = record(field("x", ["null", "string"], default=None))
    required = record(field("x", "string"))
    assert check_backward(optional, required) == []
    assert check_backward(required, optional) == ["R.x: type changed from null to string"]
    widened = record(field("x", ["null", "string", "long"], default=None))
    assert check_backward(optional, widened) == [
        "R.x: writer type long is in no branch of the reader union"
    ]
    # long promotes into a reader union's double branch.
    doubles = record(field("x", ["null", "double"], default=None))
    assert check_backward(doubles, record(field("x", ["null", "long"], default=None))) == []


def test_nested_records_by_name_and_by_reference_are_checked_recursively() -> None:
    inner_old = {"type": "record", "name": "In", "fields": [field("v", "string")]}
    inner_new = {
        "type": "record",
        "name": "In",
        "fields": [field("v", "string"), field("w", "long")],
    }
    old = record(field("a", inner_old), field("b", "t.In"))
    new = record(field("a", inner_new), field("b", "In"))
    assert check_backward(new, old) == [
        "R.a.w: new field without a default (old data lacks it)",
        "R.b.w: new field without a default (old data lacks it)",
    ]


def test_renaming_a_record_breaks_resolution() -> None:
    old = record(field("a", {"type": "record", "name": "In", "fields": []}))
    new = record(field("a", {"type": "record", "name": "Inner", "fields": []}))
    assert check_backward(new, old) == ["R.a: record renamed from In to Inner"]


def test_arrays_maps_fixed_and_logical_types() -> None:
    old = record(
        field("xs", {"type": "array", "items": "int"}),
        field("m", {"type": "map", "values": "string"}),
        field("f", {"type": "fixed", "name": "F", "size": 4}),
        field("at", {"type": "long", "logicalType": "timestamp-millis"}),
    )
    new = record(
        field("xs", {"type": "array", "items": "long"}),
        field("m", {"type": "map", "values": "long"}),
        field("f", {"type": "fixed", "name": "F", "size": 8}),
        field("at", {"type": "long", "logicalType": "timestamp-micros"}),
    )
    assert check_backward(new, old) == [
        "R.m{}: type changed from string to long",
        "R.f: fixed size changed from 4 to 8",
        "R.at: logicalType changed from timestamp-millis to timestamp-micros",
    ]


def test_recursive_types_terminate() -> None:
    node = record(field("next", ["null", "t.R"], default=None), field("v", "long"))
    assert check_backward(node, node) == []


def test_defaults_must_fit_their_type() -> None:
    good = record(
        field("a", ["null", "string"], default=None),
        field("b", "boolean", default=False),
        field("c", {"type": "map", "values": "string"}, default={}),
        field("d", {"type": "enum", "name": "E", "symbols": ["X"]}, default="X"),
    )
    bad = record(
        field("a", ["null", "string"], default="x"),
        field("b", "long", default=True),
        field("d", {"type": "enum", "name": "E", "symbols": ["X"]}, default="Y"),
    )
    assert check_defaults(good) == []
    assert check_defaults(bad) == [
        "R.a: default 'x' does not fit",
        "R.b: default True does not fit",
        "R.d: default 'Y' does not fit",
    ]
