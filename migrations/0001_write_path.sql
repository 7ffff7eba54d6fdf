-- The write path: projects, API keys, events and what identify / alias / group calls build.
-- Every table: a private BIGINT id for joins and a public UUIDv7 `uid` (BINARY(16)).
-- No foreign-key constraints: PlanetScale (Vitess) online schema changes work best without
-- them; the store keeps references consistent. Ids compare exactly (utf8mb4_bin).

CREATE TABLE projects (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  uid BINARY(16) NOT NULL,
  name VARCHAR(200) NOT NULL,
  retention_days INT UNSIGNED NULL,
  store_full_ip TINYINT(1) NOT NULL DEFAULT 0,
  created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  updated_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  deleted_at DATETIME(3) NULL,
  PRIMARY KEY (id),
  UNIQUE KEY uq_projects_uid (uid),
  KEY ix_projects_deleted (deleted_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE api_keys (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  uid BINARY(16) NOT NULL,
  project_id BIGINT UNSIGNED NULL,
  scope ENUM('write','read','admin') NOT NULL,
  name VARCHAR(200) NOT NULL DEFAULT '',
  key_hash BINARY(32) NOT NULL,
  pepper_version SMALLINT UNSIGNED NOT NULL,
  display_prefix VARCHAR(16) NOT NULL,
  expires_at DATETIME(3) NULL,
  revoked_at DATETIME(3) NULL,
  last_used_at DATETIME(3) NULL,
  created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  deleted_at DATETIME(3) NULL,
  PRIMARY KEY (id),
  UNIQUE KEY uq_api_keys_uid (uid),
  UNIQUE KEY uq_api_keys_hash (key_hash),
  KEY ix_api_keys_project (project_id, deleted_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE events (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  uid BINARY(16) NOT NULL,
  project_id BIGINT UNSIGNED NOT NULL,
  message_id VARCHAR(128) NOT NULL,
  type ENUM('track','identify','page','screen','group','alias') NOT NULL,
  name VARCHAR(255) NULL,
  user_id VARCHAR(255) NULL,
  anonymous_id VARCHAR(255) NULL,
  group_id VARCHAR(255) NULL,
  previous_id VARCHAR(255) NULL,
  properties JSON NULL,
  traits JSON NULL,
  context JSON NULL,
  integrations JSON NULL,
  timestamp DATETIME(3) NOT NULL,
  original_timestamp DATETIME(3) NULL,
  sent_at DATETIME(3) NULL,
  received_at DATETIME(3) NOT NULL,
  timestamp_clamped TINYINT(1) NOT NULL DEFAULT 0,
  ip VARCHAR(45) NULL,
  write_key_uid BINARY(16) NULL,
  created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  deleted_at DATETIME(3) NULL,
  PRIMARY KEY (id),
  UNIQUE KEY uq_events_uid (uid),
  -- Exactly once: SQS redeliveries and client retries carry the same messageId.
  UNIQUE KEY uq_events_message (project_id, message_id),
  KEY ix_events_time (project_id, timestamp),
  KEY ix_events_user (project_id, user_id, timestamp),
  KEY ix_events_anonymous (project_id, anonymous_id),
  KEY ix_events_name (project_id, type, name, timestamp),
  KEY ix_events_received (project_id, received_at),
  KEY ix_events_deleted (deleted_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE users (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  uid BINARY(16) NOT NULL,
  project_id BIGINT UNSIGNED NOT NULL,
  user_id VARCHAR(255) NOT NULL,
  traits JSON NULL,
  -- The event time of the newest identify merged into traits: later ones win per trait,
  -- whatever order the queue delivers them in.
  traits_at DATETIME(3) NOT NULL,
  first_seen_at DATETIME(3) NOT NULL,
  last_seen_at DATETIME(3) NOT NULL,
  created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  deleted_at DATETIME(3) NULL,
  PRIMARY KEY (id),
  UNIQUE KEY uq_users_uid (uid),
  UNIQUE KEY uq_users_user (project_id, user_id),
  KEY ix_users_deleted (deleted_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Ids known to belong to a user: alias calls (previousId) and identify calls that carry an
-- anonymousId. Erasure follows these.
CREATE TABLE aliases (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  uid BINARY(16) NOT NULL,
  project_id BIGINT UNSIGNED NOT NULL,
  alias VARCHAR(255) NOT NULL,
  user_id VARCHAR(255) NOT NULL,
  source ENUM('alias','identify') NOT NULL,
  created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  PRIMARY KEY (id),
  UNIQUE KEY uq_aliases_uid (uid),
  UNIQUE KEY uq_aliases_link (project_id, alias, user_id),
  KEY ix_aliases_user (project_id, user_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE group_profiles (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  uid BINARY(16) NOT NULL,
  project_id BIGINT UNSIGNED NOT NULL,
  group_id VARCHAR(255) NOT NULL,
  traits JSON NULL,
  traits_at DATETIME(3) NOT NULL,
  created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  deleted_at DATETIME(3) NULL,
  PRIMARY KEY (id),
  UNIQUE KEY uq_group_profiles_uid (uid),
  UNIQUE KEY uq_group_profiles_group (project_id, group_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE group_members (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  project_id BIGINT UNSIGNED NOT NULL,
  group_id VARCHAR(255) NOT NULL,
  -- userId, or anonymousId when the call had no userId.
  member_id VARCHAR(255) NOT NULL,
  created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  PRIMARY KEY (id),
  UNIQUE KEY uq_group_members (project_id, group_id, member_id),
  KEY ix_group_members_member (project_id, member_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- What the consumer could never store, with the reason; nothing is dropped silently.
CREATE TABLE rejected_events (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  uid BINARY(16) NOT NULL,
  project_id BIGINT UNSIGNED NULL,
  -- The queue message it came in, and the event's index in it (-1: the whole message).
  queue_message_id VARCHAR(128) NOT NULL,
  item_index INT NOT NULL,
  reason VARCHAR(1000) NOT NULL,
  raw LONGBLOB NOT NULL,
  created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  PRIMARY KEY (id),
  UNIQUE KEY uq_rejected_events_uid (uid),
  -- A redelivered poison message is recorded once.
  UNIQUE KEY uq_rejected_events_item (queue_message_id, item_index),
  KEY ix_rejected_events_created (created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
