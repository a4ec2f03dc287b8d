"""Kafka TLS/SASL settings become valid options of aiokafka, confluent-kafka and Faust.

Each library's clients are constructed for real with the options (construction validates
them and opens no connection a test waits for), so an option a library does not take, or a
certificate it cannot load, fails here rather than against a production broker. A real
SASL broker is not part of the suite: the embedded Kafka listens in PLAINTEXT only.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faust
import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from cryptography.hazmat.primitives import serialization
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from paywatch.kafka.admin import admin_client
from paywatch.kafka.clients import group_consumer, log_reader, reliable_producer
from paywatch.kafka.security import (
    PLAINTEXT,
    KafkaSecurity,
    aiokafka_options,
    faust_broker,
    faust_credentials,
    kafka_security,
    librdkafka_config,
)
from paywatch.settings import Settings
from tests.builders.paypal_pki import make_test_pki

BOOTSTRAP = "127.0.0.1:1,127.0.0.1:2"  # nothing listens: clients are only constructed
PASSWORD = "sasl-password-that-must-never-be-logged"
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pem:
    """A throw-away CA and a client certificate signed by it, as PEM files."""

    ca: Path
    cert: Path
    key: Path
    bundle: Path  # certificate and key in one file
    stranger_key: Path  # a key that belongs to no certificate here


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> Pem:
    pki = make_test_pki(datetime.now(UTC), cn="paywatch-client")
    other = make_test_pki(datetime.now(UTC), cn="someone-else")
    folder = tmp_path_factory.mktemp("pem")

    def key_pem(key: Any) -> bytes:
        return bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    cert = pki.leaf_cert.public_bytes(serialization.Encoding.PEM)
    files = {
        "ca": pki.ca_cert.public_bytes(serialization.Encoding.PEM),
        "cert": cert,
        "key": key_pem(pki.leaf_key),
        "bundle": cert + key_pem(pki.leaf_key),
        "stranger_key": key_pem(other.leaf_key),
    }
    for name, data in files.items():
        (folder / f"{name}.pem").write_bytes(data)
    return Pem(**{name: folder / f"{name}.pem" for name in files})


def settings(**values: Any) -> Settings:
    return Settings(env="dev", kafka_bootstrap=BOOTSTRAP, database_url=None, **values)


def sasl(protocol: str, mechanism: str, **more: Any) -> Settings:
    return settings(
        kafka_security_protocol=protocol,
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="paywatch",
        kafka_sasl_password=PASSWORD,
        **more,
    )


def every_combination(pem: Pem) -> list[KafkaSecurity]:
    """One security per protocol and mechanism, TLS with and without a client certificate."""
    tls = {"kafka_ssl_cafile": pem.ca}
    mutual = {**tls, "kafka_ssl_certfile": pem.cert, "kafka_ssl_keyfile": pem.key}
    chosen = [
        settings(),
        settings(kafka_security_protocol="SSL", **tls),
        settings(kafka_security_protocol="SSL", **mutual),
        settings(kafka_security_protocol="SSL", kafka_ssl_certfile=pem.bundle),
        *(sasl("SASL_PLAINTEXT", m) for m in MECHANISMS),
        *(sasl("SASL_SSL", m, **tls) for m in MECHANISMS),
        sasl("SASL_SSL", "SCRAM-SHA-512", **mutual),
    ]
    return [kafka_security(s) for s in chosen]


def _name(security: KafkaSecurity) -> str:
    return security.describe() + (" +cert" if security.certfile else "")


# -- what each library is given ----------------------------------------------------------


def test_plaintext_is_plaintext_everywhere() -> None:
    assert kafka_security(settings()) == PLAINTEXT
    assert aiokafka_options(PLAINTEXT) == {"security_protocol": "PLAINTEXT"}
    assert librdkafka_config(PLAINTEXT) == {"security.protocol": "PLAINTEXT"}
    assert faust_credentials(PLAINTEXT) is None


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_sasl_options_name_the_mechanism_and_user(pem: Pem, protocol: str, mechanism: str) -> None:
    tls = {"kafka_ssl_cafile": pem.ca} if protocol == "SASL_SSL" else {}
    security = kafka_security(sasl(protocol, mechanism, **tls))
    options = aiokafka_options(security)
    context = options.pop("ssl_context", None)
    assert options == {
        "security_protocol": protocol,
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "paywatch",
        "sasl_plain_password": PASSWORD,
    }
    assert (context is not None) == (protocol == "SASL_SSL")
    expected = {
        "security.protocol": protocol,
        "sasl.mechanisms": mechanism,
        "sasl.username": "paywatch",
        "sasl.password": PASSWORD,
    }
    if protocol == "SASL_SSL":
        expected["ssl.ca.location"] = str(pem.ca)
    assert librdkafka_config(security) == expected


def test_tls_verifies_the_broker_against_the_ca_file(pem: Pem) -> None:
    security = kafka_security(settings(kafka_security_protocol="SSL", kafka_ssl_cafile=pem.ca))
    options = aiokafka_options(security)
    context = options["ssl_context"]
    assert set(options) == {"security_protocol", "ssl_context"}
    assert options["security_protocol"] == "SSL"
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    issuers = [dict(x[0] for x in ca["subject"]) for ca in context.get_ca_certs()]
    assert {"commonName": "paywatch test CA"} in issuers
    assert librdkafka_config(security) == {
        "security.protocol": "SSL",
        "ssl.ca.location": str(pem.ca),
    }


def test_mutual_tls_gives_every_library_the_client_certificate(pem: Pem) -> None:
    separate = settings(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=pem.ca,
        kafka_ssl_certfile=pem.cert,
        kafka_ssl_keyfile=pem.key,
    )
    assert librdkafka_config(kafka_security(separate)) == {
        "security.protocol": "SSL",
        "ssl.ca.location": str(pem.ca),
        "ssl.certificate.location": str(pem.cert),
        "ssl.key.location": str(pem.key),
    }
    bundle = kafka_security(settings(kafka_security_protocol="SSL", kafka_ssl_certfile=pem.bundle))
    assert librdkafka_config(bundle)["ssl.key.location"] == str(pem.bundle)
    assert isinstance(aiokafka_options(bundle)["ssl_context"], ssl.SSLContext)


def test_a_key_of_another_certificate_is_refused_by_both_tls_stacks(pem: Pem) -> None:
    """The certificate is really loaded: a key that does not match it fails at once."""
    wrong = kafka_security(
        settings(
            kafka_security_protocol="SSL",
            kafka_ssl_certfile=pem.cert,
            kafka_ssl_keyfile=pem.stranger_key,
        )
    )
    with pytest.raises(ssl.SSLError):
        aiokafka_options(wrong)
    with pytest.raises(KafkaException, match="ssl"):
        admin_client(BOOTSTRAP, security=wrong)


def test_faust_gets_the_same_auth_as_our_aiokafka_clients(pem: Pem) -> None:
    """Faust builds its aiokafka clients with credentials_to_aiokafka_auth: same options."""
    for security in every_combination(pem):
        credentials = faust_credentials(security)
        faust_side = dict(credentials_to_aiokafka_auth(credentials))
        ours = aiokafka_options(security)
        assert isinstance(faust_side.pop("ssl_context", None), ssl.SSLContext) == security.tls
        assert {k: v for k, v in ours.items() if k != "ssl_context"} == faust_side, _name(security)


def test_the_faust_app_takes_the_broker_list_and_credentials(pem: Pem) -> None:
    security = kafka_security(sasl("SASL_SSL", "SCRAM-SHA-256", kafka_ssl_cafile=pem.ca))
    credentials = faust_credentials(security)
    app = faust.App("security-test", broker=faust_broker(BOOTSTRAP), broker_credentials=credentials)
    assert app.conf.broker_credentials is credentials
    assert [(u.scheme, u.host, u.port) for u in app.conf.broker] == [
        ("kafka", "127.0.0.1", 1),
        ("kafka", "127.0.0.1", 2),
    ]


# -- the real constructors take them -------------------------------------------------------


async def test_aiokafka_constructors_accept_every_combination(pem: Pem) -> None:
    for security in every_combination(pem):
        producer = reliable_producer(BOOTSTRAP, client_id="t", security=security)
        consumers = [
            group_consumer(BOOTSTRAP, group_id="g", client_id="t", security=security),
            log_reader(BOOTSTRAP, client_id="t", security=security),
        ]
        try:
            # What the connections will use, kept on aiokafka's client objects.
            for client in [producer.client, *(c._client for c in consumers)]:
                assert client._security_protocol == security.protocol, _name(security)
                assert (client._ssl_context is not None) == security.tls
                if security.sasl:
                    assert client._sasl_mechanism == security.mechanism
                    assert client._sasl_plain_username == "paywatch"
        finally:
            for closing in (producer, *consumers):
                await closing.stop()


def test_confluent_constructors_accept_every_combination(pem: Pem) -> None:
    for security in every_combination(pem):
        config = {"bootstrap.servers": BOOTSTRAP, **librdkafka_config(security)}
        admin_client(BOOTSTRAP, security=security)
        Producer(config, logger=log).flush(0)
        Consumer({**config, "group.id": "g"}, logger=log).close()


def test_confluent_constructors_do_validate_the_config() -> None:
    """The test above could not fail if construction accepted anything."""
    with pytest.raises(KafkaException, match="SASL mechanism"):
        Producer({"security.protocol": "SASL_SSL", "sasl.mechanisms": "NOPE"}, logger=log)


# -- the password stays secret ---------------------------------------------------------------


def test_the_password_is_in_no_repr_str_or_log(pem: Pem, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    configured = sasl("SASL_SSL", "SCRAM-SHA-512", kafka_ssl_cafile=pem.ca)
    security = kafka_security(configured)
    admin_client(BOOTSTRAP, security=security)
    app = faust.App(
        "t", broker=faust_broker(BOOTSTRAP), broker_credentials=faust_credentials(security)
    )
    shown = [
        repr(configured),
        str(configured),
        configured.model_dump_json(),
        repr(security),
        str(security),
        security.describe(),
        repr(app.conf.broker_credentials),
        caplog.text,
    ]
    assert [text for text in shown if PASSWORD in text] == []
    assert security.describe() == "SASL_SSL (SCRAM-SHA-512 as paywatch)"
