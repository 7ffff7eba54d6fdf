-- Links that arrive after their user's erasure: an identify (or alias) queued on a phone that
-- was offline names an erased user id and an id the erasure could not know of. The consumer
-- drops the event (its user id is suppressed) and notes the link here; cleanup adds the id to
-- that user's erasure, if the link rules make it the user's. No id of the erased user in
-- clear: `anchor_hashes` are its keyed hashes (32 bytes per pepper), to find its erasure by
-- `subject_hash`; `late_hashes` are the linked id's, for the suppression list (cleanup holds
-- no pepper). One row per linked id: the first link of an id wins, as for live links.
CREATE TABLE erasure_late_links (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  project_id BIGINT UNSIGNED NOT NULL,
  late_id VARCHAR(255) NOT NULL,
  anchor_hashes VARBINARY(1024) NOT NULL,
  late_hashes VARBINARY(1024) NOT NULL,
  created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  PRIMARY KEY (id),
  UNIQUE KEY uq_late_links (project_id, late_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- A late link finds its user's erasure by the user id's hash.
ALTER TABLE erasures ADD KEY ix_erasures_subject (project_id, subject_hash);
