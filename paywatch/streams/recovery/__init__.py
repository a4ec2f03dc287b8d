"""The recovery saga's pure policy (ARCHITECTURE §8): one saga per tenant/invoice.

``decide(state, input, now, policy) -> Decision`` is the whole public behaviour; the shell
(a Faust agent) reads the saga from its table, puts the card's ``CardLedger`` in it (see
``ledger_card``), calls ``decide``, stores ``new_state``, writes ``ledger_entries`` to the
card table, sends ``commands`` and ``transitions``, and indexes ``new_state.timers()`` to
call ``decide`` again with a ``TimerFired`` when one comes due.

Modules: ``rules`` (network rules as data), ``ledger`` (card usage), ``limits`` (the retry
gate), ``tenant_policy`` (tenant settings), ``state`` (models), ``commands`` (ids),
``plan`` (scheduling), ``events`` (one handler per event type), ``fire`` (due timers),
``run`` (one call's output), ``policy`` (``decide``), ``memory`` (an in-memory shell: the
reference for the Faust agent, used by tests and the benchmark).
"""

from __future__ import annotations

from paywatch.streams.recovery.ledger import AttemptSource, CardAttempt, CardLedger, card_key
from paywatch.streams.recovery.policy import decide, ledger_card
from paywatch.streams.recovery.rules import Action, Rulebook, Verdict, assess, rulebook
from paywatch.streams.recovery.state import (
    ALLOWED_EDGES,
    Decision,
    PolicyChanged,
    Saga,
    SagaInput,
    Timer,
    TimerFired,
    TimerPurpose,
)
from paywatch.streams.recovery.tenant_policy import (
    Channel,
    DunningStep,
    Escalation,
    FinalAction,
    RetryOwner,
    RetrySchedule,
    TenantPolicy,
)

__all__ = [
    "ALLOWED_EDGES",
    "Action",
    "AttemptSource",
    "CardAttempt",
    "CardLedger",
    "Channel",
    "Decision",
    "DunningStep",
    "Escalation",
    "FinalAction",
    "PolicyChanged",
    "RetryOwner",
    "RetrySchedule",
    "Rulebook",
    "Saga",
    "SagaInput",
    "TenantPolicy",
    "Timer",
    "TimerFired",
    "TimerPurpose",
    "Verdict",
    "assess",
    "card_key",
    "decide",
    "ledger_card",
    "rulebook",
]
