-- The audit trail: one row per admin action (and per attempt a valid key made), kept for
-- EVTRACK_AUDIT_LOG_RETENTION_DAYS (365) and then pruned by cleanup. It names the acting
-- key by its public id (never the key), the target by its public id (a user by the keyed
-- hash of their id, so that the trail outlives an erasure without holding the person), and
-- the client address as the project's IP policy stores it.
CREATE TABLE audit_log (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  uid BINARY(16) NOT NULL,
  actor_key_uid BINARY(16) NOT NULL,
  action VARCHAR(64) NOT NULL,
  target VARCHAR(128) NULL,
  project_id BIGINT UNSIGNED NULL,
  status SMALLINT UNSIGNED NOT NULL,
  request_id VARCHAR(64) NOT NULL,
  client_ip VARCHAR(45) NULL,
  created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  PRIMARY KEY (id),
  UNIQUE KEY uq_audit_log_uid (uid),
  KEY ix_audit_log_created (created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
