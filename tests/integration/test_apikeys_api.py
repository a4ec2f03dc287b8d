"""The admin API-key routes (/v1/apikeys) on a real Postgres, through the in-process API.

Admins of a tenant list, create, revoke and rotate its keys; other roles get 403, another
tenant's key id 404, bad input a precise 400, and a key can neither revoke nor rotate
itself (409 `own_key`). Keys made here authenticate (or stop) on the same API at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from paywatch.tenants import api_keys
from paywatch.tenants.api_keys import create_api_key, hash_api_key
from paywatch.tenants.store import create_tenant
from tests.kafka_helpers import eventually

pytestmark = pytest.mark.integration

ROUTES = [
    ("GET", "/v1/apikeys", None),
    ("POST", "/v1/apikeys", {"role": "viewer"}),
    ("POST", "/v1/apikeys/key_aaaaaaaaaa/revoke", None),
    ("POST", "/v1/apikeys/key_aaaaaaaaaa/rotate", None),
]
ITEM_FIELDS = {
    "key_id", "role", "prefix", "label", "state", "created_at", "created_by", "expires_at",
    "last_used_at", "revoked_at", "revoked_by", "replaced_by",
}  # fmt: skip


@dataclass(frozen=True)
class Keys:
    a: str
    b: str
    admin: str
    analyst: str
    operator: str
    admin_b: str


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _key_id(pool: asyncpg.Pool, key: str) -> str:
    key_id: str = await pool.fetchval(
        "SELECT key_id FROM api_keys WHERE key_hash = $1", hash_api_key(key)
    )
    return key_id


@pytest.fixture
async def keys(pool: asyncpg.Pool, unique: str) -> Keys:
    a, b = f"{unique}a", f"{unique}b"
    async with pool.acquire() as conn:
        for name in (a, b):
            await create_tenant(conn, name)
        made = {
            role: await create_api_key(conn, a, role) for role in ("admin", "analyst", "operator")
        }
        return Keys(a=a, b=b, admin_b=await create_api_key(conn, b, "admin"), **made)


async def _status(api: httpx.AsyncClient, key: str) -> int:
    return (await api.get("/v1/invoices", headers=auth(key))).status_code


def _error(r: httpx.Response, status: int, error: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert set(body) == {"error", "detail"} and body["error"] == error, body
    return body


@pytest.mark.parametrize(("method", "url", "body"), ROUTES)
async def test_only_admins_may_use_the_routes(
    api: httpx.AsyncClient, keys: Keys, method: str, url: str, body: Any
) -> None:
    for key in (keys.analyst, keys.operator):
        r = await api.request(method, url, json=body, headers=auth(key))
        assert "admin" in _error(r, 403, "forbidden")["detail"]
    r = await api.request(method, url, json=body)
    _error(r, 401, "unauthorized")


async def test_list_pages_the_tenants_keys_and_never_a_secret(
    api: httpx.AsyncClient, pool: asyncpg.Pool, keys: Keys
) -> None:
    seen: list[dict[str, Any]] = []
    cursor = None
    for _ in range(10):
        params = {"limit": "1"} | ({"cursor": cursor} if cursor else {})
        r = await api.get("/v1/apikeys", params=params, headers=auth(keys.admin))
        assert r.status_code == 200, r.text
        seen += r.json()["data"]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    ids = {await _key_id(pool, k) for k in (keys.admin, keys.analyst, keys.operator)}
    assert {item["key_id"] for item in seen} == ids  # not the other tenant's key
    assert all(set(item) == ITEM_FIELDS and item["state"] == "active" for item in seen)
    text = str(seen)
    assert not any(k in text or k[12:] in text for k in (keys.admin, keys.analyst, keys.operator))
    created = [item["created_at"] for item in seen]
    assert created == sorted(created, reverse=True)
    r = await api.get(
        "/v1/apikeys", params={"cursor": "bm90IGEgY3Vyc29y"}, headers=auth(keys.admin)
    )
    _error(r, 400, "invalid_cursor")


async def test_create_gives_a_working_key_once_recording_who_made_it(
    api: httpx.AsyncClient, pool: asyncpg.Pool, keys: Keys
) -> None:
    body = {"role": "analyst", "expires_in": "12h", "label": "nightly export"}
    r = await api.post("/v1/apikeys", json=body, headers=auth(keys.admin))
    assert r.status_code == 201, r.text
    made = r.json()
    assert set(made) == ITEM_FIELDS | {"key"}
    assert made["key"].startswith("pw_analyst_") and made["key"].startswith(made["prefix"])
    assert (made["role"], made["label"], made["state"]) == ("analyst", "nightly export", "active")
    assert made["created_by"] == f"api:{await _key_id(pool, keys.admin)}"
    row = await pool.fetchrow(
        "SELECT expires_at - created_at AS life, tenant FROM api_keys WHERE key_id = $1",
        made["key_id"],
    )
    assert (row["life"], row["tenant"]) == (timedelta(hours=12), keys.a)
    assert await _status(api, made["key"]) == 200
    listed = (await api.get("/v1/apikeys", headers=auth(keys.admin))).json()["data"]
    assert made["key_id"] in {item["key_id"] for item in listed}
    assert made["key"] not in str(listed)


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"role": "root"}, "body.role"),
        ({}, "body.role"),
        ({"role": "admin", "expires_in": "0d"}, "body.expires_in"),
        ({"role": "admin", "expires_in": "1.5h"}, "body.expires_in"),
        ({"role": "admin", "expires_in": 90}, "body.expires_in"),
        ({"role": "admin", "label": ""}, "body.label"),
        ({"role": "admin", "label": "x" * 101}, "body.label"),
        ({"role": "admin", "label": "a\x00b"}, "body.label"),
        ({"role": "admin", "tenant": "other"}, "body.tenant"),
    ],
)
async def test_bad_input_is_a_precise_400(
    api: httpx.AsyncClient, keys: Keys, body: dict[str, Any], where: str
) -> None:
    r = await api.post("/v1/apikeys", json=body, headers=auth(keys.admin))
    assert where in _error(r, 400, "invalid_request")["detail"]


async def test_a_body_that_is_not_json_is_400(api: httpx.AsyncClient, keys: Keys) -> None:
    headers = auth(keys.admin) | {"Content-Type": "application/json"}
    r = await api.post("/v1/apikeys", content=b"{role: admin", headers=headers)
    _error(r, 400, "invalid_request")
    r = await api.post(
        "/v1/apikeys/key_aaaaaaaaaa/rotate", json={"grace": "soon"}, headers=auth(keys.admin)
    )
    assert "body.grace" in _error(r, 400, "invalid_request")["detail"]
    r = await api.post("/v1/apikeys/not-a-key-id/revoke", headers=auth(keys.admin))
    assert "key_id" in _error(r, 400, "invalid_request")["detail"]


async def test_revoke_is_immediate_and_idempotent(
    api: httpx.AsyncClient, pool: asyncpg.Pool, keys: Keys
) -> None:
    target = await _key_id(pool, keys.analyst)
    assert await _status(api, keys.analyst) == 200
    r = await api.post(f"/v1/apikeys/{target}/revoke", headers=auth(keys.admin))
    assert r.status_code == 200, r.text
    first = r.json()
    assert (first["changed"], first["state"], first["key_id"]) == (True, "revoked", target)
    assert first["revoked_by"] == f"api:{await _key_id(pool, keys.admin)}"
    body = _error(await api.get("/v1/invoices", headers=auth(keys.analyst)), 401, "unauthorized")
    assert body["detail"] == "unknown or revoked API key"
    again = (await api.post(f"/v1/apikeys/{target}/revoke", headers=auth(keys.admin))).json()
    assert (again["changed"], again["revoked_at"]) == (False, first["revoked_at"])


async def test_another_tenants_key_is_404_and_untouched(
    api: httpx.AsyncClient, pool: asyncpg.Pool, keys: Keys
) -> None:
    theirs = await _key_id(pool, keys.admin_b)
    for action in ("revoke", "rotate"):
        r = await api.post(f"/v1/apikeys/{theirs}/{action}", headers=auth(keys.admin))
        _error(r, 404, "not_found")
    assert await _status(api, keys.admin_b) == 200


async def test_a_key_cannot_revoke_or_rotate_itself(
    api: httpx.AsyncClient, pool: asyncpg.Pool, keys: Keys
) -> None:
    own = await _key_id(pool, keys.admin)
    for action in ("revoke", "rotate"):
        r = await api.post(f"/v1/apikeys/{own}/{action}", headers=auth(keys.admin))
        assert own in _error(r, 409, "own_key")["detail"]
    assert await _status(api, keys.admin) == 200


async def test_rotate_replaces_the_key_at_once_or_after_the_grace(
    api: httpx.AsyncClient, pool: asyncpg.Pool, keys: Keys
) -> None:
    old_id = await _key_id(pool, keys.operator)
    r = await api.post(f"/v1/apikeys/{old_id}/rotate", headers=auth(keys.admin))
    assert r.status_code == 201, r.text
    new = r.json()
    assert set(new) == ITEM_FIELDS | {"key", "previous"}
    assert (new["role"], new["previous"]["key_id"], new["previous"]["state"]) == (
        "operator", old_id, "revoked",
    )  # fmt: skip
    assert new["previous"]["replaced_by"] == new["key_id"]
    assert (await _status(api, keys.operator), await _status(api, new["key"])) == (401, 200)
    r = await api.post(f"/v1/apikeys/{old_id}/rotate", headers=auth(keys.admin))
    assert new["key_id"] in _error(r, 409, "not_rotatable")["detail"]

    r = await api.post(
        f"/v1/apikeys/{new['key_id']}/rotate", json={"grace": "1h"}, headers=auth(keys.admin)
    )
    assert r.status_code == 201, r.text
    newer = r.json()
    assert newer["previous"]["state"] == "active" and newer["previous"]["revoked_at"]
    assert (await _status(api, new["key"]), await _status(api, newer["key"])) == (200, 200)
    r = await api.post(f"/v1/apikeys/{new['key_id']}/revoke", headers=auth(keys.admin))
    assert r.json()["changed"] is True  # revoking ends the grace period now
    assert (await _status(api, new["key"]), await _status(api, newer["key"])) == (401, 200)


async def test_an_expired_key_is_401_with_its_own_detail(
    api: httpx.AsyncClient, pool: asyncpg.Pool, keys: Keys
) -> None:
    await pool.execute(
        "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE key_hash = $1",
        hash_api_key(keys.analyst),
    )
    r = await api.get("/v1/invoices", headers=auth(keys.analyst))
    assert _error(r, 401, "unauthorized")["detail"] == "expired API key"
    assert "invalid_token" in r.headers["WWW-Authenticate"]
    listed = (await api.get("/v1/apikeys", headers=auth(keys.admin))).json()["data"]
    states = {item["key_id"]: item["state"] for item in listed}
    assert states[await _key_id(pool, keys.analyst)] == "expired"


async def test_last_use_is_recorded_once_a_minute_per_key_in_the_background(
    api: httpx.AsyncClient, pool: asyncpg.Pool, keys: Keys
) -> None:
    key_id = await _key_id(pool, keys.analyst)

    async def last_used() -> Any:
        return await pool.fetchval("SELECT last_used_at FROM api_keys WHERE key_id = $1", key_id)

    assert await last_used() is None
    assert await _status(api, keys.analyst) == 200
    await eventually(last_used, timeout=60, what="the key's last use to be recorded")

    digest = api_keys.hash_api_key(keys.analyst)
    recorder = api_keys.LastUse(every_s=60)
    assert recorder.touch(pool, key_id, digest) is True
    assert recorder.touch(pool, key_id, digest) is False  # within the minute: no second write
    assert api_keys.LastUse(every_s=0).touch(pool, key_id, digest) is True
