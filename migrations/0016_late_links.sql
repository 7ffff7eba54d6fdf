-- Links that arrive after their user's erasure: an identify queued on a phone that was
-- offline names an erased user id and a device id the erasure could not know of. The consumer
-- drops the identify (its user id is suppressed) and notes the link here; cleanup adds the id
-- to that user's erasure, if the link rules make it the user's. No id of the erased user in
-- clear: `anchor_hashes` are its keyed hashes (32 bytes per pepper), to find its erasure by
-- `subject_hash`, and `anchor_hash` the current pepper's, which caps the links noted per
-- user; `late_hashes` are the device id's, for the suppression list (cleanup holds no
-- pepper). One row per device id: the first link of an id wins, as for live links.
-- `checked_at`: when cleanup last found the id holding no events yet (its events may still be
-- queued); such a link is looked at again by later runs, for as long as suppression lasts.
CREATE TABLE erasure_late_links (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  project_id BIGINT UNSIGNED NOT NULL,
  late_id VARCHAR(255) NOT NULL,
  anchor_hash BINARY(32) NOT NULL,
  anchor_hashes VARBINARY(1024) NOT NULL,
  late_hashes VARBINARY(1024) NOT NULL,
  created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  checked_at DATETIME(3) NULL,
  PRIMARY KEY (id),
  UNIQUE KEY uq_late_links (project_id, late_id),
  KEY ix_late_links_anchor (project_id, anchor_hash),
  KEY ix_late_links_turn (checked_at, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- A late link finds its user's erasure by the user id's hash.
ALTER TABLE erasures ADD KEY ix_erasures_subject (project_id, subject_hash);
