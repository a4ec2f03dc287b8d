"""Payload builders, signing kits and fakes for tests and benchmarks (never shipped)."""
