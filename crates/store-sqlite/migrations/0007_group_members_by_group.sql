-- A group's members (their count against max_members, the member list in join order) are
-- found by the group. Without this index the planner, having no statistics, chose
-- group_members_by_user (tenant_id, user_id) for "tenant_id = ? AND group_id = ?" and
-- walked every membership of the tenant: adding members to a group of a tenant with
-- 170,000 memberships cost a millisecond per member.
CREATE INDEX group_members_by_group ON group_members (tenant_id, group_id, joined_at);
