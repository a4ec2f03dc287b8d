"""Schemathesis hooks of test_api_fuzz.py: the query API's rules that JSON Schema cannot state.

Schemathesis loads this module by name (``SCHEMATHESIS_HOOKS``) in its own process. Two rules
of the API are beyond what an OpenAPI document can say, so schema-valid ("positive")
requests drawn at random break them and are refused, rightly, with 400:

* a cursor is opaque: only a ``next_cursor`` the listing issued is one (README "Query API");
* ``GET /v1/failures`` wants ``until`` later than ``since``.

So a positive case gets a cursor the live API issued for its listing (and ``order``), picked
by a hash of the drawn string so a case replays the same, and ``since``/``until`` in
order. Negative cases are left as drawn: every malformed cursor must still be a 400. What
random cursors do is tested directly, with any string and any key, in test_query_api.py.
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


@functools.cache
def _issued() -> dict[str, dict[str, list[str]]]:
    loaded: dict[str, dict[str, list[str]]] = json.loads(Path(os.environ[CURSORS_ENV]).read_text())
    return loaded


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    """A positive case with the cursor and the time window a client could really send."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or not isinstance(case.query, dict):
        return case
    query = case.query
    if "cursor" in query:
        issued = _issued().get(case.operation.path, {}).get(str(query.get("order", "")), [])
        if issued:
            drawn = str(query["cursor"]).encode("utf-8", "surrogatepass")
            query["cursor"] = issued[zlib.crc32(drawn) % len(issued)]
        else:
            del query["cursor"]
    _in_order(query)
    return case


def _in_order(query: dict[str, Any]) -> None:
    try:
        since = datetime.fromisoformat(query["since"])
        until = datetime.fromisoformat(query["until"])
    except (KeyError, TypeError, ValueError):
        return  # not both given, or a form Python does not read: the API decides alone
    if until < since:
        query["since"], query["until"] = query["until"], query["since"]
    elif until == since:
        del query["until"]
