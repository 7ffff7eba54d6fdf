-- Quarantine: a rejected event keeps the code of its reason (to filter and count by), the wire
-- format its request came in (to replay it as it was sent) and when ingest received it.
ALTER TABLE rejected_events
  ADD COLUMN reason_code VARCHAR(64) NOT NULL DEFAULT 'unknown' AFTER item_index,
  ADD COLUMN source VARCHAR(32) NULL AFTER reason,
  ADD COLUMN received_at DATETIME(3) NULL AFTER raw,
  ADD KEY ix_rejected_project_code (project_id, reason_code, id)
