"""`paywatch apikey create|list|revoke|rotate` as a user runs them, checked on the query API.

The CLI runs as a subprocess against the test Postgres; the keys it prints are tried on the
query API (in-process, same database): expiry, revocation, rotation with and without a
grace period, and the last-use time a real request leaves. Also migration 012 on a
database that already holds keys: each gets an id and keeps working.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from paywatch.db import migrate, migration_files
from paywatch.settings import Settings
from paywatch.tenants.api_keys import KEY_ID_PATTERN, hash_api_key
from tests.integration.test_cli import paywatch
from tests.kafka_helpers import eventually

pytestmark = pytest.mark.integration


def _ok(settings: Settings, *args: str) -> list[str]:
    done = paywatch(settings, *args)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout.strip().splitlines()


def _created(settings: Settings, tenant: str, *options: str) -> str:
    key = _ok(settings, "apikey", "create", tenant, *options)[-1]
    assert key.startswith("pw_") and " " not in key  # the key alone on the last line
    return key


def _listed(settings: Settings, tenant: str) -> dict[str, dict[str, Any]]:
    """`apikey list --json`, by key id."""
    lines = _ok(settings, "apikey", "list", tenant, "--json")
    items = [json.loads(line) for line in lines]
    return {item["key_id"]: item for item in items}


def _by_prefix(listed: dict[str, dict[str, Any]], key: str) -> dict[str, Any]:
    (item,) = [i for i in listed.values() if key.startswith(i["prefix"])]
    return item


async def _status(api: httpx.AsyncClient, key: str) -> tuple[int, str]:
    r = await api.get("/v1/invoices", headers={"Authorization": f"Bearer {key}"})
    return r.status_code, r.json().get("detail", "")


@pytest.fixture
def tenant(test_settings: Settings, unique: str) -> str:
    _ok(test_settings, "tenant", "create", unique)
    return unique


async def test_create_with_expiry_and_label_then_list_shows_last_use(
    test_settings: Settings, tenant: str, api: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    key = _created(
        test_settings, tenant, "--role", "analyst", "--expires-in", "90d", "--label", "ci"
    )
    (item,) = _listed(test_settings, tenant).values()
    assert re.fullmatch(KEY_ID_PATTERN, item["key_id"])
    assert (item["role"], item["label"], item["state"]) == ("analyst", "ci", "active")
    assert item["created_by"].startswith("cli") and item["last_used_at"] is None
    assert key.startswith(item["prefix"]) and key[len(item["prefix"]) :] not in json.dumps(item)
    life = await pool.fetchval(
        "SELECT expires_at - created_at FROM api_keys WHERE key_id = $1", item["key_id"]
    )
    assert life == timedelta(days=90)

    assert await _status(api, key) == (200, "")

    async def used() -> Any:
        return await pool.fetchval(
            "SELECT last_used_at FROM api_keys WHERE key_id = $1", item["key_id"]
        )

    await eventually(used, timeout=60, what="the API to record the key's last use")
    assert _listed(test_settings, tenant)[item["key_id"]]["last_used_at"] is not None
    table = _ok(test_settings, "apikey", "list", tenant)
    assert table[0].split()[:3] == ["KEY", "ID", "ROLE"]
    assert item["key_id"] in table[1] and "active" in table[1] and table[1].endswith("ci")


async def test_revoke_is_401_at_once_and_says_when_it_was_already_done(
    test_settings: Settings, tenant: str, api: httpx.AsyncClient
) -> None:
    key = _created(test_settings, tenant, "--role", "operator")
    key_id = _by_prefix(_listed(test_settings, tenant), key)["key_id"]
    assert (await _status(api, key))[0] == 200
    assert "revoked operator API key" in _ok(test_settings, "apikey", "revoke", tenant, key_id)[0]
    assert await _status(api, key) == (401, "unknown or revoked API key")
    again = _ok(test_settings, "apikey", "revoke", tenant, key_id)[0]
    assert "was already revoked" in again and "by cli" in again
    assert _listed(test_settings, tenant)[key_id]["state"] == "revoked"


async def test_rotate_revokes_the_old_key_and_the_new_one_works(
    test_settings: Settings, tenant: str, api: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    old = _created(test_settings, tenant, "--role", "admin", "--expires-in", "12h", "--label", "x")
    old_id = _by_prefix(_listed(test_settings, tenant), old)["key_id"]
    new = _ok(test_settings, "apikey", "rotate", tenant, old_id)[-1]
    assert new.startswith("pw_admin_") and " " not in new
    assert (await _status(api, old))[0] == 401 and (await _status(api, new))[0] == 200
    listed = _listed(test_settings, tenant)
    successor = _by_prefix(listed, new)
    assert listed[old_id]["replaced_by"] == successor["key_id"]
    assert (successor["role"], successor["label"]) == ("admin", "x")
    life = await pool.fetchval(
        "SELECT expires_at - created_at FROM api_keys WHERE key_id = $1", successor["key_id"]
    )
    assert life == timedelta(hours=12)  # the same expiry length, from now
    refused = paywatch(test_settings, "apikey", "rotate", tenant, old_id)
    assert refused.returncode == 1 and "already rotated" in refused.stderr


async def test_rotate_with_grace_keeps_the_old_key_until_the_grace_ends(
    test_settings: Settings, tenant: str, api: httpx.AsyncClient
) -> None:
    old = _created(test_settings, tenant, "--role", "analyst")
    old_id = _by_prefix(_listed(test_settings, tenant), old)["key_id"]
    new = _ok(test_settings, "apikey", "rotate", tenant, old_id, "--grace", "3s")[-1]
    listed = _listed(test_settings, tenant)
    assert listed[old_id]["revoked_at"] is not None
    assert (await _status(api, new))[0] == 200

    async def old_refused() -> bool:
        return (await _status(api, old)) == (401, "unknown or revoked API key")

    await eventually(old_refused, timeout=60, what="the old key's grace period to end")
    assert (await _status(api, new))[0] == 200
    assert _listed(test_settings, tenant)[old_id]["state"] == "revoked"


async def test_a_key_past_its_expiry_is_401_expired(
    test_settings: Settings, tenant: str, api: httpx.AsyncClient
) -> None:
    key = _created(test_settings, tenant, "--role", "viewer", "--expires-in", "2s")

    async def expired() -> bool:
        return (await _status(api, key)) == (401, "expired API key")

    await eventually(expired, timeout=60, what="the key to expire")
    assert _by_prefix(_listed(test_settings, tenant), key)["state"] == "expired"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("create", "{t}", "--role", "analyst", "--expires-in", "90"), 2, "invalid duration '90'"),
        (("create", "{t}", "--role", "analyst", "--expires-in", "1.5h"), 2, "e.g. 90d, 12h, 30m"),
        (("create", "{t}", "--role", "analyst", "--label", ""), 2, "a label is 1 to 100"),
        (("list", "nobody-{t}"), 1, "unknown tenant 'nobody-"),
        (("revoke", "nobody-{t}", "key_aaaaaaaaaa"), 1, "unknown tenant 'nobody-"),
        (("revoke", "{t}", "key_aaaaaaaaaa"), 1, "has no API key 'key_aaaaaaaaaa'"),
        (("rotate", "{t}", "key_aaaaaaaaaa"), 1, "has no API key 'key_aaaaaaaaaa'"),
        (("rotate", "{t}", "key_aaaaaaaaaa", "--grace", "0s"), 2, "invalid duration '0s'"),
    ],
)
def test_bad_input_gets_a_precise_error(
    test_settings: Settings, tenant: str, args: tuple[str, ...], code: int, message: str
) -> None:
    result = paywatch(test_settings, "apikey", *(a.format(t=tenant) for a in args))
    assert (result.returncode, message in result.stderr) == (code, True), result.stderr
    assert "Traceback" not in result.stderr


async def test_migration_012_gives_existing_keys_ids_and_keeps_them_valid(
    scratch_db: str,
) -> None:
    conn = await asyncpg.connect(scratch_db)
    try:
        for version, _, sql in migration_files():
            if version < 12:
                await conn.execute(sql)
        await conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        await conn.executemany(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            [(v, n) for v, n, _ in migration_files() if v < 12],
        )
        await conn.execute("INSERT INTO tenants (tenant) VALUES ('acme')")
        hashes = [hash_api_key(f"pw_analyst_old{i}") for i in range(50)]
        await conn.executemany(
            "INSERT INTO api_keys (tenant, role, key_hash, prefix) VALUES ('acme', 'analyst', $1,"
            " 'pw_analyst_old')",
            [(h,) for h in hashes],
        )
        assert "012_api_key_lifecycle.sql" in await migrate(conn)
        rows = await conn.fetch("SELECT key_id, revoked_at, expires_at FROM api_keys")
        ids = [r["key_id"] for r in rows]
        assert len(set(ids)) == 50 and all(re.fullmatch(KEY_ID_PATTERN, i) for i in ids)
        assert all(r["revoked_at"] is None and r["expires_at"] is None for r in rows)
        # Ids are random, not numbered: the characters cover the base32 alphabet evenly.
        assert len(set("".join(i[4:] for i in ids))) > 28
    finally:
        await conn.close()
