"""Failure-spike alerts of one tenant: a bounded, pure fold of its payment signals.

``step(state, tenant, signal, at)`` folds one ``Signal`` (a payment event reduced to what the
detector needs) at its record time ``at`` and returns the new ``TenantAlerts`` and the
``Alert`` records to send. No clock, no I/O: a replay with the same record times emits the
same alerts. ``at`` older than the newest seen is clamped to the newest.

Two kinds, and each failure feeds exactly one of them, so one burst is one incident:

* ``DECLINE_CODE_SPIKE`` (subject: the code) counts failures whose category is in
  ``rules.code_categories`` (HARD, ACTION, FRAUD): issuer and customer side causes such as
  card testing or an SCA change, which a processor outage does not produce;
* ``PROVIDER_FAILURE_SPIKE`` (subject: the provider) counts every other failure: a provider
  outage is many SOFT ``processing_error`` failures at once. Successes count as attempts.

Per subject: failures (and attempts) in 1-minute buckets over the last ``rules.window``
minutes ("observed"), and a baseline: an EWMA of failures per minute (half-life
``rules.half_life``, 6 h) learnt only from minutes that have left the window, so the
baseline lags the window and never sees the minutes it is compared with. It is
bias-corrected by the tenant's age (it starts at zero when the tenant's first signal comes)
and frozen while the subject has an open incident, so an incident never becomes its own
normal. No incident opens in the tenant's first ``rules.warmup`` minutes.

An incident opens when observed >= max(min_failures, factor * baseline): 20 and 5x. Counts
are about Poisson, so noise alone almost never opens one (a quiet subject expecting 5 per
window reaches 20 with p ~ 3e-7; one expecting 10 reaches 50 with p < 1e-15), while an
outage of tens of failures a minute opens within a minute or two.
WARNING, CRITICAL at observed >= critical_factor (20) * max(baseline, 1) or
a provider failure share >= 0.5. One incident is one ``alert_id``
(tenant/kind/subject/opened_at ms): an OPEN record, OPEN updates only when the severity
changed or observed moved >= 50 % since the last record (at most one a minute), and one
RESOLVED record once observed stayed under the opening threshold for ``rules.quiet``. Time
moves on any signal of the tenant, and on a ``tick`` (no payment: only the clock), which the
worker sends while a tenant has an open incident, so an outage after which the tenant's
traffic stops still resolves.

Bounds, whatever the input: 16 providers and 64 codes (the least recently seen without an
open incident is forgotten; if it had one, that incident is RESOLVED), names cut to MAX_REF
characters, ``window`` <= 15 buckets each, 1,024 event ids (64-bit BLAKE2b) so a redelivery
counts once. ``encode`` is then at most ``MAX_ENCODED`` bytes: 80 subjects x (1,023 name +
15 buckets x 28 + 75 the rest) + 9,243 (ids, times) + 1 < 128 KiB, msgpack integers taken at
their widest; a busy tenant takes about 10 KiB, mostly the event ids.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal, NamedTuple

import msgspec
from msgspec.structs import replace

from paywatch.risk.features import EPOCH, ref_key, us
from paywatch.schemas.models import (
    MAX_REF,
    Alert,
    AlertStatus,
    AlertWindow,
    DeclineCategory,
    EventType,
    PaymentEvent,
    Severity,
)

MINUTE = 60_000_000  # µs
MAX_SEEN, MAX_PROVIDERS, MAX_CODES, MAX_WINDOW = 1024, 16, 64, 15
MAX_ENCODED = 128 * 1024
FORMAT = 1
PROVIDER_SPIKE, CODE_SPIKE = "PROVIDER_FAILURE_SPIKE", "DECLINE_CODE_SPIKE"
_C = DeclineCategory


class Signal(msgspec.Struct, frozen=True, array_like=True):
    """What the detector needs of one payment event (the agent's record)."""

    event_id: str
    provider: str
    kind: Literal["failure", "success", "tick"]
    decline_code: str | None = None
    category: DeclineCategory | None = None


class Rules(msgspec.Struct, frozen=True):
    """Thresholds (minutes for durations); see the module docstring for the defaults' why."""

    window: int = 10
    min_failures: int = 20
    factor: float = 5.0
    critical_factor: float = 20.0
    critical_share: float = 0.5
    quiet: int = 10
    warmup: int = 60
    half_life: int = 360
    code_categories: frozenset[DeclineCategory] = frozenset({_C.HARD, _C.ACTION, _C.FRAUD})

    def __post_init__(self) -> None:
        if not 1 <= self.window <= MAX_WINDOW or min(self.quiet, self.half_life) < 1:
            raise ValueError(f"window must be 1-{MAX_WINDOW}, quiet and half_life >= 1")
        if self.min_failures < 1 or self.factor <= 0 or self.warmup < 0:
            raise ValueError("min_failures must be >= 1, factor > 0 and warmup >= 0")


DEFAULT_RULES = Rules()


class Incident(msgspec.Struct, frozen=True, array_like=True):
    """An open incident; instants in µs since the epoch."""

    opened: int
    severity: Severity
    observed: int  # in the last record sent
    emitted: int  # when the last record was sent
    quiet_since: int | None = None  # first time observed was under the threshold, if it is


class Series(msgspec.Struct, frozen=True, array_like=True):
    """One subject: window buckets (minute, failures, attempts), ascending, and baseline."""

    name: str
    seen: int  # µs of its latest signal: eviction order
    buckets: tuple[tuple[int, int, int], ...] = ()
    ewma: float = 0.0  # failures per minute through minute ``ewma_at`` (not bias-corrected)
    ewma_at: int = 0
    incident: Incident | None = None


class TenantAlerts(msgspec.Struct, frozen=True, array_like=True):
    """What the detector keeps about one tenant (bounded: see the module docstring)."""

    born: int  # minute of the first signal
    newest: int  # µs of the newest signal
    providers: tuple[Series, ...] = ()  # sorted by name
    codes: tuple[Series, ...] = ()
    seen: tuple[int, ...] = ()


class _Now(NamedTuple):
    tenant: str
    born: int
    t: int
    rules: Rules
    out: list[Alert]

    @property
    def minute(self) -> int:
        return self.t // MINUTE


def signal_of(event: PaymentEvent) -> Signal | None:
    """The signal of a payment outcome; None for events that are not one."""
    if event.type is EventType.PAYMENT_SUCCEEDED:
        return Signal(event.event_id, event.provider, "success")
    if event.type is not EventType.PAYMENT_FAILED:
        return None
    decline = event.decline
    code, category = (decline.code, decline.category) if decline else (None, None)
    return Signal(event.event_id, event.provider, "failure", code, category)


def step(
    state: TenantAlerts | None,
    tenant: str,
    signal: Signal,
    at: datetime,
    rules: Rules = DEFAULT_RULES,
) -> tuple[TenantAlerts | None, list[Alert]]:
    """Fold ``signal`` at ``at``; the new state and the alert records to emit, in order."""
    if signal.kind == "tick":
        return _tick(state, tenant, at, rules)
    key = ref_key(signal.event_id)
    if state is not None and key in state.seen:
        return state, []
    t = us(at) if state is None else max(us(at), state.newest)
    state = state or TenantAlerts(born=t // MINUTE, newest=t)
    now = _Now(tenant, state.born, t, rules, [])
    failed = signal.kind == "failure"
    code = (signal.decline_code or "")[:MAX_REF]
    coded = failed and bool(code) and signal.category in rules.code_categories
    provider = signal.provider[:MAX_REF]
    providers = _touch(now, state.providers, provider, failed and not coded, PROVIDER_SPIKE)
    codes = _touch(now, state.codes, code, True, CODE_SPIKE) if coded else state.codes
    state = replace(
        state,
        newest=t,
        seen=(*state.seen, key)[-MAX_SEEN:],
        providers=_evaluate_all(now, providers, provider, PROVIDER_SPIKE),
        codes=_evaluate_all(now, codes, code if coded else None, CODE_SPIKE),
    )
    return state, now.out


def _tick(
    state: TenantAlerts | None, tenant: str, at: datetime, rules: Rules
) -> tuple[TenantAlerts | None, list[Alert]]:
    """Time passes without a payment: evaluate the open incidents as of ``at`` (counts
    nothing, remembers no id; a tenant never seen stays unseen)."""
    if state is None:
        return None, []
    t = max(us(at), state.newest)
    now = _Now(tenant, state.born, t, rules, [])
    state = replace(
        state,
        newest=t,
        providers=_evaluate_all(now, state.providers, None, PROVIDER_SPIKE),
        codes=_evaluate_all(now, state.codes, None, CODE_SPIKE),
    )
    return state, now.out


def tick_signal(token: str) -> Signal:
    """A clock tick for the tenant's open incidents (``token`` only tells ticks apart)."""
    return Signal(f"tick:{token}", "", "tick")


def _touch(
    now: _Now, series: tuple[Series, ...], name: str, failure: bool, kind: str
) -> tuple[Series, ...]:
    """Count one attempt (and maybe failure) of ``name`` in the current minute."""
    i = next((j for j, s in enumerate(series) if s.name == name), None)
    m = now.minute
    old = _roll(now, series[i]) if i is not None else Series(name, now.t, ewma_at=m)
    buckets = old.buckets
    if buckets and buckets[-1][0] == m:
        _, failures, attempts = buckets[-1]
        buckets = (*buckets[:-1], (m, failures + failure, attempts + 1))
    else:
        buckets = (*buckets, (m, int(failure), 1))
    new = replace(old, seen=now.t, buckets=buckets)
    if i is not None:
        return (*series[:i], new, *series[i + 1 :])
    if len(series) >= (MAX_PROVIDERS if kind == PROVIDER_SPIKE else MAX_CODES):
        # a newcomer always enters: it is the news; the incidents are kept the longest
        victim = min(series, key=lambda s: (s.incident is not None, s.seen, s.name))
        if victim.incident is not None:
            _record(now, _roll(now, victim), kind, victim.incident, AlertStatus.RESOLVED)
        series = tuple(s for s in series if s is not victim)
    return tuple(sorted((*series, new), key=lambda s: s.name))


def _roll(now: _Now, series: Series) -> Series:
    """Move the buckets that left the window into the baseline (frozen during an incident)."""
    horizon = now.minute - now.rules.window
    if not series.buckets or series.buckets[0][0] > horizon:
        return series
    gone = [b for b in series.buckets if b[0] <= horizon]
    kept = series.buckets[len(gone) :]
    if series.incident is not None:
        return replace(series, buckets=kept, ewma_at=max(series.ewma_at, horizon))
    ewma, at, decay = series.ewma, series.ewma_at, _decay(now.rules)
    for minute, failures, _ in gone:
        ewma = ewma * decay ** max(minute - at, 0) + (1 - decay) * failures
        at = max(at, minute)
    return replace(series, buckets=kept, ewma=ewma, ewma_at=at)


def _decay(rules: Rules) -> float:
    return float(0.5 ** (1 / rules.half_life))


def _baseline(now: _Now, series: Series) -> float:
    """Failures expected in a window, from the minutes before it (``series`` rolled)."""
    horizon, decay = now.minute - now.rules.window, _decay(now.rules)
    if horizon < now.born:
        return 0.0
    weight = 1 - decay ** (horizon - now.born + 1)  # the EWMA started at zero at born
    rate = series.ewma * decay ** max(horizon - series.ewma_at, 0) / weight
    return rate * now.rules.window


def _evaluate_all(
    now: _Now, series: tuple[Series, ...], touched: str | None, kind: str
) -> tuple[Series, ...]:
    """The subjects after evaluating the touched one and every open incident."""
    if touched is None and all(s.incident is None for s in series):
        return series
    return tuple(
        _evaluate(now, s, kind) if s.name == touched or s.incident is not None else s
        for s in series
    )


def _evaluate(now: _Now, series: Series, kind: str) -> Series:
    """Open, update or resolve the subject's incident as of now."""
    rules, series = now.rules, _roll(now, series)
    observed = _failures(series)
    attempts = sum(b[2] for b in series.buckets)
    base = _baseline(now, series)
    under = observed < max(rules.min_failures, rules.factor * base)
    share = observed / attempts if kind == PROVIDER_SPIKE and attempts else 0.0
    critical = observed >= rules.critical_factor * max(base, 1.0) or share >= rules.critical_share
    severity = Severity.CRITICAL if critical else Severity.WARNING
    incident = series.incident
    if incident is None:
        if under or now.minute - now.born < rules.warmup:
            return series
        incident = Incident(now.t, severity, observed, now.t)
        _record(now, series, kind, incident, AlertStatus.OPEN)
        return replace(series, incident=incident)
    quiet = (now.t if incident.quiet_since is None else incident.quiet_since) if under else None
    if quiet is not None and now.t - quiet >= rules.quiet * MINUTE:
        _record(now, series, kind, incident, AlertStatus.RESOLVED)
        return replace(series, incident=None)
    moved = abs(observed - incident.observed) >= 0.5 * incident.observed
    if (moved or severity is not incident.severity) and now.t - incident.emitted >= MINUTE:
        incident = replace(incident, severity=severity, observed=observed, emitted=now.t)
        _record(now, series, kind, incident, AlertStatus.OPEN)
    return replace(series, incident=replace(incident, quiet_since=quiet))


def _record(now: _Now, series: Series, kind: str, incident: Incident, status: AlertStatus) -> None:
    """Append one Alert record of the (rolled) subject as of now."""
    window, observed, base = now.rules.window, _failures(series), _baseline(now, series)
    subject = series.name if kind == PROVIDER_SPIKE else f"decline code {series.name}"
    line = f"{subject}: {observed} failures in {window} min vs {base:.1f} expected"
    resolved = status is AlertStatus.RESOLVED
    now.out.append(
        Alert(
            tenant=now.tenant,
            kind=kind,
            severity=incident.severity,
            window=AlertWindow(start=_dt((now.minute - window + 1) * MINUTE), end=_dt(now.t)),
            observed=float(observed),
            baseline=round(base, 3),
            message=f"resolved: {line}" if resolved else line,
            alert_id=f"{now.tenant}/{kind}/{series.name}/{incident.opened // 1000}",
            status=status,
            provider=series.name if kind == PROVIDER_SPIKE else None,
            decline_code=series.name if kind == CODE_SPIKE else None,
            opened_at=_dt(incident.opened),
            resolved_at=_dt(now.t) if resolved else None,
        )
    )


def _failures(series: Series) -> int:
    return sum(b[1] for b in series.buckets)


def _dt(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(TenantAlerts)
_SIGNAL_DECODER = msgspec.msgpack.Decoder(Signal)


def encode(state: TenantAlerts) -> bytes:
    """The table value: a format byte, then msgpack (at most ``MAX_ENCODED`` bytes)."""
    return bytes([FORMAT]) + _ENCODER.encode(state)


def decode(value: bytes) -> TenantAlerts:
    """The state ``encode`` wrote; ValueError on another format or malformed bytes."""
    if value[:1] != bytes([FORMAT]):
        raise ValueError(f"not a tenant alerts value of format {FORMAT}: {value[:1]!r}")
    return _DECODER.decode(memoryview(value)[1:])


def encode_signal(signal: Signal) -> bytes:
    """The agent's record of a signal (msgpack)."""
    return _ENCODER.encode(signal)


def decode_signal(data: bytes) -> Signal:
    """A signal back; msgspec.DecodeError when the bytes are not one."""
    return _SIGNAL_DECODER.decode(data)
