"""The appender's partitioner is aiokafka's default one (and so the Java client's)."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st

from paywatch.kafka.appender import key_partition, murmur2
from paywatch.schemas.topics import raw_key


@given(st.binary(max_size=300))
def test_murmur2_is_aiokafkas(key: bytes) -> None:
    assert murmur2(key) == aiokafka_murmur2(key)


@given(st.binary(max_size=300), st.integers(min_value=1, max_value=64))
def test_same_partition_as_aiokafkas_default_partitioner(key: bytes, count: int) -> None:
    partitions = list(range(count))
    assert key_partition(key, count) == DefaultPartitioner()(key, partitions, partitions)


def test_known_murmur2_partitions_of_the_java_client() -> None:
    # Values of org.apache.kafka.common.utils.Utils.murmur2 (kafka-clients' tests).
    assert key_partition(b"21", 2**31 - 1) == (-973932308 & 0x7FFFFFFF) % (2**31 - 1)
    assert key_partition(raw_key("acme", "stripe", "in_1").encode(), 12) in range(12)
