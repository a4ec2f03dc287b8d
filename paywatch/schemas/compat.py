"""Avro schema compatibility, after the schema-resolution rules of the Avro spec.

``check_backward(new, old)``: can a reader with the new schema read data written
with the old one? ``check_forward(new, old)``: can readers still on the old
schema read data written with the new one? Both return human-readable problems;
an empty list means compatible. Schemas are JSON-decoded ``.avsc`` documents.

Stricter than the spec in one place: a changed ``logicalType`` is a problem,
because the bytes still resolve but mean something else (millis vs micros).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
NAMED = frozenset({"record", "error", "enum", "fixed"})
_CONTAINERS = frozenset({"array", "map"})
# writer type -> reader types it may be read as (spec: "promotion")
PROMOTIONS: dict[str, frozenset[str]] = {
    "int": frozenset({"long", "float", "double"}),
    "long": frozenset({"float", "double"}),
    "float": frozenset({"double"}),
    "string": frozenset({"bytes"}),
    "bytes": frozenset({"string"}),
}


@dataclass
class _Side:
    """Named types of one schema, to follow references by name."""

    names: dict[str, tuple[dict[str, Any], str]] = field(default_factory=dict)

    def collect(self, schema: Any, ns: str) -> None:
        if isinstance(schema, list):
            for branch in schema:
                self.collect(branch, ns)
        elif isinstance(schema, dict):
            kind = schema.get("type")
            if kind in NAMED:
                full = _full_name(schema["name"], schema.get("namespace", ns))
                ns = full.rpartition(".")[0]
                self.names[full] = (schema, ns)
            for fld in schema.get("fields", ()):
                self.collect(fld["type"], ns)
            for key in ("items", "values"):
                if key in schema:
                    self.collect(schema[key], ns)
            if isinstance(kind, (dict, list)):
                self.collect(kind, ns)

    def deref(self, schema: Any, ns: str) -> tuple[Any, str]:
        """Follow a by-name reference (``"Decline"`` or ``{"type": "x.Decline"}``)."""
        if isinstance(schema, dict) and not _is_type_dict(schema):
            return self.deref(schema["type"], ns)
        if isinstance(schema, str) and schema not in PRIMITIVES:
            for candidate in (_full_name(schema, ns), schema):
                if candidate in self.names:
                    return self.names[candidate]
            raise ValueError(f"unknown Avro type name {schema!r}")
        if isinstance(schema, dict) and schema["type"] in NAMED:
            full = _full_name(schema["name"], schema.get("namespace", ns))
            return schema, full.rpartition(".")[0]
        return schema, ns


def _is_type_dict(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    return isinstance(kind, str) and (kind in PRIMITIVES or kind in NAMED or kind in _CONTAINERS)


def _full_name(name: str, ns: str | None) -> str:
    return name if "." in name or not ns else f"{ns}.{name}"


def _kind(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, str):
        return schema
    return "record" if schema["type"] == "error" else str(schema["type"])


def _logical(schema: Any) -> str | None:
    return schema.get("logicalType") if isinstance(schema, dict) else None


def _short(name: str) -> str:
    return name.rpartition(".")[2]


@dataclass
class _Checker:
    reader: _Side
    writer: _Side
    active: set[tuple[int, int]] = field(default_factory=set)

    def check(self, r: Any, rns: str, w: Any, wns: str, path: str) -> list[str]:
        r, rns = self.reader.deref(r, rns)
        w, wns = self.writer.deref(w, wns)
        if isinstance(w, list):
            return [p for branch in w for p in self.check(r, rns, branch, wns, path)]
        if isinstance(r, list):
            return self._into_union(r, rns, w, wns, path)
        rk, wk = _kind(r), _kind(w)
        if rk != wk:
            if rk in PROMOTIONS.get(wk, ()):
                return []
            return [f"{path}: type changed from {wk} to {rk}"]
        problems = []
        if _logical(r) != _logical(w):
            problems.append(f"{path}: logicalType changed from {_logical(w)} to {_logical(r)}")
        return problems + self._same_kind(rk, r, rns, w, wns, path)

    def _same_kind(self, kind: str, r: Any, rns: str, w: Any, wns: str, path: str) -> list[str]:
        if kind == "array":
            return self.check(r["items"], rns, w["items"], wns, f"{path}[]")
        if kind == "map":
            return self.check(r["values"], rns, w["values"], wns, f"{path}{{}}")
        if kind in NAMED and not _names_match(r, w):
            return [f"{path}: {kind} renamed from {w['name']} to {r['name']}"]
        if kind == "enum":
            return _enum_problems(r, w, path)
        if kind == "fixed" and r["size"] != w["size"]:
            return [f"{path}: fixed size changed from {w['size']} to {r['size']}"]
        if kind == "record":
            return self._record(r, rns, w, wns, path)
        return []

    def _record(self, r: Any, rns: str, w: Any, wns: str, path: str) -> list[str]:
        pair = (id(r), id(w))
        if pair in self.active:  # a recursive type: this pair is being checked further up
            return []
        self.active.add(pair)
        try:
            return [p for rf in r["fields"] for p in self._field(rf, rns, w, wns, path)]
        finally:
            self.active.discard(pair)

    def _field(self, rf: Any, rns: str, w: Any, wns: str, path: str) -> list[str]:
        by_name = {f["name"]: f for f in w["fields"]}
        wf = next((by_name[n] for n in (rf["name"], *rf.get("aliases", ())) if n in by_name), None)
        where = f"{path}.{rf['name']}"
        if wf is not None:
            return self.check(rf["type"], rns, wf["type"], wns, where)
        if "default" not in rf:
            return [f"{where}: new field without a default (old data lacks it)"]
        return []

    def _into_union(self, r: list[Any], rns: str, w: Any, wns: str, path: str) -> list[str]:
        # Spec: the first reader branch that matches the writer type is resolved against it.
        for branch in r:
            b, bns = self.reader.deref(branch, rns)
            if _matches(b, w):
                return self.check(b, bns, w, wns, path)
        return [f"{path}: writer type {_describe(w)} is in no branch of the reader union"]


def _names_match(r: dict[str, Any], w: dict[str, Any]) -> bool:
    wanted = _short(w["name"])
    return wanted in {_short(r["name"]), *(_short(a) for a in r.get("aliases", ()))}


def _matches(r: Any, w: Any) -> bool:
    rk, wk = _kind(r), _kind(w)
    if rk != wk:
        return rk in PROMOTIONS.get(wk, ())
    return rk not in NAMED or _names_match(r, w)


def _enum_problems(r: dict[str, Any], w: dict[str, Any], path: str) -> list[str]:
    missing = [s for s in w["symbols"] if s not in r["symbols"]]
    if missing and "default" not in r:
        return [f"{path}: enum symbols {missing} unknown to the reader, which has no default"]
    return []


def _describe(schema: Any) -> str:
    return str(schema["name"]) if isinstance(schema, dict) and "name" in schema else _kind(schema)


def check_backward(reader_schema: Any, writer_schema: Any) -> list[str]:
    """Problems a ``reader_schema`` reader meets in data written with ``writer_schema``."""
    reader, writer = _Side(), _Side()
    reader.collect(reader_schema, "")
    writer.collect(writer_schema, "")
    root = _describe(reader.deref(reader_schema, "")[0])
    return _Checker(reader, writer).check(reader_schema, "", writer_schema, "", root)


def check_forward(new_schema: Any, old_schema: Any) -> list[str]:
    """Problems old readers meet reading data written with ``new_schema``."""
    return check_backward(old_schema, new_schema)


def check_defaults(schema: Any) -> list[str]:
    """Field defaults that do not fit their type (a union default must fit its first branch)."""
    side = _Side()
    side.collect(schema, "")
    problems = []
    for full, (definition, ns) in side.names.items():
        for fld in definition.get("fields", ()):
            if "default" in fld and not _default_fits(side, fld["type"], ns, fld["default"]):
                where = f"{_short(full)}.{fld['name']}"
                problems.append(f"{where}: default {fld['default']!r} does not fit")
    return problems


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "null": (type(None),),
    "boolean": (bool,),
    "int": (int,),
    "long": (int,),
    "float": (int, float),
    "double": (int, float),
    "bytes": (str,),
    "string": (str,),
    "fixed": (str,),
    "array": (list,),
    "map": (dict,),
    "record": (dict,),
}


def _default_fits(side: _Side, schema: Any, ns: str, value: Any) -> bool:
    schema, ns = side.deref(schema, ns)
    if isinstance(schema, list):
        return _default_fits(side, schema[0], ns, value)
    kind = _kind(schema)
    if kind == "enum":
        return value in schema["symbols"]
    ok = isinstance(value, _JSON_TYPES[kind])
    if kind in {"int", "long", "float", "double"} and isinstance(value, bool):
        return False
    if ok and kind == "array":
        return all(_default_fits(side, schema["items"], ns, v) for v in value)
    if ok and kind == "map":
        return all(_default_fits(side, schema["values"], ns, v) for v in value.values())
    if ok and kind == "record":
        return all(
            _default_fits(side, f["type"], ns, value[f["name"]])
            if f["name"] in value
            else "default" in f
            for f in schema["fields"]
        )
    return ok
