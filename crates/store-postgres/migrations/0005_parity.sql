-- Parity with the SQLite schema, so that the database itself keeps what the services
-- rely on, whichever backend holds the data:
--   * every reference to a user names the user's tenant too, so that no row can point at a
--     user of another tenant (the manager included, which had no key at all);
--   * deleting a group or a role takes its memberships and grants with it;
--   * the audit trail refuses TRUNCATE as it refuses UPDATE and DELETE;
--   * failed sign-ins are recorded with the actor `anonymous`.

-- A manager outside the user's tenant could only come from the hole this closes: such a
-- reference names nobody the tenant has, so it is cleared before the key is added.
UPDATE users u SET manager_id = NULL
WHERE manager_id IS NOT NULL
  AND NOT EXISTS (
      SELECT 1 FROM users m WHERE m.tenant_id = u.tenant_id AND m.id = u.manager_id
  );

ALTER TABLE users
    ADD CONSTRAINT users_tenant_id_id_key UNIQUE (tenant_id, id);

-- Deferred, like SQLite's: a batch may name a manager inserted later in the same
-- transaction.
ALTER TABLE users
    ADD CONSTRAINT users_manager_fkey FOREIGN KEY (tenant_id, manager_id)
        REFERENCES users (tenant_id, id) DEFERRABLE INITIALLY DEFERRED;

ALTER TABLE user_credentials
    DROP CONSTRAINT user_credentials_user_id_fkey,
    ADD CONSTRAINT user_credentials_user_fkey FOREIGN KEY (tenant_id, user_id)
        REFERENCES users (tenant_id, id);

ALTER TABLE password_history
    DROP CONSTRAINT password_history_user_id_fkey,
    ADD CONSTRAINT password_history_user_fkey FOREIGN KEY (tenant_id, user_id)
        REFERENCES users (tenant_id, id);

ALTER TABLE sessions
    DROP CONSTRAINT sessions_user_id_fkey,
    ADD CONSTRAINT sessions_user_fkey FOREIGN KEY (tenant_id, user_id)
        REFERENCES users (tenant_id, id);

ALTER TABLE one_time_tokens
    DROP CONSTRAINT one_time_tokens_user_id_fkey,
    ADD CONSTRAINT one_time_tokens_user_fkey FOREIGN KEY (tenant_id, user_id)
        REFERENCES users (tenant_id, id);

ALTER TABLE totp_credentials
    DROP CONSTRAINT totp_credentials_user_id_fkey,
    ADD CONSTRAINT totp_credentials_user_fkey FOREIGN KEY (tenant_id, user_id)
        REFERENCES users (tenant_id, id);

ALTER TABLE recovery_codes
    DROP CONSTRAINT recovery_codes_user_id_fkey,
    ADD CONSTRAINT recovery_codes_user_fkey FOREIGN KEY (tenant_id, user_id)
        REFERENCES users (tenant_id, id);

ALTER TABLE user_roles
    DROP CONSTRAINT user_roles_user_id_fkey,
    ADD CONSTRAINT user_roles_user_fkey FOREIGN KEY (tenant_id, user_id)
        REFERENCES users (tenant_id, id);

ALTER TABLE group_members
    DROP CONSTRAINT group_members_user_id_fkey,
    ADD CONSTRAINT group_members_user_fkey FOREIGN KEY (tenant_id, user_id)
        REFERENCES users (tenant_id, id),
    DROP CONSTRAINT group_members_group_id_fkey,
    ADD CONSTRAINT group_members_group_fkey FOREIGN KEY (tenant_id, group_id)
        REFERENCES groups (tenant_id, id) ON DELETE CASCADE;

ALTER TABLE group_roles
    DROP CONSTRAINT group_roles_group_id_fkey,
    ADD CONSTRAINT group_roles_group_fkey FOREIGN KEY (tenant_id, group_id)
        REFERENCES groups (tenant_id, id) ON DELETE CASCADE,
    DROP CONSTRAINT group_roles_role_id_fkey,
    ADD CONSTRAINT group_roles_role_fkey FOREIGN KEY (role_id)
        REFERENCES roles (id) ON DELETE CASCADE;
-- (user_roles keeps no key to roles, as 0003 explains: the store deletes a role's
-- assignments with it, under the tenant's authorization lock.)

CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();

ALTER TABLE audit_events
    DROP CONSTRAINT audit_events_actor_type_check,
    ADD CONSTRAINT audit_events_actor_type_check
        CHECK (actor_type IN ('api_key', 'user', 'system', 'anonymous'));
