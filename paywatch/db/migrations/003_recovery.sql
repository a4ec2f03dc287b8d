-- Recovery read models, projected from recovery.transitions and recovery.commands by the
-- same projector (and checkpoint table) as the payment read models. Derived from Kafka:
-- both tables can be dropped and rebuilt by replay.

-- One row per tenant/invoice with a recovery saga: the latest transition's snapshot.
-- The row only moves forward: a transition replaces it when its
-- (last_transition_at, last_topic, last_partition, last_offset) is greater.
CREATE TABLE recovery_workflows (
    tenant               text NOT NULL,
    invoice_ref          text NOT NULL,
    state                text NOT NULL,
    next_action          text,
    next_action_at       timestamptz,
    attempts_used        integer,
    attempts_allowed     integer,
    last_rule_id         text NOT NULL,
    last_rule_edition    text NOT NULL,
    last_rule_source     text NOT NULL,
    last_reason          text,
    last_cause_event_id  text NOT NULL,
    last_transition_at   timestamptz NOT NULL,
    last_topic           text NOT NULL,
    last_partition       integer NOT NULL,
    last_offset          bigint NOT NULL,
    started_at           timestamptz NOT NULL,
    closed_at            timestamptz,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, invoice_ref)
);
CREATE INDEX recovery_workflows_due ON recovery_workflows (tenant, state, next_action_at);

-- One row per transition or command record (audit, and the invoice timeline).
CREATE TABLE recovery_log (
    topic           text NOT NULL,
    partition       integer NOT NULL,
    "offset"        bigint NOT NULL,
    tenant          text NOT NULL,
    invoice_ref     text NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('transition', 'command')),
    at              timestamptz NOT NULL,  -- transition: at; command: issued_at, else due_at
    from_state      text,
    to_state        text,
    command_id      text,
    command_type    text,
    due_at          timestamptz,
    rule_id         text NOT NULL,
    rule_edition    text NOT NULL,
    rule_source     text NOT NULL,
    reason          text,
    cause_event_id  text,
    payload         jsonb NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, "offset")
);
CREATE INDEX recovery_log_invoice ON recovery_log (tenant, invoice_ref, at);
