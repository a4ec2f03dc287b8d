"""The normalize/fetch stages' commit rule: an offset is committed only when every record
below it has its effects acked (paywatch.streams.commits.OffsetLedger)."""

from __future__ import annotations

from faust.types import TP as FaustTP

from paywatch.kafka.health import tracker
from paywatch.streams.commits import MAX_REFILLS, TP, Committer, OffsetLedger

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


class _Consumer:
    """The three things the Committer uses of Faust's consumer, recorded."""

    def __init__(self, committed: dict[TP, int]) -> None:
        self._committed_offset = dict(committed)
        self.commits: list[dict[TP, int]] = []
        self.seeks: list[tuple[TP, int]] = []
        self.paused: set[FaustTP] = set()

    async def _commit(self, offsets: dict[TP, int]) -> bool:
        self.commits.append(dict(offsets))
        self._committed_offset.update(offsets)
        return True

    async def seek(self, tp: FaustTP, offset: int) -> None:
        assert tp in self.paused, "a seek of a partition still delivering can be undone"
        self.seeks.append((TP(tp.topic, tp.partition), offset))

    def pause_partitions(self, tps: list[FaustTP]) -> None:
        assert all(isinstance(tp, FaustTP) for tp in tps), "Faust asserts its TP type"
        self.paused.update(tps)

    def resume_partitions(self, tps: list[FaustTP]) -> None:
        assert all(isinstance(tp, FaustTP) for tp in tps), "Faust asserts its TP type"
        self.paused.difference_update(tps)


class _App:
    def __init__(self, consumer: _Consumer, generation: int) -> None:
        self.consumer = consumer
        self.consumer_generation_id = generation


async def test_a_generation_starting_past_the_committed_offset_seeks_back_not_commits() -> None:
    """A partition kept across a rebalance but not rewound: generation 2's first record is
    60 while 40 is committed, so 40..59 (fetched by generation 1, maybe never finished) must
    not be skipped: no commit, a seek back to 40, and commits again once 40 onwards ran."""

    consumer = _Consumer({TP(*RAW): 40})
    ledger = OffsetLedger()
    committer = Committer(_App(consumer, generation=2), ledger)
    for offset in (60, 61):
        ledger.start(RAW, offset, 2)
        ledger.finish(RAW, offset, 2)
    assert not await committer.commit()
    assert consumer.commits == [] and consumer.seeks == [(TP(*RAW), 40)]
    for offset in range(40, 62):  # delivered again from the committed offset
        ledger.start(RAW, offset, 2)
        ledger.finish(RAW, offset, 2)
    assert await committer.commit()
    assert consumer.commits == [{TP(*RAW): 62}]


async def test_a_generation_starting_at_the_committed_offset_commits() -> None:

    consumer = _Consumer({TP(*RAW): 40})
    ledger = OffsetLedger()
    committer = Committer(_App(consumer, generation=3), ledger)
    for offset in range(40, 45):
        ledger.start(RAW, offset, 3)
        ledger.finish(RAW, offset, 3)
    assert await committer.commit()
    assert consumer.commits == [{TP(*RAW): 45}] and consumer.seeks == []


def test_a_hole_inside_a_generation_is_never_committed_over() -> None:
    """Records 13 and 14 never reached the stage (Faust skipped them) while 15.. did: the
    commit stops at 13 however far the finished records go, and moves on once they came."""
    ledger = OffsetLedger()
    for offset in (10, 11, 12, 15, 16):
        ledger.start(RAW, offset, 1)
        ledger.finish(RAW, offset, 1)
    assert ledger.committable(1) == {TP(*RAW): 13}
    assert ledger.holes(1) == {TP(*RAW): 13}
    for offset in (13, 14, 15, 16):  # after the seek back: from 13 again
        ledger.start(RAW, offset, 1)
        ledger.finish(RAW, offset, 1)
    assert ledger.holes(1) == {}
    assert ledger.committable(1) == {TP(*RAW): 17}


async def test_the_committer_seeks_back_to_a_hole_then_commits_past_it() -> None:
    consumer = _Consumer({TP(*RAW): 10})
    ledger = OffsetLedger()
    committer = Committer(_App(consumer, generation=1), ledger)
    for offset in (10, 11, 14):
        ledger.start(RAW, offset, 1)
        ledger.finish(RAW, offset, 1)
    assert await committer.commit()
    assert consumer.commits == [{TP(*RAW): 12}] and consumer.seeks == [(TP(*RAW), 12)]
    for offset in (12, 13, 14):
        ledger.start(RAW, offset, 1)
        ledger.finish(RAW, offset, 1)
    assert await committer.commit()
    assert consumer.commits[-1] == {TP(*RAW): 15} and len(consumer.seeks) == 1


async def test_a_hole_that_never_fills_is_skipped_after_bounded_seeks() -> None:
    """Offsets the log does not hold (retention, transaction markers) cannot stop a stage."""
    consumer = _Consumer({TP(*RAW): 10})
    ledger = OffsetLedger()
    committer = Committer(_App(consumer, generation=1), ledger)
    for offset in (10, 12):
        ledger.start(RAW, offset, 1)
        ledger.finish(RAW, offset, 1)
    for _ in range(MAX_REFILLS):
        await committer.commit()
    assert consumer.seeks == [(TP(*RAW), 11)] * MAX_REFILLS
    assert consumer.commits == [{TP(*RAW): 11}]
    letters = tracker.dead_letters
    assert await committer.commit()
    assert consumer.commits[-1] == {TP(*RAW): 13} and ledger.holes(1) == {}
    assert tracker.dead_letters == letters + 1  # health: degraded, naming the offsets
    assert "offsets (11, 12) never arrived" in (tracker.last_error or "")
