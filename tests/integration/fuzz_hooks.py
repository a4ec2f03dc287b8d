"""Schemathesis hooks of test_api_fuzz.py: the query API's rules that JSON Schema cannot state.

Schemathesis loads this module by name (``SCHEMATHESIS_HOOKS``) in its own process. Two rules
of the API are beyond what an OpenAPI document can say, so schema-valid ("positive")
requests drawn at random break them and are refused, rightly, with 400:

* a cursor is opaque: only a ``next_cursor`` the listing issued is one (README "Query API");
* a range can match nothing, which is a 400 (README "Query API"): ``GET /v1/failures``
  wants ``until`` later than ``since``, ``GET /v1/invoices`` ``to`` later than ``from``
  and ``amount_max`` not below ``amount_min``, and ``POST /v1/ops/backtest`` (in its body)
  ``to`` later than ``from``.

So a positive case gets a cursor the live API issued for its listing (and ``order``), picked
by a hash of the drawn string so a case replays the same, and its ranges in order (an empty
time range loses its upper bound). Negative cases are left as drawn: every malformed cursor
must still be a 400. What random cursors do is tested directly, with any string and any
key, in test_query_api.py; inverted ranges in test_analytics.py.
"""

from __future__ import annotations

import functools
import json
import os
import zlib
from datetime import datetime
from pathlib import Path
from typing import Any

import schemathesis

CURSORS_ENV = "PAYWATCH_FUZZ_CURSORS"
"""Path of the JSON the test wrote: {operation path: {order or "": [issued cursors]}}."""
INSTANT_RANGES = {
    "/v1/failures": ("since", "until"),
    "/v1/invoices": ("from", "to"),
    "/v1/ops/backtest": ("from", "to"),
    "/v1/metrics/recovery": ("from", "to"),
}
"""Per operation path: the query (or body) fields of its half-open time range (the upper one
later)."""
MAX_SPANS = {"/v1/metrics/recovery": ("from", "to", 3659)}
"""Per operation path: the query fields of a day range at most so many days long (the API
answers a longer one 400, which JSON Schema cannot state): a longer drawn range loses `to`,
which then defaults to the longest allowed."""
AMOUNT_RANGES = {"/v1/invoices": ("amount_min", "amount_max")}
"""Per operation path: the query fields of its closed amount range (the upper one not
below)."""


@functools.cache
def _issued() -> dict[str, dict[str, list[str]]]:
    loaded: dict[str, dict[str, list[str]]] = json.loads(Path(os.environ[CURSORS_ENV]).read_text())
    return loaded


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    """A positive case with the cursor and the ranges a client could really send."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return case
    path = case.operation.path
    for fields in (case.query, case.body):
        if isinstance(fields, dict) and path in INSTANT_RANGES:
            _in_order(fields, *INSTANT_RANGES[path])
    if not isinstance(case.query, dict):
        return case
    query = case.query
    if "cursor" in query:
        issued = _issued().get(path, {}).get(str(query.get("order", "")), [])
        if issued:
            drawn = str(query["cursor"]).encode("utf-8", "surrogatepass")
            query["cursor"] = issued[zlib.crc32(drawn) % len(issued)]
        else:
            del query["cursor"]
    if path in AMOUNT_RANGES:
        _amounts_in_order(query, *AMOUNT_RANGES[path])
    if path in MAX_SPANS:
        _within_span(query, *MAX_SPANS[path])
    return case


def _within_span(query: dict[str, Any], low: str, high: str, days: int) -> None:
    try:
        since = datetime.fromisoformat(str(query[low])).date()
        until = datetime.fromisoformat(str(query[high])).date()
    except (KeyError, TypeError, ValueError):
        return
    if (until - since).days > days:
        del query[high]


def _in_order(query: dict[str, Any], low: str, high: str) -> None:
    try:  # RFC 3339 allows a lowercase t and z, Python's reader only capitals
        since = datetime.fromisoformat(str(query[low]).upper())
        until = datetime.fromisoformat(str(query[high]).upper())
        inverted = until < since
    except (KeyError, TypeError, ValueError):
        return  # not both given, or a form Python does not read: the API decides alone
    if inverted:
        query[low], query[high] = query[high], query[low]
    elif until == since:
        del query[high]


def _amounts_in_order(query: dict[str, Any], low: str, high: str) -> None:
    try:  # drawn as integers or as their strings
        inverted = int(query[high]) < int(query[low])
    except (KeyError, TypeError, ValueError):
        return
    if inverted:
        query[low], query[high] = query[high], query[low]
