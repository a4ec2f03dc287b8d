"""The pure alert detector: no alert on a steady background, one incident per burst, bounds.

Streams are generated with a seeded random background of three providers (successes and
failures with their usual decline codes) so the detector sees realistic noise; bursts are
added on top. Properties check the incident lifecycle on arbitrary streams.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paywatch.risk.alerts import (
    CODE_SPIKE,
    DEFAULT_RULES,
    MAX_CODES,
    MAX_ENCODED,
    MAX_PROVIDERS,
    MAX_SEEN,
    PROVIDER_SPIKE,
    Rules,
    Signal,
    TenantAlerts,
    decode,
    decode_signal,
    encode,
    encode_signal,
    signal_of,
    step,
    tick_signal,
)
from paywatch.schemas.models import (
    Alert,
    AlertStatus,
    Decline,
    EventType,
    PaymentEvent,
    Severity,
)
from paywatch.schemas.models import DeclineCategory as C

T0 = datetime(2026, 3, 2, tzinfo=UTC)
MIN = timedelta(minutes=1)
Stream = list[tuple[Signal, datetime]]
# (provider, successes per minute, failures per minute): a busy stripe, a smaller paypal
BACKGROUND = (("stripe", 20, 2.0), ("paypal", 8, 1.0), ("adyen", 3, 0.3))
CODES = (
    ("insufficient_funds", C.SOFT),
    ("do_not_honor", C.SOFT),
    ("expired_card", C.HARD),
    ("authentication_required", C.ACTION),
)
SMALL = Rules(window=3, min_failures=2, factor=2.0, quiet=2, warmup=0, half_life=30)


def background(rng: random.Random, start: datetime, minutes: int, tag: str) -> Stream:
    """A steady mix of successes and failures, sorted by time (ids prefixed by ``tag``)."""
    out: list[tuple[Signal, int]] = []
    for minute in range(minutes):
        for provider, successes, failures in BACKGROUND:
            for _ in range(successes + rng.randint(-2, 2)):
                out.append((Signal(f"{tag}{len(out)}", provider, "success"), minute))
            for _ in range(round(failures * 2 * rng.random())):
                code, category = rng.choice(CODES)
                sig = Signal(f"{tag}{len(out)}", provider, "failure", code, category)
                out.append((sig, minute))
    return _spread(rng, start, out)


def burst(
    rng: random.Random,
    start: datetime,
    count: int,
    minutes: int,
    tag: str,
    provider: str = "stripe",
    code: str | None = None,
    category: C | None = None,
) -> Stream:
    """``count`` failures spread evenly over ``minutes`` from ``start``."""
    sigs = [Signal(f"{tag}{i}", provider, "failure", code, category) for i in range(count)]
    return _spread(rng, start, [(sig, i * minutes // count) for i, sig in enumerate(sigs)])


def _spread(rng: random.Random, start: datetime, items: list[tuple[Signal, int]]) -> Stream:
    """Each item at a random second of its minute after ``start``, sorted by time."""
    timed = [(sig, start + minute * MIN + rng.random() * MIN) for sig, minute in items]
    return sorted(timed, key=lambda pair: pair[1])


def merge(*streams: Stream) -> Stream:
    return sorted((pair for s in streams for pair in s), key=lambda pair: pair[1])


def run(
    stream: Iterable[tuple[Signal, datetime]],
    rules: Rules = DEFAULT_RULES,
    state: TenantAlerts | None = None,
) -> tuple[TenantAlerts, list[Alert]]:
    alerts: list[Alert] = []
    for sig, at in stream:
        state, emitted = step(state, "acme", sig, at, rules)
        alerts += emitted
    assert state is not None
    return state, alerts


def by_id(alerts: list[Alert]) -> dict[str, list[Alert]]:
    out: dict[str, list[Alert]] = defaultdict(list)
    for alert in alerts:
        out[alert.alert_id].append(alert)
    return out


# --- examples ---------------------------------------------------------------------------


def test_a_steady_background_for_hours_makes_no_alert() -> None:
    state, alerts = run(background(random.Random(1), T0, 6 * 60, "bg"))
    assert alerts == []
    # not vacuous: every provider and the coded declines are tracked with a learnt baseline
    assert [p.name for p in state.providers] == ["adyen", "paypal", "stripe"]
    assert {c.name for c in state.codes} == {"expired_card", "authentication_required"}
    assert all(s.ewma > 0 for s in (*state.providers, *state.codes))


def test_a_processor_burst_is_one_incident_that_resolves_after_quiet() -> None:
    rng = random.Random(2)
    start = T0 + 3 * 60 * MIN
    outage = burst(rng, start, 200, 5, "err", code="processing_error", category=C.SOFT)
    stream = merge(background(rng, T0, 4 * 60, "bg"), outage)
    _, alerts = run(stream)
    incidents = by_id(alerts)
    assert len(incidents) == 1, [a.message for a in alerts]
    (alert_id, records) = next(iter(incidents.items()))
    statuses = [r.status for r in records]
    assert statuses[0] is AlertStatus.OPEN and statuses[-1] is AlertStatus.RESOLVED
    assert statuses.count(AlertStatus.RESOLVED) == 1 and 2 <= len(records) <= 12
    first, last = records[0], records[-1]
    assert {(r.kind, r.provider, r.decline_code) for r in records} == {
        (PROVIDER_SPIKE, "stripe", None)
    }
    assert start <= first.opened_at <= start + 5 * MIN  # type: ignore[operator]
    assert alert_id == f"acme/{PROVIDER_SPIKE}/stripe/{int(first.opened_at.timestamp() * 1000)}"  # type: ignore[union-attr]
    assert first.observed >= max(20, 5 * first.baseline) and first.baseline > 1
    assert max(r.observed for r in records) >= 150
    assert (
        first.message
        == f"stripe: {first.observed:.0f} failures in 10 min vs {first.baseline:.1f} expected"
    )
    # resolved once the window fell back and stayed so for 10 minutes, not before
    assert last.resolved_at is not None and last.window.end == last.resolved_at
    assert start + 5 * MIN + 10 * MIN <= last.resolved_at <= start + 5 * MIN + 25 * MIN
    assert last.observed < max(20, 5 * last.baseline)
    ends = [r.window.end for r in records if r.status is AlertStatus.OPEN]
    assert all(b - a >= MIN for a, b in pairwise(ends))  # no storm
    assert any(r.severity is Severity.CRITICAL for r in records)


def test_an_outage_after_which_traffic_stops_resolves_on_clock_ticks() -> None:
    rng = random.Random(2)
    start = T0 + 3 * 60 * MIN
    outage = burst(rng, start, 200, 5, "err", code="processing_error", category=C.SOFT)
    state, alerts = run(merge(background(rng, T0, 3 * 60, "bg"), outage))
    assert [a.status for a in alerts][:1] == [AlertStatus.OPEN]
    assert state.providers[-1].incident is not None  # stripe: open, and no traffic comes
    seen = state.seen
    ticks = [(tick_signal(str(i)), start + (5 + i) * MIN) for i in range(1, 40)]
    state, after = run(ticks, state=state)
    resolved = [a for a in after if a.status is AlertStatus.RESOLVED]
    assert len(resolved) == 1 and resolved[0].alert_id == alerts[0].alert_id
    assert start + 15 * MIN <= resolved[0].resolved_at <= start + 25 * MIN  # type: ignore[operator]
    assert state.seen == seen  # ticks are not payments: no id remembered, nothing counted
    assert all(s.incident is None for s in state.providers)
    # A tick for a tenant never seen keeps it unseen; with nothing open a tick says nothing.
    assert step(None, "acme", tick_signal("x"), T0) == (None, [])
    assert step(state, "acme", tick_signal("y"), start + 60 * MIN)[1] == []
    assert decode_signal(encode_signal(tick_signal("z"))).kind == "tick"


def test_a_busy_new_tenant_is_not_an_incident() -> None:
    rng = random.Random(7)
    steady = burst(rng, T0, 30 * 120, 120, "busy", code="processing_error", category=C.SOFT)
    state, alerts = run(steady)  # 30 failures a minute from the first signal, for 2 h
    assert alerts == [] and state.providers[0].ewma > 5  # learnt (before bias correction)


def test_a_long_incident_does_not_become_the_baseline() -> None:
    rng = random.Random(8)
    start = T0 + 2 * 60 * MIN
    elevated = burst(rng, start, 30 * 90, 90, "up", code="processing_error", category=C.SOFT)
    state: TenantAlerts | None = None
    learnt: list[float] = []
    for sig, at in merge(background(rng, T0, 3 * 60 + 30, "bg"), elevated):
        state, alerts = step(state, "acme", sig, at)
        stripe = {s.name: s for s in state.providers}.get("stripe")
        opened = any(a.status is AlertStatus.OPEN for a in alerts)
        if stripe is not None and (opened or at > start + 85 * MIN):
            learnt.append(stripe.ewma)
        assert not any(a.status is AlertStatus.RESOLVED for a in alerts) or at > start + 90 * MIN
    assert (
        len(learnt) > 100 and len(set(learnt)) == 1
    )  # the baseline learnt nothing while the incident was open


def test_a_decline_code_spike_is_its_own_kind_and_not_a_provider_incident() -> None:
    rng = random.Random(3)
    start = T0 + 2 * 60 * MIN
    providers = ["stripe", "paypal", "adyen"]
    attack = [
        (replace_provider(sig, providers[i % 3]), at)
        for i, (sig, at) in enumerate(
            burst(rng, start, 60, 3, "fr", code="fraudulent", category=C.FRAUD)
        )
    ]
    _, alerts = run(merge(background(rng, T0, 3 * 60, "bg"), attack))
    incidents = by_id(alerts)
    assert len(incidents) == 1, [a.message for a in alerts]
    records = next(iter(incidents.values()))
    assert {(r.kind, r.decline_code, r.provider) for r in records} == {
        (CODE_SPIKE, "fraudulent", None)
    }
    assert records[0].message is not None
    assert records[0].message.startswith("decline code fraudulent: ")
    assert [r.status for r in records][-1] is AlertStatus.RESOLVED


def replace_provider(sig: Signal, provider: str) -> Signal:
    return Signal(sig.event_id, provider, sig.kind, sig.decline_code, sig.category)


def test_redelivered_signals_count_once() -> None:
    rules = Rules(warmup=0)
    nineteen = burst(random.Random(4), T0, 19, 1, "dup", code="processing_error")
    state, alerts = run(nineteen * 3, rules)  # redelivered twice, later
    assert alerts == []
    assert sum(n for _, n, _ in state.providers[0].buckets) == 19
    _, alerts = run([(Signal("dup_new", "stripe", "failure"), T0 + MIN)], rules, state)
    assert [a.observed for a in alerts] == [20.0]  # the twentieth distinct one opens


def test_a_redelivered_stream_emits_what_the_stream_emits() -> None:
    rng = random.Random(5)
    start = T0 + 2 * 60 * MIN
    stream = merge(background(rng, T0, 150, "bg"), burst(rng, start, 150, 4, "b"))
    once_state, once = run(stream)
    twice_state, twice = run(pair for pair in stream for _ in range(2))
    assert once and twice == once and encode(twice_state) == encode(once_state)


def test_an_older_arrival_time_is_clamped_to_the_newest() -> None:
    rules = Rules(warmup=0, min_failures=3)
    late = T0 + 10 * MIN
    stream = [
        (Signal("a", "stripe", "failure"), late),
        (Signal("b", "stripe", "failure"), T0 - 60 * MIN),
        (Signal("c", "stripe", "failure"), T0),
    ]
    state, alerts = run(stream, rules)
    assert state.newest == int(
        (late - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1)
    )
    assert [(a.observed, a.window.end, a.opened_at) for a in alerts] == [(3.0, late, late)]


def test_forgetting_a_subject_with_an_open_incident_resolves_it() -> None:
    rules = Rules(warmup=0, min_failures=1)
    stream = [(Signal(f"e{i}", f"p{i:02}", "failure"), T0 + i * MIN / 100) for i in range(16)]
    state, alerts = run(stream, rules)
    assert len(alerts) == MAX_PROVIDERS and all(s.incident for s in state.providers)
    state, alerts = run([(Signal("new", "p16", "failure"), T0 + MIN)], rules, state)
    assert [(a.status, a.provider) for a in alerts] == [
        (AlertStatus.RESOLVED, "p00"),  # the least recently seen
        (AlertStatus.OPEN, "p16"),  # a newcomer always enters
    ]
    assert [s.name for s in state.providers] == [f"p{i:02}" for i in range(1, 17)]


def test_state_stays_under_max_encoded_under_an_adversarial_stream() -> None:
    long = "\U0001d11e" * 255  # 255 characters of 4 UTF-8 bytes: the widest names
    rules = Rules(window=15, min_failures=1, factor=0.1, warmup=0)
    stream: Stream = []
    at = datetime(1970, 1, 1, tzinfo=UTC)
    for i in range(3000):  # churn: far more names than the caps, over long time spans
        at += timedelta(days=i % 7, minutes=i % 13)
        code, category = f"{long[:-4]}{i % 500:04}", (C.FRAUD if i % 2 else C.SOFT)
        stream.append((Signal(f"c{i}", f"{long[:-4]}{i % 300:04}", "failure", code, category), at))
    at = datetime(2199, 12, 31, tzinfo=UTC)
    for minute in range(15):  # then every bucket of every kept subject filled
        for j in range(MAX_CODES):
            code, provider = f"{long[:-4]}{j:04}", f"{long[:-4]}{j % MAX_PROVIDERS:04}"
            when = at + minute * MIN
            stream.append((Signal(f"f{minute}/{j}", provider, "failure", code, C.HARD), when))
            stream.append((Signal(f"p{minute}/{j}", provider, "failure"), when))
    state: TenantAlerts | None = None
    largest, opened = 0, 0
    for sig, when in stream:
        state, alerts = step(state, "acme", sig, when, rules)
        opened += sum(a.status is AlertStatus.OPEN for a in alerts)
        largest = max(largest, len(encode(state)))
    assert state is not None and decode(encode(state)) == state
    assert len(state.providers) == MAX_PROVIDERS and len(state.codes) == MAX_CODES
    assert len(state.seen) == MAX_SEEN and opened > 0
    assert all(len(s.buckets) == 15 for s in (*state.providers, *state.codes))
    print(f"largest encoded state: {largest} bytes of {MAX_ENCODED}")
    assert 0.7 * MAX_ENCODED < largest <= MAX_ENCODED, largest


def test_step_is_deterministic_and_survives_an_encode_decode_restart() -> None:
    rng = random.Random(6)
    stream = merge(background(rng, T0, 120, "bg"), burst(rng, T0 + 90 * MIN, 120, 3, "b"))
    first, second = run(stream), run(stream)
    assert first[1] and first[1] == second[1] and encode(first[0]) == encode(second[0])
    half = len(stream) // 2
    state, before = run(stream[:half])
    state, after = run(stream[half:], state=decode(encode(state)))
    assert before + after == first[1] and encode(state) == encode(first[0])


def test_signal_of_and_the_signal_codec() -> None:
    def event(type: EventType, decline: Decline | None = None) -> PaymentEvent:
        return PaymentEvent(
            event_id="ev_1",
            type=type,
            tenant="acme",
            provider="stripe",
            source_type="x",
            occurred_at=T0,
            invoice_ref="in_1",
            decline=decline,
        )

    failed = signal_of(
        event(EventType.PAYMENT_FAILED, Decline(code="fraudulent", category=C.FRAUD))
    )
    assert failed == Signal("ev_1", "stripe", "failure", "fraudulent", C.FRAUD)
    assert signal_of(event(EventType.PAYMENT_FAILED)) == Signal("ev_1", "stripe", "failure")
    assert signal_of(event(EventType.PAYMENT_SUCCEEDED)) == Signal("ev_1", "stripe", "success")
    assert signal_of(event(EventType.INVOICE_VOIDED)) is None
    assert decode_signal(encode_signal(failed)) == failed  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        decode(b"\x09" + encode(run([(failed, T0)])[0])[1:])  # type: ignore[list-item]


@pytest.mark.parametrize("bad", [{"window": 0}, {"window": 16}, {"quiet": 0}, {"min_failures": 0}])
def test_rules_out_of_bounds_are_refused(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        Rules(**bad)  # type: ignore[arg-type]


# --- properties ---------------------------------------------------------------------------

PROVIDERS = [f"p{i}" for i in range(MAX_PROVIDERS + 4)]  # more than the cap: eviction too
signals = st.tuples(
    st.integers(0, 60),  # event id: small pool, so redeliveries happen
    st.sampled_from(PROVIDERS[:3] * 6 + PROVIDERS),
    st.sampled_from(["failure", "failure", "success"]),
    st.sampled_from([None, ("fraudulent", C.FRAUD), ("processing_error", C.SOFT)]),
    st.integers(-3, 4),  # minutes after the previous record: some go back in time
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(signals, min_size=20, max_size=300))
def test_each_incident_is_open_records_then_at_most_one_resolution(
    ops: list[tuple[int, str, str, tuple[str, C] | None, int]],
) -> None:
    stream: Stream = []
    at = T0
    for n, provider, kind, decline, delta in ops:
        at += delta * MIN
        code, category = decline or (None, None)
        stream.append((Signal(f"e{n}", provider, kind, code, category), at))  # type: ignore[arg-type]
    state, alerts = run(stream, SMALL)
    assert run(stream, SMALL)[1] == alerts  # deterministic
    assert decode(encode(state)) == state and len(encode(state)) <= MAX_ENCODED
    current: dict[tuple[str, str | None], str] = {}  # subject -> its open alert_id
    done: set[str] = set()
    last_end: dict[str, datetime] = {}
    for alert in alerts:
        subject = (alert.kind, alert.provider or alert.decline_code)
        assert alert.alert_id not in done, "a record after RESOLVED"
        assert current.setdefault(subject, alert.alert_id) == alert.alert_id, "two incidents"
        if alert.alert_id in last_end and alert.status is AlertStatus.OPEN:
            assert alert.window.end - last_end[alert.alert_id] >= MIN  # no storm
        last_end[alert.alert_id] = alert.window.end
        if alert.status is AlertStatus.RESOLVED:
            done.add(current.pop(subject))
    open_now = {(PROVIDER_SPIKE, s.name) for s in state.providers if s.incident}
    open_now |= {(CODE_SPIKE, s.name) for s in state.codes if s.incident}
    assert open_now == set(current)  # the state's open incidents are the unresolved ids
