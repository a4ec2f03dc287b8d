"""One validated configuration for every paywatch process (ARCHITECTURE §4).

All variables carry the ``PAYWATCH_`` prefix. Secrets are ``SecretStr`` so they
never show up in a repr or a log line. Dev secrets are refused outside
``PAYWATCH_ENV=dev``, and so is the compose file's default database password. An
environment naming an external Kafka or Postgres must say ``PAYWATCH_ENV`` itself: falling
back to dev there would run real infrastructure with the public dev keys.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, quote, unquote, urlsplit, urlunsplit

from pydantic import AwareDatetime, Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

# Documented dev-only key (README "Configuration"); refused when PAYWATCH_ENV=prod.
DEV_SECRET_KEY = "paywatch-dev-secret-key-do-not-use-in-prod"  # noqa: S105 (public dev value)
# docker-compose.yml's `${PAYWATCH_DB_PASSWORD:-paywatch}` (tests/contract keeps them in step):
# public, so a prod DSN carrying it is refused.
COMPOSE_DB_PASSWORD = "paywatch"  # noqa: S105 (public compose default)

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]

BODY_LIMIT_BYTES = 256 * 1024

RoleProcess = Literal["api", "projector"]
DB_ROLES: dict[RoleProcess, str] = {"api": "paywatch_api", "projector": "paywatch_projector"}
"""The non-owner Postgres role each of these processes logs in as (migration 014: row-level
security); every other process, and the CLI, connects as the owner."""


class Settings(BaseSettings):
    """Configuration read from the environment, frozen after validation."""

    # hide_input_in_errors: a validation error must not print the DSN or the SASL password.
    model_config = SettingsConfigDict(
        env_prefix="PAYWATCH_", frozen=True, extra="ignore", hide_input_in_errors=True
    )

    env: Literal["dev", "prod"] = "dev"
    kafka_bootstrap: str | None = None
    database_url: SecretStr | None = None
    # How the API and the projector connect (row-level security, migration 014; README
    # "Row-level security"). Unset: PAYWATCH_DATABASE_URL (or the embedded server's URL)
    # with the user paywatch_api / paywatch_projector and no password, which the embedded
    # server's trust auth takes; a server that wants passwords needs these set.
    api_database_url: SecretStr | None = None
    projector_database_url: SecretStr | None = None
    ingest_port: int = Field(8080, ge=1, le=65535)
    api_port: int = Field(8081, ge=1, le=65535)
    # Where people reach the query API: the base of the timeline links in outbound Slack
    # messages (paywatch/outbound/slack.py). Set it when the API sits behind a proxy.
    public_api_url: str = Field("http://127.0.0.1:8081", pattern=r"^https?://[^\s<>|]+$")
    bind_host: str = "127.0.0.1"
    time_scale: float = Field(1.0, gt=0)
    # Where the scaled saga clock starts (time_scale != 1). Unset: each worker keeps the
    # instant it first started in its state directory; set it when several workers share
    # a scaled clock (their saga times must agree).
    time_anchor: AwareDatetime | None = None
    state_dir: Path = Path(".paywatch")
    # The worker's risk model: a packaged version (paywatch/risk/models/<version>.json) or
    # the path of a model file `paywatch risk train` wrote (ends in .json).
    risk_model: str = "risk-v1"
    secret_key: SecretStr = SecretStr(DEV_SECRET_KEY)
    # The master key being rotated away from: values sealed under it still open until
    # `paywatch secrets rotate-key` has re-sealed them all (tenants/crypto.py).
    secret_key_previous: SecretStr | None = None
    secret_grace_hours: float = Field(24.0, ge=0)
    # Outbound webhooks (paywatch/outbound): in prod, targets resolving to loopback, private,
    # link-local, multicast, reserved or unspecified addresses are refused unless this is set.
    outbound_allow_private: bool = False
    # Customer email (paywatch/email, README "Email"): the SMTP server of every tenant
    # without its own (tenant secret email/smtp_url), smtp:// (STARTTLS unless
    # ?starttls=false) or smtps://. Unset: nothing is sent, emails wait as pending.
    smtp_url: SecretStr | None = None
    email_link_days: int = Field(30, ge=1, le=365)  # how long an email's links work
    email_timeout_s: float = Field(30.0, gt=0)  # one SMTP conversation, connect to the reply
    # Where Stripe's billing portal sends the customer back when the tenant has no
    # update_url (unset: PAYWATCH_PUBLIC_API_URL).
    email_return_url: str | None = Field(None, pattern=r"^https?://[^\s<>|]+$")

    # Topics: a prefix lets tests (and staging next to prod) use their own names.
    topic_prefix: str = ""
    topic_partitions: int = Field(12, ge=1, le=1000)
    topic_replication: int = Field(1, ge=1)
    app_id: str = "paywatch"
    table_store: str = "rocksdb://"
    table_standby_replicas: int = Field(1, ge=0)
    worker_linger_ms: int = Field(20, ge=0, le=1000)
    """How long the worker's producer gathers records before a produce request. At 0 every
    stage's outputs went out in small requests: at 1,000 webhooks/s the worker spent ~18 %
    of its CPU writing them and the broker as much again; 20 ms cut the stack's CPU per
    webhook by a fifth for ~20 ms more per hop (bench/RESULTS.md, "End to end after the
    ingest session")."""
    table_prerestore: bool = True
    """Bulk-restore the worker's rocksdb tables from their changelogs before it joins
    (streams/table_restore.py); false leaves restoring to Faust alone."""
    schema_registry_url: str | None = None

    # Kafka transport security for every client (aiokafka, confluent-kafka, Faust), turned
    # into each library's options by paywatch/kafka/security.py; checked together below.
    kafka_security_protocol: SecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: SaslMechanism | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None  # unset: the system's CAs
    kafka_ssl_certfile: Path | None = None  # client certificate (mutual TLS)
    kafka_ssl_keyfile: Path | None = None  # its key, if not in the certificate file

    # Embedded infrastructure (only used when the two URLs above are unset).
    embedded_kafka_port: int = Field(9092, ge=1, le=65535)
    embedded_kafka_controller_port: int = Field(9093, ge=1, le=65535)
    embedded_pg_port: int = Field(55432, ge=1, le=65535)
    kafka_heap: str = "512m"

    # Ingest behaviour.
    ingest_ack_timeout_s: float = Field(5.0, gt=0)
    stripe_tolerance_s: int = Field(300, ge=0)
    generic_tolerance_s: int = Field(300, ge=0)  # Standard Webhooks: ±5 min
    # PayPal: oldest paypal-transmission-time accepted (retries keep it for 3 days); 0 = off,
    # unsafe (CRC-32 forgery: paywatch/providers/paypal/signature.py).
    paypal_tolerance_s: int = Field(4 * 86_400, ge=0)
    # Authorize.Net: the Signature Key is used as its ASCII text by default; some accounts
    # need the hex-decoded bytes (reference/webhooks.md §2.4, unverified). Its payloads
    # carry no currency, so amounts are read in this one.
    authorizenet_key_form: Literal["ascii", "hex", "both"] = "ascii"
    authorizenet_currency: str = Field("USD", pattern=r"^[A-Z]{3}$")
    projector_batch: int = Field(5_000, ge=1, le=10_000)  # set-based writes: bigger is cheaper
    # `paywatch replay`: processes sharing a rebuild's bulk phase (its decoding and folding
    # are Python CPU), each a share of the partitions; 1 = in the replaying process itself.
    replay_workers: int = Field(default_factory=lambda: min(os.cpu_count() or 1, 4), ge=1, le=32)
    # Records a partition group of payments.events/recovery.* may hold to be loaded whole
    # (decoded in memory, ~1 kB each) by the bulk phase; a larger one, or 0: incrementally.
    replay_bulk_records: int = Field(300_000, ge=0)
    # Archives of the tables a rebuild replaced (pw_archive_<job>) kept, newest first.
    replay_keep_archives: int = Field(1, ge=0)
    # Limits (README "Configuration"): per-tenant token buckets, enforced by each ingest/API
    # process on its own; a rate of 0 turns that limit off. Ingest's default stays far above
    # the 1,000 webhooks/s design target for one tenant.
    ingest_rate: float = Field(2_000.0, ge=0)  # webhooks/s per tenant (all providers together)
    ingest_burst: int = Field(4_000, ge=1)
    api_rate: float = Field(50.0, ge=0)  # requests/s per API key's tenant
    api_burst: int = Field(100, ge=1)
    rate_limit_tenants: int = Field(100_000, ge=1)  # buckets kept per process (LRU)
    body_read_timeout_s: float = Field(10.0, gt=0)  # whole request body, else 408

    # Sandbox executor: the seeded payment simulator answering RETRY_PAYMENT commands.
    # The success table is JSON, format and defaults in paywatch/executor/simulator.py.
    simulator_seed: int = 0
    simulator_success: str = ""
    # Live retries (paywatch/executor/live.py): how long an executor holds a claimed command
    # while it charges it (real seconds, longer than a provider call may take); after it, a
    # claim whose executor died is resumed by another with the same idempotency key.
    charge_lease_s: float = Field(120.0, gt=0, le=3600)
    # Thin webhooks (Xero, QuickBooks): the worker fetches the invoices they name.
    # Token URLs are settings, not tenant secrets: one per provider sandbox/region.
    xero_token_url: str | None = None  # default https://identity.xero.com/connect/token
    quickbooks_token_url: str | None = None  # default Intuit's bearer-token endpoint
    quickbooks_currency: str | None = Field(None, pattern=r"^[A-Z]{3}$")
    ledger_grace_days: int = Field(0, ge=0, le=365)  # days past due before INVOICE_OVERDUE
    fetch_timeout_s: float = Field(10.0, gt=0)  # one provider API request
    fetch_deadline_s: float = Field(300.0, gt=0)  # retrying one webhook's fetches, then DLQ

    # Health (GET /health, `paywatch status`: paywatch/db/health.py) and Prometheus metrics.
    health_max_lag: int = Field(10_000, ge=1)  # records behind on one partition: degraded
    health_window_s: float = Field(900.0, gt=0)  # an unclean restart or a dead letter this recent
    instance: str | None = None  # this process instance in health reports (default: host name)
    worker_metrics_port: int = Field(9101, ge=0, le=65535)  # 0: no /metrics endpoint
    projector_metrics_port: int = Field(9102, ge=0, le=65535)
    executor_metrics_port: int = Field(9103, ge=0, le=65535)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The usual sources, then one that marks an unstated env (``_UnstatedEnv``)."""
        sources = (init_settings, env_settings, dotenv_settings, file_secret_settings)
        return (*sources, _UnstatedEnv(settings_cls))

    @field_validator("env", mode="before")
    @classmethod
    def _env_stated_for_external_infra(cls, value: object) -> object:
        if isinstance(value, _Unstated):
            raise ValueError(
                f"{' and '.join(value.external)} set but PAYWATCH_ENV is not: set "
                "PAYWATCH_ENV=prod, or PAYWATCH_ENV=dev for a development stack (dev seeds "
                "public keys and accepts the dev secret key)"
            )
        return value

    @field_validator(
        "kafka_sasl_mechanism",
        "kafka_sasl_username",
        "kafka_sasl_password",
        "kafka_ssl_cafile",
        "kafka_ssl_certfile",
        "kafka_ssl_keyfile",
        "secret_key_previous",
        "api_database_url",
        "projector_database_url",
        "smtp_url",
        "email_return_url",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # `PAYWATCH_KAFKA_SSL_CAFILE=` (compose's `${VAR:-}`) means unset, not the path ".".
        return None if value == "" else value

    @model_validator(mode="after")
    def _refuse_what_cannot_run(self) -> Settings:
        """Kafka security, the DSN's TLS and prod's public values: every problem at once."""
        problems = kafka_security_problems(self)
        for variable, url in self._database_urls().items():
            problems += dsn_tls_problems(url, variable)
        if self.env == "prod":
            problems += prod_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def state_path(self) -> Path:
        """Absolute state directory for embedded Kafka/Postgres.

        Not cached: ``model_copy(update={"state_dir": ...})`` copies a cached value, and a
        second worker meant to have its own tables then shared the first one's."""
        return self.state_dir.expanduser().resolve()

    def topic(self, name: str) -> str:
        """Full Kafka topic name for a logical topic (prefix applied)."""
        return f"{self.topic_prefix}{name}"

    def role_dsn(self, process: RoleProcess, owner_dsn: str) -> str:
        """The DSN ``process`` connects with: PAYWATCH_API_DATABASE_URL or
        PAYWATCH_PROJECTOR_DATABASE_URL, else ``owner_dsn`` as its role (``dsn_as_role``)."""
        given = self.api_database_url if process == "api" else self.projector_database_url
        if given is not None:
            return given.get_secret_value()
        return dsn_as_role(owner_dsn, DB_ROLES[process])

    def _database_urls(self) -> dict[str, str]:
        """Every database URL set, by its variable's name."""
        urls = {
            "PAYWATCH_DATABASE_URL": self.database_url,
            "PAYWATCH_API_DATABASE_URL": self.api_database_url,
            "PAYWATCH_PROJECTOR_DATABASE_URL": self.projector_database_url,
        }
        return {name: url.get_secret_value() for name, url in urls.items() if url is not None}


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment; keyword overrides win (used by the CLI)."""
    return Settings(**overrides)  # type: ignore[arg-type]


def prod_problems(settings: Settings) -> list[str]:
    """Why these settings must not run with PAYWATCH_ENV=prod (public dev values)."""
    problems = _master_key_problems("PAYWATCH_SECRET_KEY", settings.secret_key)
    if settings.secret_key_previous is not None:
        # A previous key still opens stored secrets: the public dev key there would too.
        problems += _master_key_problems(
            "PAYWATCH_SECRET_KEY_PREVIOUS", settings.secret_key_previous
        )
    dsn = settings.database_url.get_secret_value() if settings.database_url else None
    if dsn is not None and dsn_password(dsn) == COMPOSE_DB_PASSWORD:
        problems.append(
            "PAYWATCH_DATABASE_URL carries docker-compose.yml's default database password, "
            "which is public: set PAYWATCH_DB_PASSWORD (compose) or a real password when "
            "PAYWATCH_ENV=prod"
        )
    return problems


def _master_key_problems(variable: str, key: SecretStr) -> list[str]:
    """Why a master key must not be used in prod: the public dev key, or too short."""
    value = key.get_secret_value()
    if value == DEV_SECRET_KEY:
        return [f"{variable} must be set to a real secret when PAYWATCH_ENV=prod"]
    if len(value) < 32:
        return [f"{variable} must be at least 32 characters in prod"]
    return []


_SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
_TLS_PROTOCOLS = ("SSL", "SASL_SSL")


def kafka_security_problems(settings: Settings) -> list[str]:
    """Why the Kafka security settings do not fit together (empty: they do)."""
    protocol = settings.kafka_security_protocol
    named = f"PAYWATCH_KAFKA_SECURITY_PROTOCOL={protocol}"
    password = settings.kafka_sasl_password
    sasl = {
        "PAYWATCH_KAFKA_SASL_MECHANISM": settings.kafka_sasl_mechanism,
        "PAYWATCH_KAFKA_SASL_USERNAME": settings.kafka_sasl_username,
        "PAYWATCH_KAFKA_SASL_PASSWORD": password.get_secret_value() if password else None,
    }
    files = {
        "PAYWATCH_KAFKA_SSL_CAFILE": settings.kafka_ssl_cafile,
        "PAYWATCH_KAFKA_SSL_CERTFILE": settings.kafka_ssl_certfile,
        "PAYWATCH_KAFKA_SSL_KEYFILE": settings.kafka_ssl_keyfile,
    }
    problems = []
    if protocol in _SASL_PROTOCOLS:
        if missing := [name for name, value in sasl.items() if not value]:
            problems.append(f"{named} needs {', '.join(missing)}")
    elif stray := [name for name, value in sasl.items() if value]:
        problems.append(
            f"{', '.join(stray)} set but {named} uses no SASL (SASL_PLAINTEXT or SASL_SSL do)"
        )
    if protocol in _TLS_PROTOCOLS:
        problems += [
            f"{name}={path}: no such file"
            for name, path in files.items()
            if path is not None and not path.is_file()
        ]
        if settings.kafka_ssl_keyfile and not settings.kafka_ssl_certfile:
            problems.append(
                "PAYWATCH_KAFKA_SSL_KEYFILE needs PAYWATCH_KAFKA_SSL_CERTFILE "
                "(the client certificate of that key)"
            )
    elif stray := [name for name, path in files.items() if path is not None]:
        problems.append(f"{', '.join(stray)} set but {named} uses no TLS (SSL or SASL_SSL do)")
    if protocol != "PLAINTEXT" and not settings.kafka_bootstrap:
        problems.append(
            f"{named} needs PAYWATCH_KAFKA_BOOTSTRAP: the embedded Kafka listens in PLAINTEXT only"
        )
    return problems


_SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_SSL_FILES = ("sslrootcert", "sslcert", "sslkey", "sslcrl")


def _dsn_query(dsn: str) -> dict[str, str]:
    """The DSN's query parameters, the last of each winning (as asyncpg reads them)."""
    return {key: values[-1] for key, values in parse_qs(urlsplit(dsn).query).items()}


def dsn_password(dsn: str) -> str | None:
    """The password of a postgresql:// URL: in the user part, else ``?password=``."""
    password = urlsplit(dsn).password
    return unquote(password) if password is not None else _dsn_query(dsn).get("password")


def dsn_tls_problems(dsn: str, variable: str = "PAYWATCH_DATABASE_URL") -> list[str]:
    """Why asyncpg would refuse the DSN's TLS parameters, said at start rather than at the
    first connection (asyncpg honours ``sslmode``, ``sslrootcert``... from the DSN itself)."""
    query = _dsn_query(dsn)
    problems = []
    mode = query.get("sslmode")
    if mode is not None and mode not in _SSL_MODES:
        problems.append(f"{variable}: sslmode={mode} is not one of {', '.join(_SSL_MODES)}")
    problems += [
        f"{variable}: {name}={query[name]}: no such file"
        for name in _SSL_FILES
        if name in query and not Path(query[name]).expanduser().is_file()
    ]
    return problems


def dsn_as_role(dsn: str, role: str) -> str:
    """``dsn`` logging in as ``role`` without a password: host, database and TLS parameters
    kept; the user and password of the URL and of its query dropped. A password must come
    from the server's trust, a ~/.pgpass line, or a PAYWATCH_*_DATABASE_URL of its own."""
    parts = urlsplit(dsn)
    hosts = parts.netloc.rpartition("@")[2]
    kept = [
        pair
        for pair in parts.query.split("&")
        if pair and unquote(pair.split("=", 1)[0]) not in ("user", "password")
    ]
    netloc = f"{quote(role, safe='')}@{hosts}"
    return urlunsplit(parts._replace(netloc=netloc, query="&".join(kept)))


_EXTERNAL = {"kafka_bootstrap": "an external Kafka", "database_url": "an external Postgres"}


@dataclass(frozen=True)
class _Unstated:
    """The value ``_UnstatedEnv`` gives ``env``; refused with the variables it names."""

    external: tuple[str, ...]
    """E.g. ``PAYWATCH_KAFKA_BOOTSTRAP (an external Kafka)``."""


class _UnstatedEnv(PydanticBaseSettingsSource):
    """Lowest-priority source: marks ``env`` when the environment names an external Kafka
    or Postgres and nothing states PAYWATCH_ENV.

    Where a value came from matters, which a validator cannot see: tests and tools build
    Settings in code with their own endpoints and keep the dev default; only an environment
    pointing at real infrastructure must say which kind it is.
    """

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Unused: ``__call__`` decides from the other sources' data."""
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        if "env" in self.current_state:
            return {}
        data = self.settings_sources_data
        environment = {**data.get("EnvSettingsSource", {}), **data.get("DotEnvSettingsSource", {})}
        in_code = data.get("InitSettingsSource", {})
        external = tuple(
            f"PAYWATCH_{name.upper()} ({what})"
            for name, what in _EXTERNAL.items()
            if environment.get(name) and name not in in_code
        )
        return {"env": _Unstated(external)} if external else {}
