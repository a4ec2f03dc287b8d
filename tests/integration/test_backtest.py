"""The policy backtest on real Kafka + Postgres: the history reader, the CLI and the API.

Each test writes its tenant's history to its own ``payments.events`` (another tenant's
records beside it) and reads it back through ``paywatch.kafka.history``; the CLI runs as a
user runs it, the API in-process over HTTP with the key of each role.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from paywatch.api.query.app import create_app
from paywatch.kafka.history import HistoryTooLarge, read_history
from paywatch.recovery.tenant_policy import TenantPolicy
from paywatch.schemas.models import (
    Decline,
    DeclineCategory,
    EventType,
    PaymentEvent,
    PaymentMethod,
)
from paywatch.settings import Settings
from paywatch.tenants.api_keys import create_api_key
from paywatch.tenants.roles import ROLES, Role
from paywatch.tenants.store import create_tenant
from tests.integration.test_cli import paywatch
from tests.kafka_helpers import publish

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
CANDIDATE = {"retry": {"days": [2], "max_retries": 1}}


def _event(
    tenant: str, invoice: str, n: int, kind: EventType, day: float, **kw: Any
) -> PaymentEvent:
    decline = None
    if kind is EventType.PAYMENT_FAILED:
        decline = Decline(code="insufficient_funds", category=DeclineCategory.SOFT,
                          network="visa", network_code="51")  # fmt: skip
    card = PaymentMethod(brand="visa", last4="4242", exp_month=4, exp_year=2030,
                         fingerprint=f"fp_{invoice}")  # fmt: skip
    return PaymentEvent(
        event_id=f"evt_{tenant}_{invoice}_{n}", type=kind, tenant=tenant, provider="adyen",
        source_type="test", occurred_at=T0 + day * DAY, customer_ref=f"cus_{invoice}",
        invoice_ref=invoice, amount_minor=4900, currency="EUR", decline=decline,
        payment_method=card, **kw,
    )  # fmt: skip


def history(tenant: str) -> list[PaymentEvent]:
    """Three failing invoices (one paid by the customer on day 4, one retried by paywatch
    back then, whose outcome is not reused), one invoice paid at once."""
    failed = EventType.PAYMENT_FAILED
    return [
        _event(tenant, "in_a", 0, failed, 0),
        _event(tenant, "in_b", 0, failed, 0.5),
        _event(tenant, "in_c", 0, failed, 1),
        _event(tenant, "in_paid", 0, EventType.PAYMENT_SUCCEEDED, 1),
        _event(tenant, "in_b", 1, EventType.PAYMENT_SUCCEEDED, 2, paywatch_retry=True),
        _event(tenant, "in_a", 1, EventType.PAYMENT_SUCCEEDED, 4),
        _event(tenant, "in_c", 1, failed, 9, attempt=2),
    ]


async def _write(settings: Settings, tenant: str) -> None:
    other = [_event(f"{tenant}x", "in_a", 0, EventType.PAYMENT_FAILED, 0)]  # another tenant
    await publish(settings, str(settings.kafka_bootstrap), [*other, *history(tenant)])


async def test_the_reader_takes_one_tenants_failing_invoices_from_kafka(
    test_settings: Settings, unique: str
) -> None:
    await _write(test_settings, unique)
    bootstrap = str(test_settings.kafka_bootstrap)
    read = await read_history(test_settings, bootstrap, unique, max_events=100)
    assert read.tenant_events == 7  # the paid-at-once invoice is counted, not kept
    assert read.records_read == 8 and read.undecodable == 0
    kept = {(e.invoice_ref, e.event_id) for e in read.events}
    assert kept == {(e.invoice_ref, e.event_id) for e in history(unique)} - {
        ("in_paid", f"evt_{unique}_in_paid_0")
    }
    # In a window, an invoice is kept only if it fails inside it: in_a (failed on day 0,
    # paid on day 4) is not, in_b (failed on day 0.5, its old retry outcome on day 2) is.
    window = await read_history(
        test_settings, bootstrap, unique, since=T0 + DAY / 2, until=T0 + 5 * DAY, max_events=100
    )
    days = sorted((e.occurred_at - T0) / DAY for e in window.events)
    assert days == [0.5, 1, 2] and window.tenant_events == 5
    with pytest.raises(HistoryTooLarge, match="more than 2 events"):
        await read_history(test_settings, bootstrap, unique, max_events=2)


@pytest.fixture
def tenant(test_settings: Settings, unique: str) -> str:
    created = paywatch(test_settings, "tenant", "create", unique)
    assert created.returncode == 0, created.stderr
    return unique


def _file(tmp_path: Path, data: object) -> str:
    path = tmp_path / "candidate.json"
    path.write_text(json.dumps(data))
    return str(path)


async def test_the_cli_compares_the_running_policy_with_a_candidate(
    test_settings: Settings, tenant: str, tmp_path: Path
) -> None:
    await _write(test_settings, tenant)
    policy = _file(tmp_path, CANDIDATE)
    until = (T0 + 40 * DAY).isoformat()
    args = ("backtest", "--tenant", tenant, "--policy", policy, "--to", until, "--seed", "3")
    done = paywatch(test_settings, *args, "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["tenant"] == tenant and answer["seed"] == 3
    assert answer["history"]["tenant_events"] == 7
    assert answer["history"]["retry_outcomes_not_reused"] == 1
    running, candidate = answer["running"], answer["candidate"]
    assert running["source"] == "default" and running["revision"] == TenantPolicy().revision
    assert candidate["revision"] == TenantPolicy.model_validate(CANDIDATE).revision
    assert running["sagas"] == candidate["sagas"] == 3
    assert 0 < candidate["retries_spent"] < running["retries_spent"]
    assert running["network_rule_violations"] == candidate["network_rule_violations"] == 0
    assert running["recoveries"] >= 1 and "EUR" in running["revenue_recovered_minor"]
    again = paywatch(test_settings, *args, "--json")
    assert json.loads(again.stdout) == answer  # same seed, same answer

    text = paywatch(test_settings, *args)
    assert text.returncode == 0, text.stderr
    assert "retries spent" in text.stdout and "network-rule violations" in text.stdout
    assert f"{running['retries_spent']}" in text.stdout


async def test_the_cli_refuses_bad_input_in_one_line(
    test_settings: Settings, tenant: str, tmp_path: Path
) -> None:
    bad = paywatch(test_settings, "backtest", "--tenant", tenant,
                   "--policy", _file(tmp_path, {"window_days": 0}))  # fmt: skip
    assert bad.returncode == 2 and "window_days" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    good = _file(tmp_path, CANDIDATE)
    unknown = paywatch(test_settings, "backtest", "--tenant", f"{tenant}nope", "--policy", good)
    assert unknown.returncode == 1 and "unknown tenant" in unknown.stderr, unknown.stderr
    order = paywatch(test_settings, "backtest", "--tenant", tenant, "--policy", good,
                     "--from", "2026-03-05", "--to", "2026-03-01")  # fmt: skip
    assert order.returncode == 2 and "is not before --to" in order.stderr
    usage = paywatch(test_settings, "backtest", "--tenant", tenant, "--policy", good,
                     "--from", "March")  # fmt: skip
    assert usage.returncode == 2 and "not an ISO date" in usage.stderr


@pytest.fixture
async def keys(pool: asyncpg.Pool, unique: str) -> dict[Role, str]:
    async with pool.acquire() as conn:
        await create_tenant(conn, unique)
        return {role: await create_api_key(conn, unique, role) for role in ROLES}


@pytest.fixture
async def api(test_settings: Settings, pg_dsn: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = test_settings.model_copy(update={"api_rate": 0})
    app: FastAPI = create_app(settings, pg_dsn, test_settings.kafka_bootstrap)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield client


async def test_the_api_answers_the_same_comparison_to_an_operator(
    test_settings: Settings, unique: str, keys: dict[Role, str], api: httpx.AsyncClient
) -> None:
    await _write(test_settings, unique)
    body = {"policy": CANDIDATE, "to": (T0 + 40 * DAY).isoformat(), "seed": 3}
    answers = {}
    for role in ROLES:
        r = await api.post("/v1/ops/backtest", json=body, headers=_auth(keys, role))
        answers[role] = r
    assert {role: r.status_code for role, r in answers.items()} == {
        role: 200 if role in ("operator", "admin") else 403 for role in ROLES
    }
    got = answers["operator"].json()
    assert got["running"]["sagas"] == got["candidate"]["sagas"] == 3
    assert 0 < got["candidate"]["retries_spent"] < got["running"]["retries_spent"]
    assert got["running"]["network_rule_violations"] == 0
    assert answers["admin"].json() == got

    cli = paywatch(test_settings, "backtest", "--tenant", unique, "--json", "--seed", "3",
                   "--to", body["to"], "--policy", "-", input=json.dumps(CANDIDATE))  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout) == got  # the CLI and the API give one answer


async def test_the_api_refuses_bad_bodies_precisely(
    keys: dict[Role, str], api: httpx.AsyncClient, test_settings: Settings, pg_dsn: str
) -> None:
    auth = _auth(keys, "operator")
    invalid = await api.post("/v1/ops/backtest", json={"policy": {"window_days": 0}}, headers=auth)
    assert invalid.status_code == 422 and invalid.json()["error"] == "invalid_policy"
    assert [e["field"] for e in invalid.json()["errors"]] == ["policy.window_days"]
    for body, said in (
        ({}, "policy"),
        ({"policy": {}, "from": "March"}, "from"),
        ({"policy": {}, "seed": -1}, "seed"),
        ({"policy": {}, "seed": 2**63 + 191}, "seed"),  # a double would read it as 2**63 - 1
        ({"policy": {}, "extra": 1}, "extra"),
        ({"policy": {}, "from": "2026-03-05", "to": "2026-03-01"}, "from must be before to"),
        ({"policy": {}, "from": 0, "to": "2000-01-01T00:00:00Z"}, "date or time string"),
    ):
        r = await api.post("/v1/ops/backtest", json=body, headers=auth)
        assert r.status_code == 400 and r.json()["error"] == "invalid_request", (body, r.text)
        assert said in r.json()["detail"], (body, r.text)
    no_kafka = create_app(test_settings, pg_dsn)
    async with no_kafka.router.lifespan_context(no_kafka):
        transport = httpx.ASGITransport(app=no_kafka)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            r = await client.post("/v1/ops/backtest", json={"policy": {}}, headers=auth)
    assert r.status_code == 503 and r.json()["error"] == "kafka_unavailable"


async def test_a_window_from_before_the_epoch_reads_the_whole_history(
    test_settings: Settings, unique: str, keys: dict[Role, str], api: httpx.AsyncClient
) -> None:
    """Regression (schemathesis): a ``from`` in the first day of 1970 or earlier made the
    reader seek Kafka to a negative time, a 500. It is the whole history, as no ``from``;
    and an instant past year 9999 in UTC overflowed the replay (a 500 too). A seed of 3.0
    is JSON Schema's integer 3."""
    await _write(test_settings, unique)
    auth, until = _auth(keys, "operator"), (T0 + 40 * DAY).isoformat()
    whole = await api.post("/v1/ops/backtest", headers=auth,
                           json={"policy": CANDIDATE, "to": until, "seed": 3})  # fmt: skip
    assert whole.status_code == 200, whole.text
    assert whole.json()["history"]["tenant_events"] == 7
    for since in ("1970-01-01T00:00:00Z", "1970-01-01T12:00:00+02:00", "0001-01-01T00:00:00Z"):
        body = {"policy": CANDIDATE, "from": since, "to": until, "seed": 3.0}  # JSON's integer
        r = await api.post("/v1/ops/backtest", json=body, headers=auth)
        assert r.status_code == 200, (since, r.text)
        assert r.json() == whole.json(), since
    early = {"policy": {}, "from": "0001-01-01T00:00:00+02:00", "to": "2000-01-01T00:00:00Z"}
    r = await api.post("/v1/ops/backtest", json=early, headers=auth)
    assert r.status_code == 200 and r.json()["history"]["tenant_events"] == 0, r.text
    last = {"policy": CANDIDATE, "to": "9999-12-31T23:59:59-02:00", "seed": 3}  # past 9999 UTC
    r = await api.post("/v1/ops/backtest", json=last, headers=auth)
    assert r.status_code == 200 and r.json()["history"]["tenant_events"] == 7, r.text


def _auth(keys: dict[Role, str], role: Role) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys[role]}"}
