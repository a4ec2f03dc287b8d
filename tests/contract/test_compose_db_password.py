"""The compose stack has no default database password, and prod refuses the old one.

docker-compose.yml requires ``${PAYWATCH_DB_PASSWORD:?...}`` (``docker compose up`` stops
with the message when it is unset); paywatch/settings.py refuses, with PAYWATCH_ENV=prod,
the word the file used to default to, should anyone set it. This test checks both and runs
the compose DSN through Settings.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from paywatch.settings import COMPOSE_DB_PASSWORD, Settings

COMPOSE_FILE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
REQUIRED = re.compile(r"\$\{PAYWATCH_DB_PASSWORD(:[-?])([^}]*)\}")
SECRET_KEY = "compose-contract-test-secret-key-40-chars"


def _compose_dsn(password: str | None) -> str:
    """PAYWATCH_DATABASE_URL of the paywatch services, interpolated as compose would."""
    services = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))["services"]
    template = str(services["worker"]["environment"]["PAYWATCH_DATABASE_URL"])
    return REQUIRED.sub(lambda m: COMPOSE_DB_PASSWORD if password is None else password, template)


def test_the_compose_file_requires_a_database_password() -> None:
    uses = REQUIRED.findall(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert len(uses) == 2 and {op for op, _ in uses} == {":?"}  # the DSN and postgres itself


def test_prod_refuses_the_compose_stack_without_its_own_password() -> None:
    with pytest.raises(ValidationError, match="default database password"):
        Settings(env="prod", secret_key=SECRET_KEY, database_url=_compose_dsn(None))
    chosen = Settings(env="prod", secret_key=SECRET_KEY, database_url=_compose_dsn("Xq7-real"))
    assert chosen.database_url is not None
