-- Properties a project promotes (POST /v1/properties/{property}/promote): the rollups count
-- their values per hour, type and name, so that a trend broken down by one of them reads the
-- rollups instead of every row. A promotion lists every hour with events in
-- rollup_property_backfill in its own transaction; the rollups job recounts those hours when
-- no hour is dirty, newest first, and until then a breakdown by the property reads them from
-- the raw rows: answers are exact throughout, and other questions keep their rollups.
CREATE TABLE promoted_properties (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  project_id BIGINT UNSIGNED NOT NULL,
  -- As asked, e.g. properties.plan; its document (a column of events) and JSON path below.
  property VARCHAR(255) NOT NULL,
  document ENUM('properties','traits','context') NOT NULL,
  json_path VARCHAR(1024) NOT NULL,
  promoted_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  PRIMARY KEY (id),
  UNIQUE KEY ux_promoted_properties (project_id, property)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Live events per hour, promoted property, type, name and value. `value` is the property as
-- the raw breakdown reads it (JSON_UNQUOTE(JSON_EXTRACT(document, path))), NULL where the
-- event lacks it; `value_hash` its xxh3 (0 for NULL) keeps the key short.
CREATE TABLE rollup_property_hours (
  project_id BIGINT UNSIGNED NOT NULL,
  hour INT UNSIGNED NOT NULL,
  property_id BIGINT UNSIGNED NOT NULL,
  type ENUM('track','identify','page','screen','group','alias') NOT NULL,
  name VARCHAR(255) NOT NULL,
  value_hash BIGINT UNSIGNED NOT NULL,
  value MEDIUMTEXT NULL,
  events BIGINT UNSIGNED NOT NULL,
  PRIMARY KEY (project_id, property_id, hour, type, name, value_hash),
  -- The rollups job replaces an hour's rows.
  KEY ix_rollup_property_hours_hour (project_id, hour),
  -- A breakdown of one event name reads its rows alone.
  KEY ix_rollup_property_hours_name (project_id, property_id, type, name, hour)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- The hours a promotion has yet to count (its backfill).
CREATE TABLE rollup_property_backfill (
  project_id BIGINT UNSIGNED NOT NULL,
  property_id BIGINT UNSIGNED NOT NULL,
  hour INT UNSIGNED NOT NULL,
  PRIMARY KEY (project_id, property_id, hour),
  KEY ix_rollup_property_backfill_hour (hour)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
