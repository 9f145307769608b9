-- Authorization: the tenant's own permissions, roles with their permissions, direct
-- (optionally time-bound) role assignments, nested groups with their members and roles,
-- Cedar policies with their history, and each tenant's authorization version.
-- Built-in permissions live in the application, not here. The super administrator role is
-- platform-wide (tenant_id NULL) and inserted below. Groups are keyed by (tenant_id, id) as
-- well, so that a parent, a membership or a grant can only ever name a group of its own
-- tenant; users and roles are checked by the store (the super administrator role belongs
-- to no tenant, and a (tenant_id, id) key on users would cost every user write an index).

-- Incremented in the transaction of every change that can alter a decision, so that a
-- decision cache can tell it is stale. The row is also the tenant's authorization write
-- lock: every such change updates it first, which serialises them per tenant (cycle
-- checks, member counts). A tenant without a row is at version 0.
CREATE TABLE authz_versions (
    tenant_id uuid   PRIMARY KEY,
    version   bigint NOT NULL CHECK (version >= 0),
    CONSTRAINT authz_versions_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id)
);

-- Application permissions a tenant defined (resource:action:scope).
CREATE TABLE permissions (
    tenant_id   uuid        NOT NULL,
    resource    text        NOT NULL,
    action      text        NOT NULL,
    scope       text        NOT NULL CHECK (scope IN ('own', 'department', 'all')),
    description text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL,
    CONSTRAINT permissions_pkey PRIMARY KEY (tenant_id, resource, action, scope),
    CONSTRAINT permissions_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id)
);

CREATE TABLE roles (
    id           uuid        PRIMARY KEY,
    -- NULL only for the platform-wide super administrator role.
    tenant_id    uuid        NULL,
    name         text        NOT NULL,
    display_name text        NOT NULL,
    description  text        NULL,
    role_type    text        NOT NULL CHECK (role_type IN ('system', 'custom')),
    priority     integer     NOT NULL,
    active       boolean     NOT NULL,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    CONSTRAINT roles_tenant_name_key UNIQUE (tenant_id, name),
    CONSTRAINT roles_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id)
);

-- Permissions of a role; built-in ones are checked by the application, tenant-defined ones
-- against `permissions`.
CREATE TABLE role_permissions (
    role_id  uuid NOT NULL,
    resource text NOT NULL,
    action   text NOT NULL,
    scope    text NOT NULL CHECK (scope IN ('own', 'department', 'all')),
    CONSTRAINT role_permissions_pkey PRIMARY KEY (role_id, resource, action, scope),
    CONSTRAINT role_permissions_role_id_fkey FOREIGN KEY (role_id)
        REFERENCES roles (id) ON DELETE CASCADE
);

-- Roles held by users directly. Every new user is given the tenant's `user` role, so a
-- foreign key to roles would lock that one (hot) row for every user created (as a key to
-- tenants would on users); the store checks the role instead, and deletes a role's
-- assignments with it, both under the tenant's authorization lock. No key to tenants
-- either: the user's key implies it.
CREATE TABLE user_roles (
    tenant_id        uuid        NOT NULL,
    user_id          uuid        NOT NULL,
    role_id          uuid        NOT NULL,
    assigned_by_type text        NOT NULL CHECK (assigned_by_type IN ('api_key', 'user', 'system')),
    assigned_by      uuid        NULL,
    assigned_at      timestamptz NOT NULL,
    -- NULL: for good.
    expires_at       timestamptz NULL,
    CONSTRAINT user_roles_pkey PRIMARY KEY (tenant_id, user_id, role_id),
    CONSTRAINT user_roles_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id)
);

-- A role's holders: deleting a role, and the platform-wide count of super administrators.
CREATE INDEX user_roles_role_idx ON user_roles (role_id);

CREATE TABLE groups (
    id           uuid        PRIMARY KEY,
    tenant_id    uuid        NOT NULL,
    name         text        NOT NULL,
    display_name text        NOT NULL,
    description  text        NULL,
    group_type   text        NOT NULL CHECK (group_type IN ('department', 'team', 'custom')),
    parent_id    uuid        NULL,
    -- NULL: unlimited.
    max_members  integer     NULL CHECK (max_members IS NULL OR max_members >= 0),
    active       boolean     NOT NULL,
    settings     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    CONSTRAINT groups_tenant_name_key UNIQUE (tenant_id, name),
    CONSTRAINT groups_tenant_id_id_key UNIQUE (tenant_id, id),
    CONSTRAINT groups_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id),
    -- The parent is a group of the same tenant (MATCH SIMPLE: a root has a NULL parent).
    CONSTRAINT groups_parent_id_fkey FOREIGN KEY (tenant_id, parent_id)
        REFERENCES groups (tenant_id, id)
);

-- Children of a group (the tree, and refusing to delete a parent).
CREATE INDEX groups_parent_idx ON groups (tenant_id, parent_id) WHERE parent_id IS NOT NULL;

CREATE TABLE group_members (
    tenant_id     uuid        NOT NULL,
    group_id      uuid        NOT NULL,
    user_id       uuid        NOT NULL,
    role_in_group text        NOT NULL CHECK (role_in_group IN ('owner', 'manager', 'member')),
    joined_at     timestamptz NOT NULL,
    added_by_type text        NOT NULL CHECK (added_by_type IN ('api_key', 'user', 'system')),
    added_by      uuid        NULL,
    CONSTRAINT group_members_pkey PRIMARY KEY (group_id, user_id),
    CONSTRAINT group_members_group_id_fkey FOREIGN KEY (tenant_id, group_id)
        REFERENCES groups (tenant_id, id),
    CONSTRAINT group_members_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id)
);

-- A user's groups (decisions, available users).
CREATE INDEX group_members_user_idx ON group_members (tenant_id, user_id);

CREATE TABLE group_roles (
    tenant_id  uuid        NOT NULL,
    group_id   uuid        NOT NULL,
    role_id    uuid        NOT NULL,
    granted_at timestamptz NOT NULL,
    CONSTRAINT group_roles_pkey PRIMARY KEY (group_id, role_id),
    CONSTRAINT group_roles_group_id_fkey FOREIGN KEY (tenant_id, group_id)
        REFERENCES groups (tenant_id, id),
    CONSTRAINT group_roles_role_id_fkey FOREIGN KEY (role_id) REFERENCES roles (id)
);

-- A tenant's grants (loading its decision data) and a role's grants (deleting the role).
CREATE INDEX group_roles_tenant_idx ON group_roles (tenant_id);
CREATE INDEX group_roles_role_idx ON group_roles (role_id);

CREATE TABLE policies (
    id          uuid        PRIMARY KEY,
    tenant_id   uuid        NOT NULL,
    name        text        NOT NULL,
    description text        NULL,
    effect      text        NOT NULL CHECK (effect IN ('permit', 'forbid')),
    -- Cedar source, validated by the application when saved.
    source      text        NOT NULL,
    active      boolean     NOT NULL,
    version     bigint      NOT NULL CHECK (version >= 1),
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    CONSTRAINT policies_tenant_name_key UNIQUE (tenant_id, name),
    CONSTRAINT policies_tenant_id_id_key UNIQUE (tenant_id, id),
    CONSTRAINT policies_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id)
);

-- Every version of a policy, the current one included; gone with the policy.
CREATE TABLE policy_versions (
    policy_id       uuid        NOT NULL,
    version         bigint      NOT NULL,
    tenant_id       uuid        NOT NULL,
    name            text        NOT NULL,
    effect          text        NOT NULL CHECK (effect IN ('permit', 'forbid')),
    source          text        NOT NULL,
    active          boolean     NOT NULL,
    changed_at      timestamptz NOT NULL,
    changed_by_type text        NOT NULL CHECK (changed_by_type IN ('api_key', 'user', 'system')),
    changed_by      uuid        NULL,
    CONSTRAINT policy_versions_pkey PRIMARY KEY (policy_id, version),
    CONSTRAINT policy_versions_policy_id_fkey FOREIGN KEY (tenant_id, policy_id)
        REFERENCES policies (tenant_id, id) ON DELETE CASCADE
);

-- The platform-wide super administrator (authz::SUPER_ADMIN_ROLE_ID). Its powers are given
-- by the application; it has no stored permissions.
INSERT INTO roles (id, tenant_id, name, display_name, description, role_type, priority,
                   active, created_at, updated_at)
VALUES ('00000000-0000-7000-8000-000000000001', NULL, 'super_admin', 'Super administrator',
        'Everything on the platform: every tenant and all of its data', 'system', 1000, true,
        date_trunc('milliseconds', now()), date_trunc('milliseconds', now()));
