-- Key lifecycle (rotation grace, end marks), the projects' IP policy, the job ledger and the
-- signing keyring.

-- 'truncate' keeps the network part (/24, /48), 'full' the whole address, 'none' nothing.
ALTER TABLE projects ADD COLUMN ip_policy ENUM('truncate','full','none') NOT NULL DEFAULT 'truncate' AFTER retention_days;
UPDATE projects SET ip_policy = 'full' WHERE store_full_ip = 1;
ALTER TABLE projects DROP COLUMN store_full_ip;

-- A rotated key stays valid until grace_ends_at; replaced_by is its successor's id.
-- ended_at / ended_reason are set by rotate-keys once a key can no longer be used; the
-- check at use time does not depend on them (expires_at, grace_ends_at and revoked_at decide).
ALTER TABLE api_keys
  ADD COLUMN grace_ends_at DATETIME(3) NULL AFTER expires_at,
  ADD COLUMN replaced_by BIGINT UNSIGNED NULL AFTER grace_ends_at,
  ADD COLUMN ended_at DATETIME(3) NULL AFTER revoked_at,
  ADD COLUMN ended_reason ENUM('expired','rotated','revoked') NULL AFTER ended_at,
  ADD KEY ix_api_keys_expires (ended_at, expires_at),
  ADD KEY ix_api_keys_grace (ended_at, grace_ends_at);

-- The job ledger: one row per (job, slot). A run is owned by whoever holds an unexpired
-- lease; every taking of the lease increments `fence`, and a unit of work commits only while
-- the fence it was started under still holds.
CREATE TABLE job_runs (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  uid BINARY(16) NOT NULL,
  job VARCHAR(64) NOT NULL,
  slot DATETIME(3) NOT NULL,
  state ENUM('running','succeeded','failed') NOT NULL DEFAULT 'running',
  fence BIGINT UNSIGNED NOT NULL DEFAULT 0,
  lease_until DATETIME(6) NOT NULL,
  attempts INT UNSIGNED NOT NULL DEFAULT 0,
  triggered_by VARCHAR(32) NOT NULL,
  error VARCHAR(2000) NULL,
  created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  finished_at DATETIME(3) NULL,
  PRIMARY KEY (id),
  UNIQUE KEY uq_job_runs_uid (uid),
  UNIQUE KEY uq_job_runs_slot (job, slot),
  KEY ix_job_runs_created (created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Per-step progress and results of a run: a step marked done is never run again, and a
-- chunked step resumes after `resume_after`.
CREATE TABLE job_steps (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  run_id BIGINT UNSIGNED NOT NULL,
  step VARCHAR(64) NOT NULL,
  done TINYINT(1) NOT NULL DEFAULT 0,
  rows_done BIGINT UNSIGNED NOT NULL DEFAULT 0,
  chunks INT UNSIGNED NOT NULL DEFAULT 0,
  duration_ms BIGINT UNSIGNED NOT NULL DEFAULT 0,
  resume_after VARCHAR(255) NULL,
  error VARCHAR(2000) NULL,
  updated_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  PRIMARY KEY (id),
  UNIQUE KEY uq_job_steps (run_id, step)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- The signing keyring (pagination cursors and other server-issued tokens). Secrets are
-- AES-256-GCM encrypted under the master key named by master_version. The newest key whose
-- signing window is open signs; any key not yet retired verifies.
CREATE TABLE signing_keys (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  uid BINARY(16) NOT NULL,
  secret_sealed VARBINARY(128) NOT NULL,
  master_version SMALLINT UNSIGNED NOT NULL,
  created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  signs_until DATETIME(3) NOT NULL,
  verifies_until DATETIME(3) NOT NULL,
  retired_at DATETIME(3) NULL,
  PRIMARY KEY (id),
  UNIQUE KEY uq_signing_keys_uid (uid),
  KEY ix_signing_keys_retired (retired_at, verifies_until)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
