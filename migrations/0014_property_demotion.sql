-- Demoting a promoted property (DELETE /v1/properties/{property}/promote) lists it here (the
-- api only inserts): from then on no read uses its counts and its slot is free. The rollups
-- job deletes its rows of rollup_property_hours in chunks, then its promoted_properties row,
-- backfill and this entry. Promoting it again before that answers 409.
CREATE TABLE rollup_property_purge (
  project_id BIGINT UNSIGNED NOT NULL,
  property_id BIGINT UNSIGNED NOT NULL,
  demoted_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  PRIMARY KEY (project_id, property_id),
  KEY ix_rollup_property_purge_demoted (demoted_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
