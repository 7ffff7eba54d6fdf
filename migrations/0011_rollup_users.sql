-- The users of each (project, hour, type) for the read side's unique-user counts (trends'
-- unique_users, dau, wau, mau): the users' 64-bit hashes while there are at most 512, a
-- HyperLogLog sketch of 4096 registers past that (shared/src/sketch.rs). Kept exact by the
-- same dirty-hour marks as rollup_event_hours, and rebuilt with it.
CREATE TABLE rollup_user_hours (
  project_id BIGINT UNSIGNED NOT NULL,
  hour INT UNSIGNED NOT NULL,
  type ENUM('track','identify','page','screen','group','alias') NOT NULL,
  users VARBINARY(4097) NOT NULL,
  PRIMARY KEY (project_id, hour, type)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Hours rolled up before this table existed have no users yet: mark them to be rebuilt.
INSERT IGNORE INTO rollup_dirty_hours (project_id, hour)
  SELECT DISTINCT project_id, hour FROM rollup_event_hours;
