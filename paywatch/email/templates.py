"""What an email says: a subject, a text body and an HTML body per template name.

Templates are Jinja2 in a ``SandboxedEnvironment`` (a tenant's template cannot reach Python
attributes such as ``__class__``, call unsafe methods or build huge ranges) with
``StrictUndefined`` (a misspelt variable is an error, not an empty string). The HTML body
is autoescaped, so a customer or invoice ref cannot inject markup; the text body and the
subject are not (they are not markup). The subject is made one line.

Built-in templates cover every customer-facing name of the tenant policy
(``BUILTIN``); a tenant overrides any name, or adds its own, with ``paywatch template
set`` (table ``email_templates``). Without an HTML body of its own a template gets the text
body, escaped, in a ``<pre>``. Every problem of a tenant's template, at ``set`` time or when
an email is rendered, is a ``TemplateError`` naming the template, part and line: the
dispatcher records it as the email's error, it never stops the dispatcher.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError
from jinja2 import Template as JinjaTemplate
from jinja2 import TemplateError as JinjaError
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import escape

from paywatch.errors import ConfigError
from paywatch.providers.money import exponent

MAX_SUBJECT = 998
MAX_TEXT = 20_000
MAX_HTML = 100_000
MAX_OUTPUT = 200_000
"""Rendered characters of one part at most (a loop in a template cannot make a huge mail)."""
NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
PARTS = ("subject", "text", "html")


class TemplateError(ConfigError):
    """A template that does not compile or render; the message says which and where."""


@dataclass(frozen=True)
class Template:
    """A template's sources (``html`` None: the text body, escaped)."""

    subject: str
    text: str
    html: str | None = None


@dataclass(frozen=True)
class Rendered:
    """One email's subject and bodies."""

    subject: str
    text: str
    html: str


_FOOTER = (
    "\n\n--\n{{ company }}\n"
    "You receive this because you are a customer of {{ company }}. "
    "Stop these emails: {{ unsubscribe_url }}\n"
)
BUILTIN: dict[str, Template] = {
    "payment_failed": Template(
        "Your payment of {{ amount }} {{ currency }} did not go through",
        "Hello {{ customer_name }},\n\nwe could not collect {{ amount }} {{ currency }} for "
        "invoice {{ invoice_ref }}. We will try again; to avoid an interruption, please check "
        "your payment method:\n\n{{ update_url }}" + _FOOTER,
    ),
    "payment_reminder": Template(
        "Reminder: invoice {{ invoice_ref }} is still unpaid",
        "Hello {{ customer_name }},\n\ninvoice {{ invoice_ref }} ({{ amount }} {{ currency }}) "
        "is still unpaid. Please update your payment method:\n\n{{ update_url }}" + _FOOTER,
    ),
    "payment_final_reminder": Template(
        "Final reminder: invoice {{ invoice_ref }}",
        "Hello {{ customer_name }},\n\nthis is our last reminder about invoice "
        "{{ invoice_ref }} ({{ amount }} {{ currency }}). Please update your payment method "
        "now to keep your service:\n\n{{ update_url }}" + _FOOTER,
    ),
    "update_payment_method": Template(
        "Please update your payment method",
        "Hello {{ customer_name }},\n\nyour payment method for invoice {{ invoice_ref }} "
        "({{ amount }} {{ currency }}) needs to be updated:\n\n{{ update_url }}" + _FOOTER,
    ),
    "card_expiring": Template(
        "Your card is about to expire",
        "Hello {{ customer_name }},\n\nthe card we charge for your subscription expires "
        "before the next renewal. Please add a new one:\n\n{{ update_url }}" + _FOOTER,
    ),
}
"""The customer-facing template names of the tenant policy's defaults (ESCALATE's
``recovery_escalation`` goes to Slack or webhooks, never to customers)."""

SAMPLE: dict[str, Any] = {
    "company": "Acme",
    "customer_name": "Ada Lovelace",
    "customer_ref": "cus_sample",
    "invoice_ref": "in_sample",
    "amount": "12.34",
    "amount_minor": 1234,
    "currency": "EUR",
    "provider": "stripe",
    "due_date": "2026-03-02",
    "template": "payment_failed",
    "update_url": "https://billing.example/update?token=sample",
    "unsubscribe_url": "https://paywatch.example/v1/email/unsubscribe?token=sample",
}
"""The variables every template gets (preview uses these; a send fills them for real)."""


def _environment(autoescape: bool) -> SandboxedEnvironment:
    return SandboxedEnvironment(
        autoescape=autoescape, undefined=StrictUndefined, keep_trailing_newline=True
    )


_TEXT = _environment(autoescape=False)
_HTML = _environment(autoescape=True)


def amount_text(amount_minor: int | None, currency: str | None) -> str:
    """An amount in major units as text, by the currency's minor digits (``12.34``)."""
    if amount_minor is None:
        return ""
    digits = exponent(currency or "")
    return f"{Decimal(amount_minor).scaleb(-digits):.{digits}f}"


def context(
    *,
    company: str,
    customer_name: str | None,
    customer_ref: str | None,
    invoice_ref: str,
    amount_minor: int | None,
    currency: str | None,
    provider: str | None,
    due_at: datetime | None,
    template: str,
    update_url: str,
    unsubscribe_url: str,
) -> dict[str, Any]:
    """The variables of one email (the names of SAMPLE)."""
    return {
        "company": company,
        "customer_name": customer_name or "customer",
        "customer_ref": customer_ref or "",
        "invoice_ref": invoice_ref,
        "amount": amount_text(amount_minor, currency),
        "amount_minor": amount_minor,
        "currency": currency or "",
        "provider": provider or "",
        "due_date": due_at.date().isoformat() if due_at else "",
        "template": template,
        "update_url": update_url,
        "unsubscribe_url": unsubscribe_url,
    }


@functools.lru_cache(maxsize=512)
def _compiled(autoescape: bool, source: str) -> JinjaTemplate:
    """A template compiled once per source text (compiling costs far more than rendering);
    an edited template is a new source, so it is never served stale."""
    return (_HTML if autoescape else _TEXT).from_string(source)


def _render(env: SandboxedEnvironment, name: str, part: str, source: str, values: Any) -> str:
    try:
        out = _compiled(env is _HTML, source).render(values)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"template {name}, {part}: line {exc.lineno}: {exc.message}") from exc
    except JinjaError as exc:
        raise TemplateError(f"template {name}, {part}: {exc.message or exc}") from exc
    except (ArithmeticError, TypeError, ValueError, LookupError, RecursionError) as exc:
        raise TemplateError(f"template {name}, {part}: {type(exc).__name__}: {exc}") from exc
    if len(out) > MAX_OUTPUT:
        raise TemplateError(f"template {name}, {part}: renders over {MAX_OUTPUT} characters")
    return out


def render(name: str, template: Template, values: Mapping[str, Any]) -> Rendered:
    """The email ``template`` makes of ``values``; TemplateError naming what failed."""
    subject = " ".join(_render(_TEXT, name, "subject", template.subject, values).split())
    if not subject:
        raise TemplateError(f"template {name}, subject: renders empty")
    text = _render(_TEXT, name, "text", template.text, values)
    if template.html is None:
        html = f"<pre>{escape(text)}</pre>"
    else:
        html = _render(_HTML, name, "html", template.html, values)
    return Rendered(subject[:MAX_SUBJECT], text, html)


def check(name: str, template: Template) -> Rendered:
    """Refuse a template before it is stored: bad name, size, syntax, or a variable that
    is not one of SAMPLE's (rendered with the sample values, so the same error a send gets)."""
    if not re.fullmatch(NAME_PATTERN, name):
        raise TemplateError(
            f"template name {name!r}: 1-64 lowercase letters, digits or '_', from a letter"
        )
    sizes = (("subject", template.subject, MAX_SUBJECT), ("text", template.text, MAX_TEXT))
    for part, source, limit in (*sizes, ("html", template.html or "x", MAX_HTML)):
        if not source or len(source) > limit or "\x00" in source:
            raise TemplateError(
                f"template {name}, {part}: 1 to {limit} characters, no NUL character"
            )
    return render(name, template, SAMPLE)
