"""Preparing a stack for use: topics, migrations and (in dev) the demo tenant."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from paywatch.db import create_pool, migrate
from paywatch.kafka.admin import ensure_topics
from paywatch.kafka.security import kafka_security
from paywatch.ops.infra import Endpoints
from paywatch.schemas.topics import topic_specs
from paywatch.settings import Settings
from paywatch.tenants.api_keys import insert_api_key
from paywatch.tenants.crypto import SecretBox
from paywatch.tenants.store import create_tenant, set_secrets, valid_secrets

# Documented dev-only credentials (README "Dev credentials"); seeded only when PAYWATCH_ENV=dev.
DEMO_TENANT = "demo"
DEMO_STRIPE_SECRET = "whsec_paywatch_demo_signing_secret"  # noqa: S105 (public dev value)
DEMO_KEYS = {
    "analyst": "pw_analyst_demo_dev_only_key",
    "operator": "pw_operator_demo_dev_only_key",
}


def prepare(settings: Settings, ends: Endpoints) -> dict[str, Any]:
    """Create topics, migrate, seed the demo tenant in dev; return what was seeded."""
    security = kafka_security(settings)
    ensure_topics(ends.bootstrap, topic_specs(settings), timeout=60.0, security=security)
    return asyncio.run(_prepare_db(settings, ends.dsn))


async def _prepare_db(settings: Settings, dsn: str) -> dict[str, Any]:
    pool = await create_pool(dsn, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
            if settings.env != "dev":
                return {}
            return await seed_demo(conn, SecretBox.from_settings(settings))
    finally:
        await pool.close()


async def seed_demo(conn: Any, box: SecretBox) -> dict[str, Any]:
    """Seed tenant `demo` with the documented dev secret and keys (idempotent)."""
    await create_tenant(conn, DEMO_TENANT)
    current = await valid_secrets(conn, box, DEMO_TENANT, "stripe", timedelta(0))
    if not current or current[0].get("signing_secret") != DEMO_STRIPE_SECRET:
        await set_secrets(conn, box, DEMO_TENANT, "stripe", {"signing_secret": DEMO_STRIPE_SECRET})
    for role, key in DEMO_KEYS.items():
        await insert_api_key(conn, DEMO_TENANT, role, key)
    return {"tenant": DEMO_TENANT, "stripe_signing_secret": DEMO_STRIPE_SECRET, "keys": DEMO_KEYS}
