-- Who was active in each hour, for retention on any event (POST /v1/query/retention without
-- cohort_event or return_event): one row per (project, hour, user), with the first and last
-- live event's millisecond within the hour. A period of retention is a day or a week, so its
-- boundaries cut an hour at most once, and the first and last event say on which side of the
-- cut the user was active: the answer is exact in every time zone, also those with half- and
-- quarter-hour offsets. `user_hash` is the journeys' (0013). Rebuilt by the rollups job with
-- the other rollups, from the same dirty-hour marks.
-- Retention over more rows than a question may hold in memory is answered from a sample of
-- users (those whose hash is below a bound), read as one range of the key per hour: no
-- second key, which the rollups job would write at random places as it adds each hour.
CREATE TABLE rollup_activity_hours (
  project_id BIGINT UNSIGNED NOT NULL,
  hour INT UNSIGNED NOT NULL,
  user_hash BIGINT UNSIGNED NOT NULL,
  first_ms INT UNSIGNED NOT NULL,
  last_ms INT UNSIGNED NOT NULL,
  PRIMARY KEY (project_id, hour, user_hash)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Set by the rollups job that also wrote the hour's activity. A release before this one
-- rebuilds an hour's users without it (and leaves its activity rows as they were): a read
-- finds such an hour, reads it raw and marks it for the rollups job.
ALTER TABLE rollup_user_hours
  ADD COLUMN with_activity BOOLEAN NOT NULL DEFAULT FALSE,
  ADD KEY ix_rollup_user_hours_activity (project_id, hour, with_activity);

-- Hours rolled up before this table existed have no activity yet: mark them to be rebuilt.
INSERT IGNORE INTO rollup_dirty_hours (project_id, hour)
  SELECT DISTINCT project_id, hour FROM rollup_event_hours;
