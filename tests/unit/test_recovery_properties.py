"""Properties of decide() over random histories, checked by an independent replay.

A random world (cards shared by invoices, mixed providers, a random tenant policy and a
policy change) happens on a timeline: provider attempts, each reported by one to three
webhooks (numbered or not, with or without the card), delivered late, out of order and
twice; method updates; successes; cancellations; failures after a success (new episodes).
The in-memory shell delivers them, fires timers (on time, or late), and the executor
answers every RETRY_PAYMENT with a random outcome. Each event comes with a risk band for its
customer and the policy may turn ``high_risk`` on: asking for a new payment method and
escalating earlier are decision inputs like any other, and no network limit may move.

The checker below does not use the policy's code: it keeps its own record of what was
*known* when each retry was emitted (attempts whose webhooks had arrived, retries already
emitted, declines delivered), and re-applies the rules from reference/recovery-rules.md.

Termination, precisely: once deliveries stop, firing each saga's earliest pending timer
at its due time closes every saga (recovered, exhausted or canceled) within 60 firings,
because every open saga holds exactly one deadline timer and nothing is ever scheduled
after it.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paywatch.recovery import Decision, Saga, TenantPolicy, TimerFired, TimerPurpose
from paywatch.recovery.memory_shell import MemoryShell
from paywatch.schemas.models import (
    CommandType,
    Decline,
    DeclineCategory,
    EventType,
    PaymentEvent,
    PaymentMethod,
    RecoveryCommand,
    RiskBand,
    SagaState,
)

T0 = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
S = SagaState
DAY = timedelta(days=1)

# --- the rules, copied from reference/recovery-rules.md (not imported from the policy) ----

VISA_LIMIT = {"visa-core-rules-2026-04-18": 20, "visa-rules-2021-04": 15}
VISA_LIMIT["visa-categories-pre-2021-04"] = 15
MC_PER_DAY = {"mastercard-tpe-2022-10": 10, "mastercard-excessive-2019": 20}
_CAT1 = set("04 07 12 14 15 41 43 46 57 R0 R1 R3".split())
_CAT3 = set("54 55 82 6P N7 1A 70".split())
VISA_NEVER = {e: _CAT1 for e in VISA_LIMIT} | {
    "visa-categories-pre-2021-04": (_CAT1 - {"14"}) | {"03", "62", "78", "93"}
}
VISA_FIX = {e: _CAT3 for e in VISA_LIMIT} | {"visa-categories-pre-2021-04": _CAT3 | {"14"}}
MAC_NEVER, MAC_FIX = {"03", "21"}, {"01", "04"}
MAC_WAIT = {"02": 72, "24": 1, "25": 24, "26": 48, "27": 96, "28": 144, "29": 192, "30": 240}
ALLOWED = (
    {(None, S.failed), (S.failed, S.retrying), (S.failed, S.awaiting_customer)}
    | {(S.retrying, S.awaiting_customer), (S.awaiting_customer, S.retrying)}
    | {(S.retrying, S.retrying), (S.awaiting_customer, S.awaiting_customer)}
    | {
        (a, b)
        for a in (S.failed, S.retrying, S.awaiting_customer)
        for b in (S.recovered, S.exhausted, S.canceled)
    }
)
TERMINAL = {S.recovered, S.exhausted, S.canceled}
CLOSING = (EventType.PAYMENT_SUCCEEDED, EventType.SUBSCRIPTION_CANCELED)


def visa_applies(network: str | None) -> bool:
    return network in (None, "visa", "amex")  # amex: no Visa table, but Visa's counters


def mc_applies(network: str | None) -> bool:
    return network in (None, "mastercard", "amex")


def never(d: Decline, edition: str) -> bool:
    """The card may not be tried again (30 days for other invoices, the episode for this one)."""
    visa = d.network in (None, "visa") and d.network_code in VISA_NEVER[edition]
    mc = d.network in (None, "mastercard") and d.advice_code in MAC_NEVER
    return d.category in (DeclineCategory.HARD, DeclineCategory.FRAUD) or visa or mc


def needs_fix(d: Decline, edition: str) -> bool:
    """The customer must update the payment method before any retry."""
    visa_code = d.network_code if d.network in (None, "visa") else None
    mac = d.advice_code if d.network in (None, "mastercard") else None
    advised = visa_code is not None or (
        mac is not None and (mac in MAC_WAIT or mac in MAC_NEVER | MAC_FIX)
    )
    unknown = d.category is DeclineCategory.UNKNOWN and not advised
    return (
        d.category is DeclineCategory.ACTION
        or unknown
        or visa_code in VISA_FIX[edition]
        or mac in MAC_FIX
    )


def wait(d: Decline) -> timedelta:
    mac = d.advice_code if d.network in (None, "mastercard") else None
    return timedelta(hours=MAC_WAIT.get(mac or "", 0))


# --- the world ------------------------------------------------------------------------

PROVIDERS = ["stripe", "paypal", "adyen", "generic", "authorizenet"]
DECLINES = [
    (DeclineCategory.SOFT, "51", None),
    (DeclineCategory.SOFT, "05", None),
    (DeclineCategory.UNKNOWN, "51", None),
    (DeclineCategory.UNKNOWN, None, None),
    (DeclineCategory.HARD, "43", None),
    (DeclineCategory.FRAUD, "59", None),
    (DeclineCategory.SOFT, "62", None),
    (DeclineCategory.SOFT, "14", None),
    (DeclineCategory.ACTION, "54", None),
    (DeclineCategory.SOFT, "51", "02"),
    (DeclineCategory.SOFT, "51", "24"),
    (DeclineCategory.SOFT, "51", "28"),
    (DeclineCategory.ACTION, "51", "01"),
    (DeclineCategory.SOFT, "51", "03"),
    (DeclineCategory.HARD, "51", "21"),
    (DeclineCategory.SOFT, "51", "04"),
]


@dataclass(frozen=True)
class Card:
    fingerprint: str
    network: str | None

    def method(self) -> PaymentMethod:
        return PaymentMethod(brand=self.network, last4="4242", fingerprint=self.fingerprint)

    def key(self) -> str:
        return f"acme/fp/{self.fingerprint}"


@dataclass(frozen=True)
class Invoice:
    ref: str
    card: Card
    provider: str
    amount: int
    anonymous: bool  # some of its failure webhooks do not name the card


def decline(card: Card, choice: int) -> Decline:
    category, code, mac = DECLINES[choice]
    return Decline(category=category, network=card.network, network_code=code, advice_code=mac)


RETRYABLE = [0, 1, 2, 9, 10, 11, 11]  # indexes of DECLINES that allow a retry, weighted
declines = st.one_of(st.sampled_from(RETRYABLE), st.integers(0, len(DECLINES) - 1))


@st.composite
def policies(draw: st.DrawFn) -> TenantPolicy:
    days = sorted(draw(st.sets(st.integers(0, 20), min_size=1, max_size=8)))
    owners = {p: "paywatch" for p in PROVIDERS} if draw(st.integers(0, 4)) else {}
    return TenantPolicy.model_validate(
        {
            "window_days": draw(st.integers(21, 30)),
            "retry": {
                "days": days,
                "max_retries": draw(st.integers(0, 8)),
                "min_gap_hours": draw(st.sampled_from([1, 1, 24])),
            },
            "owners": owners,
            "visa_edition": draw(st.sampled_from(sorted(VISA_LIMIT))),
            "mastercard_edition": draw(st.sampled_from(sorted(MC_PER_DAY))),
            "final_action": draw(st.sampled_from(["cancel", "write_off", "leave_open"])),
            "escalation": draw(st.sampled_from([None, {"after_days": 5}])),
            "high_risk": draw(high_risk_options),
        }
    )


high_risk_options = st.sampled_from(
    [
        None,
        {},
        {"min_band": "CRITICAL", "escalate_after_days": 0, "request_update_first": False},
        {"escalate_after_days": None},
        {"escalate_after_days": 1},
    ]
)
bands = st.sampled_from(
    [None, None, RiskBand.LOW, RiskBand.MEDIUM, RiskBand.HIGH, RiskBand.CRITICAL]
)
"""The customer's band in the risk view when an event is decided (None: no score)."""


LOST = -1
"""A report delay meaning: this webhook never arrives."""
KINDS = ["fail"] * 12 + ["update", "update", "success", "cancel", "overdue", "noise"]


@dataclass(frozen=True)
class Happening:
    kind: str
    invoice: int
    gap_hours: int
    decline: int
    reports: tuple[tuple[bool, bool, int], ...]  # per webhook: numbered, has card, delay min
    announce: bool  # the provider says when it retries
    band: RiskBand | None = None  # the customer's band when its events are decided


happenings = st.builds(
    Happening,
    kind=st.sampled_from(KINDS),
    invoice=st.integers(0, 3),
    gap_hours=st.one_of(st.integers(1, 3), st.integers(1, 60)),
    decline=declines,
    reports=st.lists(
        st.tuples(st.booleans(), st.booleans(), st.sampled_from([0, 1, 30, 600, 3000, LOST])),
        min_size=1,
        max_size=3,
    ).map(tuple),
    announce=st.booleans(),
    band=bands,
)


@dataclass
class World:
    invoices: list[Invoice]
    policy: TenantPolicy
    happenings: list[Happening]
    outcomes: list[int | None]  # decline index for a failed retry, None: it succeeds
    change: tuple[int, TenantPolicy] | None
    on_time: bool  # does the shell fire timers when due (else only when events come)
    outage: tuple[int, int, frozenset[str]] | None = None
    """Deliveries [a, b) during which these providers have an open failure-spike alert."""


@st.composite
def worlds(draw: st.DrawFn) -> World:
    cards = [
        Card(f"fp{i}", draw(st.sampled_from(["visa", "mastercard", None, "amex"])))
        for i in range(draw(st.integers(1, 2)))
    ]
    invoices = [
        Invoice(
            f"in_{i}",
            draw(st.sampled_from(cards)),
            draw(st.sampled_from(PROVIDERS)),
            draw(st.sampled_from([4900, 9900])),
            draw(st.booleans()),
        )
        for i in range(4)
    ]
    change = draw(st.none() | st.tuples(st.integers(0, 20), policies()))
    return World(
        invoices,
        draw(policies()),
        draw(st.lists(happenings, min_size=1, max_size=30)),
        draw(st.lists(st.none() | declines, max_size=40)),
        change,
        draw(st.booleans()),
        draw(outages(invoices)),
    )


def outages(invoices: list[Invoice]) -> st.SearchStrategy[tuple[int, int, frozenset[str]] | None]:
    """A provider outage alert open for a stretch of the deliveries (held retries)."""
    names = sorted({i.provider for i in invoices})
    return st.none() | st.tuples(
        st.integers(0, 20), st.integers(1, 30), st.frozensets(st.sampled_from(names), min_size=1)
    ).map(lambda t: (t[0], t[0] + t[1], t[2]))


@st.composite
def busy_worlds(draw: st.DrawFn) -> World:
    """One card shared by four invoices, failing every few hours: the counters must bind."""
    card = Card("fp0", draw(st.sampled_from(["visa", "mastercard", None])))
    providers = st.sampled_from(["adyen", "generic", "authorizenet"])
    invoices = [Invoice(f"in_{i}", card, draw(providers), 4900, False) for i in range(4)]
    policy = TenantPolicy.model_validate(
        {
            "retry": {"days": list(range(15)), "max_retries": 8, "min_gap_hours": 1},
            "visa_edition": draw(st.sampled_from(sorted(VISA_LIMIT))),
            "mastercard_edition": draw(st.sampled_from(sorted(MC_PER_DAY))),
            "high_risk": draw(high_risk_options),
        }
    )
    attempts = st.builds(
        Happening,
        kind=st.just("fail"),
        invoice=st.integers(0, 3),
        gap_hours=st.integers(1, 4),
        decline=st.sampled_from([0, 1, 2, 9, 10, 11]),
        # Some attempts are never reported: only the provider's counter tells.
        reports=st.sampled_from(
            [((True, True, 0),)] * 3 + [((True, True, LOST),), ((True, True, 300),)]
        ),
        announce=st.just(False),
        band=bands,
    )
    successes = st.builds(
        Happening,
        kind=st.just("success"),
        invoice=st.integers(0, 3),
        gap_hours=st.integers(1, 4),
        decline=st.just(0),
        reports=st.just(((False, True, 0),)),
        announce=st.just(False),
    )
    happenings = draw(st.lists(attempts | successes, min_size=10, max_size=40))
    outage = draw(outages(invoices))
    return World(invoices, policy, happenings, [0] * 80, None, draw(st.booleans()), outage)


# --- the independent record of what was known -----------------------------------------


Fact = tuple[str, str, datetime, int]
"""(card, invoice, when, amount) of one attempt."""


@dataclass
class Truth:
    """What had happened, and which of it had been delivered, per card and invoice."""

    attempts: list[Fact] = field(default_factory=list)
    known: set[int] = field(default_factory=set)
    by_number: dict[tuple[str, int], int] = field(default_factory=dict)
    stops: list[tuple[str, str, datetime]] = field(default_factory=list)  # card, invoice, at
    fix: dict[str, bool] = field(default_factory=lambda: defaultdict(bool))
    not_before: dict[str, datetime] = field(default_factory=dict)
    reopenable: set[str] = field(default_factory=set)  # a failure after its close was generated

    def deliver(self, d: Delivery, card: str, edition: str) -> None:
        event, inv = d.event, d.event.invoice_ref
        if d.attempt is not None:
            self.known.add(d.attempt)
        for (ref, k), idx in self.by_number.items():
            if ref == inv and d.number is not None and k < d.number:
                self.known.add(idx)  # the provider's counter says it happened
        if event.type is EventType.PAYMENT_METHOD_UPDATED:
            self.fix[inv] = False
        if event.type is EventType.PAYMENT_FAILED and event.decline is not None:
            dec = event.decline
            if never(dec, edition):
                self.stops.append((card, inv, event.occurred_at))
            self.fix[inv] = self.fix[inv] or needs_fix(dec, edition)
            if wait(dec):
                later = event.occurred_at + wait(dec)
                self.not_before[inv] = max(self.not_before.get(inv, later), later)


def visible(world: World, retrier: Invoice, source: str) -> bool:
    """Can the policy see a fact of invoice `source` when `retrier` retries?

    Its own facts, always; another invoice's only when both name their card in every
    failure webhook (an unnamed card cannot be matched across invoices).
    """
    other = next(i for i in world.invoices if i.ref == source)
    return source == retrier.ref or not (retrier.anonymous or other.anonymous)


def check_retry(
    cmd: RecoveryCommand, now: datetime, world: World, truth: Truth, policy: TenantPolicy
) -> None:
    """No emitted retry breaks a network rule or the tenant's policy (as known at `now`)."""
    inv = next(i for i in world.invoices if i.ref == cmd.invoice_ref)
    card, network = inv.card.key(), inv.card.network
    assert cmd.due_at <= now
    assert policy.owner(inv.provider).value == "paywatch", "retried a provider-owned invoice"
    known = [truth.attempts[i] for i in truth.known]
    # Several episodes: the per-episode checks do not apply; a card-level one does when the
    # invoice always names its card (else episodes may have counted on different keys).
    one_episode = inv.ref not in truth.reopenable
    if one_episode or not inv.anonymous:
        check_card(card, network, inv, now, world, truth, policy, known)
    if not one_episode:
        return
    stops = [(i, t) for c, i, t in truth.stops if c == card and i == inv.ref]
    assert not stops, "retried after a never-retry decline"
    assert not truth.fix[inv.ref], "retried before the payment method was updated"
    assert now >= truth.not_before.get(inv.ref, now), "retried before the network's wait"
    own = [a for a in known if a[1] == inv.ref]
    assert len(own) - 1 < policy.retry.max_retries, "tenant budget"


def check_card(
    card: str,
    network: str | None,
    inv: Invoice,
    now: datetime,
    world: World,
    truth: Truth,
    policy: TenantPolicy,
    known: list[Fact],
) -> None:
    """The card-level rules: Visa and Mastercard counters, stops of any invoice (30 days)."""
    on_card = [a for a in known if a[0] == card and visible(world, inv, a[1])]
    month = [a for a in on_card if now - 30 * DAY < a[2] <= now]
    if visa_applies(network):
        assert len(month) <= VISA_LIMIT[policy.visa_edition], "Visa reattempts"
    if mc_applies(network):
        day = [a for a in on_card if now - DAY < a[2] <= now]
        assert len(day) <= MC_PER_DAY[policy.mastercard_edition] - 1, "Mastercard 24 h"
        same = [a for a in month if a[3] == inv.amount]
        assert len(same) <= 34, "Mastercard 35 in 30 days"
    stops = [t for c, i, t in truth.stops if c == card and visible(world, inv, i)]
    assert not [t for t in stops if now - 30 * DAY < t <= now], "retried a stopped card"


# --- the run --------------------------------------------------------------------------


@dataclass(order=True)
class Delivery:
    at: datetime
    seq: int
    event: PaymentEvent = field(compare=False)
    attempt: int | None = field(compare=False, default=None)
    number: int | None = field(compare=False, default=None)
    band: RiskBand | None = field(compare=False, default=None)


def customer(inv: Invoice) -> str:
    """Invoices 0 and 1 belong to one customer, 2 and 3 to another."""
    return f"cus_{int(inv.ref.removeprefix('in_')) // 2}"


def timeline(world: World, truth: Truth) -> list[Delivery]:
    out: list[Delivery] = []
    clock, numbers, closed = T0, defaultdict[str, int](int), set[str]()
    for h in world.happenings:
        clock += timedelta(hours=h.gap_hours)
        inv = world.invoices[h.invoice]
        if h.kind == "fail":
            if inv.ref in closed:
                truth.reopenable.add(inv.ref)
            numbers[inv.ref] += 1
            k = numbers[inv.ref]
            truth.attempts.append((inv.card.key(), inv.ref, clock, inv.amount))
            idx = len(truth.attempts) - 1
            truth.by_number[(inv.ref, k)] = idx
            for j, (numbered, named, delay) in enumerate(h.reports):
                with_card = named or not inv.anonymous
                at = clock + timedelta(seconds=10 * j)
                event = PaymentEvent(
                    event_id=f"e{len(out)}",
                    type=EventType.PAYMENT_FAILED,
                    tenant="acme",
                    provider=inv.provider,
                    source_type="test",
                    occurred_at=at,
                    customer_ref=customer(inv),
                    invoice_ref=inv.ref,
                    amount_minor=inv.amount,
                    currency="USD",
                    decline=decline(inv.card, h.decline),
                    attempt=k if numbered else None,
                    payment_method=inv.card.method() if with_card else None,
                    provider_retry_at=clock + 3 * DAY if numbered and h.announce else None,
                )
                if delay == LOST:
                    continue
                number = k if numbered else None
                out.append(
                    Delivery(at + timedelta(minutes=delay), len(out), event, idx, number, h.band)
                )
            continue
        kind = {
            "update": EventType.PAYMENT_METHOD_UPDATED,
            "success": EventType.PAYMENT_SUCCEEDED,
            "cancel": EventType.SUBSCRIPTION_CANCELED,
            "overdue": EventType.INVOICE_OVERDUE,
            "noise": EventType.CARD_EXPIRING,
        }[h.kind]
        if kind in (EventType.PAYMENT_SUCCEEDED, EventType.SUBSCRIPTION_CANCELED):
            closed.add(inv.ref)
        event = PaymentEvent(
            event_id=f"e{len(out)}",
            type=kind,
            tenant="acme",
            provider=inv.provider,
            source_type="test",
            occurred_at=clock,
            customer_ref=customer(inv),
            invoice_ref=inv.ref,
            payment_method=inv.card.method(),
        )
        delay = max(h.reports[0][2], 0)  # lifecycle events are always delivered
        at = clock + timedelta(minutes=delay)
        out.append(Delivery(at, len(out), event, band=h.band))
        if h.reports[-1][2] == 30:  # delivered twice
            out.append(Delivery(at + timedelta(minutes=5), len(out), event, band=h.band))
    return out


@dataclass
class Harness:
    world: World
    shell: MemoryShell
    truth: Truth
    queue: list[Delivery] = field(default_factory=list)
    outcomes: list[int | None] = field(default_factory=list)
    failed_at: dict[str, datetime] = field(default_factory=dict)  # newest failure delivered
    closed_at: dict[str, datetime] = field(default_factory=dict)  # newest closing event
    opened: set[str] = field(default_factory=set)
    seq: int = 10_000
    once: set[tuple[str, str, int]] = field(default_factory=set)
    """(kind, invoice, episode) of the commands an episode may send once: ESCALATE and the
    high-risk request for a new payment method."""

    def after(
        self, decision: Decision, now: datetime, cause: PaymentEvent | None, prior: Saga | None
    ) -> None:
        for t in decision.transitions:
            assert (t.from_state, t.to_state) in ALLOWED, (t.from_state, t.to_state)
            assert t.rule.id and t.rule.edition and t.rule.source
            if t.from_state is None:  # a saga opens: a second one for a key is a new episode
                if t.invoice_ref in self.opened:
                    self.truth.reopenable.add(t.invoice_ref)
                self.opened.add(t.invoice_ref)
        if prior is not None and prior.status in TERMINAL and decision.transitions:
            # A closed saga never reopens: only a new episode after a recovery, opened by a
            # failure newer than every failure and every closing event delivered before.
            assert (decision.transitions[0].from_state, prior.status) == (None, S.recovered)
            assert cause is not None and cause.type is EventType.PAYMENT_FAILED
            ref = cause.invoice_ref
            assert cause.occurred_at > max(self.failed_at.get(ref, T0), self.closed_at.get(ref, T0))
        episode = decision.new_state.episode if decision.new_state is not None else -1
        for cmd in decision.commands:
            assert cmd.rule.id and cmd.rule.edition and cmd.rule.source
            high = cmd.type is CommandType.REQUEST_PAYMENT_METHOD_UPDATE
            if cmd.type is CommandType.ESCALATE or (high and cmd.rule.id == "tenant.high_risk"):
                once = (cmd.type.value, cmd.invoice_ref, episode)
                assert once not in self.once, f"a second {once} in one episode"
                self.once.add(once)
            if cmd.type is CommandType.RETRY_PAYMENT:
                check_retry(cmd, now, self.world, self.truth, self.shell.policy)
                self.retried(cmd, now)
        state = decision.new_state
        if state is not None and state.is_open:
            assert sum(t.purpose is TimerPurpose.DEADLINE for t in state.pending) == 1

    def retried(self, cmd: RecoveryCommand, now: datetime) -> None:
        inv = next(i for i in self.world.invoices if i.ref == cmd.invoice_ref)
        self.truth.attempts.append((inv.card.key(), inv.ref, now, inv.amount))
        self.truth.known.add(len(self.truth.attempts) - 1)
        choice = self.outcomes.pop(0) if self.outcomes else None
        event = PaymentEvent(
            event_id=f"out_{cmd.command_id}",
            type=EventType.PAYMENT_SUCCEEDED if choice is None else EventType.PAYMENT_FAILED,
            tenant="acme",
            provider=inv.provider,
            source_type="paywatch.retry",
            occurred_at=cmd.due_at,
            customer_ref=customer(inv),
            invoice_ref=inv.ref,
            amount_minor=inv.amount,
            currency="USD",
            decline=None if choice is None else decline(inv.card, choice),
            payment_method=inv.card.method(),
            paywatch_retry=True,
        )
        self.seq += 1
        heapq.heappush(self.queue, Delivery(now + timedelta(minutes=45), self.seq, event))

    def fire(self, until: datetime) -> None:
        while True:
            due = self.shell.due(until)
            if not due:
                return
            due_at, (tenant, ref), timer_id = due[0]
            fired = TimerFired(tenant=tenant, invoice_ref=ref, timer_id=timer_id, due_at=due_at)
            self.after(self.shell.apply(fired, due_at), due_at, None, None)
            again = self.shell.apply(fired, due_at)  # the shell fires it twice: nothing happens
            assert (again.commands, again.transitions) == ((), ())

    def deliver(self, d: Delivery) -> None:
        now, event = d.at, d.event
        if self.world.on_time:
            self.fire(now)
        self.truth.deliver(d, self.world_card(event), self.shell.policy.visa_edition)
        ref = event.invoice_ref
        prior = self.shell.sagas.get(("acme", ref))
        assert event.customer_ref is not None
        self.shell.risk = {event.customer_ref: d.band} if d.band else {}
        decision = self.shell.receive(event, now)
        self.after(decision, now, event, prior)
        seen = self.failed_at if event.type is EventType.PAYMENT_FAILED else self.closed_at
        if event.type in (EventType.PAYMENT_FAILED, *CLOSING):
            seen[ref] = max(seen.get(ref, event.occurred_at), event.occurred_at)
        before = self.shell.sagas.get(("acme", ref))
        again = self.shell.receive(event, now)  # the same event twice: same state
        assert (again.commands, again.transitions) == ((), ())
        if before is not None:
            after = self.shell.sagas[("acme", ref)]
            assert after.model_copy(update={"ledger": None}) == before.model_copy(
                update={"ledger": None}
            )
        table = self.shell.cards
        assert all(e.id in table.get(e.card, {}) for e in again.ledger_entries)

    def world_card(self, event: PaymentEvent) -> str:
        return next(i.card.key() for i in self.world.invoices if i.ref == event.invoice_ref)


def run(world: World, permits: bool = False) -> Harness:
    """Deliver the world's timeline through the shell, then fire timers until all sagas end.

    ``permits``: the worker's protocol, every retry asked of the card's ledger.
    """
    truth = Truth()
    shell = MemoryShell(world.policy, permits=permits)
    harness = Harness(world, shell, truth, outcomes=list(world.outcomes))
    harness.queue = timeline(world, truth)
    heapq.heapify(harness.queue)
    delivered = 0
    while harness.queue:
        d = heapq.heappop(harness.queue)
        if world.change is not None and delivered == world.change[0]:
            for decision in harness.shell.change_policy(world.change[1], d.at):
                harness.after(decision, d.at, None, None)
        if world.outage is not None:
            start, end, providers = world.outage
            harness.shell.outages = providers if start <= delivered < end else frozenset()
        harness.deliver(d)
        delivered += 1
    harness.shell.outages = frozenset()  # every outage ends
    # Deliveries are over: fire what remains, in due order, until every saga has ended.
    for _ in range(60 * len(world.invoices)):
        pending = [t.due_at for s in harness.shell.sagas.values() for t in s.pending]
        if not pending:
            break
        harness.fire(min(pending))
        while harness.queue:  # late retry outcomes still arrive
            harness.deliver(heapq.heappop(harness.queue))
    return harness


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds())
def test_random_histories_keep_every_rule_and_every_saga_ends(world: World) -> None:
    harness = run(world)
    assert all(s.status in TERMINAL for s in harness.shell.sagas.values())
    assert all(not s.pending for s in harness.shell.sagas.values())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(busy_worlds())
def test_a_busy_card_never_exceeds_the_network_counters(world: World) -> None:
    harness = run(world)
    assert all(s.status in TERMINAL for s in harness.shell.sagas.values())
    retries = [c for c in harness.shell.commands if c.type is CommandType.RETRY_PAYMENT]
    assert len(retries) <= 4 * world.policy.retry.max_retries


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds())
def test_through_card_ledgers_every_rule_holds_and_every_saga_ends(world: World) -> None:
    """The same histories with the worker's protocol: sagas see their own attempts only and
    every retry is granted or refused by its card's ledger (paywatch.recovery.permits)."""
    harness = run(world, permits=True)
    assert all(s.status in TERMINAL for s in harness.shell.sagas.values())
    assert all(not s.pending for s in harness.shell.sagas.values())


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(busy_worlds())
def test_through_card_ledgers_a_busy_card_never_exceeds_the_network_counters(
    world: World,
) -> None:
    harness = run(world, permits=True)
    assert all(s.status in TERMINAL for s in harness.shell.sagas.values())
    retries = [c for c in harness.shell.commands if c.type is CommandType.RETRY_PAYMENT]
    assert len(retries) <= 4 * world.policy.retry.max_retries
