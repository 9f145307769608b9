-- `deleted=only` lists the deleted users of a tenant, usually few, without walking the
-- live ones (the store names this index for such lists). Partial, so that it costs nothing
-- for users who are not deleted.
CREATE INDEX users_deleted ON users (tenant_id, created_at, id) WHERE deleted_at IS NOT NULL;
