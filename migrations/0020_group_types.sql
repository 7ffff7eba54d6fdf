-- A PostHog group is its type and its key: `company` 42 and `project` 42 are two groups. A
-- group call of Segment's or RudderStack's names no type: its type is ''. The type follows the
-- id in the keys, so that a group's id (and an id prefix) is still one range of the index.
ALTER TABLE group_profiles ADD COLUMN group_type VARCHAR(255) NOT NULL DEFAULT '' AFTER group_id,
  DROP INDEX uq_group_profiles_group, ADD UNIQUE KEY uq_group_profiles_group (project_id, group_id, group_type);

ALTER TABLE group_members ADD COLUMN group_type VARCHAR(255) NOT NULL DEFAULT '' AFTER group_id,
  DROP INDEX uq_group_members, ADD UNIQUE KEY uq_group_members (project_id, group_id, group_type, member_id),
  DROP INDEX ix_group_members_member, ADD INDEX ix_group_members_member (project_id, member_id, group_id, group_type);

-- Groups stored before: a `$groupidentify` kept its type as a trait (`$group_type`), so such a
-- group, and its members, take it. A group only ever named by events' `$groups` had its type
-- dropped, and stays without one.
UPDATE group_profiles
   SET group_type = JSON_UNQUOTE(JSON_EXTRACT(traits, '$."$group_type"'))
 WHERE JSON_TYPE(JSON_EXTRACT(traits, '$."$group_type"')) = 'STRING'
   AND CHAR_LENGTH(JSON_UNQUOTE(JSON_EXTRACT(traits, '$."$group_type"'))) <= 255
   AND JSON_UNQUOTE(JSON_EXTRACT(traits, '$."$group_type"')) NOT REGEXP '[[:cntrl:]]';

UPDATE group_members m
  JOIN group_profiles g ON g.project_id = m.project_id AND g.group_id = m.group_id
   SET m.group_type = g.group_type
 WHERE g.group_type <> '';
