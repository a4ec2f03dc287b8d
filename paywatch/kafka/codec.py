"""The codec a process uses for topic values, chosen by the settings."""

from __future__ import annotations

from paywatch.schemas.codec import Codec, SingleObjectCodec
from paywatch.settings import Settings


def make_codec(settings: Settings) -> Codec:
    """RegistryCodec when ``schema_registry_url`` is set, else SingleObjectCodec."""
    if settings.schema_registry_url:
        # Imported here: the registry client stack takes ~0.5 s to import.
        from paywatch.kafka.registry import RegistryCodec

        return RegistryCodec.from_url(settings.schema_registry_url)
    return SingleObjectCodec()
