"""Kafka transport security, one translation per client library.

paywatch talks to Kafka through three libraries: aiokafka (ingest, projector, executor,
views), confluent-kafka/librdkafka (admin, bulk table restore) and Faust (the worker, on
aiokafka). Each spells TLS and SASL differently, so the validated settings
(``PAYWATCH_KAFKA_SECURITY_PROTOCOL``, ``_SASL_*``, ``_SSL_*``; paywatch/settings.py) are
turned into each library's options here and nowhere else: a client built outside the
helpers of kafka/clients.py, kafka/admin.py, streams/table_restore.py and streams/app.py
would silently talk PLAINTEXT (tests/contract/test_kafka_client_sites.py keeps it so).

TLS verifies the broker's certificate and host name in all three libraries: Python's
``ssl.create_default_context`` for aiokafka and Faust, librdkafka's default
``ssl.endpoint.identification.algorithm=https``.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from paywatch.settings import SaslMechanism, SecurityProtocol, Settings

if TYPE_CHECKING:
    import faust.auth


@dataclass(frozen=True)
class KafkaSecurity:
    """How clients reach the brokers; build it with ``kafka_security(settings)``.

    The password is a ``SecretStr``: the repr, ``describe()`` and every log line show
    stars; only the library options below carry it in clear.
    """

    protocol: SecurityProtocol = "PLAINTEXT"
    mechanism: SaslMechanism | None = None
    username: str | None = None
    password: SecretStr | None = None
    cafile: Path | None = None
    certfile: Path | None = None
    keyfile: Path | None = None

    @property
    def tls(self) -> bool:
        """True for SSL and SASL_SSL."""
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        """True for SASL_PLAINTEXT and SASL_SSL."""
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def describe(self) -> str:
        """One line for logs and status, without the password."""
        if self.sasl:
            return f"{self.protocol} ({self.mechanism} as {self.username})"
        return self.protocol


PLAINTEXT = KafkaSecurity()
"""The embedded broker's only listener; the default of helpers that tests and benches call."""


def kafka_security(settings: Settings) -> KafkaSecurity:
    """The security of the settings' Kafka (validated together by Settings)."""
    return KafkaSecurity(
        protocol=settings.kafka_security_protocol,
        mechanism=settings.kafka_sasl_mechanism,
        username=settings.kafka_sasl_username,
        password=settings.kafka_sasl_password,
        cafile=settings.kafka_ssl_cafile,
        certfile=settings.kafka_ssl_certfile,
        keyfile=settings.kafka_ssl_keyfile,
    )


def ssl_context(security: KafkaSecurity) -> ssl.SSLContext | None:
    """A verifying client context (CA file or the system's CAs, client cert if any)."""
    if not security.tls:
        return None
    cafile = str(security.cafile) if security.cafile else None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    if security.certfile:
        keyfile = str(security.keyfile) if security.keyfile else None
        context.load_cert_chain(str(security.certfile), keyfile=keyfile)
    return context


def _password(security: KafkaSecurity) -> str:
    return security.password.get_secret_value() if security.password else ""


def aiokafka_options(security: KafkaSecurity) -> dict[str, Any]:
    """Keyword arguments of AIOKafkaProducer / AIOKafkaConsumer.

    aiokafka takes the SCRAM user and password in its ``sasl_plain_*`` arguments too.
    """
    options: dict[str, Any] = {"security_protocol": security.protocol}
    if security.tls:
        options["ssl_context"] = ssl_context(security)
    if security.sasl:
        options["sasl_mechanism"] = security.mechanism
        options["sasl_plain_username"] = security.username
        options["sasl_plain_password"] = _password(security)
    return options


def librdkafka_config(security: KafkaSecurity) -> dict[str, str]:
    """Configuration properties of confluent-kafka's Producer / Consumer / AdminClient."""
    config: dict[str, str] = {"security.protocol": security.protocol}
    if security.sasl:
        config["sasl.mechanisms"] = str(security.mechanism)
        config["sasl.username"] = str(security.username)
        config["sasl.password"] = _password(security)
    if security.tls and security.cafile:
        config["ssl.ca.location"] = str(security.cafile)
    if security.tls and security.certfile:
        config["ssl.certificate.location"] = str(security.certfile)
        # Python's load_cert_chain reads a key from the certificate file when no key file
        # is given; librdkafka wants it named, so the same PEM file serves as both.
        config["ssl.key.location"] = str(security.keyfile or security.certfile)
    return config


def faust_credentials(security: KafkaSecurity) -> faust.auth.Credentials | None:
    """Faust's ``broker_credentials`` (None: PLAINTEXT).

    Faust's SASLCredentials turns into SASL_SSL when it is given an SSL context, and
    SASL_PLAINTEXT without one; its repr names the user only. Faust is imported here, not
    at the top: ingest, projector and executor import this module and never run Faust.
    """
    import faust

    if security.sasl:
        return faust.SASLCredentials(
            username=security.username,
            password=_password(security),
            mechanism=security.mechanism,
            ssl_context=ssl_context(security),
        )
    if security.tls:
        return faust.SSLCredentials(ssl_context(security))
    return None


def faust_broker(bootstrap: str) -> str:
    """Faust's ``broker`` URL: its aiokafka transport is ``kafka://`` whatever the protocol
    (TLS and SASL come from ``broker_credentials``); a comma-separated list stays one."""
    return f"kafka://{bootstrap}"
