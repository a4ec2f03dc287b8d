"""Fixtures the integration tests share: a Postgres pool, and the query API in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator

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
