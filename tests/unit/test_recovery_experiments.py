"""Policy experiments in the saga core: arms by hash, the challenger's plan, arms named on
every transition, stop, and the comparison statistics (issue 10 item 7)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

import pytest

from paywatch.recovery.experiments import Arm, assign, compare, draw, sample_size
from paywatch.recovery.memory_shell import MemoryShell
from paywatch.recovery.tenant_policy import CHALLENGER, CONTROL, Experiment, TenantPolicy
from paywatch.schemas.models import CommandType
from tests.unit.test_recovery_policy import HOUR, T0, ev, visa

RETRY = CommandType.RETRY_PAYMENT
FEWER = TenantPolicy.model_validate({"retry": {"days": [2], "max_retries": 1}})


def with_experiment(share: float = 0.5, exp_id: str = "fewer-retries") -> TenantPolicy:
    return TenantPolicy().model_copy(
        update={"experiment": Experiment(id=exp_id, share=share, challenger=FEWER)}
    )


def invoices_in(arm: str, n: int, exp_id: str = "fewer-retries") -> list[str]:
    found = [f"in_{i}" for i in range(200) if assign("acme", f"in_{i}", exp_id, 0.5) == arm]
    return found[:n]


def fail_every_retry(sh: MemoryShell, until: datetime) -> None:
    """Advance time; each paywatch retry fails, reported an hour later, on its own invoice."""
    handled = 0
    while True:
        due = [t.due_at for s in sh.sagas.values() for t in s.pending if t.due_at <= until]
        if not due:
            return
        sh.fire_due(min(due))
        retries = [c for c in sh.commands if c.type is RETRY]
        for cmd in retries[handled:]:
            outcome = ev(f"out_{cmd.command_id}", at=cmd.due_at, invoice=cmd.invoice_ref,
                         decline=visa("51"), paywatch_retry=True)  # fmt: skip
            sh.receive(outcome, cmd.due_at + HOUR)
        handled = len(retries)


def test_assignment_is_a_function_of_the_saga_and_the_experiment() -> None:
    arms = Counter(assign("acme", f"in_{i}", "x", 0.3) for i in range(20_000))
    assert 0.28 < arms[CHALLENGER] / 20_000 < 0.32
    assert [assign("acme", "in_7", "x", 0.3) for _ in range(3)] == [
        assign("acme", "in_7", "x", 0.3)
    ] * 3
    assert draw("acme", "in_7", "x") != draw("acme", "in_7", "y")  # experiments independent
    assert draw("acme", "in_7", "x") != draw("other", "in_7", "x")


def test_a_new_saga_runs_its_arm_s_policy_and_every_transition_names_the_arm() -> None:
    sh = MemoryShell(with_experiment())
    [challenged] = invoices_in(CHALLENGER, 1)
    [controlled] = invoices_in(CONTROL, 1)
    for i, invoice in enumerate((challenged, controlled)):
        sh.receive(ev(i, invoice=invoice, decline=visa("51")), T0)
    fail_every_retry(sh, T0 + timedelta(days=29))
    retries = Counter(c.invoice_ref for c in sh.commands if c.type is RETRY)
    assert retries[challenged] == 1  # the challenger: one retry, on day 2
    assert retries[controlled] == 4  # the control: the default days 1, 3, 5, 7
    arms = {(t.invoice_ref, t.experiment, t.arm) for t in sh.transitions}
    assert arms == {
        (challenged, "fewer-retries", CHALLENGER),
        (controlled, "fewer-retries", CONTROL),
    }
    assert sh.sagas[("acme", challenged)].experiment == "fewer-retries"


def test_sagas_opened_before_the_experiment_run_the_control_without_an_arm() -> None:
    sh = MemoryShell(TenantPolicy())
    [invoice] = invoices_in(CHALLENGER, 1)
    sh.receive(ev(1, invoice=invoice, decline=visa("51")), T0)
    sh.change_policy(with_experiment(), T0 + timedelta(hours=1))
    fail_every_retry(sh, T0 + timedelta(days=29))
    assert sum(c.type is RETRY for c in sh.commands) == 4
    assert {t.arm for t in sh.transitions} == {None}


def test_stopping_the_experiment_puts_open_challenger_sagas_on_the_control() -> None:
    sh = MemoryShell(with_experiment())
    [invoice] = invoices_in(CHALLENGER, 1)
    sh.receive(ev(1, invoice=invoice, decline=visa("51")), T0)
    assert [t.due_at.date() for t in sh.sagas[("acme", invoice)].pending if t.command
            and t.command.type is RETRY] == [(T0 + timedelta(days=2)).date()]  # fmt: skip
    sh.change_policy(TenantPolicy(), T0 + timedelta(hours=1))  # stopped
    fail_every_retry(sh, T0 + timedelta(days=29))
    # Reconciled to the control's plan: its retries from here on, and the arm kept as history.
    assert sum(c.type is RETRY for c in sh.commands) > 1
    assert sh.transitions[-1].arm == CHALLENGER


def test_a_replay_assigns_every_saga_the_arm_it_had() -> None:
    def run() -> list[tuple[str, str | None]]:
        sh = MemoryShell(with_experiment(share=0.3))
        for i in range(40):
            sh.receive(ev(i, invoice=f"in_{i}", decline=visa("51")), T0 + timedelta(minutes=i))
        return [(t.invoice_ref, t.arm) for t in sh.transitions]

    first = run()
    assert first == run() and {arm for _, arm in first} == {CONTROL, CHALLENGER}


def test_a_challenger_cannot_nest_an_experiment() -> None:
    with pytest.raises(ValueError, match="cannot run an experiment of its own"):
        Experiment(id="x", share=0.5, challenger=with_experiment())
    for share in (0.0, 1.0):
        with pytest.raises(ValueError):
            Experiment(id="x", share=share, challenger=FEWER)


def test_the_experiment_leaves_the_control_s_revision_alone() -> None:
    assert with_experiment().control.revision == TenantPolicy().revision
    assert with_experiment().revision != TenantPolicy().revision


def test_two_proportion_test_and_sample_size() -> None:
    result = compare(Arm(CONTROL, 1000, 500), Arm(CHALLENGER, 1000, 550))
    assert result.difference == pytest.approx(0.05)
    assert result.z == pytest.approx(2.2389, abs=1e-3)
    assert result.p_value == pytest.approx(0.0252, abs=1e-3)
    assert sample_size(0.5, 0.55) == 1565  # the textbook value for 50% vs 55%
    assert result.still_needed == 565 and not result.significant
    done = compare(Arm(CONTROL, 2000, 1000), Arm(CHALLENGER, 2000, 1100))
    assert done.still_needed == 0 and done.significant
    empty = compare(Arm(CONTROL, 0, 0), Arm(CHALLENGER, 10, 5))
    assert empty.p_value is None and empty.still_needed is None
    same = compare(Arm(CONTROL, 100, 50), Arm(CHALLENGER, 100, 50))
    assert same.needed_per_arm is None and same.p_value == pytest.approx(1.0)
