"""PayPal signing kit for tests and benchmarks: throw-away PKI, headers, fake PayPal.

``make_test_pki`` creates a CA and a leaf named like PayPal's signing certificate (keys are
random: call it once per test session), ``sign_paypal`` produces the five ``paypal-*``
headers for a body (reference/webhooks.md §2.2), and ``mock_paypal`` is an
``httpx.MockTransport`` handler serving the certificate URL, the OAuth token endpoint and the
verify-webhook-signature API. Re-exported by ``tests.builders.paypal``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from paywatch.errors import VerificationError
from paywatch.providers.paypal.signature import (
    Transmission,
    crc32_decimal,
    verify_signature,
)

TRANSMISSION_ID = "69cd13f0-d67a-11e5-baa3-778b53f4ae55"
TRANSMISSION_TIME = "2025-06-15T15:06:40Z"
CERT_URL = "https://api.sandbox.paypal.com/v1/notifications/certs/CERT-360caa42-fca2a594-a5cafa77"
SANDBOX_CN = "messageverificationcerts.sandbox.paypal.com"


@dataclass(frozen=True)
class SamplePki:
    """A throw-away CA and a PayPal-named leaf; ``bundle`` is what the cert URL serves."""

    ca_key: rsa.RSAPrivateKey
    ca_cert: x509.Certificate
    leaf_key: rsa.RSAPrivateKey
    leaf_cert: x509.Certificate

    @property
    def bundle(self) -> bytes:
        """Leaf first, then its issuer, in PEM."""
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.chain)

    @property
    def chain(self) -> tuple[x509.Certificate, x509.Certificate]:
        """(leaf, issuer)."""
        return (self.leaf_cert, self.ca_cert)


def make_test_pki(
    now: datetime,
    *,
    cn: str = SANDBOX_CN,
    valid_for: timedelta = timedelta(days=365),
    issuer_key: rsa.RSAPrivateKey | None = None,
) -> SamplePki:
    """A CA and a leaf valid from ``now - 1 day`` for ``valid_for``.

    ``issuer_key`` signs the leaf instead of the CA's key (a leaf the bundled CA did not sign).
    """
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "paywatch test CA")])
    start, end = now - timedelta(days=1), now - timedelta(days=1) + valid_for
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key(), start, now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "PayPal, Inc."),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )
    leaf_cert = (
        _builder(leaf_name, ca_name, leaf_key.public_key(), start, end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(issuer_key or ca_key, hashes.SHA256())
    )
    return SamplePki(ca_key, ca_cert, leaf_key, leaf_cert)


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    key: rsa.RSAPublicKey,
    start: datetime,
    end: datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
    )


def sign_paypal(
    body: bytes,
    webhook_id: str,
    key: rsa.RSAPrivateKey,
    *,
    transmission_id: str = TRANSMISSION_ID,
    transmission_time: str = TRANSMISSION_TIME,
    cert_url: str = CERT_URL,
    auth_algo: str = "SHA256withRSA",
) -> dict[str, str]:
    """The five ``paypal-*`` headers (lowercase) PayPal sends with ``body``."""
    message = f"{transmission_id}|{transmission_time}|{webhook_id}|{crc32_decimal(body)}"
    signature = key.sign(message.encode(), padding.PKCS1v15(), hashes.SHA256())
    return {
        "paypal-transmission-id": transmission_id,
        "paypal-transmission-time": transmission_time,
        "paypal-transmission-sig": base64.b64encode(signature).decode("ascii"),
        "paypal-cert-url": cert_url,
        "paypal-auth-algo": auth_algo,
    }


def mock_paypal(
    bundle: bytes,
    *,
    now: datetime,
    cert_url: str = CERT_URL,
    client_id: str = "test-client",
    client_secret: str = "test-secret",
    access_token: str = "A21AAtest-token",
) -> Callable[[httpx.Request], httpx.Response]:
    """A MockTransport handler acting as PayPal: cert URL, OAuth token, verify API.

    The verify endpoint checks the signature offline with ``bundle`` over the raw
    ``webhook_event`` bytes it receives, so a client that re-serialises the event fails.
    """
    basic = "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()

    def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and str(request.url) == cert_url:
            return httpx.Response(200, content=bundle)
        if request.url.path == "/v1/oauth2/token":
            if request.headers.get("authorization") != basic:
                return httpx.Response(401, json={"error": "invalid_client"})
            return httpx.Response(
                200,
                json={"access_token": access_token, "token_type": "Bearer", "expires_in": 32400},
            )
        if request.url.path == "/v1/notifications/verify-webhook-signature":
            if request.headers.get("authorization") != f"Bearer {access_token}":
                return httpx.Response(401, json={"name": "AUTHENTICATION_FAILURE"})
            return httpx.Response(200, json={"verification_status": _verdict(request, bundle, now)})
        return httpx.Response(404)

    return handle


def _verdict(request: httpx.Request, bundle: bytes, now: datetime) -> str:
    content = request.content
    marker = b',"webhook_event":'
    head, _, tail = content.partition(marker)
    fields = json.loads(head + b"}")
    event = tail[:-1]  # the raw event bytes as the client sent them
    transmission = Transmission(
        fields["transmission_id"],
        fields["transmission_time"],
        fields["transmission_sig"],
        fields["cert_url"],
        fields["auth_algo"],
    )
    headers = {
        "paypal-transmission-id": transmission.transmission_id,
        "paypal-transmission-time": transmission.transmission_time,
        "paypal-transmission-sig": transmission.signature,
        "paypal-cert-url": transmission.cert_url,
        "paypal-auth-algo": transmission.auth_algo,
    }
    try:
        verify_signature(event, headers, fields["webhook_id"], bundle, now)
    except VerificationError:
        return "FAILURE"
    return "SUCCESS"
