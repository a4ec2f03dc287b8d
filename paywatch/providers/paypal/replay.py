"""The transmission-id replay guard of PayPal certificate mode (pure part).

Certificate mode trusts a signature over ``id|time|webhook_id|CRC-32(body)``, and a CRC is
no hash: under one captured set of headers another body with the same CRC verifies (see
``signature``). A transmission id names one transmission, and PayPal's retries of it send
the same bytes again, so the first body bytes seen under an id are the only genuine ones:
the ingest remembers (tenant, id) -> SHA-256 of those bytes (``paywatch.tenants.
transmissions``, in Postgres so every ingest process and restart shares it) and refuses
the id with any other bytes. It is remembered for ``replay_retention``: after that the
freshness window of ``signature`` refuses the transmission anyway.

Verify-API mode needs no guard: PayPal checks the body itself.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from paywatch.errors import VerificationError
from paywatch.providers.paypal.signature import MAX_CLOCK_SKEW

Mode = Literal["cert", "api"]

REPLAY_MARGIN = timedelta(hours=1)
"""Kept beyond the freshness window: ingest hosts' clocks differ by less than this."""


class TransmissionReplayed(VerificationError):
    """A transmission id seen before arrived with other body bytes (a forged body)."""


@dataclass(frozen=True)
class Verified:
    """Which transmission verified, and how (certificate mode needs the replay guard)."""

    transmission_id: str
    mode: Mode

    @property
    def needs_replay_guard(self) -> bool:
        """True in certificate mode: only the CRC-32 of the body was signed."""
        return self.mode == "cert"


def body_digest(body: bytes) -> bytes:
    """SHA-256 of the exact raw body bytes (what a genuine retry repeats)."""
    return hashlib.sha256(body).digest()


def check_first_body(first: bytes, digest: bytes) -> None:
    """Raise TransmissionReplayed unless ``digest`` is the one first seen for the id."""
    if not hmac.compare_digest(first, digest):
        raise TransmissionReplayed(
            "PayPal transmission id was seen before with a different body: refused"
        )


def replay_retention(tolerance: timedelta | None) -> timedelta | None:
    """How long a seen transmission id must be remembered (None: forever).

    A transmission first seen at F was sent at most ``MAX_CLOCK_SKEW`` after F, so the
    freshness check refuses it after F + skew + ``tolerance``; without a window (None) an
    id stays usable forever and so must its row.
    """
    if tolerance is None:
        return None
    return tolerance + min(MAX_CLOCK_SKEW, tolerance) + REPLAY_MARGIN
