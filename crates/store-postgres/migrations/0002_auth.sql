-- Authentication: tenant sign-in settings, password credentials and their history,
-- sessions and their refresh tokens, single-use tokens, TOTP enrolments with recovery
-- codes, and the (platform-wide) token-signing keys.
-- Secrets are never stored in the clear: tokens, cookies and recovery codes as hex digests
-- (KeyHash), passwords as PHC strings, TOTP secrets and private keys encrypted under the
-- master key by the application.

-- A tenant's AuthSettings; a tenant without a row has the defaults.
CREATE TABLE tenant_auth_settings (
    tenant_id  uuid        PRIMARY KEY,
    settings   jsonb       NOT NULL,
    updated_at timestamptz NOT NULL,
    CONSTRAINT tenant_auth_settings_tenant_id_fkey FOREIGN KEY (tenant_id)
        REFERENCES tenants (id)
);

-- One row per user at most: a user without a row has Credentials::empty (no password,
-- nothing failed, not verified).
CREATE TABLE user_credentials (
    tenant_id            uuid        NOT NULL,
    user_id              uuid        NOT NULL,
    -- PHC string (argon2id), or an imported foreign hash until the next sign-in.
    password_hash        text        NULL,
    password_changed_at  timestamptz NULL,
    must_change_password boolean     NOT NULL DEFAULT false,
    email_verified_at    timestamptz NULL,
    -- Failed sign-ins in the window that started at failed_window_start.
    failed_count         integer     NOT NULL DEFAULT 0 CHECK (failed_count >= 0),
    failed_window_start  timestamptz NULL,
    locked_until         timestamptz NULL,
    CONSTRAINT user_credentials_pkey PRIMARY KEY (tenant_id, user_id),
    CONSTRAINT user_credentials_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id),
    CONSTRAINT user_credentials_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id)
);

-- Previous password hashes (the current one included), for the reuse check; trimmed to
-- the policy's history length on every change. `id` orders them (newest last).
CREATE TABLE password_history (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id  uuid        NOT NULL,
    user_id    uuid        NOT NULL,
    hash       text        NOT NULL,
    created_at timestamptz NOT NULL,
    CONSTRAINT password_history_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id),
    CONSTRAINT password_history_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id)
);

CREATE INDEX password_history_user_idx ON password_history (tenant_id, user_id, id DESC);

CREATE TABLE sessions (
    id            uuid        PRIMARY KEY,
    tenant_id     uuid        NOT NULL,
    user_id       uuid        NOT NULL,
    kind          text        NOT NULL CHECK (kind IN ('token', 'browser')),
    device_label  text        NULL,
    ip            text        NULL,
    user_agent    text        NULL,
    -- RFC 8176 authentication method references.
    amr           text[]      NOT NULL,
    mfa_level     smallint    NOT NULL CHECK (mfa_level BETWEEN 0 AND 255),
    created_at    timestamptz NOT NULL,
    last_seen_at  timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    revoked_at    timestamptz NULL,
    revoke_reason text        NULL,
    -- Browser sessions: digests of the cookie secret and of the CSRF secret.
    cookie_hash   text        NULL,
    csrf_hash     text        NULL,
    CONSTRAINT sessions_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id),
    CONSTRAINT sessions_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id),
    CONSTRAINT sessions_browser_secrets_check CHECK ((cookie_hash IS NULL) = (csrf_hash IS NULL))
);

-- Cookie lookup (not tenant-scoped: the cookie names the tenant).
CREATE UNIQUE INDEX sessions_cookie_hash_key ON sessions (cookie_hash);
-- A user's sessions that are not revoked: listing (newest first) and revocation.
CREATE INDEX sessions_user_live_idx
    ON sessions (tenant_id, user_id, created_at DESC, id DESC) WHERE revoked_at IS NULL;

-- Every refresh token a session was given; the unused one is current. A used token
-- presented again is a reuse, which revokes the session. Looked up by hash only (the
-- token names the session and its tenant).
CREATE TABLE refresh_tokens (
    hash       text        PRIMARY KEY,
    session_id uuid        NOT NULL,
    created_at timestamptz NOT NULL,
    used_at    timestamptz NULL,
    CONSTRAINT refresh_tokens_session_id_fkey FOREIGN KEY (session_id) REFERENCES sessions (id)
);

-- Magic links, password resets, email verifications, invitations, MFA challenges.
CREATE TABLE one_time_tokens (
    hash       text        PRIMARY KEY,
    purpose    text        NOT NULL CHECK (purpose IN ('magic_link', 'password_reset',
                   'email_verification', 'invitation', 'mfa_challenge',
                   'password_change')),
    tenant_id  uuid        NOT NULL,
    user_id    uuid        NULL,
    email      text        NULL,
    data       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz NULL,
    attempts   integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    CONSTRAINT one_time_tokens_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id),
    CONSTRAINT one_time_tokens_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id)
);

-- Invalidating a user's unused tokens of a purpose when a new one is issued.
CREATE INDEX one_time_tokens_user_unused_idx
    ON one_time_tokens (tenant_id, user_id, purpose) WHERE used_at IS NULL AND user_id IS NOT NULL;

-- At most one TOTP enrolment per user: pending until confirmed_at is set.
CREATE TABLE totp_credentials (
    tenant_id         uuid        NOT NULL,
    user_id           uuid        NOT NULL,
    secret_ciphertext bytea       NOT NULL,
    confirmed_at      timestamptz NULL,
    -- The last accepted time step; a code of this step or earlier is a replay.
    last_used_step    bigint      NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL,
    CONSTRAINT totp_credentials_pkey PRIMARY KEY (tenant_id, user_id),
    CONSTRAINT totp_credentials_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id),
    CONSTRAINT totp_credentials_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id)
);

CREATE TABLE recovery_codes (
    tenant_id  uuid        NOT NULL,
    user_id    uuid        NOT NULL,
    hash       text        NOT NULL,
    created_at timestamptz NOT NULL,
    used_at    timestamptz NULL,
    CONSTRAINT recovery_codes_pkey PRIMARY KEY (tenant_id, user_id, hash),
    CONSTRAINT recovery_codes_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id),
    CONSTRAINT recovery_codes_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id)
);

-- Token-signing keys, platform-wide: the one not retired signs; retired ones stay
-- published until the tokens they signed expire.
CREATE TABLE signing_keys (
    kid                    text        PRIMARY KEY,
    -- JOSE name (EdDSA, ES256).
    algorithm              text        NOT NULL,
    private_key_ciphertext bytea       NOT NULL,
    public_jwk             jsonb       NOT NULL,
    created_at             timestamptz NOT NULL,
    retired_at             timestamptz NULL
);
