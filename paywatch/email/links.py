"""Signed, expiring link tokens: the update-payment-method link and the unsubscribe link.

A token is ``v1.<payload>.<mac>``: the payload is base64url of compact JSON
``{"t": tenant, "c": customer_ref, "i": invoice_ref, "p": purpose, "e": expiry (Unix s)}``,
the mac base64url of HMAC-SHA256 over ``v1.<payload>`` (the exact ASCII of the token before
the last dot). ``verify`` compares macs in constant time (``hmac.compare_digest``) before it
reads the payload, then checks the purpose and the expiry.

Keys: the tokens paywatch itself verifies (unsubscribe; the Stripe portal redirect) are
signed with a key derived by HKDF-SHA256 from PAYWATCH_SECRET_KEY with its own label, like
SecretBox's keys, and verified under PAYWATCH_SECRET_KEY_PREVIOUS too during a master key
rotation. The token on a tenant's own ``update_url`` is signed with that tenant's link
secret (``pwl_`` + 43 characters, shown once by ``paywatch email enable``), used as the
HMAC key as its UTF-8 bytes, so the tenant verifies it without calling paywatch (README
"Email").
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from paywatch.errors import PaywatchError

if TYPE_CHECKING:
    from paywatch.settings import Settings

Purpose = Literal["update", "unsubscribe"]
PURPOSES: tuple[Purpose, ...] = ("update", "unsubscribe")
VERSION = "v1"
MAX_TOKEN = 2048
TOKEN_PATTERN = rf"^{VERSION}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{{43}}$"
"""Every token ``sign`` makes: version, base64url payload, base64url of a 32-byte mac.

The links' routes publish it, so a string of another shape is a malformed request (400)
and a well-formed one that ``verify`` refuses is a refused link (403)."""
_TOKEN = re.compile(TOKEN_PATTERN)
_INFO = b"paywatch email link tokens v1"


class InvalidLink(PaywatchError):
    """A token that is malformed, not signed by us, expired or for another purpose."""


class MalformedLink(InvalidLink):
    """A string that is not of a token's shape (TOKEN_PATTERN) at all: a mangled link."""


@dataclass(frozen=True)
class LinkClaims:
    """What a token says."""

    tenant: str
    customer_ref: str
    invoice_ref: str
    purpose: Purpose
    expires: int
    """Unix seconds."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_link_secret() -> str:
    """A tenant's link secret: ``pwl_`` + base64url of 32 random bytes."""
    return "pwl_" + _b64(secrets.token_bytes(32))


def derive_key(master: str) -> bytes:
    """The link key of a master key (HKDF-SHA256, its own label)."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO)
    return hkdf.derive(master.encode("utf-8"))


def _mac(key: bytes, signed: str) -> bytes:
    return hmac.new(key, signed.encode("ascii"), hashlib.sha256).digest()


def sign(key: bytes, claims: LinkClaims) -> str:
    """The token of ``claims`` under ``key``."""
    payload = {
        "t": claims.tenant,
        "c": claims.customer_ref,
        "i": claims.invoice_ref,
        "p": claims.purpose,
        "e": claims.expires,
    }
    body = _b64(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode())
    signed = f"{VERSION}.{body}"
    return f"{signed}.{_b64(_mac(key, signed))}"


def verify(keys: list[bytes], token: str, purpose: Purpose, now: datetime) -> LinkClaims:
    """The claims of a token one of ``keys`` signed, for ``purpose``, not expired at
    ``now``; InvalidLink saying which of these it is not."""
    if len(token) > MAX_TOKEN or not _TOKEN.fullmatch(token):
        raise MalformedLink("malformed link token")
    signed, _, mac_text = token.rpartition(".")
    version, _, body = signed.partition(".")
    given = _unb64(mac_text)  # 43 base64url characters (TOKEN_PATTERN): always 32 bytes
    matched = False
    for key in keys:  # every key, always: the time taken does not say which one matched
        matched |= hmac.compare_digest(_mac(key, signed), given)
    if version != VERSION or not matched:
        raise InvalidLink("link token not signed by this service (altered or forged)")
    claims = _claims(body)
    if claims.purpose != purpose:
        raise InvalidLink(f"link token is for {claims.purpose}, not {purpose}")
    if claims.expires <= now.timestamp():
        raise InvalidLink("link token expired")
    return claims


def _claims(body: str) -> LinkClaims:
    try:
        data = json.loads(_unb64(body))
        claims = LinkClaims(data["t"], data["c"], data["i"], data["p"], int(data["e"]))
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise InvalidLink("malformed link token payload") from exc
    if claims.purpose not in PURPOSES:
        raise InvalidLink("link token of an unknown purpose")
    return claims


class LinkSigner:
    """Signs with PAYWATCH_SECRET_KEY's link key; verifies under it and the previous one."""

    def __init__(self, master: str, previous: str | None = None) -> None:
        self._key = derive_key(master)
        self._keys = [self._key] + ([derive_key(previous)] if previous else [])

    @classmethod
    def from_settings(cls, settings: Settings) -> LinkSigner:
        """The signer of PAYWATCH_SECRET_KEY (and PAYWATCH_SECRET_KEY_PREVIOUS)."""
        previous = settings.secret_key_previous
        return cls(
            settings.secret_key.get_secret_value(),
            previous.get_secret_value() if previous is not None else None,
        )

    def sign(self, claims: LinkClaims) -> str:
        """The token of ``claims``."""
        return sign(self._key, claims)

    def verify(self, token: str, purpose: Purpose, now: datetime) -> LinkClaims:
        """The claims of a token this service signed (see ``verify``)."""
        return verify(self._keys, token, purpose, now)

    def __repr__(self) -> str:
        return "LinkSigner(<hidden>)"


def with_token(url: str, token: str) -> str:
    """``url`` with ``token=<token>`` appended to its query."""
    return f"{url}{'&' if '?' in url else '?'}token={token}"


def claims_for(
    tenant: str, customer_ref: str, invoice_ref: str, purpose: Purpose, expires: datetime
) -> LinkClaims:
    """The claims of one email's link, valid until ``expires``."""
    return LinkClaims(tenant, customer_ref, invoice_ref, purpose, int(expires.timestamp()))
