"""The normalize/fetch stages' commit rule: an offset is committed only when every record
below it has its effects acked (paywatch.streams.commits.OffsetLedger)."""

from __future__ import annotations

from paywatch.streams.commits import TP, OffsetLedger

RAW = ("webhooks.raw", 0)


def test_nothing_is_committable_before_a_record_is_finished() -> None:
    ledger = OffsetLedger()
    for offset in (27, 28, 29):
        assert ledger.start(RAW, offset, generation=1)
    assert ledger.committable(1) == {TP(*RAW): 27}  # the group's offset, nothing beyond
    ledger.finish(RAW, 28, 1)
    ledger.finish(RAW, 29, 1)
    assert ledger.committable(1) == {TP(*RAW): 27}  # 27 still holds them back
    ledger.finish(RAW, 27, 1)
    assert ledger.committable(1) == {TP(*RAW): 30}


def test_a_handed_off_record_holds_the_commit_while_later_ones_finish() -> None:
    ledger = OffsetLedger()
    for offset in range(10, 20):
        ledger.start(RAW, offset, 1)
    for offset in range(10, 20):
        if offset != 12:  # the thin webhook the fetch agent still works on
            ledger.finish(RAW, offset, 1)
    assert ledger.committable(1) == {TP(*RAW): 12}
    ledger.finish(RAW, 12, 1)
    assert ledger.committable(1) == {TP(*RAW): 20}


def test_records_of_an_older_generation_never_count() -> None:
    ledger = OffsetLedger()
    ledger.start(RAW, 27, 1)
    # A rebalance: generation 2 starts again at the committed offset 27; what generation 1
    # had buffered (28..54) and Faust skipped is delivered again.
    assert ledger.start(RAW, 27, 2)
    assert not ledger.start(RAW, 54, 1)  # a stale record still in a batch: not counted
    ledger.finish(RAW, 54, 1)
    assert ledger.committable(1) == {}  # the old generation commits nothing any more
    assert ledger.committable(2) == {TP(*RAW): 27}
    ledger.finish(RAW, 27, 2)
    assert ledger.committable(2) == {TP(*RAW): 28}


def test_a_committed_offset_is_not_committed_again_and_a_record_started_twice_needs_both() -> None:
    ledger = OffsetLedger()
    ledger.start(RAW, 5, 1)
    ledger.start(RAW, 5, 1)  # the same record in two stages
    ledger.finish(RAW, 5, 1)
    assert ledger.committable(1) == {TP(*RAW): 5}
    ledger.finish(RAW, 5, 1)
    assert ledger.committable(1) == {TP(*RAW): 6}
    ledger.committed({TP(*RAW): 6}, 1)
    assert ledger.committable(1) == {}
    assert ledger.unfinished() == 0


def test_partitions_are_independent() -> None:
    ledger = OffsetLedger()
    other = ("webhooks.raw", 1)
    ledger.start(RAW, 3, 1)
    ledger.start(other, 8, 1)
    ledger.finish(other, 8, 1)
    assert ledger.committable(1) == {TP(*RAW): 3, TP(*other): 9}
