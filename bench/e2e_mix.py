"""The webhooks of bench_e2e.py: a seeded, realistic stream of Stripe deliveries.

A sequence of episodes over many invoices: a failed attempt sends
``invoice.payment_failed`` (basil shape) and usually ``charge.failed`` and sometimes
``payment_intent.payment_failed`` (pre-basil shape, naming the invoice, with the card and the
decline), later attempts fail again (``attempt_count`` up to 4), some invoices are paid
(``invoice.paid``), and a few deliveries are redelivered unchanged (same event id), as Stripe
does. Three invoices share a card (Visa or Mastercard, distinct fingerprints). The same seed
gives the same bodies, so the paywatch run and the baseline get identical requests.

Bodies come from ``tests.builders.stripe`` once per shape (with placeholder ids) and are
filled in with ``bytes.replace``: cheap enough to build every body at send time.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import _repo  # noqa: F401  (puts tests.builders on sys.path)

from tests.builders.stripe import (
    BASIL_API_VERSION,
    FINGERPRINT,
    LEGACY_API_VERSION,
    stripe_body,
    stripe_charge_failed,
    stripe_event,
    stripe_invoice,
    stripe_payment_intent_failed,
)

INV, EVT, CUS, LAST4 = "@I@", "@E@", "@C@", "@L@"
REASONS = (  # (failure code, decline reason), weighted like a SaaS month of card declines
    *[("card_declined", "insufficient_funds")] * 10,
    *[("card_declined", "do_not_honor")] * 4,
    *[("card_declined", "generic_decline")] * 3,
    *[("expired_card", "expired_card")] * 2,
    ("card_declined", "lost_card"),
)
MAX_ATTEMPTS = 4


@dataclass(frozen=True)
class Webhook:
    """One delivery: its kind (for the report), Stripe event id and body."""

    kind: str
    event_id: str
    body: bytes


class Templates:
    """Bodies per shape with placeholder ids, built once from the test builders."""

    def __init__(self, created: int) -> None:
        self.created = created
        self._cache: dict[tuple[str, ...], bytes] = {}

    def get(self, *key: str) -> bytes:
        """The template of one shape (kind, then its variant fields)."""
        if key not in self._cache:
            self._cache[key] = self._build(*key)
        return self._cache[key]

    def _build(self, kind: str, *variant: str) -> bytes:
        inv, t = f"in_{INV}", self.created
        if kind in ("invoice.payment_failed", "invoice.paid"):
            paid = kind == "invoice.paid"
            invoice = stripe_invoice(
                basil=True, invoice_id=inv, customer=f"cus_{CUS}", subscription=f"sub_{CUS}",
                payment_intent=f"pi_{INV}", paid=paid, attempt_count=int(variant[0]), created=t)
            event = stripe_event(kind, invoice, event_id=f"evt_{EVT}", created=t)
        elif kind == "charge.failed":
            code, reason, brand = variant
            charge = stripe_charge_failed(
                basil=False, charge_id=f"ch_{EVT}", payment_intent=f"pi_{INV}",
                customer=f"cus_{CUS}", invoice=inv, failure_code=code, reason=reason,
                brand=brand, last4=LAST4, created=t)
            event = stripe_event(kind, charge, event_id=f"evt_{EVT}", created=t,
                                 api_version=LEGACY_API_VERSION)
        else:
            code, reason, brand = variant
            intent = stripe_payment_intent_failed(
                basil=False, intent_id=f"pi_{INV}", customer=f"cus_{CUS}", invoice=inv,
                code=code, decline_code=reason, brand=brand, last4=LAST4, created=t)
            event = stripe_event(kind, intent, event_id=f"evt_{EVT}", created=t,
                                 api_version=LEGACY_API_VERSION)
        assert event["api_version"] in (BASIL_API_VERSION, LEGACY_API_VERSION)
        return bytes(stripe_body(event))


@dataclass
class Invoice:
    """An open invoice of the stream: its number, card and attempts so far."""

    n: int
    attempts: int = 0


class Mix:
    """An endless seeded stream of `Webhook`s; `tag` keeps ids of different runs apart."""

    def __init__(self, seed: int, tag: str, created: int) -> None:
        self.rng = random.Random(seed)
        self.tag = tag
        self.templates = Templates(created)
        self.open: list[Invoice] = []
        self.recent: deque[Webhook] = deque(maxlen=500)
        self.pending: deque[Webhook] = deque()
        self.invoices = 0
        self.events = 0

    def __iter__(self) -> Iterator[Webhook]:
        while True:
            if not self.pending:
                self._episode()
            webhook = self.pending.popleft()
            self.recent.append(webhook)
            yield webhook

    def _episode(self) -> None:
        roll = self.rng.random()
        if roll < 0.04 and self.recent:
            again = self.rng.choice(self.recent)  # a redelivery: same event id, same body
            self.pending.append(Webhook("redelivery", again.event_id, again.body))
        elif roll < 0.62 or len(self.open) < 50:
            self.invoices += 1
            invoice = Invoice(self.invoices)
            self.open.append(invoice)
            self._attempt(invoice)
        elif roll < 0.84:
            self._attempt(self.open[self.rng.randrange(len(self.open))])
        else:
            invoice = self.open.pop(self.rng.randrange(len(self.open)))
            self._send("invoice.paid", invoice, str(invoice.attempts))

    def _attempt(self, invoice: Invoice) -> None:
        """A failed attempt: the invoice webhook, then the charge's and the intent's."""
        invoice.attempts += 1
        if invoice.attempts >= MAX_ATTEMPTS:
            self.open.remove(invoice)  # Stripe gives up; the saga carries on by itself
        self._send("invoice.payment_failed", invoice, str(invoice.attempts))
        code, reason = self.rng.choice(REASONS)
        brand = "visa" if (invoice.n // 3) % 5 < 3 else "mastercard"
        if self.rng.random() < 0.6:
            self._send("charge.failed", invoice, code, reason, brand)
        if self.rng.random() < 0.3:
            self._send("payment_intent.payment_failed", invoice, code, reason, brand)

    def _send(self, kind: str, invoice: Invoice, *variant: str) -> None:
        self.events += 1
        card = invoice.n // 3
        event_id = f"e2e{self.tag}{self.events:08d}"
        body = (
            self.templates.get(kind, *variant)
            .replace(INV.encode(), f"e2e{self.tag}{invoice.n:07d}".encode())
            .replace(CUS.encode(), f"e2e{self.tag}{invoice.n:07d}".encode())
            .replace(EVT.encode(), event_id.encode())
            .replace(LAST4.encode(), f"{card % 10_000:04d}".encode())
            .replace(FINGERPRINT.encode(), f"fpe2e{self.tag}{card:07d}"[:16].encode())
        )
        self.pending.append(Webhook(kind, f"evt_{event_id}", body))
