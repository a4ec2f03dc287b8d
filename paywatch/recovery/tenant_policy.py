"""A tenant's recovery settings: frozen, JSON round-trippable, validated with precise errors.

Defaults are the safe ones (reference/recovery-rules.md §4 takeaways: most recoveries land
2-12 days after the decline; windows of 25-30 days are common):

* retries on days 1, 3, 5 and 7 after the first failure at 10:00 UTC, at least 24 h apart,
  at most 4 reattempts of one invoice by anyone (the provider's automatic retries count);
* who retries: the provider for Stripe, PayPal and Braintree, which retry by themselves
  (§3c [ST1][PV1][PV5]); paywatch for Authorize.Net (ARB skips failures, never retries
  [PV3][PV4]), Adyen, Checkout.com, the generic provider, and Xero/QuickBooks (no card:
  dunning only). A provider that announces its own next retry (``provider_retry_at``) owns
  that retry whatever this says, so nobody double-retries;
* dunning on days 0, 3 and 7; escalation to a human after 14 days, or after 7 days of
  waiting for the customer; after 30 days the saga is exhausted and the invoice is left
  open (cancelling or writing off is a tenant's explicit choice).

The network rules are a ceiling: a tenant can only be stricter than the edition in force.

Two options act on what the risk agents see (issue 9), both off by default for sagas:

* ``high_risk``: a customer the risk model puts in the HIGH (or CRITICAL) band gets the
  saga's escalation earlier and, optionally, a request for a new payment method at the
  first failure, before any retry;
* ``card_expiry``: a card that expires before the subscription's next renewal produces a
  ``CARD_EXPIRING`` event ``lead_days`` ahead of the renewal; with ``notify`` on, also a
  pre-dunning NOTIFY_CUSTOMER naming rule ``paywatch.tenant.card_expiry``.

Who charges (issue 11): ``charging`` is ``paywatch`` by default (the executor carries each
RETRY_PAYMENT out); ``schedule_only`` makes paywatch a scheduler only: its retries are still
planned, gated by the card's ledger and sent on ``recovery.commands`` (flagged
``schedule_only``, so the executor journals them ``scheduled`` and charges nothing), the
tenant is told when (``recovery.retry_due``) and reports each attempt's result back
(``POST /v1/invoices/{ref}/attempts`` or a provider webhook). Which providers' retries are
paywatch's is still ``owners``.

A policy change (new ``revision``) applies to new decisions only: commands already scheduled
keep their time, channel and template, except those the new policy forbids, which are
dropped (see ``policy.reconcile``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping
from datetime import time
from enum import StrEnum
from functools import cached_property
from typing import Any, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from paywatch.recovery.rules import (
    MASTERCARD_CURRENT,
    MASTERCARD_EDITIONS,
    VISA_CURRENT,
    VISA_EDITIONS,
    Rulebook,
    rulebook,
)
from paywatch.schemas.models import Frozen, RiskBand

PROVIDERS = (
    "stripe",
    "paypal",
    "braintree",
    "authorizenet",
    "xero",
    "quickbooks",
    "adyen",
    "checkout",
    "generic",
)
"""The provider names of the contract (ARCHITECTURE §6)."""

_TEMPLATE = r"^[a-z0-9][a-z0-9_.-]{0,63}$"


class RetryOwner(StrEnum):
    """Who retries a provider's failed payments."""

    PAYWATCH = "paywatch"
    PROVIDER = "provider"


class FinalAction(StrEnum):
    """What happens to an invoice whose saga is exhausted."""

    CANCEL = "cancel"
    WRITE_OFF = "write_off"
    LEAVE_OPEN = "leave_open"


class Charging(StrEnum):
    """Who charges the retries paywatch schedules.

    An enum rather than a boolean: the policy reads as who does what (like ``RetryOwner``),
    and a third mode (say, per provider) will not need a second flag that contradicts it.
    """

    PAYWATCH = "paywatch"
    SCHEDULE_ONLY = "schedule_only"


class Channel(StrEnum):
    """How a customer or an operator is reached."""

    EMAIL = "email"
    SMS = "sms"
    SLACK = "slack"
    WEBHOOK = "webhook"


_LATER_OPTIONS = ("high_risk", "card_expiry", "charging", "experiment")
"""Fields added after policies were first logged (see ``TenantPolicy.revision``)."""

DEFAULT_OWNERS: dict[str, RetryOwner] = {
    p: RetryOwner.PROVIDER if p in ("stripe", "paypal", "braintree") else RetryOwner.PAYWATCH
    for p in PROVIDERS
}


def _strictly_increasing(days: tuple[int, ...], what: str) -> tuple[int, ...]:
    for before, after in itertools.pairwise(days):
        if after <= before:
            raise ValueError(f"{what} must be strictly increasing: {after} follows {before}")
    return days


class RetrySchedule(Frozen):
    """When paywatch retries (only for providers it owns) and how often anyone may."""

    days: tuple[int, ...] = Field((1, 3, 5, 7), max_length=35)
    at: time = time(10, 0)
    tz: str = "UTC"
    min_gap_hours: int = Field(24, ge=1, le=24 * 30)
    max_retries: int = Field(4, ge=0, le=35)

    @field_validator("days")
    @classmethod
    def _days(cls, days: tuple[int, ...]) -> tuple[int, ...]:
        if any(d < 0 for d in days):
            raise ValueError(f"days must not be negative: {[d for d in days if d < 0]}")
        return _strictly_increasing(days, "days")

    @field_validator("tz")
    @classmethod
    def _tz(cls, tz: str) -> str:
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {tz!r}") from exc
        return tz

    @property
    def zone(self) -> ZoneInfo:
        """The schedule's time zone."""
        return ZoneInfo(self.tz)


class DunningStep(Frozen):
    """One customer notification, `day` days after the first failure."""

    day: int = Field(ge=0, le=365)
    channel: Channel = Channel.EMAIL
    template: str = Field(pattern=_TEMPLATE)


class Escalation(Frozen):
    """When a human is asked to look: one ESCALATE per saga, whichever comes first."""

    after_days: int | None = Field(14, ge=0, le=365)
    awaiting_customer_days: int | None = Field(7, ge=0, le=365)
    channel: Channel = Channel.SLACK
    template: str = Field("recovery_escalation", pattern=_TEMPLATE)


class HighRisk(Frozen):
    """What changes for a customer in the risk model's high bands (``min_band`` or above).

    The band is read from ``risk.scores`` with each event of the invoice; the first one at
    ``min_band`` or above makes the customer high-risk for the rest of the episode
    (``recovery.high_risk``). Both effects carry rule ``tenant.high_risk``; retries keep
    their schedule, so the network limits are untouched.
    """

    min_band: RiskBand = RiskBand.HIGH
    escalate_after_days: int | None = Field(3, ge=0, le=365)
    """Escalate no later than this many days after the first failure (the earliest of this
    and ``escalation``'s times; also when ``escalation`` is off). None: no earlier escalation."""
    request_update_first: bool = True
    """Ask for a new payment method as soon as the customer is high-risk (at the first
    failure, or at a later event of the episode), once per episode: not if already asked."""

    @field_validator("min_band")
    @classmethod
    def _band(cls, band: RiskBand) -> RiskBand:
        if band not in (RiskBand.HIGH, RiskBand.CRITICAL):
            raise ValueError(f"min_band must be HIGH or CRITICAL, not {band.value}")
        return band


class CardExpiry(Frozen):
    """Cards that expire before the subscription's next renewal."""

    lead_days: int = Field(14, ge=1, le=60)
    """How long before the renewal the CARD_EXPIRING event goes out."""
    notify: bool = False
    """Opt-in: also send the customer a pre-dunning NOTIFY_CUSTOMER then."""
    channel: Channel = Channel.EMAIL
    template: str = Field("card_expiring", pattern=_TEMPLATE)


_DUNNING = (
    DunningStep(day=0, template="payment_failed"),
    DunningStep(day=3, template="payment_reminder"),
    DunningStep(day=7, template="payment_final_reminder"),
)


class TenantPolicy(Frozen):
    """Everything a tenant decides about recovery; the defaults are safe."""

    window_days: int = Field(30, ge=1, le=365)
    retry: RetrySchedule = RetrySchedule()
    dunning: tuple[DunningStep, ...] = _DUNNING
    owners: dict[str, RetryOwner] = Field(default_factory=dict)
    escalation: Escalation | None = Escalation()
    update_channel: Channel = Channel.EMAIL
    update_template: str = Field("update_payment_method", pattern=_TEMPLATE)
    final_action: FinalAction = FinalAction.LEAVE_OPEN
    visa_edition: str = VISA_CURRENT
    mastercard_edition: str = MASTERCARD_CURRENT
    high_risk: HighRisk | None = None
    card_expiry: CardExpiry = CardExpiry()
    charging: Charging = Charging.PAYWATCH
    experiment: Experiment | None = None
    """A challenger policy run on a deterministic share of new sagas (``experiments.py``)."""

    @field_validator("owners")
    @classmethod
    def _owners(cls, owners: dict[str, RetryOwner]) -> dict[str, RetryOwner]:
        unknown = sorted(set(owners) - set(PROVIDERS))
        if unknown:
            raise ValueError(f"unknown provider(s) {unknown}; known: {list(PROVIDERS)}")
        return dict(sorted(owners.items()))  # equal policies, equal revision

    @field_validator("dunning")
    @classmethod
    def _dunning(cls, steps: tuple[DunningStep, ...]) -> tuple[DunningStep, ...]:
        _strictly_increasing(tuple(s.day for s in steps), "dunning days")
        return steps

    @field_validator("visa_edition")
    @classmethod
    def _visa(cls, edition: str) -> str:
        if edition not in VISA_EDITIONS:
            raise ValueError(f"unknown Visa edition {edition!r}; known: {list(VISA_EDITIONS)}")
        return edition

    @field_validator("mastercard_edition")
    @classmethod
    def _mastercard(cls, edition: str) -> str:
        if edition not in MASTERCARD_EDITIONS:
            known = list(MASTERCARD_EDITIONS)
            raise ValueError(f"unknown Mastercard edition {edition!r}; known: {known}")
        return edition

    @model_validator(mode="after")
    def _within_window(self) -> Self:
        for what, days in (
            ("retry.days", self.retry.days),
            ("dunning days", tuple(s.day for s in self.dunning)),
        ):
            late = [d for d in days if d >= self.window_days]
            if late:
                raise ValueError(f"{what} {late} fall outside window_days={self.window_days}")
        return self

    @property
    def schedule_only(self) -> bool:
        """True when the tenant charges paywatch's retries itself (``Charging.SCHEDULE_ONLY``)."""
        return self.charging is Charging.SCHEDULE_ONLY

    def owner(self, provider: str) -> RetryOwner:
        """Who retries `provider`'s failures (paywatch for providers outside the contract)."""
        return self.owners.get(provider) or DEFAULT_OWNERS.get(provider, RetryOwner.PAYWATCH)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy; the cached ``revision`` and ``rulebook`` are recomputed for it."""
        copy = super().model_copy(update=update, deep=deep)
        for cached in ("revision", "rulebook", "control"):
            copy.__dict__.pop(cached, None)
        return copy

    @cached_property
    def revision(self) -> str:
        """A content hash: sagas planned under another revision are reconciled first."""
        return hashlib.sha256(self._canonical()).hexdigest()[:16]

    def _canonical(self) -> bytes:
        """The revision's input: options added later count only once set away from their
        default, so a policy written before they existed keeps its revision (no reconcile
        of every open saga on upgrade)."""
        body = self.model_dump(mode="json")
        for name in _LATER_OPTIONS:
            if getattr(self, name) == type(self).model_fields[name].get_default(
                call_default_factory=True
            ):
                del body[name]
        return json.dumps(body, separators=(",", ":")).encode()

    @cached_property
    def rulebook(self) -> Rulebook:
        """The Visa and Mastercard editions this tenant runs."""
        return rulebook(self.visa_edition, self.mastercard_edition)

    @cached_property
    def control(self) -> TenantPolicy:
        """The policy without its experiment: what every saga outside the challenger arm
        runs (its revision is the policy's revision before the experiment started)."""
        return self if self.experiment is None else self.model_copy(update={"experiment": None})

    def for_arm(self, arm: str | None) -> TenantPolicy:
        """The policy a saga in `arm` runs: the challenger's, or the control."""
        if arm == CHALLENGER and self.experiment is not None:
            return self.experiment.challenger
        return self.control


CONTROL, CHALLENGER = "control", "challenger"
"""The two arms of an experiment."""


class Experiment(Frozen):
    """A challenger policy for a share of the tenant's new sagas (issue 10 item 7).

    Which saga runs it is a function of (tenant, invoice, experiment id) alone
    (``experiments.assign``), so a replay assigns every saga the arm it had. A saga keeps its
    arm for its episode; sagas opened before the experiment started, and every saga once it
    stopped, run the control (the tenant's policy without the experiment).
    """

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")
    share: float = Field(gt=0.0, lt=1.0)
    """The challenger's share of new sagas."""
    challenger: TenantPolicy

    @model_validator(mode="after")
    def _one_level(self) -> Self:
        if self.challenger.experiment is not None:
            raise ValueError("a challenger policy cannot run an experiment of its own")
        return self


TenantPolicy.model_rebuild()
