-- Data lifecycle: GDPR erasure requests (which become their own audit rows), the suppression
-- list that keeps an erased user's queued events out, and indexes for the cleanup steps.

-- One row per erasure request. While pending it holds the user id and the ids linked to it
-- (to find the rows to delete); when done both are cleared, and what remains is the audit
-- record: a keyed hash of the user id, counts and times.
CREATE TABLE erasures (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  uid BINARY(16) NOT NULL,
  project_id BIGINT UNSIGNED NOT NULL,
  subject_hash BINARY(32) NOT NULL,
  user_id VARCHAR(255) NULL,
  linked_ids JSON NULL,
  state ENUM('pending','done') NOT NULL DEFAULT 'pending',
  events_deleted BIGINT UNSIGNED NOT NULL DEFAULT 0,
  profiles_deleted BIGINT UNSIGNED NOT NULL DEFAULT 0,
  aliases_deleted BIGINT UNSIGNED NOT NULL DEFAULT 0,
  group_links_deleted BIGINT UNSIGNED NOT NULL DEFAULT 0,
  rejected_deleted BIGINT UNSIGNED NOT NULL DEFAULT 0,
  requested_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  completed_at DATETIME(3) NULL,
  PRIMARY KEY (id),
  UNIQUE KEY uq_erasures_uid (uid),
  KEY ix_erasures_pending (state, id),
  KEY ix_erasures_completed (completed_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Keyed hashes of erased ids, per project: the consumer drops events carrying them, also
-- those queued before the request. Kept longer than a message can live in SQS (14 days).
CREATE TABLE suppressed_subjects (
  project_id BIGINT UNSIGNED NOT NULL,
  subject_hash BINARY(32) NOT NULL,
  created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  PRIMARY KEY (project_id, subject_hash),
  KEY ix_suppressed_created (created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

ALTER TABLE api_keys ADD KEY ix_api_keys_deleted (deleted_at);
ALTER TABLE events ADD KEY ix_events_previous (project_id, previous_id);
ALTER TABLE rejected_events ADD KEY ix_rejected_project (project_id)
