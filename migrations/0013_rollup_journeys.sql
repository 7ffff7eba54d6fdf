-- Who did which named event when, for funnels and retention (POST /v1/query/funnels and
-- /v1/query/retention): one row per live event of a clean hour with a name, narrow (a 64-bit
-- hash of the user, the millisecond within the hour) and keyed by name first, so that a
-- question about a few names over weeks reads a few short ranges instead of looking up every
-- row of the events table. Events of one user, name and millisecond share a row (`events`).
-- Rebuilt by the rollups job with rollup_event_hours, from the same dirty-hour marks; a read
-- takes dirty hours and the current one from the raw rows (store/journeys.rs). An hour whose
-- named events are blank ('' or spaces) keeps them under ''.
-- `user_hash`: the first 64 bits of MD5(COALESCE(user_id, anonymous_id)) without trailing
-- spaces (SQL compares ids without them), computed in SQL so that rows from the rollup and
-- from the raw rows agree.
CREATE TABLE rollup_journey_hours (
  project_id BIGINT UNSIGNED NOT NULL,
  type ENUM('track','identify','page','screen','group','alias') NOT NULL,
  name VARCHAR(255) NOT NULL,
  hour INT UNSIGNED NOT NULL,
  user_hash BIGINT UNSIGNED NOT NULL,
  at_ms INT UNSIGNED NOT NULL,
  events INT UNSIGNED NOT NULL,
  PRIMARY KEY (project_id, type, name, hour, user_hash, at_ms)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Hours rolled up without their journeys (before this migration, or by the previous release
-- while a deploy runs) are not marked here: a read finds them (their journeys do not add up
-- to their counts in rollup_event_hours), reads them raw and marks them for the rollups job.
