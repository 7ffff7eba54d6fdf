-- Properties a project promotes (POST /v1/properties/{property}/promote): the rollups count
-- their values per hour, type and name, so that a trend broken down by one of them reads the
-- rollups instead of every row. A promotion marks every hour with events dirty in its own
-- transaction (the backfill): until the rollups job has recounted an hour, reads take it from
-- the raw rows, so answers are exact throughout.
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
  PRIMARY KEY (project_id, hour, property_id, type, name, value_hash)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
