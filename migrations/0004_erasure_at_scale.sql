-- Erasure at any scale: the ids an erasure deletes are rows (worked through in chunks, so no
-- statement names more than a chunk of them), and a failing erasure is retried and reported
-- without holding up the others.

-- The ids of a pending erasure: the user's own and those linked to it (store::links says
-- which). A chunk deletes every row holding some of them, then deletes those ids from here;
-- a done erasure has none left.
CREATE TABLE erasure_subjects (
  erasure_id BIGINT UNSIGNED NOT NULL,
  subject VARCHAR(255) NOT NULL,
  PRIMARY KEY (erasure_id, subject)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

INSERT IGNORE INTO erasure_subjects (erasure_id, subject)
  SELECT id, user_id FROM erasures WHERE state = 'pending' AND user_id IS NOT NULL;

INSERT IGNORE INTO erasure_subjects (erasure_id, subject)
  SELECT e.id, linked.subject
  FROM erasures e,
       JSON_TABLE(e.linked_ids, '$[*]' COLUMNS (subject VARCHAR(255) PATH '$')) AS linked
  WHERE e.state = 'pending' AND e.linked_ids IS NOT NULL AND linked.subject IS NOT NULL;

-- How many ids the request covered; failed attempts and the last failure (a database error
-- code and message; cleared once done); how far the one pass over rejected events got. user_id and linked_ids stay (still written and
-- cleared) for the release before this one, which reads them: a rollback stays safe. A later
-- release drops them.
ALTER TABLE erasures
  ADD COLUMN subjects INT UNSIGNED NOT NULL DEFAULT 0 AFTER subject_hash,
  ADD COLUMN group_profiles_deleted BIGINT UNSIGNED NOT NULL DEFAULT 0 AFTER group_links_deleted,
  ADD COLUMN attempts_failed INT UNSIGNED NOT NULL DEFAULT 0 AFTER state,
  ADD COLUMN last_error VARCHAR(1000) NULL AFTER attempts_failed,
  ADD COLUMN rejected_scan_done TINYINT(1) NOT NULL DEFAULT 0 AFTER last_error,
  ADD COLUMN rejected_scanned_to BIGINT UNSIGNED NOT NULL DEFAULT 0 AFTER rejected_scan_done;

UPDATE erasures e SET subjects = (SELECT COUNT(*) FROM erasure_subjects s WHERE s.erasure_id = e.id)
  WHERE e.state = 'pending'
