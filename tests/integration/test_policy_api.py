"""Tenant recovery policies over the query API, on real Kafka + Postgres.

GET/PUT /v1/policy and /v1/policy/history: defaults, changes as PolicyChanged events on
recovery.policies with their previous_revision chain, no-op changes, field errors, roles,
tenant isolation, history pages, Kafka down; the projector agrees with the direct writes.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI

from paywatch.api.query.app import create_app
from paywatch.kafka.codec import make_codec
from paywatch.recovery.tenant_policy import TenantPolicy
from paywatch.schemas.models import DeadLetter, PolicyChanged
from paywatch.settings import Settings
from paywatch.tenants.api_keys import create_api_key, hash_api_key
from paywatch.tenants.policy_input import canonical_json
from paywatch.tenants.store import create_tenant
from tests.conftest import free_tcp_port
from tests.integration.test_projector import Running
from tests.kafka_helpers import eventually, topic_records

POLICIES = "recovery.policies"
SHORT = {"window_days": 20, "retry": {"days": [1, 2, 4], "max_retries": 3}}
NO_DUNNING = {"dunning": [], "final_action": "cancel"}


@dataclass
class Tenants:
    a: str
    b: str
    analyst: str
    operator: str
    admin: str
    other: str
    """An operator key of tenant b."""


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def by(pool: asyncpg.Pool, key: str) -> str:
    """How a change made with ``key`` records who made it: its key id, never the key."""
    key_id = await pool.fetchval(
        "SELECT key_id FROM api_keys WHERE key_hash = $1", hash_api_key(key)
    )
    return f"api:{key_id}"


@pytest.fixture
async def tenants(pool: asyncpg.Pool, unique: str) -> Tenants:
    a, b = f"{unique}a", f"{unique}b"
    async with pool.acquire() as conn:
        for name in (a, b):
            await create_tenant(conn, name)
        return Tenants(
            a=a, b=b, analyst=await create_api_key(conn, a, "analyst"),
            operator=await create_api_key(conn, a, "operator"),
            admin=await create_api_key(conn, a, "admin"),
            other=await create_api_key(conn, b, "operator"),
        )  # fmt: skip


async def _client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield client


@pytest.fixture
async def api(test_settings: Settings, pg_dsn: str) -> AsyncIterator[httpx.AsyncClient]:
    async for client in _client(create_app(test_settings, pg_dsn, test_settings.kafka_bootstrap)):
        yield client


async def changes(settings: Settings) -> list[PolicyChanged]:
    codec = make_codec(settings)
    topic = settings.topic(POLICIES)
    records = await topic_records(str(settings.kafka_bootstrap), topic)
    return [codec.decode(r.value, PolicyChanged, topic=topic) for r in records]


async def put(api: httpx.AsyncClient, key: str, body: Any, **params: str) -> httpx.Response:
    return await api.put("/v1/policy", json=body, params=params, headers=auth(key))


async def test_a_tenant_that_never_changed_its_policy_gets_the_defaults(
    api: httpx.AsyncClient, tenants: Tenants
) -> None:
    got = await api.get("/v1/policy", headers=auth(tenants.analyst))
    assert got.status_code == 200, got.text
    body = got.json()
    defaults = TenantPolicy()
    assert body["source"] == "default" and body["revision"] == defaults.revision
    assert body["policy"] == defaults.model_dump(mode="json")
    assert body["changed_at"] is None and body["previous_revision"] is None
    history = await api.get("/v1/policy/history", headers=auth(tenants.analyst))
    assert history.json() == {"data": [], "next_cursor": None}


async def test_changes_are_events_chained_by_previous_revision(
    api: httpx.AsyncClient, tenants: Tenants, test_settings: Settings, pool: asyncpg.Pool
) -> None:
    first = await put(api, tenants.operator, SHORT, reason="shorter window")
    assert first.status_code == 200, first.text
    one = first.json()
    expected = TenantPolicy.model_validate(SHORT)
    assert one["revision"] == expected.revision and one["policy"] == expected.model_dump(
        mode="json"
    )
    assert (one["changed"], one["previous_revision"]) == (True, None)
    assert one["kafka"]["topic"] == test_settings.topic(POLICIES)

    # A read right after the write sees it (no projector running).
    now = (await api.get("/v1/policy", headers=auth(tenants.analyst))).json()
    assert (now["source"], now["revision"], now["changed_by"]) == (
        "stored",
        expected.revision,
        await by(pool, tenants.operator),
    )
    assert now["reason"] == "shorter window" and now["previous_revision"] is None

    second = await put(api, tenants.admin, NO_DUNNING)  # admin includes operator
    assert second.status_code == 200, second.text
    two = second.json()
    assert (two["changed"], two["previous_revision"]) == (True, one["revision"])

    events = await changes(test_settings)
    assert [(e.tenant, e.revision, e.previous_revision) for e in events] == [
        (tenants.a, one["revision"], None),
        (tenants.a, two["revision"], one["revision"]),
    ]
    assert [(e.changed_by, e.reason) for e in events] == [
        (await by(pool, tenants.operator), "shorter window"),
        (await by(pool, tenants.admin), None),
    ]
    assert events[0].changed_at < events[1].changed_at
    assert TenantPolicy.model_validate_json(events[1].policy_json).revision == two["revision"]
    assert events[1].policy_json == canonical_json(TenantPolicy.model_validate(NO_DUNNING))


async def test_concurrent_changes_form_one_chain(
    api: httpx.AsyncClient, tenants: Tenants, test_settings: Settings
) -> None:
    answers = await asyncio.gather(
        *(put(api, tenants.operator, {"window_days": 10 + i}) for i in range(6))
    )
    assert all(a.status_code == 200 and a.json()["changed"] for a in answers)
    events = await changes(test_settings)  # one partition: the log order
    assert [e.previous_revision for e in events] == [None] + [e.revision for e in events[:-1]]
    assert all(a.changed_at < b.changed_at for a, b in itertools.pairwise(events))
    now = (await api.get("/v1/policy", headers=auth(tenants.analyst))).json()
    assert now["revision"] == events[-1].revision


async def test_an_identical_policy_is_a_no_op_without_an_event(
    api: httpx.AsyncClient, tenants: Tenants, test_settings: Settings
) -> None:
    body = {"owners": {"stripe": "paywatch", "adyen": "provider"}}
    assert (await put(api, tenants.operator, body)).json()["changed"] is True
    # Same content, keys in another order: same revision, nothing written.
    swapped = {"owners": {"adyen": "provider", "stripe": "paywatch"}}
    again = await put(api, tenants.operator, swapped)
    assert again.status_code == 200 and again.json()["changed"] is False
    assert again.json()["kafka"] is None
    # The defaults, for a tenant that runs them, are no change either.
    other = await put(api, tenants.other, TenantPolicy().model_dump(mode="json"))
    assert other.json()["changed"] is False
    assert len(await changes(test_settings)) == 1


async def test_an_invalid_policy_is_422_with_every_field_error(
    api: httpx.AsyncClient, tenants: Tenants, test_settings: Settings
) -> None:
    bad = {
        "window_days": 0,
        "retry": {"days": [3, 1]},
        "dunning": [{"day": -1, "template": "payment_failed"}],
        "colour": "red",
    }
    got = await put(api, tenants.operator, bad)
    assert got.status_code == 422, got.text
    body = got.json()
    assert body["error"] == "invalid_policy"
    assert [e["field"] for e in body["errors"]] == [
        "window_days",
        "retry.days",
        "dunning[0].day",
        "colour",
    ]
    assert body["errors"][1]["reason"] == "days must be strictly increasing: 1 follows 3"
    assert "retry.days: days must be strictly increasing" in body["detail"]

    whole = await put(api, tenants.operator, {"window_days": 5})
    assert whole.status_code == 422 and whole.json()["errors"][0]["field"] == "(policy)"
    not_object = await put(api, tenants.operator, [1, 2])
    assert not_object.status_code == 422
    not_json = await api.put("/v1/policy", content=b"{nope", headers=auth(tenants.operator))
    assert not_json.status_code == 400 and not_json.json()["error"] == "invalid_request"
    bad_reason = await put(api, tenants.operator, SHORT, reason="")
    assert bad_reason.status_code == 400
    assert await changes(test_settings) == []
    assert (await api.get("/v1/policy", headers=auth(tenants.analyst))).json()["source"] == (
        "default"
    )


async def test_roles_analyst_reads_operator_writes(
    api: httpx.AsyncClient, tenants: Tenants, test_settings: Settings
) -> None:
    forbidden = await put(api, tenants.analyst, SHORT)
    assert forbidden.status_code == 403 and forbidden.json()["error"] == "forbidden"
    assert (await api.put("/v1/policy", json=SHORT)).status_code == 401
    assert (await api.get("/v1/policy")).status_code == 401
    assert (await api.get("/v1/policy/history", headers=auth("pw_nope"))).status_code == 401
    assert await changes(test_settings) == []


async def test_tenants_see_and_change_only_their_own_policy(
    api: httpx.AsyncClient, tenants: Tenants
) -> None:
    assert (await put(api, tenants.operator, SHORT)).status_code == 200
    b = (await api.get("/v1/policy", headers=auth(tenants.other))).json()
    assert b["source"] == "default"
    history_b = await api.get("/v1/policy/history", headers=auth(tenants.other))
    assert history_b.json()["data"] == []
    changed_b = await put(api, tenants.other, NO_DUNNING)
    assert changed_b.json()["previous_revision"] is None  # b's chain, not a's
    a = (await api.get("/v1/policy", headers=auth(tenants.analyst))).json()
    assert a["revision"] == TenantPolicy.model_validate(SHORT).revision


async def test_history_pages_newest_first(
    api: httpx.AsyncClient, tenants: Tenants, pool: asyncpg.Pool
) -> None:
    revisions = []
    for days in (10, 20, 30):
        answer = await put(api, tenants.operator, {"window_days": days}, reason=f"d{days}")
        revisions.append(answer.json()["revision"])
    seen: list[dict[str, Any]] = []
    cursor = None
    for _ in range(5):
        params = {"limit": "1"} | ({"cursor": cursor} if cursor else {})
        page = await api.get("/v1/policy/history", params=params, headers=auth(tenants.analyst))
        assert page.status_code == 200, page.text
        seen += page.json()["data"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert [item["revision"] for item in seen] == revisions[::-1]
    assert [item["previous_revision"] for item in seen] == [revisions[1], revisions[0], None]
    assert [item["reason"] for item in seen] == ["d30", "d20", "d10"]
    assert seen[0]["policy"]["window_days"] == 30 and seen[0]["changed_by"] == await by(
        pool, tenants.operator
    )
    assert [item["kafka"]["offset"] for item in seen] == [2, 1, 0]
    bad = await api.get(
        "/v1/policy/history", params={"cursor": "bm9wZQ"}, headers=auth(tenants.analyst)
    )
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_cursor"


async def test_kafka_down_is_503_and_changes_nothing(
    test_settings: Settings, pg_dsn: str, tenants: Tenants
) -> None:
    dead = f"127.0.0.1:{free_tcp_port()}"
    async for api in _client(create_app(test_settings, pg_dsn, dead)):
        down = await put(api, tenants.operator, SHORT)
        assert down.status_code == 503, down.text
        assert down.json()["error"] == "kafka_unavailable"
        assert "not changed" in down.json()["detail"] and down.headers["Retry-After"] == "5"
        assert (await api.get("/v1/policy", headers=auth(tenants.analyst))).json()[
            "source"
        ] == "default"
    async for api in _client(create_app(test_settings, pg_dsn)):
        assert (await put(api, tenants.operator, SHORT)).status_code == 503


async def test_openapi_documents_the_policy_routes(api: httpx.AsyncClient) -> None:
    spec = (await api.get("/openapi.json")).json()
    put_op = spec["paths"]["/v1/policy"]["put"]
    body = put_op["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/TenantPolicy"}
    assert "TenantPolicy" in spec["components"]["schemas"]
    assert {"200", "403", "422", "503"} <= set(put_op["responses"])
    assert "/v1/policy/history" in spec["paths"]


# -- the projector -----------------------------------------------------------------------


async def _row(pool: asyncpg.Pool, tenant: str) -> dict[str, Any] | None:
    row = await pool.fetchrow(
        'SELECT revision, previous_revision, changed_by, partition, "offset", policy'
        " FROM tenant_policies WHERE tenant = $1",
        tenant,
    )
    return dict(row) if row else None


async def _history(pool: asyncpg.Pool, tenant: str) -> list[tuple[str, int]]:
    rows = await pool.fetch(
        'SELECT revision, "offset" FROM tenant_policy_changes WHERE tenant = $1 ORDER BY "offset"',
        tenant,
    )
    return [(r["revision"], r["offset"]) for r in rows]


async def _projected_all(pool: asyncpg.Pool, topic: str, records: int) -> bool:
    # Offsets start at 0 in every partition: the next offsets add up to the record count.
    done = await pool.fetchval(
        "SELECT sum(next_offset) FROM projection_checkpoints WHERE topic = $1", topic
    )
    return done == records


async def test_projector_rebuilds_the_same_rows_and_newest_wins(
    api: httpx.AsyncClient,
    tenants: Tenants,
    test_settings: Settings,
    pool: asyncpg.Pool,
    kafka_bootstrap: str,
) -> None:
    for body in (SHORT, NO_DUNNING):
        assert (await put(api, tenants.operator, body)).json()["changed"]
    written = await _row(pool, tenants.a)
    history = await _history(pool, tenants.a)
    assert written is not None and len(history) == 2

    # Drop what the API wrote: the projector rebuilds it from the topic alone.
    await pool.execute("DELETE FROM tenant_policies WHERE tenant = $1", tenants.a)
    await pool.execute("DELETE FROM tenant_policy_changes WHERE tenant = $1", tenants.a)
    # Another writer appends an older-stamped change for b and garbage (dead-lettered).
    codec, topic = make_codec(test_settings), test_settings.topic(POLICIES)
    policy = TenantPolicy.model_validate({"window_days": 9, "retry": {"days": [1, 2]}})
    stale = PolicyChanged(
        tenant=tenants.b, revision=policy.revision, policy_json=canonical_json(policy),
        changed_at=datetime.now(UTC) - timedelta(days=1), changed_by="cli",
    )  # fmt: skip
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        await producer.send_and_wait(topic, codec.encode(stale, topic=topic), tenants.b.encode())
        await producer.send_and_wait(topic, b"garbage", tenants.b.encode())
    finally:
        await producer.stop()

    run = Running(test_settings, kafka_bootstrap, pool)
    try:
        await eventually(lambda: _row(pool, tenants.b), what="b's policy projected")
        assert await eventually(lambda: _row(pool, tenants.a), what="a's policy") == written
        assert await _history(pool, tenants.a) == history
    finally:
        await run.stop()
    # Replayed from the start: nothing changes, nothing doubles.
    await pool.execute("DELETE FROM projection_checkpoints WHERE topic = $1", topic)
    run = Running(test_settings, kafka_bootstrap, pool)
    try:
        await eventually(lambda: _projected_all(pool, topic, 4), what="the topic replayed")
        assert await _row(pool, tenants.a) == written
        assert await _history(pool, tenants.a) == history
    finally:
        await run.stop()
    dlq = test_settings.topic("payments.events.dlq")
    letters = [codec.decode(r.value, DeadLetter, topic=dlq) for r in await topic_records(
        kafka_bootstrap, dlq
    )]  # fmt: skip
    assert letters and {(x.source_topic, x.payload) for x in letters} == {(topic, b"garbage")}
    b_row = await _row(pool, tenants.b)
    assert b_row is not None and b_row["revision"] == policy.revision

    # A newer change through the API wins; replaying the older one never moves the row back.
    newer = await put(api, tenants.other, SHORT)
    assert newer.json()["previous_revision"] == policy.revision
    b_row = await _row(pool, tenants.b)
    assert b_row is not None and b_row["revision"] == newer.json()["revision"]
    await pool.execute("DELETE FROM projection_checkpoints WHERE topic = $1", topic)
    run = Running(test_settings, kafka_bootstrap, pool)
    try:
        await eventually(lambda: _projected_all(pool, topic, 5), what="the topic replayed")
    finally:
        await run.stop()
    assert await _row(pool, tenants.b) == b_row


async def test_values_of_the_wrong_json_type_are_422_not_guessed(
    api: httpx.AsyncClient, tenants: Tenants, test_settings: Settings
) -> None:
    """What PUT takes is what the schema says: no "30" or 30.5 for 30, no 0 for false."""
    for body, field in [
        ({"window_days": "30"}, "window_days"),
        ({"window_days": 30.5}, "window_days"),
        ({"card_expiry": {"notify": 0}}, "card_expiry.notify"),
        ({"retry": {"at": 36000}}, "retry.at"),
        ({"retry": {"days": ["1"]}}, "retry.days[0]"),
    ]:
        got = await put(api, tenants.operator, body)
        assert got.status_code == 422, (body, got.text)
        assert got.json()["error"] == "invalid_policy"
        assert [e["field"] for e in got.json()["errors"]] == [field], got.text
    ok = await put(api, tenants.operator, {"retry": {"days": [1, 3], "at": "09:30"}})
    assert ok.status_code == 200, ok.text
    assert ok.json()["policy"]["retry"]["at"] == "09:30:00"
    assert len(await changes(test_settings)) == 1


async def test_deep_huge_and_oversized_bodies_are_client_errors(
    api: httpx.AsyncClient, tenants: Tenants, test_settings: Settings
) -> None:
    """Never a 500: nested past what a JSON parser takes is 400, past 64 KiB 413."""
    for raw in (
        b"[" * 5000 + b"]" * 5000,  # json.loads: RecursionError
        b'{"a":' * 300 + b"1" + b"}" * 300,  # Python reads it, pydantic's parser does not
        b'{"window_days": ' + b"9" * 5000 + b"}",  # an int of 4300+ digits
    ):
        got = await api.put("/v1/policy", content=raw, headers=auth(tenants.operator))
        assert got.status_code == 400, got.text[:300]
        assert set(got.json()) == {"error", "detail"}
        assert got.json()["error"] == "invalid_request"
    huge = await put(api, tenants.operator, {"window_days": 10**400})
    assert huge.status_code == 422 and huge.json()["errors"][0]["field"] == "window_days"
    big = b'{"owners": {}, "x": "' + b"a" * 70_000 + b'"}'
    too_large = await api.put("/v1/policy", content=big, headers=auth(tenants.operator))
    assert (too_large.status_code, too_large.json()["error"]) == (413, "too_large")
    assert await changes(test_settings) == []


async def test_policy_answers_match_their_schema_time_and_all(api: httpx.AsyncClient) -> None:
    """GET/PUT bodies write `at` as HH:MM:SS, which the published schema now says (it said
    format: time, which requires an offset)."""
    spec = (await api.get("/openapi.json")).json()
    at = spec["components"]["schemas"]["RetrySchedule"]["properties"]["at"]
    assert "format" not in at
    assert re.fullmatch(at["pattern"], TenantPolicy().model_dump(mode="json")["retry"]["at"])
    put_responses = spec["paths"]["/v1/policy"]["put"]["responses"]
    assert {"400", "401", "403", "413", "422", "503"} <= set(put_responses)
