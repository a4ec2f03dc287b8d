"""One validated configuration for every paywatch process (ARCHITECTURE §4).

All variables carry the ``PAYWATCH_`` prefix. Secrets are ``SecretStr`` so they
never show up in a repr or a log line. Dev secrets are refused outside
``PAYWATCH_ENV=dev``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AwareDatetime, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Documented dev-only key (README "Configuration"); refused when PAYWATCH_ENV=prod.
DEV_SECRET_KEY = "paywatch-dev-secret-key-do-not-use-in-prod"  # noqa: S105 (public dev value)

BODY_LIMIT_BYTES = 256 * 1024


class Settings(BaseSettings):
    """Configuration read from the environment, frozen after validation."""

    model_config = SettingsConfigDict(env_prefix="PAYWATCH_", frozen=True, extra="ignore")

    env: Literal["dev", "prod"] = "dev"
    kafka_bootstrap: str | None = None
    database_url: SecretStr | None = None
    ingest_port: int = Field(8080, ge=1, le=65535)
    api_port: int = Field(8081, ge=1, le=65535)
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
    secret_grace_hours: float = Field(24.0, ge=0)

    # Topics: a prefix lets tests (and staging next to prod) use their own names.
    topic_prefix: str = ""
    topic_partitions: int = Field(12, ge=1, le=1000)
    topic_replication: int = Field(1, ge=1)
    app_id: str = "paywatch"
    table_store: str = "rocksdb://"
    table_standby_replicas: int = Field(1, ge=0)
    table_prerestore: bool = True
    """Bulk-restore the worker's rocksdb tables from their changelogs before it joins
    (streams/table_restore.py); false leaves restoring to Faust alone."""
    schema_registry_url: str | None = None

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

    # Sandbox executor: the seeded payment simulator answering RETRY_PAYMENT commands.
    # The success table is JSON, format and defaults in paywatch/executor/simulator.py.
    simulator_seed: int = 0
    simulator_success: str = ""
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

    @model_validator(mode="after")
    def _refuse_dev_secrets_in_prod(self) -> Settings:
        if self.env == "prod" and self.secret_key.get_secret_value() == DEV_SECRET_KEY:
            raise ValueError(
                "PAYWATCH_SECRET_KEY must be set to a real secret when PAYWATCH_ENV=prod"
            )
        if self.env == "prod" and len(self.secret_key.get_secret_value()) < 32:
            raise ValueError("PAYWATCH_SECRET_KEY must be at least 32 characters in prod")
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


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment; keyword overrides win (used by the CLI)."""
    return Settings(**overrides)  # type: ignore[arg-type]
