"""The committed .avsc files match the pydantic models and stay compatible with history/."""

from __future__ import annotations

import copy
import json
import types
from datetime import datetime
from enum import StrEnum
from importlib import resources
from typing import Annotated, Any, Union, get_args, get_origin

import fastavro
import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from paywatch.schemas.codec import TOPIC_VALUE_MODELS
from paywatch.schemas.compat import check_backward, check_defaults, check_forward
from paywatch.schemas.models import DeadLetter, Frozen
from paywatch.schemas.topics import TOPIC_MODELS

SCHEMAS = resources.files("paywatch.schemas")
NAMESPACE = "dev.paywatch"
NAMES = [m.__name__ for m in TOPIC_VALUE_MODELS]


def avsc(name: str) -> Any:
    return json.loads(SCHEMAS.joinpath(f"{name}.avsc").read_text("utf-8"))


def history(name: str, version: int = 1) -> Any:
    return json.loads(SCHEMAS.joinpath("history", f"{name}.v{version}.avsc").read_text("utf-8"))


# -- expected shape, derived from the pydantic model -------------------------------

PRIMITIVE_SHAPES = {str: "string", int: "long", float: "double", bool: "boolean", bytes: "bytes"}


def model_shape(annotation: Any) -> Any:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:  # bounds (schemas.models.Ref, Minor, ...) do not change the Avro type
        return model_shape(args[0])
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        assert len(inner) == 1 and len(args) == 2, f"only X | None unions map to Avro: {annotation}"
        return ("optional", model_shape(inner[0]))
    if origin is dict:
        assert [model_shape(a) for a in args] == ["string", "string"]
        return ("map", "string")
    if origin is list:
        return ("array", model_shape(args[0]))
    if annotation is datetime:
        return "timestamp-millis"
    if isinstance(annotation, type) and issubclass(annotation, StrEnum):
        return ("enum", annotation.__name__, tuple(m.value for m in annotation))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        fields = annotation.model_fields.items()
        return ("record", annotation.__name__, tuple(field_shape(n, f) for n, f in fields))
    return PRIMITIVE_SHAPES[annotation]


def field_shape(name: str, info: FieldInfo) -> Any:
    if info.default_factory is not None:
        default: Any = info.default_factory()  # type: ignore[call-arg]
    elif info.default is PydanticUndefined:
        default = "<required>"
    else:
        default = info.default
    if isinstance(default, StrEnum):
        default = default.value
    return (name, model_shape(info.annotation), default)


# -- actual shape, read from the Avro schema ---------------------------------------


def avro_shape(schema: Any, named: dict[str, Any]) -> Any:
    if isinstance(schema, list):
        assert len(schema) == 2 and schema[0] == "null", f"optional must be ['null', X]: {schema}"
        return ("optional", avro_shape(schema[1], named))
    if isinstance(schema, str):
        return avro_shape(named[schema], named) if schema in named else schema
    kind = schema["type"]
    if schema.get("logicalType"):
        return schema["logicalType"]
    if kind in ("map", "array"):
        return (kind, avro_shape(schema["values" if kind == "map" else "items"], named))
    named[f"{NAMESPACE}.{schema['name']}"] = schema
    if kind == "enum":
        return ("enum", schema["name"], tuple(schema["symbols"]))
    fields = tuple(
        (f["name"], avro_shape(f["type"], named), f.get("default", "<required>"))
        for f in schema["fields"]
    )
    return ("record", schema["name"], fields)


@pytest.mark.parametrize("model", TOPIC_VALUE_MODELS, ids=NAMES)
def test_avsc_matches_model_fields_types_order_defaults_and_symbols(model: type[Frozen]) -> None:
    assert avro_shape(avsc(model.__name__), {}) == model_shape(model)


def test_every_topic_model_has_a_schema() -> None:
    assert set(TOPIC_MODELS.values()) | {DeadLetter} == set(TOPIC_VALUE_MODELS)
    shipped = {p.name for p in SCHEMAS.iterdir() if p.name.endswith(".avsc")}
    assert shipped == {f"{n}.avsc" for n in NAMES}


def walk_named(schema: Any) -> list[dict[str, Any]]:
    """Every record/enum definition and every field, depth first."""
    found: list[dict[str, Any]] = []
    if isinstance(schema, list):
        for branch in schema:
            found += walk_named(branch)
    elif isinstance(schema, dict):
        if schema.get("type") in ("record", "enum"):
            found.append(schema)
        for fld in schema.get("fields", ()):
            found.append(fld)
            found += walk_named(fld["type"])
    return found


@pytest.mark.parametrize("name", NAMES)
def test_every_record_enum_and_field_is_documented(name: str) -> None:
    schema = avsc(name)
    assert schema["namespace"] == NAMESPACE and schema["name"] == name
    undocumented = [item["name"] for item in walk_named(schema) if not item.get("doc")]
    assert undocumented == []


@pytest.mark.parametrize("name", NAMES)
def test_schemas_parse_and_defaults_fit(name: str) -> None:
    fastavro.parse_schema(avsc(name))
    assert check_defaults(avsc(name)) == []


def test_enums_that_grow_have_reader_defaults() -> None:
    event_type = avsc("PaymentEvent")["fields"][1]["type"]
    decline = avsc("PaymentEvent")["fields"][12]["type"][1]
    category = decline["fields"][1]["type"]
    assert (event_type["name"], event_type["default"]) == ("EventType", "OTHER")
    assert (category["name"], category["default"]) == ("DeclineCategory", "UNKNOWN")


# -- compatibility with what was published -----------------------------------------


def history_names() -> list[str]:
    return sorted(p.name for p in SCHEMAS.joinpath("history").iterdir() if p.name.endswith(".avsc"))


def test_every_schema_has_a_frozen_v1_and_every_history_file_a_schema() -> None:
    assert {n.split(".")[0] for n in history_names()} == set(NAMES)
    assert all(f"{n}.v1.avsc" in history_names() for n in NAMES)


@pytest.mark.parametrize("file", history_names())
def test_current_schema_is_backward_and_forward_compatible_with_history(file: str) -> None:
    name, version = file.split(".")[0], int(file.split(".")[1][1:])
    old, new = history(name, version), avsc(name)
    assert check_backward(new, old) == [], "new readers must read old data"
    assert check_forward(new, old) == [], "old readers must read new data"


def test_adding_a_field_without_default_breaks_backward_compatibility() -> None:
    old = history("PaymentEvent")
    new = copy.deepcopy(old)
    fields_of(new).append({"name": "region", "type": "string", "doc": "x"})
    assert check_backward(new, old) == [
        "PaymentEvent.region: new field without a default (old data lacks it)"
    ]
    # Old readers simply skip it.
    assert check_forward(new, old) == []


def test_removing_a_field_without_default_breaks_forward_compatibility() -> None:
    old = history("PaymentEvent")
    new = copy.deepcopy(old)
    del fields_of(new)[8]  # invoice_ref: required, no default
    assert check_forward(new, old) == [
        "PaymentEvent.invoice_ref: new field without a default (old data lacks it)"
    ]


def test_changing_a_field_type_is_caught() -> None:
    old = history("PaymentEvent")
    new = copy.deepcopy(old)
    fields_of(new)[0]["type"] = "long"
    assert check_backward(new, old) == ["PaymentEvent.event_id: type changed from string to long"]


def test_dropping_an_enum_symbol_is_caught_unless_the_reader_has_a_default() -> None:
    old = history("RecoveryCommand")
    new = copy.deepcopy(old)
    fields_of(new)[1]["type"]["symbols"].remove("WRITE_OFF")
    assert check_backward(new, old) == [
        "RecoveryCommand.type: enum symbols ['WRITE_OFF'] unknown to the reader, "
        "which has no default"
    ]
    # EventType has a default: readers map a symbol they do not know to OTHER.
    old_events = history("PaymentEvent")
    new_events = copy.deepcopy(old_events)
    fields_of(new_events)[1]["type"]["symbols"].remove("CARD_EXPIRING")
    assert check_backward(new_events, old_events) == []


def test_making_an_optional_field_required_is_caught() -> None:
    old = history("PaymentEvent")
    new = copy.deepcopy(old)
    fields_of(new)[6] = {"name": "customer_ref", "type": "string", "doc": "x"}
    assert check_backward(new, old) == [
        "PaymentEvent.customer_ref: type changed from null to string"
    ]


def test_a_nested_breaking_change_is_caught_with_its_path() -> None:
    old = history("PaymentEvent")
    new = copy.deepcopy(old)
    decline = fields_of(new)[12]["type"][1]
    decline["fields"][0]["type"] = ["null", "long"]
    problem = "PaymentEvent.decline.code: writer type {} is in no branch of the reader union"
    assert check_backward(new, old) == [problem.format("string")]
    assert check_forward(new, old) == [problem.format("long")]


def fields_of(schema: Any) -> list[Any]:
    fields: list[Any] = schema["fields"]
    return fields
