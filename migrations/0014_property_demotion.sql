-- Demoting a promoted property (DELETE /v1/properties/{property}/promote) deletes its
-- promoted_properties row at once, so that no read uses its counts any more and its slot is
-- free, and lists it here in the same transaction; the rollups job then deletes its rows of
-- rollup_property_hours in chunks and the entry with the last of them.
CREATE TABLE rollup_property_purge (
  project_id BIGINT UNSIGNED NOT NULL,
  property_id BIGINT UNSIGNED NOT NULL,
  demoted_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  PRIMARY KEY (project_id, property_id),
  KEY ix_rollup_property_purge_demoted (demoted_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
