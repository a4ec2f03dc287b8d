"""The projector survives any single record, and waits out Postgres (real Kafka + Postgres).

A record whose write Postgres refuses is found by splitting its batch, dead-lettered with its
coordinates and the error, checkpointed as skipped; every other record is written and the
projector keeps consuming. A Postgres that is unreachable dead-letters nothing: the
projector retries until it answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from paywatch.db import create_pool
from paywatch.kafka.codec import make_codec
from paywatch.projections.runner import PROJECTION
from paywatch.schemas.models import DeadLetter, EventType, PaymentEvent
from paywatch.settings import Settings
from tests.integration.test_projector import Running, event, publish
from tests.kafka_helpers import eventually, topic_records

REFUSED = "in_bad"


@pytest.fixture
async def refusing_trigger(pool: asyncpg.Pool, unique: str) -> AsyncIterator[str]:
    """A trigger on invoices that raises for this test's tenant's invoice REFUSED only."""
    name = f"refuse_{unique}"
    await pool.execute(
        f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        f" IF NEW.tenant = '{unique}' AND NEW.invoice_ref = '{REFUSED}' THEN"
        f" RAISE EXCEPTION 'invoice {REFUSED} refused by the test trigger'; END IF;"
        " RETURN NEW; END $$"
    )
    await pool.execute(
        f"CREATE TRIGGER {name} BEFORE INSERT OR UPDATE ON invoices"
        f" FOR EACH ROW EXECUTE FUNCTION {name}()"
    )
    yield name
    await pool.execute(f"DROP TRIGGER {name} ON invoices")
    await pool.execute(f"DROP FUNCTION {name}()")


async def projected(pool: asyncpg.Pool, settings: Settings) -> int:
    """Records checkpointed on the test's payments.events (written or skipped)."""
    done = await pool.fetchval(
        "SELECT sum(next_offset) FROM projection_checkpoints WHERE projection = $1 AND topic = $2",
        PROJECTION,
        settings.topic("payments.events"),
    )
    return int(done or 0)


async def test_a_refused_record_is_dead_lettered_and_the_rest_written(
    test_settings: Settings,
    kafka_bootstrap: str,
    pool: asyncpg.Pool,
    unique: str,
    refusing_trigger: str,
) -> None:
    good = [event(unique, i, f"in_{i % 10}", attempt=1 + i // 10) for i in range(60)]
    bad = [event(unique, 100 + i, REFUSED, attempt=1 + i) for i in range(2)]
    first = good[:30] + bad[:1] + good[30:] + bad[1:]  # poison among good ones, one batch
    await publish(test_settings, kafka_bootstrap, first)
    run = Running(test_settings, kafka_bootstrap, pool)

    async def all_checkpointed() -> bool:
        run.check()
        return await projected(pool, test_settings) == len(first)

    await eventually(all_checkpointed, what=f"{len(first)} records checkpointed")
    tenant_rows = "SELECT count(*) FROM {} WHERE tenant = $1"
    assert await pool.fetchval(tenant_rows.format("event_log"), unique) == len(good)
    assert await pool.fetchval(tenant_rows.format("failures"), unique) == len(good)
    invoices = await pool.fetch(
        "SELECT invoice_ref, attempts FROM invoices WHERE tenant = $1 ORDER BY invoice_ref", unique
    )
    assert [(r["invoice_ref"], r["attempts"]) for r in invoices] == [
        (f"in_{i}", 6) for i in range(10)
    ]

    topic = test_settings.topic("payments.events")
    codec = make_codec(test_settings)
    sent = await topic_records(kafka_bootstrap, topic)
    poison = {
        (r.partition, r.offset)
        for r in sent
        if codec.decode(r.value, PaymentEvent).invoice_ref == REFUSED
    }
    dlq = await topic_records(kafka_bootstrap, test_settings.topic("payments.events.dlq"))
    letters = [codec.decode(r.value, DeadLetter) for r in dlq]
    assert {(x.source_partition, x.source_offset) for x in letters} == poison
    assert len(letters) == 2
    for letter in letters:
        assert letter.source_topic == topic and letter.stage == "project"
        assert "RaiseError" in letter.error and f"invoice {REFUSED} refused" in letter.error
        assert codec.decode(letter.payload, PaymentEvent).invoice_ref == REFUSED
    assert run.projector.writer.dead_lettered == 2

    # It keeps consuming: a recovery of one good invoice arrives after the poison.
    await publish(
        test_settings,
        kafka_bootstrap,
        [event(unique, 500, "in_3", EventType.PAYMENT_SUCCEEDED, minutes=5)],
    )

    async def recovered() -> bool:
        run.check()
        status = await pool.fetchval(
            "SELECT status FROM invoices WHERE tenant = $1 AND invoice_ref = 'in_3'", unique
        )
        return bool(status == "recovered")

    await eventually(recovered, what="the invoice recovered after the poison records")
    await run.stop()


class PgProxy:
    """A TCP proxy in front of Postgres that can go down (connections cut, port refused)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def up(self) -> None:
        """Listen (on the same port as before, if any)."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        """Refuse new connections and cut every open one."""
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers.update((writer, up_writer))
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    writer.close()


def _via(dsn: str, port: int) -> str:
    parts = urlsplit(dsn)
    netloc = parts.netloc.rsplit(":", 1)[0] + f":{port}"
    return urlunsplit(parts._replace(netloc=netloc))


async def test_postgres_down_dead_letters_nothing_and_resumes(
    test_settings: Settings, kafka_bootstrap: str, pool: asyncpg.Pool, pg_dsn: str, unique: str
) -> None:
    parts = urlsplit(pg_dsn)
    proxy = PgProxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    await proxy.up()
    proxied = await create_pool(_via(pg_dsn, proxy.port), min_size=1, max_size=2)
    try:
        await _outage(test_settings, kafka_bootstrap, pool, proxied, proxy, unique)
    finally:
        await proxied.close()
        await proxy.down()


async def _outage(
    settings: Settings,
    bootstrap: str,
    pool: asyncpg.Pool,
    proxied: asyncpg.Pool,
    proxy: PgProxy,
    unique: str,
) -> None:
    await publish(settings, bootstrap, [event(unique, i, f"in_{i % 5}") for i in range(20)])
    run = Running(settings, bootstrap, proxied)
    writer = run.projector.writer
    await eventually(_reaching(run, pool, settings, 20), what="20 records before the outage")

    await proxy.down()
    later = [event(unique, 20 + i, f"in_{i % 5}", attempt=2) for i in range(20)]
    await publish(settings, bootstrap, later)

    async def retrying() -> bool:
        run.check()
        return writer.retries >= 3

    await eventually(retrying, what="the projector retrying against a refusing Postgres")
    assert await projected(pool, settings) == 20  # nothing written, nothing skipped

    await proxy.up()
    await eventually(_reaching(run, pool, settings, 40), what="40 records after the outage")
    await run.stop()
    assert writer.dead_lettered == 0
    assert await topic_records(bootstrap, settings.topic("payments.events.dlq")) == []
    assert await pool.fetchval("SELECT count(*) FROM event_log WHERE tenant = $1", unique) == 40
    attempts = await pool.fetchval("SELECT sum(attempts) FROM invoices WHERE tenant = $1", unique)
    assert attempts == 10  # 5 invoices, each at attempt 2


def _reaching(
    run: Running, pool: asyncpg.Pool, settings: Settings, n: int
) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        run.check()
        return await projected(pool, settings) == n

    return probe
