"""Tenants, their provider secrets (encrypted at rest) and API keys (hashed)."""
