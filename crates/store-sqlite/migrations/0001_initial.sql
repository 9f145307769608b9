-- Portcullis SQLite schema.
--
-- Representation: UUIDs are 16-byte BLOBs, timestamps INTEGER microseconds since the Unix
-- epoch (UTC), JSON objects TEXT, booleans INTEGER 0/1. Text sort keys (`name_sort`,
-- `email_lower`, `username_lower`) are computed in Rust and compared bytewise (BINARY), so
-- that both backends order and page identically.

CREATE TABLE tenants (
    id            BLOB    NOT NULL PRIMARY KEY,
    slug          TEXT    NOT NULL UNIQUE,
    display_name  TEXT    NOT NULL,
    status        TEXT    NOT NULL CHECK (status IN ('active', 'suspended')),
    plan          TEXT    NOT NULL CHECK (plan IN ('free', 'pro', 'enterprise')),
    max_users     INTEGER,            -- NULL: unlimited
    trial_ends_at INTEGER,
    settings      TEXT    NOT NULL DEFAULT '{}',
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    -- Non-deleted users of the tenant, kept by the triggers on `users` below, so that the
    -- quota check on create/restore costs O(1) however large the tenant.
    active_users  INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX tenants_by_status ON tenants (status, id);

CREATE TABLE api_keys (
    id             BLOB    NOT NULL PRIMARY KEY,
    tenant_id      BLOB    NOT NULL REFERENCES tenants (id),
    name           TEXT    NOT NULL,
    prefix         TEXT    NOT NULL,
    key_hash       TEXT    NOT NULL UNIQUE,
    platform_admin INTEGER NOT NULL DEFAULT 0 CHECK (platform_admin IN (0, 1)),
    created_at     INTEGER NOT NULL,
    revoked_at     INTEGER
);

CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, id);

CREATE TABLE users (
    -- An alias of the rowid: the FTS5 index refers to rows by it, and an explicit alias
    -- keeps it stable across VACUUM.
    seq               INTEGER PRIMARY KEY,
    id                BLOB    NOT NULL UNIQUE,
    tenant_id         BLOB    NOT NULL REFERENCES tenants (id),
    email             TEXT    NOT NULL,
    email_lower       TEXT    NOT NULL,
    username          TEXT,
    username_lower    TEXT,
    full_name         TEXT    NOT NULL,
    name_sort         TEXT    NOT NULL,
    phone             TEXT,
    department        TEXT,
    job_title         TEXT,
    employee_id       TEXT,
    manager_id        BLOB,
    cost_center       TEXT,
    clearance_level   INTEGER,
    language          TEXT,
    avatar_url        TEXT,
    custom_attributes TEXT    NOT NULL DEFAULT '{}',
    status            TEXT    NOT NULL
        CHECK (status IN ('pending', 'active', 'blocked', 'suspended', 'inactive')),
    last_login_at     INTEGER,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    deleted_at        INTEGER,
    version           INTEGER NOT NULL DEFAULT 1,
    -- The key of `sort=last_login`: a user who never signed in sorts as 0. A generated
    -- column rather than an expression index, because SQLite uses a row-value range
    -- `(key, id) > (?, ?)` on an index of columns but not on one of expressions.
    last_login_key    INTEGER GENERATED ALWAYS AS (COALESCE(last_login_at, 0)) VIRTUAL,
    -- The manager is a user of the same tenant (whether deleted is checked by the store).
    CONSTRAINT users_manager_fk FOREIGN KEY (tenant_id, manager_id)
        REFERENCES users (tenant_id, id) DEFERRABLE INITIALLY DEFERRED
);

-- Uniqueness per tenant, case-insensitively. Soft-deleted users keep their email and
-- username, so that they can be restored.
CREATE UNIQUE INDEX users_by_email    ON users (tenant_id, email_lower);
CREATE UNIQUE INDEX users_by_username ON users (tenant_id, username_lower);
-- The parent key of the manager reference.
CREATE UNIQUE INDEX users_by_tenant_id ON users (tenant_id, id);

-- Keyset pagination: one index per sort order, (tenant, key, id), so that a page is a
-- range scan of LIMIT rows whatever its depth. `sort=email` uses `users_by_email`: the key
-- is unique per tenant, so the index already orders (email_lower, id).
CREATE INDEX users_by_name       ON users (tenant_id, name_sort, id);
CREATE INDEX users_by_created    ON users (tenant_id, created_at, id);
CREATE INDEX users_by_last_login ON users (tenant_id, last_login_key, id);
-- Filters.
CREATE INDEX users_by_department ON users (tenant_id, department);
CREATE INDEX users_by_manager    ON users (tenant_id, manager_id);
CREATE INDEX users_by_status     ON users (tenant_id, status, created_at);

-- The active-user counter of each tenant.
CREATE TRIGGER users_count_insert AFTER INSERT ON users
WHEN NEW.deleted_at IS NULL
BEGIN
    UPDATE tenants SET active_users = active_users + 1 WHERE id = NEW.tenant_id;
END;

CREATE TRIGGER users_count_delete AFTER DELETE ON users
WHEN OLD.deleted_at IS NULL
BEGIN
    UPDATE tenants SET active_users = active_users - 1 WHERE id = OLD.tenant_id;
END;

CREATE TRIGGER users_count_soft_delete AFTER UPDATE OF deleted_at ON users
WHEN OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL
BEGIN
    UPDATE tenants SET active_users = active_users - 1 WHERE id = NEW.tenant_id;
END;

CREATE TRIGGER users_count_restore AFTER UPDATE OF deleted_at ON users
WHEN OLD.deleted_at IS NOT NULL AND NEW.deleted_at IS NULL
BEGIN
    UPDATE tenants SET active_users = active_users + 1 WHERE id = NEW.tenant_id;
END;

-- Search. Words are maximal runs of letters and digits (unicode61 treats every other
-- character as a separator), folded to lower case; diacritics are kept so that `é` is not
-- `e`, as on PostgreSQL. Prefix indexes make the common 2- and 3-character prefixes cheap.
CREATE VIRTUAL TABLE users_fts USING fts5 (
    full_name,
    username,
    email,
    content = 'users',
    content_rowid = 'seq',
    tokenize = "unicode61 remove_diacritics 0",
    prefix = '2 3'
);

CREATE TRIGGER users_fts_insert AFTER INSERT ON users
BEGIN
    INSERT INTO users_fts (rowid, full_name, username, email)
    VALUES (NEW.seq, NEW.full_name, NEW.username, NEW.email);
END;

CREATE TRIGGER users_fts_delete AFTER DELETE ON users
BEGIN
    INSERT INTO users_fts (users_fts, rowid, full_name, username, email)
    VALUES ('delete', OLD.seq, OLD.full_name, OLD.username, OLD.email);
END;

CREATE TRIGGER users_fts_update AFTER UPDATE OF full_name, username, email ON users
WHEN OLD.full_name IS NOT NEW.full_name
  OR OLD.username IS NOT NEW.username
  OR OLD.email IS NOT NEW.email
BEGIN
    INSERT INTO users_fts (users_fts, rowid, full_name, username, email)
    VALUES ('delete', OLD.seq, OLD.full_name, OLD.username, OLD.email);
    INSERT INTO users_fts (rowid, full_name, username, email)
    VALUES (NEW.seq, NEW.full_name, NEW.username, NEW.email);
END;

CREATE TABLE audit_events (
    id          BLOB    NOT NULL PRIMARY KEY,
    tenant_id   BLOB    NOT NULL REFERENCES tenants (id),
    occurred_at INTEGER NOT NULL,
    actor_type  TEXT    NOT NULL,
    actor_id    BLOB,
    action      TEXT    NOT NULL,
    entity_type TEXT    NOT NULL,
    entity_id   BLOB,
    "before"    TEXT,
    "after"     TEXT,
    ip          TEXT,
    user_agent  TEXT,
    request_id  TEXT
);

CREATE INDEX audit_by_tenant ON audit_events (tenant_id, id);
CREATE INDEX audit_by_entity ON audit_events (tenant_id, entity_id, id);
CREATE INDEX audit_by_actor  ON audit_events (tenant_id, actor_id, id);
CREATE INDEX audit_by_action ON audit_events (tenant_id, action, id);

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only');
END;

CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only');
END;
