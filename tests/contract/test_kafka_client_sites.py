"""Every Kafka client in paywatch/ gets the configured TLS/SASL: a contract with few homes.

A client constructor (aiokafka, confluent-kafka, Faust) may appear only in the helpers
below, each handing it paywatch/kafka/security.py's options; and every call of a function
or class taking ``security=`` passes it, so no caller quietly falls back to the PLAINTEXT
default that only tests, benches and the embedded broker use.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "paywatch"
CONSTRUCTORS = {
    "AIOKafkaProducer": "aiokafka_options(security)",
    "AIOKafkaConsumer": "aiokafka_options(security)",
    "AdminClient": "librdkafka_config(security)",
    "Consumer": "librdkafka_config(security)",
    "Producer": "librdkafka_config(security)",
    "SerializingProducer": "librdkafka_config(security)",
    "DeserializingConsumer": "librdkafka_config(security)",
    "App": "faust_credentials(kafka_security(settings))",  # faust.App
}
SITES = {
    ("kafka/clients.py", "reliable_producer"),
    ("kafka/clients.py", "group_consumer"),
    ("kafka/clients.py", "log_reader"),
    ("kafka/admin.py", "admin_client"),
    ("streams/table_restore.py", "prerestore"),
    ("streams/app.py", "create_worker"),
}
PENDING: set[tuple[str, str]] = set()
"""Calls known to lack ``security=``; an entry that is fixed must leave this set."""


@dataclass(frozen=True)
class Call:
    """One call in paywatch/: file, enclosing function (or class), callee, source text."""

    path: str
    scope: str
    callee: str
    node: ast.Call

    @property
    def text(self) -> str:
        return ast.unparse(self.node)

    @property
    def passes_security(self) -> bool:
        return any(k.arg == "security" for k in self.node.keywords)


def _name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    return node.attr if isinstance(node, ast.Attribute) else None


def _callee(node: ast.Call, classes: list[ast.ClassDef]) -> str | None:
    """The called name; ``cls(...)`` is the enclosing class, ``super().__init__`` its base."""
    func = node.func
    if isinstance(func, ast.Name) and func.id == "cls" and classes:
        return classes[-1].name
    is_super = isinstance(func, ast.Attribute) and isinstance(func.value, ast.Call)
    if is_super and _name(func.value.func) == "super" and classes and classes[-1].bases:
        return _name(classes[-1].bases[0])
    return _name(func)


class _Calls(ast.NodeVisitor):
    def __init__(self, path: str) -> None:
        self.path = path
        self.scopes: list[str] = ["<module>"]
        self.classes: list[ast.ClassDef] = []
        self.found: list[Call] = []

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.classes.append(node)
        self.generic_visit(node)
        self.classes.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.scopes.append(node.name)
        self.generic_visit(node)
        self.scopes.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Call(self, node: ast.Call) -> None:
        callee = _callee(node, self.classes)
        if callee is not None:
            self.found.append(Call(self.path, self.scopes[-1], callee, node))
        self.generic_visit(node)


def _trees() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield str(path.relative_to(PACKAGE)), ast.parse(path.read_text(encoding="utf-8"))


def calls_in(path: str, tree: ast.Module) -> list[Call]:
    """Every call of the module with its enclosing function."""
    visitor = _Calls(path)
    visitor.visit(tree)
    return visitor.found


def takes_security(tree: ast.Module) -> set[str]:
    """Functions with a keyword-only ``security`` and classes whose __init__ has one."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name != "__init__":
            if any(a.arg == "security" for a in node.args.kwonlyargs):
                names.add(node.name)
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    if any(a.arg == "security" for a in item.args.kwonlyargs):
                        names.add(node.name)
    return names


def constructor_calls(calls: list[Call]) -> list[Call]:
    return [c for c in calls if c.callee in CONSTRUCTORS]


def unsecured_calls(calls: list[Call], helpers: set[str]) -> set[tuple[str, str]]:
    return {(c.path, c.callee) for c in calls if c.callee in helpers and not c.passes_security}


def _scan() -> tuple[list[Call], set[str]]:
    calls, helpers = [], set()
    for path, tree in _trees():
        calls += calls_in(path, tree)
        helpers |= takes_security(tree)
    return calls, helpers


def test_clients_are_constructed_only_in_the_helpers_with_the_security_options() -> None:
    calls, _ = _scan()
    constructed = constructor_calls(calls)
    outside = [
        f"{c.path} {c.scope}(): {c.text}" for c in constructed if (c.path, c.scope) not in SITES
    ]
    assert outside == []
    unsecured = [
        f"{c.path} {c.scope}(): {c.text}"
        for c in constructed
        if CONSTRUCTORS[c.callee] not in c.text
    ]
    assert unsecured == []
    assert {(c.path, c.scope) for c in constructed} == SITES  # every helper still builds one


def test_every_call_of_a_security_taking_helper_passes_it() -> None:
    calls, helpers = _scan()
    assert {"reliable_producer", "admin_client", "ensure_topics", "KafkaAppender"} <= helpers
    assert unsecured_calls(calls, helpers) - PENDING == set()


def test_pending_entries_are_still_pending() -> None:
    """When a pending call gets its ``security=``, its entry must go (the list only shrinks)."""
    calls, helpers = _scan()
    assert PENDING <= unsecured_calls(calls, helpers)


def test_the_scan_sees_a_bare_client_and_a_forgotten_security() -> None:
    source = """
class View(Base):
    def __init__(self, bootstrap, *, security):
        ...
    @classmethod
    def make(cls, bootstrap):
        return cls(bootstrap)

class Policies(View):
    def __init__(self, bootstrap):
        super().__init__(bootstrap)

def helper(bootstrap, *, security=PLAINTEXT):
    return AIOKafkaProducer(bootstrap_servers=bootstrap)

def caller():
    helper("k:9")
    helper("k:9", security=s)
    return faust.App("x", broker="kafka://k:9")
"""
    tree = ast.parse(source)
    calls = calls_in("x.py", tree)
    assert {(c.scope, c.callee) for c in constructor_calls(calls)} == {
        ("helper", "AIOKafkaProducer"),
        ("caller", "App"),
    }
    assert takes_security(tree) == {"View", "helper"}
    assert [
        (c.scope, c.callee)
        for c in calls
        if not c.passes_security and c.callee in {"View", "helper"}
    ] == [
        ("make", "View"),
        ("__init__", "View"),
        ("caller", "helper"),
    ]
