-- Authentication: tenant sign-in settings, credentials and the lock state, password
-- history, sessions with their refresh tokens and browser secrets, single-use tokens, TOTP
-- enrolments with recovery codes, and the platform's token-signing keys.
--
-- Secrets are stored as SHA-256 hex digests (`*_hash`) or encrypted under the master key
-- (`*_ciphertext`), never in clear. Same representation as 0001: UUIDs BLOBs, timestamps
-- INTEGER microseconds, JSON TEXT, booleans INTEGER 0/1.

-- A tenant that never saved its settings has no row and gets the defaults.
CREATE TABLE auth_settings (
    tenant_id  BLOB    NOT NULL PRIMARY KEY REFERENCES tenants (id),
    settings   TEXT    NOT NULL,
    updated_at INTEGER NOT NULL
);

-- One row per user at most; a user without a row has empty credentials (no password,
-- nothing counted, not locked).
CREATE TABLE credentials (
    tenant_id            BLOB    NOT NULL REFERENCES tenants (id),
    user_id              BLOB    NOT NULL,
    password_hash        TEXT,
    password_changed_at  INTEGER,
    must_change_password INTEGER NOT NULL DEFAULT 0 CHECK (must_change_password IN (0, 1)),
    email_verified_at    INTEGER,
    failed_count         INTEGER NOT NULL DEFAULT 0 CHECK (failed_count >= 0),
    failed_window_start  INTEGER,
    locked_until         INTEGER,
    PRIMARY KEY (tenant_id, user_id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id)
);

-- Previous password hashes, the current one included; `seq` orders them (several may be
-- written within one microsecond).
CREATE TABLE password_history (
    seq           INTEGER PRIMARY KEY,
    tenant_id     BLOB    NOT NULL REFERENCES tenants (id),
    user_id       BLOB    NOT NULL,
    password_hash TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id)
);

CREATE INDEX password_history_by_user ON password_history (tenant_id, user_id, seq);

CREATE TABLE sessions (
    id            BLOB    NOT NULL PRIMARY KEY,
    tenant_id     BLOB    NOT NULL REFERENCES tenants (id),
    user_id       BLOB    NOT NULL,
    kind          TEXT    NOT NULL CHECK (kind IN ('token', 'browser')),
    device_label  TEXT,
    ip            TEXT,
    user_agent    TEXT,
    amr           TEXT    NOT NULL DEFAULT '[]',
    mfa_level     INTEGER NOT NULL CHECK (mfa_level BETWEEN 0 AND 255),
    created_at    INTEGER NOT NULL,
    last_seen_at  INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    revoked_at    INTEGER,
    revoke_reason TEXT,
    -- Browser sessions: the digests of the cookie secret and of the CSRF secret.
    cookie_hash   TEXT,
    csrf_hash     TEXT,
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id)
);

-- A user's sessions, read newest first in index order (listing), and revoking them.
CREATE INDEX sessions_by_user ON sessions (tenant_id, user_id, created_at, id);
-- The cookie lookup; NULLs (token sessions) are not compared.
CREATE UNIQUE INDEX sessions_by_cookie ON sessions (cookie_hash);

-- Refresh tokens of token sessions: the current one has no `used_at`; used ones are kept
-- so that presenting one again is recognised as a reuse.
CREATE TABLE refresh_tokens (
    hash       TEXT    NOT NULL PRIMARY KEY,
    tenant_id  BLOB    NOT NULL REFERENCES tenants (id),
    session_id BLOB    NOT NULL REFERENCES sessions (id),
    created_at INTEGER NOT NULL,
    used_at    INTEGER
);

CREATE TABLE one_time_tokens (
    hash       TEXT    NOT NULL PRIMARY KEY,
    purpose    TEXT    NOT NULL CHECK (purpose IN ('magic_link', 'password_reset',
                   'email_verification', 'invitation', 'mfa_challenge',
                   'password_change')),
    tenant_id  BLOB    NOT NULL REFERENCES tenants (id),
    user_id    BLOB,
    email      TEXT,
    data       TEXT    NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER,
    attempts   INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id)
);

-- Issuing a token invalidates the user's earlier unused tokens of the same purpose.
CREATE INDEX one_time_tokens_unused_by_user ON one_time_tokens (tenant_id, user_id, purpose)
    WHERE used_at IS NULL;

-- One enrolment per user: pending until `confirmed_at` is set.
CREATE TABLE totp_credentials (
    tenant_id         BLOB    NOT NULL REFERENCES tenants (id),
    user_id           BLOB    NOT NULL,
    secret_ciphertext BLOB    NOT NULL,
    confirmed_at      INTEGER,
    last_used_step    INTEGER NOT NULL DEFAULT 0,
    created_at        INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, user_id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id)
);

CREATE TABLE recovery_codes (
    tenant_id BLOB    NOT NULL REFERENCES tenants (id),
    user_id   BLOB    NOT NULL,
    code_hash TEXT    NOT NULL,
    used_at   INTEGER,
    PRIMARY KEY (tenant_id, user_id, code_hash),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id)
);

-- Platform-wide: tokens of every tenant are signed with the current key.
CREATE TABLE signing_keys (
    kid                    TEXT    NOT NULL PRIMARY KEY,
    algorithm              TEXT    NOT NULL,
    private_key_ciphertext BLOB    NOT NULL,
    public_jwk             TEXT    NOT NULL,
    created_at             INTEGER NOT NULL,
    retired_at             INTEGER
);

CREATE INDEX signing_keys_by_created ON signing_keys (created_at);
