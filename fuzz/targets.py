"""One fuzz target per provider: fuzzer bytes -> a validly signed, mutated delivery -> the port.

Each input picks a real seed (tests/fixtures/<provider>/ and tests/builders), mutates it
(``fuzz.mutate``), signs the *mutated* body with the test secret so the input gets past
the signature check into read/parse/normalize (sometimes the headers are damaged instead,
to fuzz the signature parsing), then runs what ingest and the worker run:
``verify_async`` -> ``read`` -> ``handshake``/``subject``/``provider_event_id`` ->
``normalize`` (thin providers: ``references`` -> ``follow_ups``/``normalize_fetched`` of a
mutated fetched document) -> the Avro encode of every event ("validated != storable").

The domain answers are ``ProviderError`` (VerificationError 401, PayloadError 400,
CardDataError 422): anything else escaping ``one_input`` is a crash.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from fuzz.mutate import (
    INTERESTING,
    Choices,
    JsonMutator,
    bytes_mutation,
    json_body,
    xml_mutation,
)
from paywatch.errors import ProviderError
from paywatch.kafka.codec import make_codec
from paywatch.providers.base import Provider
from paywatch.providers.braintree.signature import sign_payload
from paywatch.providers.paypal import PayPalProvider
from paywatch.providers.registry import KNOWN_PROVIDERS, PROVIDERS
from paywatch.schemas.models import RawWebhook
from paywatch.settings import Settings
from tests.builders import adyen as ady
from tests.builders import authorizenet as anet
from tests.builders import braintree as bt
from tests.builders import checkout as cko
from tests.builders import generic as gen
from tests.builders import paypal as pp
from tests.builders import quickbooks as qbo
from tests.builders import stripe as samples
from tests.builders import xero as xr
from tests.builders.paypal_pki import CERT_URL, SANDBOX_CN, mock_paypal, sign_paypal

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
NAMES = KNOWN_PROVIDERS
FETCHED_COORDS = ("webhooks.fetched", 0, 0)
XERO_FETCHED = ("bill.", "invoice.draft", "invoice.jpy", "invoice.overdue", "invoice.paid.json")
XERO_FETCHED += ("invoice.voided",)
QBO_FETCHED = ("fault.", "invoice.", "payment.")

Headers = dict[str, str]


def _fixtures(provider: str, keep: Callable[[str], bool] = lambda _: True) -> list[Any]:
    return [
        json.loads(p.read_bytes())
        for p in sorted((FIXTURES / provider).glob("*.json"))
        if keep(p.name)
    ]


def _built(*builders: Callable[[], Any]) -> list[Any]:
    """Builder documents as the provider sends them (Xero/QBO decimals become JSON numbers)."""
    return [json.loads(xr.xero_body(build())) for build in builders]


@dataclass
class Target:
    """One provider's fuzz target; ``one_input`` is what the fuzzer calls."""

    name: str
    provider: Provider
    secrets: dict[str, str]
    sign: Callable[[bytes, Choices], Headers]
    seeds: list[Any]
    fetched: list[Any] = field(default_factory=list)
    body_of: Callable[[Choices], bytes] | None = None
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)

    def __post_init__(self) -> None:
        self.mutator = JsonMutator(self.seeds)
        self.fetched_mutator = JsonMutator(self.fetched) if self.fetched else None
        self.codec = make_codec(Settings())
        self.seed_refs: list[Any] = []
        if self.fetched:
            for seed in self.seeds:
                body = json.dumps(seed).encode()
                self.seed_refs += self.provider.references(self.provider.parse(body))  # type: ignore[attr-defined]

    def body(self, c: Choices) -> bytes:
        """The mutated delivery body."""
        if self.body_of is not None:
            return self.body_of(c)
        return mutated_json(c, self.mutator, self.seeds)

    def one_input(self, data: bytes) -> None:
        """Run one input through the port; a ProviderError is a fine answer, nothing else is."""
        c = Choices(data)
        body = self.body(c)
        headers = self.sign(body, c)
        if c.below(16) == 0:
            headers = damaged_headers(c, headers)
        try:
            self.deliver(c, body, headers)
        except ProviderError:
            pass

    def deliver(self, c: Choices, body: bytes, headers: Headers) -> None:
        """What ingest and then the worker do with one delivery."""
        provider = self.provider
        secrets = [self.secrets]
        self.loop.run_until_complete(provider.verify_async(body, headers, secrets, self.now))
        doc = provider.read(body)
        provider.handshake(doc)
        subject = provider.subject(doc)
        provider.provider_event_id(doc)
        if self.fetched_mutator is not None:
            self.fetch_and_normalize(c, doc)
            return
        raw = RawWebhook(
            ingest_id="fuzz",
            tenant="fuzz",
            provider=self.name,
            received_at=self.now,
            body=body,
            subject=subject,
        )
        for event in provider.normalize(raw, "webhooks.raw", 0, 0, doc):
            self.codec.encode(event)

    def fetch_and_normalize(self, c: Choices, doc: Mapping[str, Any]) -> None:
        """Thin providers: the references, then each one's fetched (mutated) document."""
        assert self.fetched_mutator is not None
        thin: Any = self.provider
        refs = thin.references(doc)[:4] or [c.pick(self.seed_refs)]
        for index, ref in enumerate(refs):
            document = mutated_json(c, self.fetched_mutator, self.fetched)
            status = c.pick((200, 200, 200, 200, 404, 410, 400, 500))
            try:
                thin.follow_ups(ref, document, status)
                events = thin.normalize_fetched(
                    "fuzz", ref, document, FETCHED_COORDS, index, status=status
                )
            except ProviderError:
                continue
            for event in events:
                self.codec.encode(event)


def mutated_json(c: Choices, mutator: JsonMutator, seeds: list[Any]) -> bytes:
    """A seed as is, tree-mutated, or tree- and byte-mutated."""
    mode = c.below(8)
    if mode == 0:
        return json.dumps(c.pick(seeds)).encode()
    doc, tokens = json_body(c, mutator, seeds)
    body = mutator.dumps(c, doc, tokens)
    return bytes_mutation(c, body) if mode == 1 else body


def damaged_headers(c: Choices, headers: Headers) -> Headers:
    """Drop, empty or garble one header (fuzzes the signature header parsing)."""
    out = dict(headers)
    if not out:
        return out
    name = c.pick(sorted(out))
    op = c.below(5)
    if op == 0:
        del out[name]
    elif op == 1:
        value = c.pick(INTERESTING)
        out[name] = value if isinstance(value, str) else json.dumps(value)
    elif op == 2:
        out[name] = c.chunk(40).decode("latin-1")
    elif op == 3:
        out[name] = out[name] + c.pick((",", ",v1=", " ", "|", "=", ",t=1,v1=00"))
    else:
        out[name] = out[name][: c.below(len(out[name]) + 1)]
    return out


# --- providers --------------------------------------------------------------------------


def stripe() -> Target:
    secret = "whsec_fuzz"  # noqa: S105  (test secret)
    now = datetime.now(UTC)
    ts = int(now.timestamp())
    builder = samples.stripe_event(
        "charge.failed", samples.stripe_charge_failed(basil=False, invoice="in_b"), created=ts
    )
    return Target(
        "stripe",
        PROVIDERS["stripe"],
        {"signing_secret": secret},
        lambda body, c: {"stripe-signature": samples.sign_stripe(body, secret, ts)},
        [*_fixtures("stripe"), builder],
        now=now,
    )


def _pki(now: datetime) -> tuple[rsa.RSAPrivateKey, bytes]:
    """A CA and a PayPal-named leaf like tests/builders/paypal_pki, with a 1024-bit leaf.

    The leaf key signs every input (one RSA private operation each), so it is kept small:
    2048 bits would make the signing, not the provider, the fuzzer's bottleneck.
    """
    from cryptography.hazmat.primitives import serialization

    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "paywatch fuzz CA")])
    leaf_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "PayPal, Inc."),
            x509.NameAttribute(NameOID.COMMON_NAME, SANDBOX_CN),
        ]
    )
    start = now - timedelta(days=1)

    def cert(
        subject: x509.Name, key: rsa.RSAPrivateKey, public: rsa.RSAPublicKey, ca: bool
    ) -> x509.Certificate:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(now + timedelta(days=365))
            .add_extension(
                x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True
            )
            .sign(key, hashes.SHA256())
        )

    ca_cert = cert(ca_name, ca_key, ca_key.public_key(), True)
    leaf_cert = cert(leaf_name, ca_key, leaf_key.public_key(), False)
    bundle = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf_cert, ca_cert))
    return leaf_key, bundle


def paypal() -> Target:
    now = datetime.now(UTC)
    leaf_key, bundle = _pki(now)
    provider = PayPalProvider(
        httpx.AsyncClient(transport=httpx.MockTransport(mock_paypal(bundle, now=now)))
    )
    sent = now.isoformat().replace("+00:00", "Z")

    def sign(body: bytes, c: Choices) -> Headers:
        return sign_paypal(body, pp.WEBHOOK_ID, leaf_key, transmission_time=sent, cert_url=CERT_URL)

    builders = [pp.paypal_payment_failed(), pp.paypal_sale_completed()]
    return Target(
        "paypal",
        provider,
        {"webhook_id": pp.WEBHOOK_ID},
        sign,
        [*_fixtures("paypal"), *builders],
        now=now,
    )


def braintree() -> Target:
    xmls = [p.read_text() for p in sorted((FIXTURES / "braintree").glob("*.xml"))]
    xmls += [bt.braintree_failure(), bt.braintree_recovery()]
    tags = sorted({tag for x in xmls for tag in _tags(x)})

    def body_of(c: Choices) -> bytes:
        xml = xml_mutation(c, c.pick(xmls), tags) if c.below(8) else c.pick(xmls).encode()
        payload = base64.encodebytes(xml).decode("ascii")
        op = c.below(12)
        if op == 0:
            payload = base64.b64encode(xml).decode("ascii")
        elif op == 1:
            payload = bytes_mutation(c, payload.encode()).decode("latin-1")
        # A payload Braintree could not have signed (not ASCII) gets a wrong signature.
        mac = sign_payload(payload, bt.PRIVATE_KEY) if payload.isascii() else "0" * 40
        signature = f"{bt.PUBLIC_KEY}|{mac}"
        fields = [("bt_signature", signature), ("bt_payload", payload)]
        if op == 2:
            fields.append(
                (c.pick(("bt_payload", "bt_signature", "x")), c.chunk().decode("latin-1"))
            )
        form = urlencode(fields).encode("ascii")
        return bytes_mutation(c, form) if op == 3 else form

    return Target(
        "braintree",
        PROVIDERS["braintree"],
        {"public_key": bt.PUBLIC_KEY, "private_key": bt.PRIVATE_KEY},
        lambda body, c: dict(bt.BRAINTREE_HEADERS),
        [],
        body_of=body_of,
    )


def _tags(xml: str) -> set[str]:
    import xml.etree.ElementTree as ET

    return {node.tag for node in ET.fromstring(xml).iter()}  # noqa: S314


def authorizenet() -> Target:
    builders = [anet.authorizenet_failure(), anet.authorizenet_recovery()]
    return Target(
        "authorizenet",
        PROVIDERS["authorizenet"],
        {"signature_key": anet.SIGNATURE_KEY},
        lambda body, c: anet.authorizenet_headers(body),
        [*_fixtures("authorizenet"), *builders],
    )


def xero() -> Target:
    def fetched(name: str) -> bool:
        return name.startswith(XERO_FETCHED)

    return Target(
        "xero",
        PROVIDERS["xero"],
        {"webhook_key": xr.WEBHOOK_KEY},
        lambda body, c: xr.xero_headers(body),
        [*_fixtures("xero", lambda n: not fetched(n)), *_built(xr.xero_failure, xr.xero_recovery)],
        fetched=[*_fixtures("xero", fetched), *_built(xr.xero_overdue, xr.xero_paid)],
    )


def quickbooks() -> Target:
    def fetched(name: str) -> bool:
        return name.startswith(QBO_FETCHED)

    webhooks = [*_fixtures("quickbooks", lambda n: not fetched(n)), qbo.qbo_failure()]
    return Target(
        "quickbooks",
        PROVIDERS["quickbooks"],
        {"verifier_token": qbo.VERIFIER_TOKEN},
        lambda body, c: qbo.quickbooks_headers(body),
        [*webhooks, qbo.qbo_recovery()],
        fetched=[
            *_fixtures("quickbooks", fetched),
            *_built(qbo.qbo_overdue, qbo.qbo_paid, lambda: qbo.qbo_payment(qbo.INVOICE_ID)),
        ],
    )


def adyen() -> Target:
    seeds = [*_fixtures("adyen"), ady.adyen_failure(), ady.adyen_recovery()]
    mutator = JsonMutator(seeds)

    def body_of(c: Choices) -> bytes:
        doc, tokens = json_body(c, mutator, seeds)
        if c.below(8):
            resign(doc)
        body = mutator.dumps(c, doc, tokens)
        return bytes_mutation(c, body) if c.below(12) == 0 else body

    return Target(
        "adyen",
        PROVIDERS["adyen"],
        {"hmac_key": ady.HMAC_KEY},
        lambda body, c: ady.adyen_headers(body),
        seeds,
        body_of=body_of,
    )


def resign(doc: Any) -> None:
    """Adyen signs inside the body: give every mutated item whose shape allows it a valid HMAC."""
    items = doc.get("notificationItems") if isinstance(doc, dict) else None
    for entry in items if isinstance(items, list) else []:
        item = entry.get("NotificationRequestItem") if isinstance(entry, dict) else None
        if not isinstance(item, dict):
            continue
        extra = item.get("additionalData")
        if not isinstance(extra, dict):
            continue
        try:
            extra["hmacSignature"] = ady.sign_adyen_item(item)
        except (AttributeError, TypeError, ValueError):
            continue  # the shape no longer allows signing: the provider must refuse it


def checkout() -> Target:
    builders = [cko.checkout_failure(), cko.checkout_recovery()]
    return Target(
        "checkout",
        PROVIDERS["checkout"],
        {"signature_key": cko.SIGNATURE_KEY},
        lambda body, c: cko.checkout_headers(body),
        [*_fixtures("checkout"), *builders],
    )


def generic() -> Target:
    now = datetime.now(UTC)
    ts = int(now.timestamp())
    ids = (gen.MSG_ID, gen.RECOVERY_MSG_ID, "", "msg_\u00e9", "a.b", "1")

    def sign(body: bytes, c: Choices) -> Headers:
        return gen.generic_headers(body, msg_id=c.pick(ids), timestamp=ts)

    return Target(
        "generic",
        PROVIDERS["generic"],
        {"signing_secret": gen.SIGNING_SECRET},
        sign,
        [*_fixtures("generic"), gen.generic_failure(), gen.generic_recovery()],
        now=now,
    )


FACTORIES: dict[str, Callable[[], Target]] = {
    "stripe": stripe,
    "paypal": paypal,
    "braintree": braintree,
    "authorizenet": authorizenet,
    "xero": xero,
    "quickbooks": quickbooks,
    "adyen": adyen,
    "checkout": checkout,
    "generic": generic,
}
