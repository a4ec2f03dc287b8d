"""What `paywatch up` prints once the system is ready: URLs, dev keys, a working curl."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from paywatch.ops.infra import Endpoints
from paywatch.ops.supervisor import local_url, logs_dir
from paywatch.settings import Settings


def sample_path(settings: Settings) -> Path:
    """Where the signed-curl sample body is written."""
    return settings.state_path / "samples" / "stripe-invoice-payment-failed.json"


def write_sample(settings: Settings) -> Path:
    """Write a realistic Stripe invoice.payment_failed body for the banner's curl."""
    from paywatch.ops.demo import sample_failure_body

    path = sample_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(sample_failure_body())
    return path


def signed_curl(url: str, secret: str, body_path: Path) -> str:
    """A shell line that signs the body as Stripe does (HMAC-SHA256 of t.body) and posts it."""
    body = shlex.quote(str(body_path))
    return (
        f"ts=$(date +%s); sig=$( (printf '%s.' \"$ts\"; cat {body}) | "
        f"openssl dgst -sha256 -hmac {shlex.quote(secret)} -r | cut -d' ' -f1); "
        f"curl -sS -X POST {url} -H 'Content-Type: application/json' "
        f'-H "Stripe-Signature: t=$ts,v1=$sig" --data-binary @{body}'
    )


def render(settings: Settings, ends: Endpoints, seeded: dict[str, Any], detached: bool) -> str:
    """The ready banner."""
    ingest = local_url(settings, settings.ingest_port)
    api = local_url(settings, settings.api_port)
    lines = [
        f"paywatch is running ({settings.env})",
        f"  webhooks   POST {ingest}/webhooks/{{provider}}/{{tenant}}",
        f"  query API  {api}   (OpenAPI: {api}/docs)",
        f"  Kafka      {ends.bootstrap}",
        f"  logs       {logs_dir(settings)}/",
    ]
    if seeded:
        tenant = seeded["tenant"]
        secret = seeded["stripe_signing_secret"]
        keys = seeded["keys"]
        sample = write_sample(settings)
        lines += [
            "",
            f"Demo tenant '{tenant}' (dev credentials, refused in prod):",
            f"  Stripe signing secret  {secret}",
            f"  analyst API key        {keys['analyst']}",
            f"  operator API key       {keys['operator']}",
            "",
            "Post a correctly signed Stripe payment failure:",
            "  " + signed_curl(f"{ingest}/webhooks/stripe/{tenant}", secret, sample),
            "Then ask the query API:",
            f"  curl -sS -H 'Authorization: Bearer {keys['analyst']}' {api}/v1/invoices",
        ]
    lines += ["", "Stop: `paywatch down`" if detached else "Stop: Ctrl-C"]
    return "\n".join(lines)
