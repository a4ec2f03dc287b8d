"""An outbound event as a Slack incoming-webhook message (pure).

Slack endpoints (kind ``slack``) get a message, not the JSON envelope: a ``text`` line
(notifications and clients without Block Kit) and ``blocks`` with the facts a person acts
on: the invoice's state, its amount and currency, the rule that decided and a link to the
invoice's timeline on the query API (``PAYWATCH_PUBLIC_API_URL``). Escalations and alerts
are what people watch; any other type still gets a short message, so an endpoint
subscribed to every type never fails on one.

Everything that came from a provider or a tenant's policy is escaped for Slack's mrkdwn
(``&``, ``<``, ``>``), so a ref cannot make a link or a ``<!channel>`` mention.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from paywatch.outbound.events import OutboundEvent

DEFAULT_PUBLIC_API_URL = "http://127.0.0.1:8081"
MAX_TEXT = 2900
"""Slack cuts a section's text at 3,000 characters; stay under it."""
# ISO 4217 currencies without minor units (amounts are integer minor units).
_NO_MINOR = frozenset("BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF".split())
_THREE_MINOR = frozenset("BHD IQD JOD KWD LYD OMR TND".split())
_ICON = {"alert.opened": ":rotating_light:", "alert.resolved": ":white_check_mark:"}


def slack_body(
    event: OutboundEvent | Mapping[str, Any], base_url: str = DEFAULT_PUBLIC_API_URL
) -> bytes:
    """The JSON body to POST to a Slack incoming webhook for `event` (or its envelope)."""
    envelope = event.envelope() if isinstance(event, OutboundEvent) else event
    kind = str(envelope.get("type", ""))
    data: Mapping[str, Any] = envelope.get("data") or {}
    render = _RENDER.get(kind, _invoice_message)
    text, fields = render(kind, str(envelope.get("tenant", "")), data)
    blocks: list[dict[str, Any]] = [_section(text)]
    if fields:
        blocks.append({"type": "section", "fields": [_mrkdwn(f) for f in fields[:10]]})
    link = _timeline_link(data, base_url)
    if link:
        blocks.append({"type": "context", "elements": [_mrkdwn(link)]})
    return json.dumps({"text": _cut(text), "blocks": blocks}).encode()


def money(amount_minor: int | None, currency: str | None) -> str:
    """``49.00 USD`` from 4900 minor units (the currency's own exponent); "?" if unknown."""
    if amount_minor is None:
        return "?"
    code = (currency or "").upper()
    exponent = 0 if code in _NO_MINOR else 3 if code in _THREE_MINOR else 2
    value = Decimal(amount_minor).scaleb(-exponent)
    return f"{value:,.{exponent}f} {code}".strip()


def escape(text: object) -> str:
    """Text as Slack mrkdwn shows it literally (its three control characters escaped)."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


Rendered = tuple[str, list[str]]


def _escalated(kind: str, tenant: str, data: Mapping[str, Any]) -> Rendered:
    head = (
        f":warning: *Escalation* for invoice `{escape(data.get('invoice_ref'))}` "
        f"({escape(tenant)}): {escape(data.get('reason') or 'needs a person')}"
    )
    return head, _invoice_fields(data)


def _alert(kind: str, tenant: str, data: Mapping[str, Any]) -> Rendered:
    verb = "resolved" if kind == "alert.resolved" else "opened"
    head = (
        f"{_ICON.get(kind, '')} *Alert {verb}*: {escape(data.get('kind'))} "
        f"({escape(data.get('severity'))}, {escape(tenant)})"
    )
    if data.get("message"):
        head += f"\n{escape(data['message'])}"
    fields = [
        f"*Observed*\n{escape(data.get('observed'))} (baseline {escape(data.get('baseline'))})",
        f"*Window*\n{escape(_window(data.get('window')))}",
    ]
    for name in ("provider", "decline_code", "customer_ref"):
        if data.get(name):
            fields.append(f"*{name.replace('_', ' ').capitalize()}*\n{escape(data[name])}")
    return head, fields


def _invoice_message(kind: str, tenant: str, data: Mapping[str, Any]) -> Rendered:
    head = f"*{escape(kind)}*: invoice `{escape(data.get('invoice_ref'))}` ({escape(tenant)})"
    return head, _invoice_fields(data)


_RENDER: dict[str, Callable[[str, str, Mapping[str, Any]], Rendered]] = {
    "recovery.escalated": _escalated,
    "alert.opened": _alert,
    "alert.resolved": _alert,
}


def _invoice_fields(data: Mapping[str, Any]) -> list[str]:
    rule = data.get("rule") or {}
    fields = [
        f"*State*\n{escape(data.get('state') or 'unknown')}",
        f"*Amount*\n{escape(money(data.get('amount_minor'), data.get('currency')))}",
        f"*Rule*\n{escape(rule.get('id'))} ({escape(rule.get('edition'))})",
    ]
    if data.get("customer_ref"):
        fields.append(f"*Customer*\n{escape(data['customer_ref'])}")
    if data.get("decline_category"):
        fields.append(f"*Decline*\n{escape(data['decline_category'])}")
    return fields


def _timeline_link(data: Mapping[str, Any], base_url: str) -> str | None:
    path = data.get("timeline")
    if not isinstance(path, str) or not path.startswith("/"):
        return None
    url = base_url.rstrip("/") + path
    if any(c in url for c in "<>| \n"):  # would end or break Slack's <url|label> syntax
        return None
    return f"<{url}|Invoice timeline>"  # a fixed label: a ref could hold a `|` or `>`


def _window(window: object) -> str:
    if not isinstance(window, Mapping):
        return "?"
    return f"{window.get('start')} to {window.get('end')}"


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": _mrkdwn(text)}


def _mrkdwn(text: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": _cut(text)}


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "…"
