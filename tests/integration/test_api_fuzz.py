"""Schemathesis against the live query API (issue 12 item 6): every route, --checks all, 0 failures.

Two tenants get data in every read model the API serves (payment events, saga transitions
and commands, risk scores and alerts, projected by the real projector from the test's
topics) and a policy history (PUT through the API). The API runs as ``paywatch run api`` on
a free port. Schemathesis runs as its CLI once per tenant, with ``--checks all`` over every
operation of the published OpenAPI document and both tenants' admin keys: the key of the
run's tenant sends the requests, the other one is its peer for the object-level
authorization check (one tenant must not see the other's objects). Any failure, a 500 or a
response that breaks its declared schema alike, fails the test with schemathesis' report.

Rules JSON Schema cannot state (opaque cursors, until after since) are given to positive
cases by tests/integration/fuzz_hooks.py, from cursors the live API issued.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from paywatch.schemas.models import (
    EventType,
    RiskBand,
)
from paywatch.settings import Settings
from paywatch.tenants.api_keys import create_api_key
from paywatch.tenants.store import create_tenant
from tests.conftest import REPO
from tests.integration.fuzz_hooks import CURSORS_ENV
from tests.integration.test_alerts_api import CODE, HIGH_RISK, PROVIDER, record
from tests.integration.test_customers_api import payment, project, risk
from tests.integration.test_recovery_projection import opening
from tests.kafka_helpers import Published, eventually, publish
from tests.procs import log_tail, paywatch_process, settings_env

MAX_EXAMPLES = int(os.environ.get("PAYWATCH_FUZZ_EXAMPLES", "100"))
"""Test cases per operation and phase (schemathesis' -n): about 2,650 cases and 15 s per
tenant (bench/RESULTS.md). PAYWATCH_FUZZ_EXAMPLES runs deeper; PAYWATCH_FUZZ_SEED replays."""
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
TIMELINE = "/v1/invoices/{invoice_ref}/timeline"
LISTINGS = (
    "/v1/invoices", "/v1/failures", "/v1/customers", "/v1/alerts", "/v1/policy/history",
    "/v1/apikeys",
)  # fmt: skip
POLICY_RULES = "".join(
    f"""
[[operations]]
include-name = "{operation}"
checks.positive_data_acceptance.expected-statuses = [
  "2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"
]
"""
    for operation in ("PUT /v1/policy", "POST /v1/ops/backtest")
)
"""A policy of the schema's shape can still break the policy's own rules (days strictly
increasing and inside window_days, a known time zone or card-network edition), which JSON
Schema cannot state: that is a 422 `invalid_policy` with every field error (README "Recovery
policy"), whose body the response-schema check still validates. POST /v1/ops/backtest takes
a candidate policy as an open object (the whole TenantPolicy, as PUT /v1/policy takes it)
and refuses it the same way. Schemathesis' default expected statuses plus 422, for these
operations only."""
REPLAY_RULES = """
[[operations]]
include-name = "POST /v1/ops/replay"
enabled = false
"""
"""A valid POST /v1/ops/replay starts a real rebuild, which swaps every read-model table of
the run's shared database under the other tests: tests/integration/test_replay.py covers it
on a database of its own (GET /v1/ops/replay/{job_id} is fuzzed)."""
Record = Published


@dataclass(frozen=True)
class Tenant:
    name: str
    key: str
    """An admin key: it may call every route of the query API, /v1/apikeys included.

    The fuzzer finds its id in GET /v1/apikeys and sends it to revoke and rotate; the API
    refuses a key acting on itself (409 own_key), so the run never locks itself out."""

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def _records(tenant: str) -> list[Record]:
    """A tenant's payments, sagas, risk scores and alerts; refs carry the tenant's name."""
    t = tenant
    return [
        payment(t, f"{t}_cus_1", f"{t}_in_1", 0, 4900, "EUR"),
        payment(t, f"{t}_cus_1", f"{t}_in_1", 60, 4900, "EUR"),
        payment(t, f"{t}_cus_2", f"{t}_in_2", 5, 1200, "USD"),
        payment(t, f"{t}_cus_2", f"{t}_in_2", 90, 1200, "USD", EventType.PAYMENT_SUCCEEDED),
        payment(t, f"{t}_cus_3", f"{t}_in_3", 7, 300, "GBP"),
        *opening(t, f"{t}_in_1"),
        *opening(t, f"{t}_in_3", at=30),
        risk(t, f"{t}_cus_1", 0.91, RiskBand.CRITICAL),
        risk(t, f"{t}_cus_2", 0.12, RiskBand.LOW),
        risk(t, f"{t}_cus_3", 0.55, RiskBand.MEDIUM),
        record(t, PROVIDER, "stripe", 5),
        record(t, CODE, "insufficient_funds", 7),
        record(t, HIGH_RISK, f"{t}_cus_1", 9, observed=0.91),
    ]


async def _tenants(pool: asyncpg.Pool, unique: str) -> list[Tenant]:
    made = []
    async with pool.acquire() as conn:
        for name in (f"{unique}a", f"{unique}b"):
            await create_tenant(conn, name)
            made.append(Tenant(name, await create_api_key(conn, name, "admin")))
            await create_api_key(conn, name, "viewer")  # a second key: /v1/apikeys has pages
    return made


@contextmanager
def _live_api(settings: Settings, log: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`paywatch run api` on the settings' port until the block ends: base URL and process."""
    # The fuzzer's request rate is not a tenant's: the rate limit (429, documented) is off.
    # In the environment itself: settings_env passes only the fields tests/procs.py lists.
    env = settings_env(settings) | {"PAYWATCH_API_RATE": "0"}
    with paywatch_process(settings, "run", "api", log=log, env=env) as proc:
        yield f"http://127.0.0.1:{settings.api_port}", proc


async def _started(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    async def answers() -> bool:
        assert proc.poll() is None, log_tail(log)
        try:
            async with httpx.AsyncClient(base_url=base, timeout=5) as http:
                return (await http.get("/health")).status_code == 200
        except httpx.TransportError:
            return False

    await eventually(answers, timeout=120, every=0.5, what=f"the API at {base}")


def _operations(document: dict[str, Any]) -> int:
    methods = {"get", "put", "post", "patch", "delete"}
    return sum(len(methods & set(item)) for item in document["paths"].values())


async def _change_policy(http: httpx.AsyncClient, tenant: Tenant) -> None:
    """Two changes, so /v1/policy/history has pages (and cursors) to serve."""
    for days in ([1, 3, 5], [2, 4]):
        body = {"retry": {"days": days}}
        r = await http.put("/v1/policy", json=body, params={"reason": "fuzz"}, headers=tenant.auth)
        assert r.status_code == 200 and r.json()["changed"], r.text


async def _walk_cursors(
    http: httpx.AsyncClient, tenant: Tenant, path: str, **params: str
) -> list[str]:
    """Every next_cursor the listing issues with limit=1."""
    found: list[str] = []
    cursor: str | None = None
    for _ in range(20):
        query = {"limit": "1", **params} | ({"cursor": cursor} if cursor else {})
        r = await http.get(path, params=query, headers=tenant.auth)
        assert r.status_code == 200, r.text
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return found
        found.append(cursor)
    return found


async def _issued_cursors(http: httpx.AsyncClient, tenants: list[Tenant]) -> dict[str, Any]:
    """{operation path: {order or "": cursors}}: what fuzz_hooks gives positive cases."""
    issued: dict[str, dict[str, list[str]]] = {p: {"": []} for p in LISTINGS}
    issued[TIMELINE] = {"": [], "asc": [], "desc": []}
    for tenant in tenants:
        for path in LISTINGS:
            issued[path][""] += await _walk_cursors(http, tenant, path)
        timeline = f"/v1/invoices/{tenant.name}_in_1/timeline"
        for order in ("asc", "desc"):
            issued[TIMELINE][order] += await _walk_cursors(http, tenant, timeline, order=order)
    issued[TIMELINE][""] = issued[TIMELINE]["asc"]  # order left out: asc
    empty = [(path, order) for path, by in issued.items() for order, got in by.items() if not got]
    assert not empty, f"no cursor issued for {empty}: the seeded data is too small"
    return issued


def _header(tenant: Tenant) -> dict[str, str]:
    return {"name": "Authorization", "value": f"Bearer {tenant.key}"}


def _schemathesis(
    base: str, tenants: list[Tenant], run_as: Tenant, work: Path, seed: int
) -> subprocess.CompletedProcess[str]:
    """One schemathesis CLI run, as ``run_as`` with the other tenant as its peer."""
    users = [{"name": t.name, "fixedHeaders": [_header(t)]} for t in tenants]
    (work / "auth.json").write_text(json.dumps({"auth": users}))
    peers = ", ".join(f'"{t.name}"' for t in tenants)
    (work / "schemathesis.toml").write_text(
        f'[auth.wfc]\npath = "{work / "auth.json"}"\nuser = "{run_as.name}"\npeers = [{peers}]\n'
        f'[cache]\ndirectory = "{work / "cache"}"\n' + POLICY_RULES + REPLAY_RULES
    )
    env = dict(os.environ, SCHEMATHESIS_HOOKS="tests.integration.fuzz_hooks")
    env[CURSORS_ENV] = str(work.parent / "cursors.json")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    command = [
        str(SCHEMATHESIS), "--config-file", str(work / "schemathesis.toml"), "--no-color",
        "run", f"{base}/openapi.json", "--checks", "all", "--max-examples", str(MAX_EXAMPLES),
        "--seed", str(seed), "--workers", "1", "--request-timeout", "30",
        "--generation-database", "none", "--report", "json",
        "--report-json-path", str(work / "report.json"),
    ]  # fmt: skip
    return subprocess.run(
        command, capture_output=True, text=True, timeout=600, env=env, cwd=work, check=False
    )


def _cases(output: str) -> int:
    """The number of test cases schemathesis reports it generated."""
    found = re.search(r"(\d+) generated", output)
    assert found, output[-3000:]
    return int(found.group(1))


async def test_schemathesis_finds_nothing_on_any_route_for_either_tenant(
    test_settings: Settings,
    kafka_bootstrap: str,
    pool: asyncpg.Pool,
    unique: str,
    tmp_path: Path,
    free_port: Callable[[], int],
) -> None:
    tenants = await _tenants(pool, unique)
    coords = await publish(
        test_settings, kafka_bootstrap, [r for t in tenants for r in _records(t.name)]
    )
    await project(test_settings, kafka_bootstrap, pool, coords)
    settings = test_settings.model_copy(update={"api_port": free_port()})
    seed = int(os.environ.get("PAYWATCH_FUZZ_SEED", int.from_bytes(os.urandom(4))))
    log = tmp_path / "api.log"
    with _live_api(settings, log) as (base, proc):
        await _started(base, proc, log)
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            operations = _operations((await http.get("/openapi.json")).json())
            for tenant in tenants:
                await _change_policy(http, tenant)
            issued = await _issued_cursors(http, tenants)
        (tmp_path / "cursors.json").write_text(json.dumps(issued))
        cases = []
        for tenant in tenants:
            work = tmp_path / tenant.name
            work.mkdir()
            done = await asyncio.to_thread(_schemathesis, base, tenants, tenant, work, seed)
            output = done.stdout + done.stderr
            (work / "output.txt").write_text(output)
            assert done.returncode == 0, f"as {tenant.name}, seed {seed}:\n{output[-12000:]}"
            fuzzed = operations - 1  # all but REPLAY_RULES' one
            every = f"{fuzzed} selected / {operations} total"
            assert every in output and f"Tested: {fuzzed}" in output, output[-3000:]
            cases.append(_cases(output))
            async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                r = await http.get("/v1/apikeys", headers=tenant.auth)
            assert r.status_code == 200, f"the fuzzer locked itself out: {r.text}"
    print(f"schemathesis: {cases} cases, {MAX_EXAMPLES} examples per operation, seed {seed}")
