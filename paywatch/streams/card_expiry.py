"""The renewal watch: a CARD_EXPIRING event ``lead_days`` ahead of a renewal the card on file
will not reach, and the tenant's opt-in pre-dunning NOTIFY_CUSTOMER (issue 9, item 4).

The risk agent folds each customer's subscriptions and card (``risk.renewals``, pure). When
a customer has a renewal at risk that nobody was warned about, its *watch* is kept in table
``risk-renewals`` (key tenant/customer_ref, only customers with a pending warning, so it
stays small) and in this worker's in-memory index of the partitions it actively owns
(rebuilt from the table when the assignment changes, never for standbys).

The loop (every ``TICK_S``) sends, for every watch whose renewal is within the tenant's
``card_expiry.lead_days`` (``recovery.policies``), the ``CARD_EXPIRING`` event itself to
``risk.customers`` on the customer's partition, like the saga's timer ticks. The risk agent
folds it like any record of that customer: if the renewal is still at risk and not warned
yet, it records the warning and sends the event on to ``payments.events`` (key
tenant/``renewal:<subscription>``: the upcoming renewal has no invoice yet) with, when the
tenant opted in (``card_expiry.notify``), a NOTIFY_CUSTOMER naming rule
``tenant.card_expiry``; a duplicate or stale tick changes nothing. So the warning and the
command come out once, in the log, and a replay of ``risk.customers`` reproduces them.
A tick not folded within ``RESEND_S`` (lost, or its partition moved) is sent again.

Times: renewals are provider times; "now" is the saga clock (``PAYWATCH_TIME_SCALE``), so
at scale 1 (production) the lead is exact; a compressed demo clock warns at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from paywatch.recovery.clock import SagaClock
from paywatch.recovery.commands import tenant_rule
from paywatch.recovery.tenant_policy import TenantPolicy
from paywatch.risk.renewals import Watch, card_expiring, decode_watch, us
from paywatch.schemas.codec import Codec
from paywatch.schemas.models import CommandType, PaymentEvent, RecoveryCommand
from paywatch.schemas.topics import customer_key
from paywatch.streams import saga_store
from paywatch.streams.saga import PolicySource
from paywatch.streams.settled import Settled

log = logging.getLogger(__name__)

TICK_S = 1.0
RESEND_S = 30.0


def notice(event: PaymentEvent, policy: TenantPolicy) -> RecoveryCommand | None:
    """The pre-dunning NOTIFY_CUSTOMER of a CARD_EXPIRING warning, if the tenant opted in."""
    option = policy.card_expiry
    if not option.notify or event.renews_at is None or event.payment_method is None:
        return None
    method = event.payment_method
    return RecoveryCommand(
        command_id=f"{event.event_id}/notify",
        type=CommandType.NOTIFY_CUSTOMER,
        tenant=event.tenant,
        invoice_ref=event.invoice_ref,
        due_at=event.occurred_at,
        channel=option.channel.value,
        template=option.template,
        reason=(
            f"pre-dunning: the card expires {method.exp_month:02}/{method.exp_year}, before the"
            f" renewal of {event.subscription_ref} on {event.renews_at:%Y-%m-%d}"
        ),
        rule=tenant_rule(policy, "card_expiry"),
        cause_event_id=event.event_id,
        provider=event.provider,
        customer_ref=event.customer_ref,
        subscription_ref=event.subscription_ref,
        issued_at=event.occurred_at,
    )


@dataclass
class RenewalWatch:
    """The watches of this worker's active partitions, and the loop step that fires them."""

    codec: Codec
    clock: SagaClock
    policies: PolicySource
    table: Any  # Faust table risk-renewals: tenant/customer_ref -> Watch bytes
    ticks: Any  # risk.customers topic (sending)
    prepare: Callable[[], Awaitable[None]] | None = None
    """Waits until the policy view knows every stored policy (the lead is the tenant's)."""
    indexed: frozenset[int] | None = None
    _index: dict[str, Watch] = field(default_factory=dict)
    _sent: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self._index)

    def put(self, key: str, value: Watch | None) -> None:
        """A fold's acked watch (None: nothing pending) reaches the index."""
        if value is None:
            self._index.pop(key, None)
            self._sent.pop(key, None)
        elif self.indexed is not None and value.partition in self.indexed:
            self._index[key] = value

    def rebuild(self, actives: frozenset[int]) -> None:
        """Index the watches of the actively owned partitions (a small table: only the
        customers with a pending warning)."""
        self._index.clear()
        self._sent.clear()
        for raw in saga_store.values(self.table, actives):
            try:
                value = decode_watch(raw)
            except Exception as exc:  # one bad value must not stop the loop
                log.warning("skipped a risk-renewals value: %s", exc)
                continue
            if value.partition in actives:
                self._index[customer_key(value.tenant, value.customer_ref)] = value
        self.indexed = actives
        log.info("renewal watch rebuilt: %d on partitions %s", len(self._index), sorted(actives))

    def due(self, wall_now: datetime) -> list[tuple[str, Watch]]:
        """The watches whose warning is due now and not sent within ``RESEND_S``."""
        now, mono = self.clock.to_saga(wall_now), time.monotonic()
        out = []
        for key, value in self._index.items():
            lead = timedelta(days=self.policies.get(value.tenant).card_expiry.lead_days)
            if us(now + lead) < value.renews_at:
                continue
            if mono - self._sent.get(key, -RESEND_S) < RESEND_S:
                continue
            out.append((key, value))
        return out

    async def fire_due(self, actives: frozenset[int]) -> int:
        """Send the tick of every due watch on its partition; returns how many."""
        if self.prepare is not None:
            await self.prepare()
        if actives != self.indexed:
            self.rebuild(actives)
        wall_now = datetime.now(UTC)
        sent = 0
        for key, value in self.due(wall_now):
            event = card_expiring(value.tenant, value.customer_ref, value.item, wall_now)
            body = self.codec.encode(event, topic=self.ticks.get_topic_name())
            await self.ticks.send(key=key.encode(), value=body, partition=value.partition)
            self._sent[key] = time.monotonic()
            sent += 1
        return sent


def install(app: Any, watch: RenewalWatch, source_topic: str) -> None:
    """Register the watch loop: it fires only once the assignment has settled."""
    settled = Settled(app)

    @app.timer(interval=TICK_S, name="risk-renewal-watch")  # type: ignore[untyped-decorator]
    async def renewal_watch() -> None:
        actives = settled.actives(source_topic)
        if actives is None:
            watch.indexed = None  # index on a later tick, once restored
            return
        try:
            await watch.fire_due(actives)
        except Exception:  # the loop must survive one bad send; it retries next tick
            log.exception("renewal watch: firing failed")
