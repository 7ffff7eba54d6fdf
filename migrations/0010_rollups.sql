-- Exact rollups for the read side's counts. Every write that changes which live events an
-- hour holds marks that (project, hour) dirty in its own transaction: the consumer storing
-- events, a soft delete or restore, an erasure, retention. The rollup step recomputes each
-- dirty hour from the raw rows and clears its mark in one transaction; a read takes clean
-- hours from the rollup and dirty hours (and the current one) from the raw rows, so an
-- answer is exact whether or not the step has run (store/rollups.rs).
-- `hour` is hours since 1970-01-01 00:00 UTC of the event's `timestamp`.
CREATE TABLE rollup_dirty_hours (
  project_id BIGINT UNSIGNED NOT NULL,
  hour INT UNSIGNED NOT NULL,
  marked_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  PRIMARY KEY (project_id, hour)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Live events per hour, type and name ('' for none), and the newest event time among them.
CREATE TABLE rollup_event_hours (
  project_id BIGINT UNSIGNED NOT NULL,
  hour INT UNSIGNED NOT NULL,
  type ENUM('track','identify','page','screen','group','alias') NOT NULL,
  name VARCHAR(255) NOT NULL,
  events BIGINT UNSIGNED NOT NULL,
  last_at DATETIME(3) NOT NULL,
  PRIMARY KEY (project_id, hour, type, name),
  KEY ix_rollup_event_hours_name (project_id, type, name, hour)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Events stored before this migration: every hour they hold starts dirty.
INSERT IGNORE INTO rollup_dirty_hours (project_id, hour)
  SELECT DISTINCT project_id, TIMESTAMPDIFF(HOUR, '1970-01-01 00:00:00', timestamp) FROM events;
