-- A group's members (their count against max_members, the member list in join order) are
-- found by the group and its tenant in one index, whatever the planner's statistics say:
-- with group_members_user_idx (tenant_id, user_id) beside the primary key, a planner
-- misled by stale statistics (a tenant whose memberships were just added) could walk every
-- membership of the tenant. SQLite's migration 0007 adds the same index.
CREATE INDEX group_members_by_group ON group_members (tenant_id, group_id, joined_at);
