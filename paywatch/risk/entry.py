"""What the risk table keeps per customer: the features and the last score emitted.

The last emitted score is kept so a score goes to ``risk.scores`` only when it moved
(``model.changed``), and compared to after a restart as before it. One compact msgpack
value (msgspec, like the saga entries), encoded once and changelogged as it is.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from paywatch.risk.features import MAX_ENCODED, CustomerFeatures
from paywatch.risk.model import Score
from paywatch.risk.renewals import Watch

MAX_ENTRY = MAX_ENCODED + 5_120
"""An entry is the bounded features plus one score (a version and three reasons named by
feature, at most ~1 kB) and one watch (two names of up to 1,020 bytes): it always fits in
a Kafka record."""


class RiskEntry(msgspec.Struct, frozen=True, array_like=True):
    """One customer's table value."""

    features: CustomerFeatures
    last: Score | None = None
    high_since: datetime | None = None
    """When the customer entered the high bands (its open HIGH_RISK_CUSTOMER alert)."""
    watch: Watch | None = None
    """What table ``risk-renewals`` holds for the customer (``streams.card_expiry``)."""


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(RiskEntry)


def encode_entry(entry: RiskEntry) -> bytes:
    """The table value of ``entry``."""
    return _ENCODER.encode(entry)


def decode_entry(data: bytes) -> RiskEntry:
    """A table value back; msgspec.DecodeError when it is not one."""
    return _DECODER.decode(data)
