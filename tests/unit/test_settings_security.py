"""Settings refuse what would run insecurely or not at all, with a message naming the fix.

Kafka TLS/SASL variables are checked together; prod refuses public dev values (dev secret
key, the compose file's default database password); an environment that names an external
Kafka or Postgres must state PAYWATCH_ENV, while Settings built in code (tests, tools)
keep the dev default.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from paywatch.ops.infra import Endpoints
from paywatch.ops.supervisor import Supervisor
from paywatch.settings import COMPOSE_DB_PASSWORD, Settings

BOOTSTRAP = "broker:9093"
PASSWORD = "sasl-password-that-must-never-be-shown"
REAL_KEY = "k" * 40


def _refused(**values: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        Settings(**values)
    return str(caught.value)


def kafka(**values: Any) -> dict[str, Any]:
    return {"env": "dev", "kafka_bootstrap": BOOTSTRAP, "database_url": None, **values}


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The process environment without any PAYWATCH_ variable (set them per test)."""
    for name in list(os.environ):
        if name.upper().startswith("PAYWATCH_"):
            monkeypatch.delenv(name)
    return monkeypatch


# -- Kafka TLS / SASL ------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_sasl_without_its_settings_names_each_missing_variable(protocol: str) -> None:
    message = _refused(**kafka(kafka_security_protocol=protocol))
    assert (
        f"PAYWATCH_KAFKA_SECURITY_PROTOCOL={protocol} needs PAYWATCH_KAFKA_SASL_MECHANISM, "
        "PAYWATCH_KAFKA_SASL_USERNAME, PAYWATCH_KAFKA_SASL_PASSWORD"
    ) in message
    only_password = _refused(
        **kafka(
            kafka_security_protocol=protocol,
            kafka_sasl_mechanism="PLAIN",
            kafka_sasl_username="u",
        )
    )
    assert f"{protocol} needs PAYWATCH_KAFKA_SASL_PASSWORD" in only_password


def test_an_unknown_mechanism_or_protocol_is_refused() -> None:
    assert "kafka_sasl_mechanism" in _refused(**kafka(kafka_sasl_mechanism="GSSAPI"))
    assert "kafka_security_protocol" in _refused(**kafka(kafka_security_protocol="TLS"))


def test_sasl_settings_with_a_protocol_without_sasl_are_refused() -> None:
    message = _refused(
        **kafka(kafka_security_protocol="SSL", kafka_sasl_username="u", kafka_sasl_password="p")
    )
    assert (
        "PAYWATCH_KAFKA_SASL_USERNAME, PAYWATCH_KAFKA_SASL_PASSWORD set but "
        "PAYWATCH_KAFKA_SECURITY_PROTOCOL=SSL uses no SASL"
    ) in message


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SASL_PLAINTEXT"])
def test_tls_files_with_a_protocol_without_tls_are_refused(protocol: str, tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("unused")
    sasl = {"kafka_sasl_mechanism": "PLAIN", "kafka_sasl_username": "u"}
    if protocol == "SASL_PLAINTEXT":
        sasl["kafka_sasl_password"] = "p"
    else:
        sasl = {}
    message = _refused(**kafka(kafka_security_protocol=protocol, kafka_ssl_cafile=ca, **sasl))
    assert f"PAYWATCH_KAFKA_SSL_CAFILE set but PAYWATCH_KAFKA_SECURITY_PROTOCOL={protocol}" in (
        message
    )


def test_missing_tls_files_are_named(tmp_path: Path) -> None:
    message = _refused(
        **kafka(
            kafka_security_protocol="SSL",
            kafka_ssl_cafile=tmp_path / "ca.pem",
            kafka_ssl_certfile=tmp_path / "client.pem",
        )
    )
    assert f"PAYWATCH_KAFKA_SSL_CAFILE={tmp_path / 'ca.pem'}: no such file" in message
    assert f"PAYWATCH_KAFKA_SSL_CERTFILE={tmp_path / 'client.pem'}: no such file" in message


def test_a_key_file_needs_its_certificate(tmp_path: Path) -> None:
    key = tmp_path / "client.key"
    key.write_text("unused")
    message = _refused(**kafka(kafka_security_protocol="SSL", kafka_ssl_keyfile=key))
    assert "PAYWATCH_KAFKA_SSL_KEYFILE needs PAYWATCH_KAFKA_SSL_CERTFILE" in message


def test_security_other_than_plaintext_needs_an_external_kafka() -> None:
    message = _refused(env="dev", kafka_bootstrap=None, kafka_security_protocol="SSL")
    assert "PAYWATCH_KAFKA_SECURITY_PROTOCOL=SSL needs PAYWATCH_KAFKA_BOOTSTRAP" in message


def test_every_valid_combination_is_accepted(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("checked for existence only here")
    for protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        for mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
            tls = {"kafka_ssl_cafile": ca} if protocol == "SASL_SSL" else {}
            settings = Settings(
                **kafka(
                    kafka_security_protocol=protocol,
                    kafka_sasl_mechanism=mechanism,
                    kafka_sasl_username="u",
                    kafka_sasl_password="p",
                    **tls,
                )
            )
            assert settings.kafka_sasl_mechanism == mechanism
    assert Settings(**kafka(kafka_security_protocol="SSL")).kafka_ssl_cafile is None


def test_empty_variables_mean_unset(environ: pytest.MonkeyPatch) -> None:
    """Compose's `${VAR:-}` gives empty strings: not the path '.', not a mechanism ''."""
    for name in ("CAFILE", "CERTFILE", "KEYFILE"):
        environ.setenv(f"PAYWATCH_KAFKA_SSL_{name}", "")
    environ.setenv("PAYWATCH_KAFKA_SASL_MECHANISM", "")
    settings = Settings(env="dev")
    assert settings.kafka_ssl_cafile is None and settings.kafka_sasl_mechanism is None


def test_no_error_message_shows_the_sasl_password() -> None:
    message = _refused(
        **kafka(
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_username="u",
            kafka_sasl_password=PASSWORD,
            kafka_ssl_cafile="/no/such/ca.pem",
        )
    )
    assert "needs PAYWATCH_KAFKA_SASL_MECHANISM" in message
    assert PASSWORD not in message


# -- Postgres TLS in the DSN -----------------------------------------------------------------


def test_an_unknown_sslmode_is_refused_at_start() -> None:
    message = _refused(env="dev", database_url="postgresql://u:p@db/paywatch?sslmode=required")
    assert "sslmode=required is not one of disable, allow, prefer, require" in message


def test_tls_files_named_by_the_dsn_must_exist(tmp_path: Path) -> None:
    missing = tmp_path / "root.crt"
    dsn = f"postgresql://u:p@db/paywatch?sslmode=verify-full&sslrootcert={missing}"
    assert f"sslrootcert={missing}: no such file" in _refused(env="dev", database_url=dsn)
    missing.write_text("a CA bundle")
    assert Settings(env="dev", database_url=dsn).database_url is not None


# -- prod refuses public dev values ----------------------------------------------------------


@pytest.mark.parametrize(
    "dsn",
    [
        f"postgresql://paywatch:{COMPOSE_DB_PASSWORD}@postgres:5432/paywatch",
        "postgresql://paywatch:pay%77atch@postgres:5432/paywatch",  # percent-encoded
        f"postgresql://paywatch@postgres:5432/paywatch?password={COMPOSE_DB_PASSWORD}",
    ],
)
def test_prod_refuses_the_compose_default_database_password(dsn: str) -> None:
    message = _refused(env="prod", secret_key=REAL_KEY, database_url=dsn)
    assert "PAYWATCH_DATABASE_URL carries docker-compose.yml's default database password" in (
        message
    )
    assert Settings(env="dev", database_url=dsn).env == "dev"  # dev: the compose default is fine


def test_prod_reports_every_public_value_at_once() -> None:
    dsn = f"postgresql://paywatch:{COMPOSE_DB_PASSWORD}@postgres/paywatch"
    message = _refused(env="prod", database_url=dsn)
    assert "PAYWATCH_SECRET_KEY must be set to a real secret" in message
    assert "default database password" in message
    assert "at least 32 characters" in _refused(env="prod", secret_key="short")


def test_prod_accepts_real_secrets() -> None:
    dsn = "postgresql://paywatch:a-real-password@postgres/paywatch?sslmode=require"
    settings = Settings(env="prod", secret_key=REAL_KEY, database_url=dsn)
    assert settings.env == "prod"


# -- PAYWATCH_ENV must be stated with external servers -------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PAYWATCH_KAFKA_BOOTSTRAP", "kafka.internal:9092"),
        ("PAYWATCH_DATABASE_URL", "postgresql://u:p@db.internal/paywatch"),
    ],
)
def test_external_servers_from_the_environment_need_paywatch_env(
    environ: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    environ.setenv(variable, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    message = str(caught.value)
    assert f"{variable} (an external " in message
    assert "set PAYWATCH_ENV=prod, or PAYWATCH_ENV=dev" in message
    assert value not in message  # the DSN may carry a password
    environ.setenv("PAYWATCH_ENV", "dev")
    assert Settings().env == "dev"
    environ.setenv("PAYWATCH_ENV", "prod")
    environ.setenv("PAYWATCH_SECRET_KEY", REAL_KEY)
    assert Settings().env == "prod"


def test_settings_built_in_code_keep_the_dev_default(environ: pytest.MonkeyPatch) -> None:
    assert Settings().env == "dev"  # embedded servers: dev needs no saying
    assert Settings(kafka_bootstrap=BOOTSTRAP, database_url="postgresql://u@db/x").env == "dev"
    assert Settings(env="dev").env == "dev"
    environ.setenv("PAYWATCH_KAFKA_BOOTSTRAP", BOOTSTRAP)
    assert Settings(env="dev").kafka_bootstrap == BOOTSTRAP  # stated in code
    # Code that asks for the embedded servers whatever the environment (tests/conftest.py).
    assert Settings(kafka_bootstrap=None, database_url=None).kafka_bootstrap is None


def test_supervised_children_are_told_the_env(environ: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`paywatch up` hands its children the endpoints as variables; they must start too."""
    parent = Settings(state_dir=tmp_path)  # `make run`: nothing set, embedded servers
    ends = Endpoints("127.0.0.1:9092", "postgresql://postgres@127.0.0.1:55432/paywatch")
    child_env = Supervisor(parent, ends)._env()
    assert child_env["PAYWATCH_ENV"] == "dev"
    for name, value in child_env.items():
        if name.startswith("PAYWATCH_"):
            environ.setenv(name, value)
    child = Settings()
    assert (child.env, child.kafka_bootstrap) == ("dev", "127.0.0.1:9092")


def test_the_cli_says_what_to_set_and_exits_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PAYWATCH_")}
    env |= {
        "PAYWATCH_STATE_DIR": str(tmp_path),
        "PAYWATCH_KAFKA_BOOTSTRAP": BOOTSTRAP,
        "PAYWATCH_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "PAYWATCH_KAFKA_SASL_PASSWORD": PASSWORD,
    }
    run = [sys.executable, "-m", "paywatch", "status"]
    unstated = subprocess.run(run, env=env, capture_output=True, text=True, timeout=120)
    assert unstated.returncode == 2, unstated.stderr
    assert "PAYWATCH_KAFKA_BOOTSTRAP (an external Kafka) set but PAYWATCH_ENV is not" in (
        unstated.stderr
    )
    incomplete = subprocess.run(
        run, env={**env, "PAYWATCH_ENV": "prod"}, capture_output=True, text=True, timeout=120
    )
    assert incomplete.returncode == 2, incomplete.stderr
    assert "needs PAYWATCH_KAFKA_SASL_MECHANISM, PAYWATCH_KAFKA_SASL_USERNAME" in (
        incomplete.stderr
    )
    assert "PAYWATCH_SECRET_KEY must be set" in incomplete.stderr
    assert PASSWORD not in unstated.stderr + incomplete.stderr
    assert "Traceback" not in unstated.stderr + incomplete.stderr
