"""The recovery saga's pure core (ARCHITECTURE §8): one saga per tenant/invoice.

``decide(state, input, now, policy) -> Decision`` is the whole public behaviour; the shell
(the Faust agent in :mod:`paywatch.streams.saga`) reads the saga from its table, puts the
card's ``CardLedger`` in it (see ``ledger_card``), calls ``decide``, stores ``new_state``,
writes ``ledger_entries`` to the card table, sends ``commands`` and ``transitions``, and
indexes ``new_state.timers()`` to call ``decide`` again with a ``TimerFired`` when one comes
due.

Modules: ``rules`` (network rules as data), ``ledger`` (card usage), ``limits`` (the retry
gate), ``tenant_policy`` (a tenant's recovery settings), ``state`` (models), ``commands``
(ids), ``plan`` (scheduling), ``reactions`` (one reaction per event type), ``high_risk``
(which risk bands change the plan), ``firing`` (due timers), ``run`` (one call's output),
``decide`` (the entry point), ``clock`` (saga time vs wall time), ``shell`` (table entries
in and out, for the agent), ``timer_index`` (due timers in memory), ``memory_shell`` (an
in-memory shell: the reference for the Faust agent, used by tests and the benchmark).
No I/O, no clock, no framework in this package.
"""

from __future__ import annotations

from paywatch.recovery.decide import decide, ledger_card
from paywatch.recovery.ledger import AttemptSource, CardAttempt, CardLedger, card_key
from paywatch.recovery.rules import Action, Rulebook, Verdict, assess, rulebook
from paywatch.recovery.state import (
    ALLOWED_EDGES,
    Decision,
    PolicyChanged,
    Saga,
    SagaInput,
    Timer,
    TimerFired,
    TimerPurpose,
)
from paywatch.recovery.tenant_policy import (
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
