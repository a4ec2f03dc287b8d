"""paywatch's exception tree. HTTP status codes are chosen only at the route edge.

PaywatchError
├── ConfigError                 bad or missing configuration (exit 2 in the CLI)
│   └── InvalidPolicy           a tenant recovery policy that does not validate -> 422
├── InfraError                  embedded Kafka/Postgres could not start or be reached
│   └── StackNotRunning         a command needs a stack that is not running
├── ProviderError               raised by providers/*: pure, never I/O
│   ├── VerificationError       signature missing/invalid/expired -> 401
│   ├── PayloadError            verified but malformed body -> 400
│   └── CardDataError           a PAN in the body -> 422, never written
├── UnknownTenant / UnknownProvider  -> 404
├── CodecError                  bytes that are not a known Avro record -> DLQ
└── Retryable                   transient (broker unavailable, timeout) -> 503 / retry
"""

from __future__ import annotations

from collections.abc import Sequence


class PaywatchError(Exception):
    """Base of every error paywatch raises on purpose."""


class ConfigError(PaywatchError):
    """Configuration is missing or invalid."""


class InvalidPolicy(ConfigError):
    """A tenant recovery policy that does not validate; one (field path, reason) per error."""

    def __init__(self, errors: Sequence[tuple[str, str]]) -> None:
        self.errors = tuple(errors)
        lines = "".join(f"\n  {field}: {reason}" for field, reason in self.errors)
        count = len(self.errors)
        super().__init__(f"invalid policy ({count} error{'' if count == 1 else 's'}):{lines}")


class InfraError(PaywatchError):
    """Embedded infrastructure failed to start, stop or answer."""


class StackNotRunning(InfraError):
    """The command needs a running stack (`paywatch up`)."""


class ProviderError(PaywatchError):
    """Base of errors raised by the pure provider modules."""


class VerificationError(ProviderError):
    """The webhook signature is missing, invalid or outside its time window."""


class PayloadError(ProviderError):
    """The verified body cannot be understood."""


class CardDataError(ProviderError):
    """The body carries a primary account number (PAN)."""


class UnknownTenant(PaywatchError):
    """No tenant with that name."""


class UnknownProvider(PaywatchError):
    """No provider with that name (or not enabled)."""


class CodecError(PaywatchError):
    """Bytes that do not decode as a known Avro record."""


class Retryable(PaywatchError):
    """A transient failure: retry later (HTTP 503 at the edge)."""
