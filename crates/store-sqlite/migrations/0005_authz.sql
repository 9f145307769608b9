-- Authorization: the tenant's own permissions, roles with their permissions, role
-- assignments, nested groups with their members and roles, versioned Cedar policies, and
-- the per-tenant authorization version that tells a decision cache it is stale.
--
-- Same representation as 0001: UUIDs BLOBs, timestamps INTEGER microseconds, JSON TEXT,
-- booleans INTEGER 0/1. Built-in permissions live in code, not here.

-- Incremented by every change that can alter a decision in the tenant. A tenant without a
-- row is at version 0.
CREATE TABLE authz_versions (
    tenant_id BLOB    NOT NULL PRIMARY KEY REFERENCES tenants (id),
    version   INTEGER NOT NULL
);

-- Permissions defined by the tenant for its own applications.
CREATE TABLE permissions (
    tenant_id   BLOB    NOT NULL REFERENCES tenants (id),
    resource    TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    scope       TEXT    NOT NULL CHECK (scope IN ('own', 'department', 'all')),
    description TEXT    NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, resource, action, scope)
);

-- `tenant_id` is NULL only for the platform-wide super administrator role. SQLite treats
-- NULLs as distinct in UNIQUE, which is what that one row needs.
CREATE TABLE roles (
    id           BLOB    NOT NULL PRIMARY KEY,
    tenant_id    BLOB    REFERENCES tenants (id),
    name         TEXT    NOT NULL,
    display_name TEXT    NOT NULL,
    description  TEXT,
    role_type    TEXT    NOT NULL CHECK (role_type IN ('system', 'custom')),
    priority     INTEGER NOT NULL,
    active       INTEGER NOT NULL CHECK (active IN (0, 1)),
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE role_permissions (
    role_id  BLOB NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    resource TEXT NOT NULL,
    action   TEXT NOT NULL,
    scope    TEXT NOT NULL CHECK (scope IN ('own', 'department', 'all')),
    PRIMARY KEY (role_id, resource, action, scope)
);

CREATE TABLE user_roles (
    tenant_id        BLOB    NOT NULL REFERENCES tenants (id),
    user_id          BLOB    NOT NULL,
    role_id          BLOB    NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    assigned_by_type TEXT    NOT NULL,
    assigned_by      BLOB,
    assigned_at      INTEGER NOT NULL,
    expires_at       INTEGER,
    PRIMARY KEY (tenant_id, user_id, role_id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id)
);

-- The holders of a role: deleting a role, and finding the super administrators of the
-- platform (the last one is protected).
CREATE INDEX user_roles_by_role ON user_roles (role_id, tenant_id, user_id);

CREATE TABLE groups (
    id           BLOB    NOT NULL PRIMARY KEY,
    tenant_id    BLOB    NOT NULL REFERENCES tenants (id),
    name         TEXT    NOT NULL,
    display_name TEXT    NOT NULL,
    description  TEXT,
    group_type   TEXT    NOT NULL CHECK (group_type IN ('department', 'team', 'custom')),
    parent_id    BLOB,
    max_members  INTEGER,            -- NULL: unlimited
    active       INTEGER NOT NULL CHECK (active IN (0, 1)),
    settings     TEXT    NOT NULL DEFAULT '{}',
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    UNIQUE (tenant_id, name),
    -- The parent is a group of the same tenant (cycles are refused by the store).
    FOREIGN KEY (tenant_id, parent_id) REFERENCES groups (tenant_id, id)
);

-- The parent key of the references to a group within its tenant.
CREATE UNIQUE INDEX groups_by_tenant_id ON groups (tenant_id, id);
-- Children of a group (a group with children cannot be deleted).
CREATE INDEX groups_by_parent ON groups (tenant_id, parent_id);

CREATE TABLE group_members (
    tenant_id     BLOB    NOT NULL,
    group_id      BLOB    NOT NULL,
    user_id       BLOB    NOT NULL,
    role_in_group TEXT    NOT NULL CHECK (role_in_group IN ('owner', 'manager', 'member')),
    joined_at     INTEGER NOT NULL,
    added_by_type TEXT    NOT NULL,
    added_by      BLOB,
    PRIMARY KEY (group_id, user_id),
    FOREIGN KEY (tenant_id, group_id) REFERENCES groups (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id)
);

-- The groups of a user (loading a principal).
CREATE INDEX group_members_by_user ON group_members (tenant_id, user_id);

CREATE TABLE group_roles (
    tenant_id  BLOB    NOT NULL,
    group_id   BLOB    NOT NULL,
    role_id    BLOB    NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    granted_at INTEGER NOT NULL,
    PRIMARY KEY (group_id, role_id),
    FOREIGN KEY (tenant_id, group_id) REFERENCES groups (tenant_id, id) ON DELETE CASCADE
);

CREATE INDEX group_roles_by_tenant ON group_roles (tenant_id, group_id);
CREATE INDEX group_roles_by_role ON group_roles (role_id);

CREATE TABLE policies (
    id          BLOB    NOT NULL PRIMARY KEY,
    tenant_id   BLOB    NOT NULL REFERENCES tenants (id),
    name        TEXT    NOT NULL,
    description TEXT,
    effect      TEXT    NOT NULL CHECK (effect IN ('permit', 'forbid')),
    source      TEXT    NOT NULL,
    active      INTEGER NOT NULL CHECK (active IN (0, 1)),
    version     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    UNIQUE (tenant_id, name)
);

-- Every version of each policy, the current one included; removed with the policy (the
-- audit trail keeps what it was).
CREATE TABLE policy_versions (
    policy_id       BLOB    NOT NULL REFERENCES policies (id) ON DELETE CASCADE,
    version         INTEGER NOT NULL,
    tenant_id       BLOB    NOT NULL REFERENCES tenants (id),
    name            TEXT    NOT NULL,
    effect          TEXT    NOT NULL CHECK (effect IN ('permit', 'forbid')),
    source          TEXT    NOT NULL,
    active          INTEGER NOT NULL CHECK (active IN (0, 1)),
    changed_at      INTEGER NOT NULL,
    changed_by_type TEXT    NOT NULL,
    changed_by      BLOB,
    PRIMARY KEY (policy_id, version)
);

-- The platform-wide super administrator role (`authz::SUPER_ADMIN_ROLE_ID`). Its powers are
-- in code; it has no stored permissions.
INSERT INTO roles (id, tenant_id, name, display_name, description, role_type, priority,
                   active, created_at, updated_at)
VALUES (X'00000000000070008000000000000001', NULL, 'super_admin', 'Super administrator',
        'Everything in every tenant, and the tenants themselves', 'system', 1000, 1,
        CAST(unixepoch('subsec') * 1000000 AS INTEGER),
        CAST(unixepoch('subsec') * 1000000 AS INTEGER));
