"""How a rebuild's bulk phase is shared among its worker processes."""

from __future__ import annotations

from aiokafka import TopicPartition

from paywatch.projections.rebuild import shares


def test_every_partition_goes_to_one_worker_and_a_partition_number_to_the_same_one() -> None:
    topics = ("payments.events", "recovery.transitions", "recovery.commands")
    targets = {TopicPartition(t, p): 100 * p + i for i, t in enumerate(topics) for p in range(12)}
    parts = shares(targets, 5)
    assert len(parts) == 5
    merged = {tp: at for part in parts for tp, at in part.items()}
    assert merged == targets and sum(map(len, parts)) == len(targets)  # each exactly once
    for part in parts:  # one key's records: the same partition number on every topic
        numbers = {tp.partition for tp in part}
        assert {tp for tp in targets if tp.partition in numbers} == set(part)


def test_more_workers_than_partitions_leaves_some_idle() -> None:
    targets = {TopicPartition("t", p): 1 for p in range(2)}
    assert [len(part) for part in shares(targets, 3)] == [1, 1, 0]
