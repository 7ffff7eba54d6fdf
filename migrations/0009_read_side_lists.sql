-- The read side's lists (GET /v1/events, /v1/events/live, /v1/users/{id}/events) walk an
-- index in time order and stop after a bounded number of entries:
-- - an anonymous id's events newest first need the time after the id in its index;
-- - the live tail follows the time a row was stored (`created_at`), not `received_at`: a
--   queue backlog stores events long after they were received, and a tail by received time
--   would never show them. Nothing read `ix_events_received`.
ALTER TABLE events
  DROP INDEX ix_events_anonymous,
  ADD KEY ix_events_anonymous (project_id, anonymous_id, timestamp),
  DROP INDEX ix_events_received,
  ADD KEY ix_events_stored (project_id, created_at);
