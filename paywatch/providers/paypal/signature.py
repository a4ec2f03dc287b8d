"""PayPal transmission signatures, checked offline against PayPal's certificate (pure).

PayPal signs ``f"{transmission_id}|{transmission_time}|{webhook_id}|{crc32(raw_body)}"``
(crc32 as an unsigned decimal) with SHA256withRSA and sends the base64 signature and a
certificate URL in headers (reference/webhooks.md §2.2, after paypalrestsdk
``notifications.py``). The certificate bytes are fetched elsewhere (``certs.CertFetcher``);
this module only reads them, so it stays pure: ``now`` is passed in.

Certificate checks, as PayPal's SDKs do them:

* the leaf (the first certificate of the bundle) is valid at ``now``;
* its subject CN is one of ``accepted_cns`` (PayPal's Java SDK requires
  ``CN=messageverificationcerts[.sandbox].paypal.com``; the Python SDK any ``*.paypal.com``);
* it is signed by an issuer present in the fetched bundle (or in ``trust_roots``) that is a
  valid CA certificate. With ``trust_roots`` (pinned CA certificates, e.g. DigiCert's, as
  the SDKs bundle them) the chain must also reach one of them. Without pinned roots the
  trust comes from fetching the bundle over TLS from an allow-listed PayPal host.

Caveat of PayPal's scheme: the signature covers a CRC-32 of the body, not a hash, so
whoever holds one signed delivery (headers + body, e.g. from ``webhooks.raw``) can build
another body with the same CRC that verifies under those headers (CRC-32 is linear: four
chosen bytes fix it). Two guards bound that, since PayPal documents no freshness window:

* **freshness** (here): ``paypal-transmission-time`` older than ``tolerance`` or more than
  ``MAX_CLOCK_SKEW`` ahead of ``now`` is refused. ``DEFAULT_TOLERANCE`` is 4 days because
  PayPal retries a delivery "up to 25 times over 3 days" (developer.paypal.com/api/rest/
  webhooks/rest; reference/webhooks.md §4) and a retry keeps its first transmission, so
  its time, for those 3 days. Inferred, not documented [S]: PayPal's event details (GET
  /v1/notifications/webhooks-events/{id}) list one transmission per endpoint, whose id
  and ``timestamp`` stay the first attempt's while its retries run for days (an event
  posted on nopcommerce.com boards topic 92555: first attempt 2021-11-01T17:39:28Z, a
  retry answered 2021-11-03T08:10:06Z, same id); and transmission ids are version-1 UUIDs
  whose embedded time is the ``paypal-transmission-time`` (69cd13f0-d67a-11e5-... and
  2016-02-18T20:01:35Z in PayPal's OpenAPI example; d938e770-8046-11e6-... and
  2016-09-21T22:00:46Z in PayPal-PHP-SDK's ValidateWebhookEvent sample; 505fcad0-acfc-
  11e6-... and 2016-11-17T19:30:36Z in PayPal-PHP-SDK issue #720), so a kept id is a kept
  time and signature. A window under 3 days would refuse genuine retries after an outage.
* **replay** (``replay``, kept in Postgres by the ingest): a transmission id seen before
  with other body bytes is refused, so a captured delivery cannot carry another body
  inside the window either.

Better still is the verify-API mode (``verify_api``), where PayPal checks the body.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from paywatch.errors import VerificationError

ID_HEADER = "paypal-transmission-id"
TIME_HEADER = "paypal-transmission-time"
SIG_HEADER = "paypal-transmission-sig"
CERT_URL_HEADER = "paypal-cert-url"
ALGO_HEADER = "paypal-auth-algo"
HEADERS = (ID_HEADER, TIME_HEADER, SIG_HEADER, CERT_URL_HEADER, ALGO_HEADER)

SUPPORTED_ALGOS = frozenset({"SHA256withRSA"})
"""Only SHA256withRSA: the SDKs also map SHA1withRSA, which paywatch refuses."""

DEFAULT_CERT_CNS = frozenset(
    {"messageverificationcerts.paypal.com", "messageverificationcerts.sandbox.paypal.com"}
)
"""Subject CNs of PayPal's webhook signing certificates (live, sandbox)."""

MAX_BUNDLE_BYTES = 64 * 1024
_MAX_CERTS = 8
_MAX_CHAIN = 4
_MAX_HEADER = 2_048

DEFAULT_TOLERANCE = timedelta(days=4)
"""Oldest ``paypal-transmission-time`` accepted: PayPal's 3 days of retries plus a day."""

MAX_CLOCK_SKEW = timedelta(minutes=5)
"""How far ahead of ``now`` a transmission time may be (clocks differ; PayPal's never runs
ahead by days): a future time is not a retry, so it gets no 3-day allowance."""


@dataclass(frozen=True)
class Transmission:
    """The five PayPal signature headers, checked for shape (not yet for authenticity)."""

    transmission_id: str
    transmission_time: str
    signature: str
    cert_url: str
    auth_algo: str

    def signature_bytes(self) -> bytes:
        """The decoded signature (the header is checked to be base64 on reading)."""
        return base64.b64decode(self.signature, validate=True)


def read_transmission(headers: Mapping[str, str]) -> Transmission:
    """The PayPal headers (lowercase keys), or VerificationError when one is missing/malformed."""
    values = {name: _header(headers, name) for name in HEADERS}
    for name in (ID_HEADER, TIME_HEADER):
        # A '|' would blur the fields of the signed string; PayPal never sends one.
        if "|" in values[name]:
            raise VerificationError(f"malformed {name} header")
    if values[ALGO_HEADER] not in SUPPORTED_ALGOS:
        raise VerificationError("unsupported paypal-auth-algo: only SHA256withRSA is accepted")
    try:
        if not base64.b64decode(values[SIG_HEADER], validate=True):
            raise VerificationError("empty paypal-transmission-sig")
    except binascii.Error as exc:
        raise VerificationError("paypal-transmission-sig is not base64") from exc
    return Transmission(
        transmission_id=values[ID_HEADER],
        transmission_time=values[TIME_HEADER],
        signature=values[SIG_HEADER],
        cert_url=values[CERT_URL_HEADER],
        auth_algo=values[ALGO_HEADER],
    )


def crc32_decimal(body: bytes) -> str:
    """CRC-32 of the raw body as an unsigned decimal string (as PayPal signs it)."""
    return str(zlib.crc32(body) & 0xFFFFFFFF)


def signed_message(transmission: Transmission, webhook_id: str, body: bytes) -> bytes:
    """The exact bytes PayPal signs for this transmission and webhook."""
    return (
        f"{transmission.transmission_id}|{transmission.transmission_time}|"
        f"{webhook_id}|{crc32_decimal(body)}"
    ).encode()


def verify_signature(
    body: bytes,
    headers: Mapping[str, str],
    webhook_id: str,
    cert_pem: bytes,
    now: datetime,
    *,
    accepted_cns: Collection[str] = DEFAULT_CERT_CNS,
    trust_roots: Sequence[x509.Certificate] = (),
    tolerance: timedelta | None = DEFAULT_TOLERANCE,
) -> None:
    """Raise VerificationError unless PayPal's certificate signs this body for ``webhook_id``.

    ``cert_pem`` is what the ``paypal-cert-url`` returned (leaf first, then its issuers);
    ``now`` (timezone-aware) is when the certificates must be valid. A
    ``paypal-transmission-time`` outside ``check_transmission_time``'s window is refused
    too (``tolerance=None``: no window, which leaves the CRC forgery open).
    """
    transmission = read_transmission(headers)
    if not webhook_id:
        raise VerificationError("no PayPal webhook_id configured for this tenant")
    key = certificate_key(cert_pem, now, accepted_cns=accepted_cns, trust_roots=trust_roots)
    try:
        key.verify(
            transmission.signature_bytes(),
            signed_message(transmission, webhook_id, body),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
    except InvalidSignature as exc:
        raise VerificationError(
            "PayPal signature does not match the body for the configured webhook_id"
        ) from exc
    check_transmission_time(transmission, now, tolerance)


def check_transmission_time(
    transmission: Transmission, now: datetime, tolerance: timedelta | None
) -> None:
    """Refuse a transmission time older than ``tolerance`` or more than ``MAX_CLOCK_SKEW``
    (at most ``tolerance``) ahead of ``now``; None: no check (unsafe, module docstring)."""
    if tolerance is None:
        return
    try:
        sent = datetime.fromisoformat(transmission.transmission_time)
    except ValueError as exc:
        raise VerificationError("paypal-transmission-time is not an RFC 3339 time") from exc
    if sent.tzinfo is None:
        raise VerificationError("paypal-transmission-time has no time zone")
    if now - sent > tolerance:
        raise VerificationError(f"PayPal transmission is older than {tolerance}")
    ahead = min(MAX_CLOCK_SKEW, tolerance)
    if sent - now > ahead:
        raise VerificationError(f"PayPal transmission is more than {ahead} in the future")


def certificate_key(
    cert_pem: bytes,
    now: datetime,
    *,
    accepted_cns: Collection[str] = DEFAULT_CERT_CNS,
    trust_roots: Sequence[x509.Certificate] = (),
) -> rsa.RSAPublicKey:
    """The leaf's RSA key once the bundle passes the certificate checks (module docstring)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    bundle = load_bundle(cert_pem)
    leaf, others = bundle[0], bundle[1:]
    try:
        _check_validity(leaf, now, "PayPal certificate")
        _check_common_name(leaf, {cn.lower() for cn in accepted_cns})
        _check_chain(leaf, others, trust_roots, now)
        key = leaf.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:  # lazily parsed fields of a bad cert
        raise VerificationError("PayPal certificate could not be read") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise VerificationError("PayPal certificate does not carry an RSA key")
    return key


def load_bundle(cert_pem: bytes) -> list[x509.Certificate]:
    """The PEM certificates of a cert-URL response, or VerificationError."""
    if len(cert_pem) > MAX_BUNDLE_BYTES:
        raise VerificationError("PayPal certificate bundle is too large")
    try:
        bundle = x509.load_pem_x509_certificates(cert_pem)
    except ValueError as exc:
        raise VerificationError("PayPal cert URL did not return PEM certificates") from exc
    if not bundle or len(bundle) > _MAX_CERTS:
        raise VerificationError("PayPal certificate bundle has an unexpected number of certs")
    return bundle


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    if value is None:
        raise VerificationError(f"missing {name} header")
    value = value.strip()
    if not value or len(value) > _MAX_HEADER or not value.isascii() or not value.isprintable():
        raise VerificationError(f"malformed {name} header")
    return value


def _check_validity(cert: x509.Certificate, now: datetime, what: str) -> None:
    if now < cert.not_valid_before_utc:
        raise VerificationError(f"{what} is not valid yet")
    if now > cert.not_valid_after_utc:
        raise VerificationError(f"{what} has expired")


def _check_common_name(leaf: x509.Certificate, accepted: set[str]) -> None:
    names = [a.value for a in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if not names or any(not isinstance(n, str) or n.lower() not in accepted for n in names):
        raise VerificationError("PayPal certificate subject is not a PayPal signing name")


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except (x509.ExtensionNotFound, ValueError):
        return False


def _issuer_of(
    cert: x509.Certificate, candidates: Sequence[x509.Certificate]
) -> x509.Certificate | None:
    for candidate in candidates:
        if candidate == cert or not _is_ca(candidate):
            continue
        try:
            cert.verify_directly_issued_by(candidate)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            continue
        return candidate
    return None


def _check_chain(
    leaf: x509.Certificate,
    others: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    now: datetime,
) -> None:
    candidates = [*others, *roots]
    current = _issuer_of(leaf, candidates)
    if current is None:
        raise VerificationError("PayPal certificate is not signed by an issuer in its bundle")
    for _ in range(_MAX_CHAIN):
        _check_validity(current, now, "PayPal certificate issuer")
        if not roots or current in roots:
            return
        parent = _issuer_of(current, candidates)
        if parent is None:
            break
        current = parent
    raise VerificationError("PayPal certificate chain does not reach a pinned root")
