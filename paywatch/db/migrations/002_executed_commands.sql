-- The executor's journal: one row per recovery command it carried out (or recorded).
-- Not a read model: it is the executor's durable idempotency guard (a command id found
-- here is never executed again) and the record of notification commands until real
-- channels exist. Replay of the read models leaves it alone.

CREATE TABLE executed_commands (
    tenant        text NOT NULL,
    command_id    text NOT NULL,
    type          text NOT NULL,
    invoice_ref   text NOT NULL,
    due_at        timestamptz NOT NULL,
    executed_at   timestamptz NOT NULL DEFAULT now(),
    outcome       text NOT NULL,
    detail        jsonb NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (tenant, command_id)
);
CREATE INDEX executed_commands_invoice ON executed_commands (tenant, invoice_ref, due_at);
