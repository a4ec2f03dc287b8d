"""Provider-secret lifecycle (issue 12 item 3) against the real Postgres, through the CLI as
a user runs it: values from stdin, a file or a no-echo prompt (never argv),
``--revoke-previous`` against the grace period, values bound to their row, and
``paywatch secrets rotate-key`` (previous key, resumed and refused rotations)."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest

from paywatch.db import migrate, migration_files
from paywatch.errors import ConfigError
from paywatch.outbound.endpoints import (
    TargetPolicy,
    add_endpoint,
    open_secret,
    rotate_secret,
)
from paywatch.settings import Settings
from paywatch.tenants.cache import SECRET_CACHE_TTL_S
from paywatch.tenants.crypto import SecretBox
from paywatch.tenants.store import count_not_current, reseal_batch, set_secrets, valid_secrets
from tests.integration.test_cli import paywatch
from tests.integration.test_ingest import _client, failure_body, signed
from tests.kafka_helpers import eventually
from tests.procs import settings_env
from tests.unit.test_secret_box import legacy_token

KEY_A = "rotation-key-a-" + "a" * 32
KEY_B = "rotation-key-b-" + "b" * 32
KEY_C = "rotation-key-c-" + "c" * 32
DAY = timedelta(hours=24)


def _env(
    settings: Settings, key: str | None = None, previous: str | None = None, dsn: str = ""
) -> dict[str, str]:
    """The CLI's environment: the settings' stack, this master key (default: the settings'
    own), this previous key (default: none, whatever the outer environment says)."""
    env = settings_env(settings)
    env["PAYWATCH_SECRET_KEY"] = key or settings.secret_key.get_secret_value()
    env.pop("PAYWATCH_SECRET_KEY_PREVIOUS", None)
    if previous is not None:
        env["PAYWATCH_SECRET_KEY_PREVIOUS"] = previous
    if dsn:
        env["PAYWATCH_DATABASE_URL"] = dsn
    return env


def _ok(run: subprocess.CompletedProcess[str]) -> str:
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


async def _sets(dsn: str, box: SecretBox, tenant: str, provider: str) -> object:
    conn = await asyncpg.connect(dsn)
    try:
        return await valid_secrets(conn, box, tenant, provider, DAY)
    finally:
        await conn.close()


# Input: stdin, files, a terminal; never argv.


async def test_values_come_from_stdin_or_a_file_and_are_never_repeated(
    test_settings: Settings, pg_dsn: str, unique: str, tmp_path: Path
) -> None:
    env = _env(test_settings)
    box = SecretBox.from_settings(test_settings)
    _ok(paywatch(test_settings, "tenant", "create", unique, env=env))
    stripe = f"whsec_{unique}_a=b"  # an `=` inside a value stays
    stored = paywatch(
        test_settings,
        "tenant",
        "secret",
        unique,
        "stripe",
        "-",
        env=env,
        input=f"signing_secret={stripe}\n",
    )
    assert stripe not in _ok(stored) + stored.stderr
    assert "signing_secret" in stored.stdout and "stay valid for 24 h" in stored.stdout
    assert await _sets(pg_dsn, box, unique, "stripe") == [{"signing_secret": stripe}]

    public, private = f"pub_{unique}", f"priv {unique} ="
    env_file = tmp_path / "braintree.env"
    env_file.write_bytes(
        f"# Braintree sandbox\r\n\r\npublic_key={public}\r\nprivate_key={private}\r\n".encode()
    )
    from_file = paywatch(
        test_settings, "tenant", "secret", unique, "braintree", "--file", str(env_file), env=env
    )
    assert public not in _ok(from_file) + from_file.stderr and private not in from_file.stdout
    expected = {"public_key": public, "private_key": private}
    assert await _sets(pg_dsn, box, unique, "braintree") == [expected]

    # No `-` and no --file: stdin all the same.
    generic = f"whsec_{unique}_generic"
    bare = paywatch(
        test_settings,
        "tenant",
        "secret",
        unique,
        "generic",
        env=env,
        input=f"signing_secret={generic}",
    )
    assert generic not in _ok(bare)
    assert await _sets(pg_dsn, box, unique, "generic") == [{"signing_secret": generic}]


@pytest.mark.parametrize(
    "argv",
    [
        ("signing_secret={v}",),
        ("-", "signing_secret={v}"),
        ("--revoke-previous", "signing_secret={v}"),  # argparse would print it back
        ("--{v}",),  # an unknown option, the same
        ("{v}",),  # a bare value pasted after the provider
    ],
    ids=["pair", "pair-after-dash", "pair-after-option", "option", "bare"],
)
async def test_a_value_on_the_command_line_is_refused_and_not_repeated(
    test_settings: Settings, pg_dsn: str, unique: str, argv: tuple[str, ...]
) -> None:
    env = _env(test_settings)
    _ok(paywatch(test_settings, "tenant", "create", unique, env=env))
    value = f"whsec_{unique}_on_argv"
    refused = paywatch(
        test_settings,
        "tenant",
        "secret",
        unique,
        "stripe",
        *(a.format(v=value) for a in argv),
        env=env,
        input="",
    )
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert value not in refused.stdout + refused.stderr
    assert "never read from the command line" in refused.stderr
    stdin_form = (
        f"printf 'signing_secret=%s\\n' \"$SECRET\" | paywatch tenant secret {unique} stripe -"
    )
    assert stdin_form in refused.stderr
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert not await conn.fetchval(
            "SELECT count(*) FROM tenant_secrets WHERE tenant = $1", unique
        )
    finally:
        await conn.close()


def _read_until(master: int, wanted: str, seen: list[str], timeout: float = 60.0) -> None:
    """Read the terminal's output until ``wanted`` shows (the program's prompt)."""
    deadline = time.monotonic() + timeout
    while wanted not in "".join(seen):
        left = deadline - time.monotonic()
        assert left > 0, f"no {wanted!r} on the terminal; saw {''.join(seen)!r}"
        ready, _, _ = select.select([master], [], [], min(left, 1.0))
        if ready:
            try:
                seen.append(os.read(master, 4096).decode(errors="replace"))
            except OSError:  # EIO: the program closed the terminal
                raise AssertionError(f"terminal closed; saw {''.join(seen)!r}") from None


async def test_on_a_terminal_each_secret_is_asked_for_without_echo(
    test_settings: Settings, pg_dsn: str, unique: str
) -> None:
    _ok(paywatch(test_settings, "tenant", "create", unique, env=_env(test_settings)))
    master, slave = pty.openpty()
    # A new session whose controlling terminal is the pty, as a login shell has (getpass
    # reads /dev/tty): a tiny exec wrapper instead of preexec_fn (unsafe with threads).
    wrapper = (
        "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
        "os.execv(sys.executable, [sys.executable, '-m', 'paywatch', *sys.argv[1:]])"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", wrapper, "tenant", "secret", unique, "paypal"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=_env(test_settings),
        start_new_session=True,
    )
    os.close(slave)
    answers = {
        "webhook_id": f"WH-{unique}",
        "api_base": "",
        "client_id": f"cid-{unique}",
        "client_secret": f"cs-{unique}",
    }
    seen: list[str] = []
    try:
        for name, answer in answers.items():
            _read_until(master, f"{name}: ", seen)
            os.write(master, f"{answer}\n".encode())
        _read_until(master, "stored paypal secret(s)", seen)
        assert proc.wait(60) == 0, "".join(seen)
        try:
            while chunk := os.read(master, 4096):
                seen.append(chunk.decode(errors="replace"))
        except OSError:
            pass  # EIO once the program has exited
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(master)
    terminal = "".join(seen)
    for value in answers.values():
        if value:
            assert value not in terminal  # no echo, and not in the output either
    assert "client_id, client_secret, webhook_id" in terminal  # api_base was skipped
    box = SecretBox.from_settings(test_settings)
    stored = {k: v for k, v in answers.items() if v}
    assert await _sets(pg_dsn, box, unique, "paypal") == [stored]


# Revocation against the grace period.


async def test_revoke_previous_ends_the_grace_period_at_once(
    test_settings: Settings, pg_dsn: str, unique: str
) -> None:
    env = _env(test_settings)
    box = SecretBox.from_settings(test_settings)
    _ok(paywatch(test_settings, "tenant", "create", unique, env=env))

    def store(value: str, *flags: str) -> str:
        line = f"signing_secret={value}\n"
        argv = ("tenant", "secret", unique, "stripe", *flags, "-")
        return _ok(paywatch(test_settings, *argv, env=env, input=line))

    store("whsec_one")
    graceful = store("whsec_two")
    assert "stay valid for 24 h" in graceful
    assert await _sets(pg_dsn, box, unique, "stripe") == [
        {"signing_secret": "whsec_two"},
        {"signing_secret": "whsec_one"},  # inside the grace period
    ]
    revoking = store("whsec_three", "--revoke-previous")
    assert "previous values revoked" in revoking
    assert f"up to {SECRET_CACHE_TTL_S:g} s" in revoking  # honest about ingest's cache
    assert await _sets(pg_dsn, box, unique, "stripe") == [{"signing_secret": "whsec_three"}]
    store("whsec_four")  # a later graceful rotation does not bring the revoked ones back
    assert await _sets(pg_dsn, box, unique, "stripe") == [
        {"signing_secret": "whsec_four"},
        {"signing_secret": "whsec_three"},
    ]


@pytest.fixture
async def ingest(
    test_settings: Settings, kafka_bootstrap: str, pg_dsn: str
) -> AsyncIterator[httpx.AsyncClient]:
    """The ingest app in process (real Kafka and Postgres), with its own secret cache."""
    async for client in _client(test_settings, kafka_bootstrap, pg_dsn):
        yield client


async def test_a_revoked_value_stops_verifying_in_ingest_within_its_cache_ttl(
    test_settings: Settings, ingest: httpx.AsyncClient, unique: str
) -> None:
    env = _env(test_settings)
    _ok(paywatch(test_settings, "tenant", "create", unique, env=env))
    argv = ("tenant", "secret", unique, "stripe", "-")
    _ok(paywatch(test_settings, *argv, env=env, input="signing_secret=whsec_leaked\n"))
    path = f"/webhooks/stripe/{unique}"
    body = failure_body(event_id=f"evt_{unique}_0")
    before = await ingest.post(path, content=body, headers=signed(body, "whsec_leaked"))
    assert before.status_code == 200, before.text  # now in ingest's secret cache
    rotate = ("tenant", "secret", unique, "stripe", "--revoke-previous", "-")
    _ok(paywatch(test_settings, *rotate, env=env, input="signing_secret=whsec_fresh\n"))
    revoked_at = time.monotonic()
    tries = iter(range(1, 10_000))

    async def leaked_refused() -> bool:
        body = failure_body(event_id=f"evt_{unique}_{next(tries)}")
        started = time.monotonic()
        resp = await ingest.post(path, content=body, headers=signed(body, "whsec_leaked"))
        if started > revoked_at + SECRET_CACHE_TTL_S:  # the cache entry has expired by now
            assert resp.status_code == 401, "accepted after the cache TTL"
        return resp.status_code == 401

    await eventually(leaked_refused, timeout=60, what="the revoked secret refused")
    body = failure_body(event_id=f"evt_{unique}_fresh")
    fresh = await ingest.post(path, content=body, headers=signed(body, "whsec_fresh"))
    assert fresh.status_code == 200, fresh.text


async def test_a_stored_value_that_does_not_open_is_a_503_never_a_500(
    test_settings: Settings, ingest: httpx.AsyncClient, pg_dsn: str, unique: str
) -> None:
    """A value copied from another tenant's row (or sealed under another master key) is the
    operator's to fix: the provider is told to retry (503), the webhook is not lost."""
    env = _env(test_settings)
    other = f"{unique}o"
    for tenant in (unique, other):
        _ok(paywatch(test_settings, "tenant", "create", tenant, env=env))
    argv = ("tenant", "secret", other, "stripe", "-")
    _ok(paywatch(test_settings, *argv, env=env, input="signing_secret=whsec_theirs\n"))
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(
            "INSERT INTO tenant_secrets (tenant, provider, name, value_enc) "
            "SELECT $2, provider, name, value_enc FROM tenant_secrets WHERE tenant = $1",
            other,
            unique,
        )
    finally:
        await conn.close()
    body = failure_body(event_id=f"evt_{unique}_copied")
    resp = await ingest.post(
        f"/webhooks/stripe/{unique}", content=body, headers=signed(body, "whsec_theirs")
    )
    assert resp.status_code == 503, resp.text
    assert resp.json()["error"] == "unavailable" and "Retry-After" in resp.headers
    assert "whsec_theirs" not in resp.text


# Binding: a value only opens in its own row.


@pytest.mark.parametrize("moved", ["tenant", "provider", "name"])
async def test_a_value_copied_to_another_row_does_not_open(
    test_settings: Settings, pg_dsn: str, unique: str, moved: str
) -> None:
    env = _env(test_settings)
    box = SecretBox.from_settings(test_settings)
    other = f"{unique}x"
    for tenant in (unique, other):
        _ok(paywatch(test_settings, "tenant", "create", tenant, env=env))
    value = f"whsec_{unique}_bound"
    argv = ("tenant", "secret", unique, "generic", "-")
    _ok(paywatch(test_settings, *argv, env=env, input=f"signing_secret={value}\n"))
    target = {
        "tenant": (other, "generic", "signing_secret"),
        "provider": (unique, "stripe", "signing_secret"),  # a value copied across providers
        "name": (unique, "paypal", "webhook_id"),
    }[moved]
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(
            "INSERT INTO tenant_secrets (tenant, provider, name, value_enc) "
            "SELECT $2, $3, $4, value_enc FROM tenant_secrets WHERE tenant = $1",
            unique,
            *target,
        )
        with pytest.raises(ConfigError) as refused:
            await valid_secrets(conn, box, target[0], target[1], DAY)
        assert "/".join(target) in str(refused.value) and value not in str(refused.value)
        assert await valid_secrets(conn, box, unique, "generic", DAY) == [
            {"signing_secret": value}
        ]  # the original row still opens
    finally:
        await conn.close()


# Master-key rotation (each in a database of its own).


async def _seal_rows(dsn: str, box: SecretBox, tenant: str, values: dict[str, str]) -> None:
    """A tenant and one current value per name, plus one superseded inside the grace period."""
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        await conn.execute("INSERT INTO tenants (tenant) VALUES ($1)", tenant)
        await set_secrets(conn, box, tenant, "xero", {n: f"old-{v}" for n, v in values.items()})
        await set_secrets(conn, box, tenant, "xero", values)
    finally:
        await conn.close()


async def _keys_of_live_rows(dsn: str) -> list[str | None]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT master_key_id FROM tenant_secrets WHERE revoked_at IS NULL ORDER BY id"
        )
        return [row["master_key_id"] for row in rows]
    finally:
        await conn.close()


async def test_migration_013_keeps_legacy_fernet_rows_opening(scratch_db: str, unique: str) -> None:
    conn = await asyncpg.connect(scratch_db)
    try:
        await conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, name, sql in migration_files():
            if version < 13:  # a database as it was before this change
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations VALUES ($1, $2)", version, name)
        await conn.execute("INSERT INTO tenants (tenant) VALUES ($1)", unique)
        await conn.execute(
            "INSERT INTO tenant_secrets (tenant, provider, name, value_enc) "
            "VALUES ($1, 'stripe', 'signing_secret', $2)",
            unique,
            legacy_token(KEY_A, "whsec_legacy"),
        )
        assert (await migrate(conn))[0] == "013_secret_binding.sql"  # and any later ones
        [sql] = [sql for version, _, sql in migration_files() if version == 13]
        await conn.execute(sql)  # idempotent: running it again changes nothing, fails nothing
        row = await conn.fetchrow("SELECT master_key_id, revoked_at FROM tenant_secrets")
        assert dict(row) == {"master_key_id": None, "revoked_at": None}
        box = SecretBox(KEY_A)
        sets = await valid_secrets(conn, box, unique, "stripe", DAY)
        assert sets == [{"signing_secret": "whsec_legacy"}]
    finally:
        await conn.close()


async def test_rotate_key_with_the_previous_key_then_without_it(
    test_settings: Settings, scratch_db: str, unique: str
) -> None:
    values = {"webhook_key": f"wk-{unique}", "client_secret": f"cs-{unique}"}
    await _seal_rows(scratch_db, SecretBox(KEY_A), unique, values)
    conn = await asyncpg.connect(scratch_db)
    try:  # one legacy row from before format 2, and one revoked row nobody needs again
        await conn.execute(
            "INSERT INTO tenant_secrets (tenant, provider, name, value_enc) "
            "VALUES ($1, 'stripe', 'signing_secret', $2)",
            unique,
            legacy_token(KEY_A, "whsec_legacy"),
        )
        await set_secrets(
            conn, SecretBox(KEY_A), unique, "adyen", {"hmac_key": "dead"}, revoke_previous=True
        )
        await set_secrets(
            conn, SecretBox(KEY_A), unique, "adyen", {"hmac_key": "beef"}, revoke_previous=True
        )
        # A tenant webhook endpoint whose signing secret was rotated: two sealed secrets.
        box_a, open_to_all = SecretBox(KEY_A), TargetPolicy(False, False)
        made = await add_endpoint(
            conn, box_a, unique, "http://127.0.0.1:9/hook", ["invoice.recovered"],
            policy=open_to_all,
        )  # fmt: skip
        endpoint = made.endpoint.endpoint_id
        turned = await rotate_secret(conn, box_a, unique, endpoint, by="test", grace=DAY)
        signing = (turned.secret, made.secret)
    finally:
        await conn.close()
    live = 4 + 1 + 1  # xero current + superseded, the legacy row, adyen's current value

    rotating = paywatch(
        test_settings,
        "secrets",
        "rotate-key",
        "--batch",
        "2",
        env=_env(test_settings, KEY_B, KEY_A, scratch_db),
    )
    out = _ok(rotating)
    box_b = SecretBox(KEY_B)
    assert f"re-sealed {live} provider secret value(s) under key id {box_b.key_id}" in out
    assert "0 value(s) remain under other keys" in out
    assert f"re-sealed 2 endpoint signing secret(s) under key id {box_b.key_id}" in out
    for secret in (KEY_A, KEY_B, *values.values(), "whsec_legacy", *signing):
        assert secret not in out + rotating.stderr
    assert await _keys_of_live_rows(scratch_db) == [box_b.key_id] * live

    again = paywatch(
        test_settings, "secrets", "rotate-key", env=_env(test_settings, KEY_B, dsn=scratch_db)
    )  # the previous key dropped: nothing left to do, nothing refused
    assert "re-sealed 0 provider secret value(s)" in _ok(again)
    assert "0 value(s) remain under other keys" in again.stdout
    assert await _sets(scratch_db, box_b, unique, "xero") == [
        values,
        {n: f"old-{v}" for n, v in values.items()},
    ]
    assert await _sets(scratch_db, box_b, unique, "stripe") == [{"signing_secret": "whsec_legacy"}]
    assert await _sets(scratch_db, box_b, unique, "adyen") == [{"hmac_key": "beef"}]
    with pytest.raises(ConfigError):  # re-sealed, not copied: the old key opens nothing now
        await _sets(scratch_db, SecretBox(KEY_A), unique, "xero")
    conn = await asyncpg.connect(scratch_db)
    try:  # the endpoint still signs with both its secrets, under the new key alone
        row = await conn.fetchrow(
            "SELECT secret_enc, previous_secret_enc FROM endpoints WHERE endpoint_id = $1",
            endpoint,
        )
    finally:
        await conn.close()
    assert (
        open_secret(box_b, unique, endpoint, row["secret_enc"]),
        open_secret(box_b, unique, endpoint, row["previous_secret_enc"], previous=True),
    ) == signing


async def test_an_interrupted_rotation_resumes_and_a_third_key_is_refused(
    test_settings: Settings, scratch_db: str, unique: str
) -> None:
    values = {"webhook_key": f"wk-{unique}", "client_id": f"ci-{unique}"}
    await _seal_rows(scratch_db, SecretBox(KEY_A), unique, values)
    conn = await asyncpg.connect(scratch_db)
    try:  # the A -> B rotation stops after its first batch (one row)
        assert await reseal_batch(conn, SecretBox(KEY_B, KEY_A), DAY, 1) == 1
        assert await count_not_current(conn, SecretBox(KEY_B), DAY) == 3
    finally:
        await conn.close()

    # Starting B -> C before A -> B is done: refused, naming a row and the keys, changing nothing.
    early = paywatch(
        test_settings, "secrets", "rotate-key", env=_env(test_settings, KEY_C, KEY_B, scratch_db)
    )
    assert early.returncode == 2, early.stdout + early.stderr
    key_a, key_b, key_c = (SecretBox(k).key_id for k in (KEY_A, KEY_B, KEY_C))
    assert "3 live provider secret(s) cannot be re-sealed, nothing was" in early.stderr
    assert f"{unique}/xero/" in early.stderr and f"key id {key_a}" in early.stderr
    assert f"(key id {key_c})" in early.stderr and f"(key id {key_b})" in early.stderr
    for secret in (KEY_A, KEY_B, KEY_C, *values.values()):
        assert secret not in early.stdout + early.stderr
    assert sorted(await _keys_of_live_rows(scratch_db)) == sorted([key_a] * 3 + [key_b])

    resumed = paywatch(
        test_settings, "secrets", "rotate-key", env=_env(test_settings, KEY_B, KEY_A, scratch_db)
    )
    assert "re-sealed 3 provider secret value(s)" in _ok(resumed)
    assert await _keys_of_live_rows(scratch_db) == [key_b] * 4

    onward = paywatch(
        test_settings, "secrets", "rotate-key", env=_env(test_settings, KEY_C, KEY_B, scratch_db)
    )
    assert "re-sealed 4 provider secret value(s)" in _ok(onward)
    assert await _sets(scratch_db, SecretBox(KEY_C), unique, "xero") == [
        values,
        {n: f"old-{v}" for n, v in values.items()},
    ]


async def test_a_legacy_row_under_neither_key_stops_the_rotation_by_name(
    test_settings: Settings, scratch_db: str, unique: str
) -> None:
    await _seal_rows(scratch_db, SecretBox(KEY_A), unique, {"webhook_key": "wk"})
    conn = await asyncpg.connect(scratch_db)
    try:
        row_id = await conn.fetchval(
            "INSERT INTO tenant_secrets (tenant, provider, name, value_enc) "
            "VALUES ($1, 'stripe', 'signing_secret', $2) RETURNING id",
            unique,
            legacy_token(KEY_C, "whsec_unknown_key"),
        )
    finally:
        await conn.close()
    run = paywatch(
        test_settings,
        "secrets",
        "rotate-key",
        "--batch",
        "1",
        env=_env(test_settings, KEY_B, KEY_A, scratch_db),
    )
    assert run.returncode == 2, run.stdout + run.stderr
    assert f"tenant_secrets row {row_id}: cannot decrypt provider secret" in run.stderr
    assert f"{unique}/stripe/signing_secret" in run.stderr
    assert "2 value(s) were re-sealed before it" in run.stderr  # xero's two, batch by batch
    assert "whsec_unknown_key" not in run.stdout + run.stderr
