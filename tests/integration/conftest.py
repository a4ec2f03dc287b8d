"""Fixtures the integration tests share: a Postgres pool, and the query API in-process."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from paywatch.api.query.app import create_app
from paywatch.db import create_pool
from paywatch.settings import Settings


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the test database (a test module may define its own, e.g. smaller)."""
    p = await create_pool(pg_dsn)
    yield p
    await p.close()


@pytest.fixture
async def app(pg_dsn: str) -> AsyncIterator[FastAPI]:
    """The query API with its lifespan running."""
    app = create_app(Settings(), pg_dsn)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def api(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the query API, in-process (no socket)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield client


@pytest.fixture
async def scratch_db(pg_dsn: str) -> AsyncIterator[str]:
    """The DSN of a fresh, empty database on the test server (dropped afterwards): for what
    must not meet other tests' rows (a migration from an old schema, a rotation of every
    secret row, another deployment's Postgres)."""
    name = f"scratch_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield urlsplit(pg_dsn)._replace(path=f"/{name}").geturl()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
