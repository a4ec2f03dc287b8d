-- Policy experiments (issue 10 item 7): each saga's experiment and arm, from its
-- transitions (SagaTransition.experiment / .arm), so `paywatch experiment status` compares
-- the arms from the read model. Null: the episode was opened without an experiment.
ALTER TABLE recovery_workflows ADD COLUMN experiment text, ADD COLUMN arm text;
CREATE INDEX recovery_workflows_experiment ON recovery_workflows (tenant, experiment, arm)
    WHERE experiment IS NOT NULL;
