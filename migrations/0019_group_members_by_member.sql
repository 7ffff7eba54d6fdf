-- A user's groups (GET /v1/users/{user_id}/groups) are read in group id order for each of its
-- ids: with the group id in the index, a page reads its own rows instead of every membership
-- of the id (an id made a member of a million groups cost a million rows a page). Erasure's
-- deletes by member id use it as they used the index it replaces.
ALTER TABLE group_members DROP INDEX ix_group_members_member,
  ADD INDEX ix_group_members_member (project_id, member_id, group_id);
