"""What a rebuild rebuilds (paywatch/projections/rebuild.py): pure, no Kafka or Postgres."""

from __future__ import annotations

import pytest

from paywatch.projections.generation import _shape
from paywatch.projections.rebuild import UnknownModel, plan
from paywatch.projections.registry import READ_MODELS
from paywatch.schemas.read_models import NAMES


def test_the_api_names_exactly_the_registered_read_models() -> None:
    assert {m.name for m in READ_MODELS} == NAMES


def test_a_model_comes_with_the_models_it_reads_in_registry_order() -> None:
    chosen = [m.name for m in plan(["invoices"]).models]
    assert chosen == [m.name for m in READ_MODELS if m.name in chosen]
    assert {"event_log", "recovery_workflows", "invoices"} <= set(chosen)
    assert "customers" not in chosen and not plan(["invoices"]).complete


def test_all_is_every_model_and_complete() -> None:
    everything = plan(["all"])
    assert [m.name for m in everything.models] == [m.name for m in READ_MODELS]
    assert everything.complete
    assert {"tenant_policies", "tenant_policy_changes"} <= set(everything.tables)


def test_an_unknown_name_is_refused_naming_the_choices() -> None:
    with pytest.raises(UnknownModel, match="unknown read model 'nope': one of all, event_log"):
        plan(["nope"])


def test_index_shapes_ignore_name_and_table() -> None:
    columns = "USING btree (tenant, last_event_at DESC)"
    live = f"CREATE INDEX invoices_page ON public.invoices {columns}"
    copy = f"CREATE INDEX invoices_tenant_idx ON pw_rebuild_x.invoices {columns}"
    assert _shape(live) == _shape(copy)
    assert _shape(live.replace("INDEX", "UNIQUE INDEX", 1)) != _shape(copy)
