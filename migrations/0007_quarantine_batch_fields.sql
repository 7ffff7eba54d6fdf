-- A quarantined event from a batch keeps the batch-level fields it was sent with (sentAt,
-- context, integrations, as sent), so that a replay gives it the time and context its first
-- request would have given it.
ALTER TABLE rejected_events
  ADD COLUMN batch_fields JSON NULL AFTER raw;
