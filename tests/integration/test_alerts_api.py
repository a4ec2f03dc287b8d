"""The `alerts` read model and GET /v1/alerts[/{alert_id}] on real Kafka + Postgres.

Alert records are produced to the test's own `alerts` topic (key tenant, as the worker sends
them), the projector runs in-process over them (as in test_customers_api.py), and the query
API is asked over ASGI.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx

from paywatch.kafka.codec import make_codec
from paywatch.projections import alerts
from paywatch.projections.runner import PROJECTION, dead_letter_topic
from paywatch.schemas.models import Alert, AlertStatus, AlertWindow, DeadLetter, Severity
from paywatch.schemas.topics import ALERTS
from paywatch.settings import Settings
from tests import pages
from tests.integration.test_customers_api import project
from tests.integration.test_customers_api import tenant_key as api_key
from tests.kafka_helpers import publish, topic_records

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
OPENED_MS = int(T0.timestamp() * 1000)
PROVIDER, CODE, HIGH_RISK = "PROVIDER_FAILURE_SPIKE", "DECLINE_CODE_SPIKE", "HIGH_RISK_CUSTOMER"
ITEM_FIELDS = {
    "alert_id", "kind", "severity", "provider", "decline_code", "customer_ref", "status",
    "observed", "baseline", "window_s", "opened_at", "updated_at", "resolved_at", "message",
}  # fmt: skip
TIMES = ("opened_at", "updated_at", "resolved_at")


def alert_id(tenant: str, kind: str, subject: str, opened: datetime = T0) -> str:
    """The worker's id of an incident: tenant/kind/subject/opened ms."""
    return f"{tenant}/{kind}/{subject}/{int(opened.timestamp() * 1000)}"


def record(
    tenant: str,
    kind: str,
    subject: str,
    minute: int,
    status: AlertStatus = AlertStatus.OPEN,
    *,
    severity: Severity = Severity.WARNING,
    observed: float = 25.0,
    opened: datetime = T0,
    window_min: int = 10,
    **kw: Any,
) -> Alert:
    """One record of the incident `subject` of `kind`, judged at T0 + `minute`."""
    end = T0 + timedelta(minutes=minute)
    fields: dict[str, Any] = {
        "tenant": tenant,
        "kind": kind,
        "severity": severity,
        "window": AlertWindow(start=end - timedelta(minutes=window_min), end=end),
        "observed": observed,
        "baseline": 2.5,
        "message": f"{subject}: {observed:g} at minute {minute}",
        "alert_id": alert_id(tenant, kind, subject, opened),
        "status": status,
        "provider": subject if kind == PROVIDER else None,
        "decline_code": subject if kind == CODE else None,
        "customer_ref": subject if kind == HIGH_RISK else None,
        "opened_at": opened,
        "resolved_at": end if status is AlertStatus.RESOLVED else None,
    }
    return Alert.model_validate(fields | kw)


async def listed(api: httpx.AsyncClient, headers: dict[str, str], **params: Any) -> list[str]:
    """The ids of one page of GET /v1/alerts (asserting it is the only one)."""
    r = await api.get("/v1/alerts", params=params, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["next_cursor"] is None
    return [item["alert_id"] for item in r.json()["data"]]


async def walk(api: httpx.AsyncClient, headers: dict[str, str], **params: Any) -> list[str]:
    """Every page of the listing, checked on the way (tests.pages.walk)."""
    return await pages.walk(api, "/v1/alerts", headers, ITEM_FIELDS, "alert_id", **params)


def times(item: dict[str, Any]) -> dict[str, Any]:
    """The item with its timestamps parsed (so the comparison ignores their spelling)."""
    return item | {k: datetime.fromisoformat(item[k]) if item[k] else None for k in TIMES}


async def test_incidents_collapse_into_one_row_and_filter_by_status_kind_and_provider(
    test_settings: Settings, kafka_bootstrap: str, pool: asyncpg.Pool, api: httpx.AsyncClient,
    unique: str,
) -> None:  # fmt: skip
    a, b, c = f"{unique}a", f"{unique}b", f"{unique}c"
    key_a, key_b, key_c = [await api_key(pool, t) for t in (a, b, c)]
    critical = Severity.CRITICAL
    resolved = AlertStatus.RESOLVED
    nameless = record(a, PROVIDER, "adyen", 2).model_copy(update={"alert_id": ""})
    sent = await publish(test_settings, kafka_bootstrap, [
        record(a, PROVIDER, "stripe", 1),
        record(a, CODE, "do_not_honor", 5),
        record(a, PROVIDER, "stripe", 3, severity=critical, observed=80.0),  # an update
        nameless,  # names no incident: dead-lettered, the others written
        record(a, HIGH_RISK, "cus_7", 8, observed=0.91, window_min=8),
        record(a, PROVIDER, "stripe", 15, resolved, severity=critical, observed=3.0,
               message="resolved: stripe quiet again"),
        # Tenant b: its own alert, and a record carrying a's spike id (the tenant comes from
        # the key, never from the id).
        record(b, PROVIDER, "paypal", 4),
        record(b, PROVIDER, "stripe", 6, alert_id=alert_id(a, PROVIDER, "stripe")),
    ])  # fmt: skip
    await project(test_settings, kafka_bootstrap, pool, sent)

    spike, code = alert_id(a, PROVIDER, "stripe"), alert_id(a, CODE, "do_not_honor")
    risky = alert_id(a, HIGH_RISK, "cus_7")
    assert await listed(api, key_a) == [spike, risky, code]  # newest updated_at first
    for spelled in ("open", "OPEN", "Open"):
        assert await listed(api, key_a, status=spelled) == [risky, code]
    assert await listed(api, key_a, status="resolved") == [spike]
    assert await listed(api, key_a, kind="decline_code_spike") == [code]
    assert await listed(api, key_a, kind="High_Risk_Customer", status="open") == [risky]
    assert await listed(api, key_a, kind=PROVIDER, status="open") == []
    assert await listed(api, key_a, provider="stripe") == [spike]
    assert await listed(api, key_a, provider="Stripe") == []  # providers are matched exactly

    # The incident's three records are one row: the latest values, and when it resolved.
    page = (await api.get("/v1/alerts", params={"status": "resolved"}, headers=key_a)).json()
    [item] = page["data"]
    assert times(item) == {
        "alert_id": spike, "kind": PROVIDER, "severity": "critical", "status": "resolved",
        "provider": "stripe", "decline_code": None, "customer_ref": None,
        "observed": 3.0, "baseline": 2.5, "window_s": 600.0,
        "opened_at": T0, "updated_at": T0 + timedelta(minutes=15),
        "resolved_at": T0 + timedelta(minutes=15), "message": "resolved: stripe quiet again",
    }  # fmt: skip
    # One alert by id: the id's '/' as is, or percent-encoded; the same item either way.
    for path in (quote(spike, safe="/"), quote(spike, safe="")):
        one = await api.get(f"/v1/alerts/{path}", headers=key_a)
        assert one.status_code == 200, (path, one.text)
        assert one.json() == item
    customer = (await api.get(f"/v1/alerts/{risky}", headers=key_a)).json()
    assert (customer["kind"], customer["customer_ref"], customer["status"]) == (
        HIGH_RISK, "cus_7", "open"
    )  # fmt: skip
    assert (customer["severity"], customer["observed"], customer["window_s"]) == (
        "warning", 0.91, 480.0
    )  # fmt: skip
    assert customer["resolved_at"] is None

    # Other tenants: b sees its own two (the one with a's id is b's record); c sees nothing.
    assert await listed(api, key_b) == [spike, alert_id(b, PROVIDER, "paypal")]
    theirs = (await api.get(f"/v1/alerts/{spike}", headers=key_b)).json()
    assert (theirs["status"], theirs["observed"]) == ("open", 25.0)
    assert (await api.get("/v1/alerts", headers=key_c)).json() == {"data": [], "next_cursor": None}
    for wanted, key in [(spike, key_c), (alert_id(b, PROVIDER, "paypal"), key_a), ("nope", key_a)]:
        missing = await api.get(f"/v1/alerts/{wanted}", headers=key)
        assert missing.status_code == 404, (wanted, missing.text)
        assert missing.json() == {"error": "not_found", "detail": f"no alert {wanted!r}"}
    for path in ("/v1/alerts", f"/v1/alerts/{spike}"):
        unauthorized = await api.get(path)
        assert (unauthorized.status_code, unauthorized.json()["error"]) == (401, "unauthorized")
        assert (await api.get(path, headers={"Authorization": "Bearer pw_no"})).status_code == 401

    for param, bad, allowed in [
        ("status", "closed", "open, resolved"),
        ("status", "", "open, resolved"),
        ("kind", "spike", f"{PROVIDER}, {CODE}, {HIGH_RISK}"),
    ]:
        r = await api.get("/v1/alerts", params={param: bad}, headers=key_a)
        assert r.status_code == 400, (param, bad, r.text)
        assert r.json()["error"] == "invalid_request"
        assert allowed in r.json()["detail"]
    r = await api.get("/v1/alerts", params={"cursor": "!!!"}, headers=key_a)
    assert (r.status_code, r.json()["error"]) == (400, "invalid_cursor")
    r = await api.get("/v1/alerts", params={"limit": 0}, headers=key_a)
    assert (r.status_code, r.json()["error"]) == (400, "invalid_request")

    # The record without an id is in the projector's dead-letter topic, naming its source.
    dlq = test_settings.topic(dead_letter_topic(ALERTS))
    codec = make_codec(test_settings)
    letters = [
        codec.decode(r.value, DeadLetter, topic=dlq)
        for r in await topic_records(kafka_bootstrap, dlq)
    ]
    [letter] = letters
    at = sent[3]
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == at
    assert "alert_id" in letter.error


async def test_pages_follow_updated_at_without_gaps_or_duplicates(
    test_settings: Settings, kafka_bootstrap: str, pool: asyncpg.Pool, api: httpx.AsyncClient,
    unique: str,
) -> None:  # fmt: skip
    key = await api_key(pool, unique)
    resolved = AlertStatus.RESOLVED
    # (subject, minute of its latest record, resolved?): ties on the minute are broken by the
    # id, descending; p00's update moves it from last to first.
    latest = [("p00", 30, False), ("p01", 20, True), ("p02", 20, False), ("p03", 20, True),
              ("p04", 17, False), ("p05", 12, True), ("p06", 9, False), ("p07", 9, False),
              ("p08", 5, True), ("p09", 2, False), ("p10", 1, True)]  # fmt: skip
    records = [record(unique, PROVIDER, "p00", 0)]
    for subject, minute, done in latest:
        if done:  # its OPEN record, then the RESOLVED one
            records.append(record(unique, PROVIDER, subject, minute - 1))
            records.append(record(unique, PROVIDER, subject, minute, AlertStatus.RESOLVED))
        else:
            records.append(record(unique, PROVIDER, subject, minute))
    sent = await publish(test_settings, kafka_bootstrap, records)
    await project(test_settings, kafka_bootstrap, pool, sent)

    def ids(*subjects: str) -> list[str]:
        return [alert_id(unique, PROVIDER, s) for s in subjects]

    everyone = ids("p00", "p03", "p02", "p01", "p04", "p05", "p07", "p06", "p08", "p09", "p10")
    for limit in (1, 2, 3, 10, 11, 50):
        assert await walk(api, key, limit=limit) == everyone, limit
    still_open = ids("p00", "p02", "p04", "p07", "p06", "p09")
    resolved = ids("p03", "p01", "p05", "p08", "p10")
    for limit in (1, 2, 4):
        assert await walk(api, key, status="open", limit=limit) == still_open, limit
        assert await walk(api, key, status="RESOLVED", limit=limit) == resolved, limit
    rows = await pool.fetchval("SELECT count(*) FROM alerts WHERE tenant = $1", unique)
    assert (rows, len(records)) == (11, 17)  # 17 records, one row per incident


async def test_a_replayed_older_record_never_reopens_a_resolved_alert(
    test_settings: Settings, kafka_bootstrap: str, pool: asyncpg.Pool, api: httpx.AsyncClient,
    unique: str,
) -> None:  # fmt: skip
    """The record at the greatest coordinates wins: replaying an older OPEN, alone or from
    Kafka, changes nothing, not even updated_at."""
    settings = test_settings.model_copy(update={"projector_batch": 1})  # one record a batch
    key = await api_key(pool, unique)
    opened = record(unique, PROVIDER, "stripe", 1)
    updated = record(unique, PROVIDER, "stripe", 3, severity=Severity.CRITICAL, observed=90.0)
    done = record(unique, PROVIDER, "stripe", 14, AlertStatus.RESOLVED, observed=1.0)
    coords = await publish(settings, kafka_bootstrap, [opened, updated, done])
    assert coords == sorted(coords) and len({(c.topic, c.partition) for c in coords}) == 1
    await project(settings, kafka_bootstrap, pool, coords)
    one = "SELECT * FROM alerts WHERE tenant = $1 AND alert_id = $2"
    before = dict(await pool.fetchrow(one, unique, done.alert_id))
    assert (before["status"], before["observed"]) == ("RESOLVED", 1.0)
    assert before["offset"] == coords[2].offset
    assert before["updated_at"] == before["resolved_at"] == T0 + timedelta(minutes=14)

    # A projector behind the others (a rebalance overlap) writes an older OPEN alone.
    for older, at in [(opened, coords[0]), (updated, coords[1])]:
        async with pool.acquire() as conn, conn.transaction():
            await alerts.READ_MODEL.project(conn, [(older, at)])
        assert dict(await pool.fetchrow(one, unique, done.alert_id)) == before

    # Kafka replay: the checkpoint rewound to 0, so the OPEN records come back first, each
    # alone in its batch; the checkpoint past the RESOLVED one again says the replay is done.
    rewound = await pool.execute(
        "UPDATE projection_checkpoints SET next_offset = 0 WHERE projection = $1 AND topic = $2",
        PROJECTION,
        coords[0].topic,
    )
    assert rewound != "UPDATE 0"
    await project(settings, kafka_bootstrap, pool, coords)
    assert dict(await pool.fetchrow(one, unique, done.alert_id)) == before

    answer = (await api.get(f"/v1/alerts/{done.alert_id}", headers=key)).json()
    assert (answer["status"], answer["severity"]) == ("resolved", "warning")
    assert answer["observed"] == 1.0
    assert await walk(api, key, status="open") == []
