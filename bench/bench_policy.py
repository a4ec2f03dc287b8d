"""Saga decisions per second of the pure recovery policy, against a model_copy baseline.

Usage: .venv/bin/python bench/bench_policy.py [--invoices 1500] [--rounds 7] [--seed 7]

1. Builds a realistic mixed stream (reference/recovery-rules.md §3c, §4): failures from
   Stripe, PayPal, Braintree (they retry by themselves: their own retries arrive as more
   failures), Adyen, Checkout.com, Authorize.Net and the generic provider (paywatch
   retries them); Stripe's three webhooks per attempt; about 3/4 soft declines, the rest
   hard, action, fraud, Mastercard advice codes and no advice; cards shared by invoices;
   method updates, successes, cancellations, 5 % duplicate deliveries, late deliveries.
2. Runs it once through the in-memory shell (timers fired when due, every paywatch retry
   answered by an outcome event) and records every ``decide`` call: the state with its
   card ledger, the input, ``now``.
3. Replays the recorded calls: ``decide`` alone, and, in the same round, a trivial
   function doing ``state.model_copy(update=...)`` over the same inputs. Prints the median
   of the rounds and the ratio (meaningful on a noisy machine: both see the same noise).
"""

from __future__ import annotations

import argparse
import heapq
import random
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from paywatch.recovery import Decision, Saga, SagaInput, TenantPolicy, decide
from paywatch.recovery.memory_shell import MemoryShell
from paywatch.schemas.models import (
    Decline,
    DeclineCategory,
    EventType,
    PaymentEvent,
    PaymentMethod,
    RecoveryCommand,
)

T0 = datetime(2026, 11, 2, tzinfo=UTC)
PROVIDERS = {
    "stripe": 40,
    "paypal": 15,
    "braintree": 10,
    "adyen": 10,
    "checkout": 10,
    "authorizenet": 8,
    "generic": 7,
}
SOFT, HARD = DeclineCategory.SOFT, DeclineCategory.HARD
ACTION, FRAUD, UNKNOWN = DeclineCategory.ACTION, DeclineCategory.FRAUD, DeclineCategory.UNKNOWN
# (weight, category, Visa response code, Mastercard advice code)
DECLINES = [
    (40, SOFT, "05", None),
    (34, SOFT, "51", None),
    (4, SOFT, "51", "02"),
    (3, SOFT, "51", "25"),
    (5, HARD, "43", None),
    (3, HARD, "51", "03"),
    (1, HARD, "51", "21"),
    (4, ACTION, "54", None),
    (2, ACTION, "51", "01"),
    (2, FRAUD, "59", None),
    (2, UNKNOWN, None, None),
]

Call = tuple[Saga | None, SagaInput, datetime]


@dataclass
class Recorder(MemoryShell):
    """The in-memory shell, recording every decide call it makes."""

    calls: list[Call] = field(default_factory=list)

    def apply(self, event: SagaInput, now: datetime) -> Decision:
        """Record the call (state as decide sees it), then apply it."""
        self.calls.append((self.state_for((event.tenant, event.invoice_ref), event), event, now))
        return super().apply(event, now)


def pick(rng: random.Random, weighted: dict[str, int]) -> str:
    return rng.choices(list(weighted), list(weighted.values()))[0]


def decline(rng: random.Random, network: str) -> Decline:
    _, category, code, mac = rng.choices(DECLINES, [d[0] for d in DECLINES])[0]
    return Decline(
        category=category,
        network=network,
        network_code=code,
        advice_code=mac if network == "mastercard" else None,
    )


def stream(rng: random.Random, invoices: int) -> list[tuple[datetime, PaymentEvent]]:
    """(delivery time, event) of a month of failures, retries and their outcomes."""
    cards = [
        PaymentMethod(
            brand=rng.choice(["visa", "visa", "mastercard", "amex"]), fingerprint=f"fp{i}"
        )
        for i in range(invoices * 3 // 4)
    ]
    out: list[tuple[datetime, PaymentEvent]] = []
    for n in range(invoices):
        provider, card = pick(rng, PROVIDERS), rng.choice(cards)
        start = T0 + timedelta(minutes=rng.randrange(30 * 24 * 60))
        base: dict[str, Any] = {
            "tenant": "acme",
            "provider": provider,
            "source_type": "bench",
            "invoice_ref": f"in_{n}",
            "customer_ref": f"cus_{n}",
            "amount_minor": rng.choice([900, 2900, 4900, 9900]),
            "currency": "USD",
        }
        own_retries = provider in ("stripe", "paypal", "braintree")
        at = start
        for attempt in range(1, (rng.randint(2, 4) if own_retries else 1) + 1):
            failure = decline(rng, card.brand or "visa")
            for sibling in range(3 if provider == "stripe" else 1):
                event = PaymentEvent(
                    event_id=f"e{n}.{attempt}.{sibling}",
                    type=EventType.PAYMENT_FAILED,
                    occurred_at=at + timedelta(seconds=sibling),
                    decline=failure,
                    attempt=attempt if sibling == 0 else None,
                    payment_method=card,
                    provider_retry_at=at + 3 * timedelta(days=1) if own_retries else None,
                    **base,
                )
                out.append((at + timedelta(minutes=rng.choice([0, 1, 5, 90])), event))
            at += timedelta(days=rng.randint(2, 5))
        roll = rng.random()
        if roll < 0.45 or roll > 0.9:
            kind = {True: EventType.PAYMENT_SUCCEEDED, False: EventType.PAYMENT_METHOD_UPDATED}[
                roll < 0.45
            ]
            end = start + timedelta(hours=rng.randint(6, 24 * 20))
            out.append(
                (
                    end,
                    PaymentEvent(
                        event_id=f"e{n}.end",
                        type=kind,
                        occurred_at=end,
                        payment_method=card,
                        **base,
                    ),
                )
            )
        elif roll < 0.5:
            end = start + timedelta(days=rng.randint(3, 20))
            event = PaymentEvent(
                event_id=f"e{n}.end", type=EventType.SUBSCRIPTION_CANCELED, occurred_at=end, **base
            )
            out.append((end, event))
    duplicates = [(at + timedelta(minutes=7), e) for at, e in out if rng.random() < 0.05]
    return sorted(out + duplicates, key=lambda pair: (pair[0], pair[1].event_id))


def outcome(rng: random.Random, cmd: RecoveryCommand, card_network: str) -> PaymentEvent:
    """What the executor reports for a paywatch retry: about a third succeed."""
    ok = rng.random() < 0.33
    return PaymentEvent(
        event_id=f"out.{cmd.command_id}",
        type=EventType.PAYMENT_SUCCEEDED if ok else EventType.PAYMENT_FAILED,
        tenant=cmd.tenant,
        provider=cmd.provider or "paywatch",
        source_type="paywatch.retry",
        occurred_at=cmd.due_at,
        invoice_ref=cmd.invoice_ref,
        amount_minor=cmd.amount_minor,
        currency=cmd.currency,
        decline=None if ok else decline(rng, card_network),
        paywatch_retry=True,
    )


def record(invoices: int, seed: int) -> tuple[Recorder, Counter[str]]:
    """Run the stream through the shell once; the recorder holds every decide call."""
    rng, policy = random.Random(seed), TenantPolicy()
    shell = Recorder(policy)
    queue = [(at, i, e) for i, (at, e) in enumerate(stream(rng, invoices))]
    heapq.heapify(queue)
    seq, stats = len(queue), Counter[str]()
    while queue:
        at, _, event = heapq.heappop(queue)
        decisions = [*shell.fire_due(at), shell.receive(event, at)]
        for cmd in (c for d in decisions for c in d.commands):
            stats[cmd.type.value] += 1
            if cmd.type.value == "RETRY_PAYMENT":
                seq += 1
                heapq.heappush(queue, (at + timedelta(minutes=30), seq, outcome(rng, cmd, "visa")))
    end = T0 + timedelta(days=90)
    shell.fire_due(end)
    stats.update(str(s.status) for s in shell.sagas.values())
    return shell, stats


def replay(calls: list[Call], policy: TenantPolicy) -> float:
    """Seconds to decide every recorded call."""
    start = time.perf_counter()
    for state, event, now in calls:
        decide(state, event, now, policy)
    return time.perf_counter() - start


def baseline(calls: list[Call]) -> float:
    """Seconds for a trivial function copying the state with one field changed."""
    start = time.perf_counter()
    for state, _, now in calls:
        if state is not None:
            state.model_copy(update={"last_event_at": now})
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    shell, stats = record(args.invoices, args.seed)
    calls = shell.calls
    kinds = Counter(type(event).__name__ for _, event, _ in calls)
    policy_runs, base_runs = [], []
    for _ in range(args.rounds):
        policy_runs.append(replay(calls, shell.policy))
        base_runs.append(baseline(calls))
    rate = len(calls) / statistics.median(policy_runs)
    base = len(calls) / statistics.median(base_runs)
    print(f"stream: {args.invoices} invoices, {len(calls)} decide calls {dict(kinds)}")
    print(f"outcome: {dict(sorted(stats.items()))}")
    median = f"median of {args.rounds}"
    print(f"decide:     {rate:10,.0f} decisions/s  ({1e6 / rate:6.1f} µs each, {median})")
    print(f"model_copy: {base:10,.0f} calls/s      ({1e6 / base:6.1f} µs each, same calls)")
    print(f"ratio: decide costs {base / rate:.1f} model_copy calls")


if __name__ == "__main__":
    main()
