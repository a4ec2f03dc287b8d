"""Small pure pieces: embedded Kafka cluster ids, settings guards."""

from __future__ import annotations

from pathlib import Path

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


def test_a_copy_with_another_state_dir_has_its_own_state_path(tmp_path: Path) -> None:
    """A second worker's settings (model_copy) must not keep the first one's cached path."""
    first = Settings(state_dir=tmp_path / "a", kafka_bootstrap="k:9", database_url=None)
    assert first.state_path == (tmp_path / "a").resolve()
    second = first.model_copy(update={"state_dir": tmp_path / "b"})
    assert second.state_path == (tmp_path / "b").resolve()
