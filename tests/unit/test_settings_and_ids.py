"""Small pure pieces: embedded Kafka cluster ids, settings guards."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from paywatch.ops.kafka import new_cluster_id
from paywatch.settings import Settings


def test_cluster_ids_never_start_with_a_dash() -> None:
    ids = [new_cluster_id() for _ in range(5000)]  # ~78 would start with '-' unguarded
    assert not [i for i in ids if i.startswith("-")]
    assert {len(i) for i in ids} == {22}


def test_prod_refuses_the_dev_secret_key() -> None:
    with pytest.raises(ValidationError, match="PAYWATCH_SECRET_KEY"):
        Settings(env="prod")
    assert Settings(env="prod", secret_key="x" * 40).env == "prod"  # type: ignore[arg-type]
