-- Runs left `running` by an invocation that stopped (a Lambda's timeout, a crash) and was not
-- retried are marked failed when a later slot's run of their job starts (`claim_run`): this
-- index finds them among the job's runs without reading its history (a run a minute for the
-- rollups job, kept 90 days).
ALTER TABLE job_runs ADD KEY ix_job_runs_state (job, state, slot);
