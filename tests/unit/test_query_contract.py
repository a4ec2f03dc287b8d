"""The query API's error contract in pure code: cursor decoding, parameter patterns, OpenAPI.

Whatever string a client sends as a cursor, decoding ends in a key Postgres can compare or in
ApiError 400 ``invalid_cursor``, never another exception. The patterns the OpenAPI document
publishes say exactly what the API accepts: the time pattern is checked against pydantic,
the any-case choice patterns against their choices.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, time, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from paywatch.api.query.app import create_app
from paywatch.api.query.deps import ApiError, any_case
from paywatch.api.query.openapi import TIME_PATTERN
from paywatch.api.query.pagination import CursorCodec, instant_bound
from paywatch.api.query.routes import alerts, customers, failures, invoices, policy, timeline
from paywatch.settings import Settings

CODECS: list[CursorCodec[Any]] = [
    invoices.CURSOR,
    failures.CURSOR,
    customers.CURSOR,
    alerts.CURSOR,
    timeline.CURSOR,
    policy.CURSOR,
]
INT4, INT8 = 2**31 - 1, 2**63 - 1
AT = "2024-05-01T00:00:00Z"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


_OFFSETS = st.integers(-1439, 1439).map(lambda m: timezone(timedelta(minutes=m)))
_INSTANTS = st.datetimes(timezones=_OFFSETS).map(datetime.isoformat)
_PARTS = st.one_of(
    st.sampled_from(["asc", "desc"]),
    _INSTANTS,
    st.integers(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(),
    st.uuids().map(str),
    st.none(),
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=10,
)
CURSORS = st.one_of(
    st.text(min_size=1),  # anything: non-ASCII, control characters, not base64
    st.binary(min_size=1).map(_b64),  # base64 of bytes that need not be UTF-8 or JSON
    _JSON.map(lambda v: _b64(json.dumps(v).encode())),  # JSON of any shape
    st.lists(_PARTS, min_size=1, max_size=7).map(lambda v: _b64(json.dumps(v).encode())),
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(cursor=CURSORS)
def test_any_cursor_is_a_key_postgres_can_hold_or_invalid_cursor(cursor: str) -> None:
    for codec in CODECS:
        try:
            key = codec.decode(cursor)
        except ApiError as exc:
            assert (exc.status_code, exc.error) == (400, "invalid_cursor")
            assert exc.detail.startswith("malformed cursor: ")
            continue
        for part in key:
            if isinstance(part, datetime):
                assert part.utcoffset() == timedelta(0)  # in UTC: asyncpg can send it
            elif isinstance(part, str):
                assert part and "\x00" not in part
            elif isinstance(part, int):
                assert -INT8 <= part <= INT8


@pytest.mark.parametrize(
    ("codec", "key", "needle"),
    [
        (policy.CURSOR, [AT, "t", INT4 + 1, 0], "2147483647"),
        (timeline.CURSOR, ["asc", AT, 0, "t", 0, INT8 + 1], "9223372036854775807"),
        (timeline.CURSOR, ["asc", AT, 3, "t", 0, 0], "less than or equal to 2"),
        (invoices.CURSOR, ["0001-01-01T00:00:00+05:00", "in_1"], "outside years 1..9999"),
        (invoices.CURSOR, ["9999-12-31T23:00:00-05:00", "in_1"], "outside years 1..9999"),
        (invoices.CURSOR, ["2024-05-01T00:00:00Z", "in\x00"], "NUL"),
        (customers.CURSOR, [1e400, "c"], "finite"),
        (invoices.CURSOR, [[[[["deep"]]]]], "cursor"),
    ],
)  # fmt: skip
def test_keys_outside_the_columns_are_refused_with_the_reason(
    codec: CursorCodec[Any], key: list[Any], needle: str
) -> None:
    raw = json.dumps(key).replace("Infinity", "1e400").encode()
    with pytest.raises(ApiError) as caught:
        codec.decode(_b64(raw))
    assert caught.value.error == "invalid_cursor" and needle in caught.value.detail


def test_non_ascii_and_deeply_nested_cursors_are_refused() -> None:
    for cursor in ("s\u00cb", "\U0001f600", "=" * 7, _b64(b"[" * 5000 + b"]" * 5000)):
        with pytest.raises(ApiError) as caught:
            invoices.CURSOR.decode(cursor)
        assert caught.value.status_code == 400


def test_instant_bounds_beyond_utc_become_infinities() -> None:
    east = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))
    west = datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5)))
    assert instant_bound(east) == datetime.min.replace(tzinfo=UTC)  # asyncpg: -infinity
    assert instant_bound(west) == datetime.max.replace(tzinfo=UTC)  # asyncpg: infinity
    noon = datetime(2024, 5, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    assert instant_bound(noon) == datetime(2024, 5, 1, 10, tzinfo=UTC)


_TIME = TypeAdapter(time)


def _pydantic_reads(text: str) -> bool:
    try:
        _TIME.validate_json(json.dumps(text))
    except ValidationError:
        return False
    return True


@settings(max_examples=2000)
@given(st.from_regex(TIME_PATTERN, fullmatch=True))
def test_every_string_of_the_time_pattern_is_a_time(text: str) -> None:
    assert _pydantic_reads(text)


@settings(max_examples=3000)
@given(st.text(st.sampled_from("0123456789:.+-Zz T"), min_size=4, max_size=22))
def test_every_time_pydantic_reads_matches_the_pattern(text: str) -> None:
    if _pydantic_reads(text):
        assert re.fullmatch(TIME_PATTERN, text)


@given(st.sampled_from(["low", "HIGH_RISK_CUSTOMER", "Open"]), st.randoms())
def test_any_case_pattern_takes_each_choice_in_any_case_and_nothing_else(
    choice: str, rnd: Any
) -> None:
    pattern = any_case(["low", "high_risk_customer", "open"])
    mixed = "".join(c.upper() if rnd.random() < 0.5 else c.lower() for c in choice)
    assert re.fullmatch(pattern, mixed)
    assert not re.fullmatch(pattern, mixed + "x") and not re.fullmatch(pattern, "")


def test_openapi_documents_400_error_bodies_and_no_phantom_422() -> None:
    spec = create_app(Settings(), "postgresql://unused@127.0.0.1:1/unused").openapi()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    error_body = {"$ref": "#/components/schemas/ErrorBody"}
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            if operation.get("parameters"):
                schema = responses["400"]["content"]["application/json"]["schema"]
                assert schema == error_body, (method, path)
            if "422" in responses:  # a policy that does not validate: a real 422
                assert (method, path) in {("put", "/v1/policy"), ("post", "/v1/ops/backtest")}
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "cursor":
                    assert parameter["description"].startswith("Opaque"), path
                    assert parameter["schema"]["examples"], path
    at = spec["components"]["schemas"]["RetrySchedule"]["properties"]["at"]
    assert "format" not in at and at["pattern"] == TIME_PATTERN
