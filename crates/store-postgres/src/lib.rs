//! The PostgreSQL implementation of [`domain::Store`] (and of [`domain::AuthStore`], in
//! `auth`, and [`domain::AuthzStore`], in `authz`).
//!
//! Every mutation runs in one transaction together with its audit event. Queries are built
//! at run time (`sqlx::query` + manual row mapping); the schema lives in `migrations/`.
//! Every query of tenant data names the tenant.

mod api_keys;
mod audit;
mod auth;
#[cfg(test)]
mod auth_tests;
mod authz;
#[cfg(test)]
mod authz_tests;
mod error;
mod rows;
mod tenants;
mod users;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use domain::api_keys::{ApiKey, ApiKeyAuth, KeyHash, NewApiKey};
use domain::audit::{AuditContext, AuditEvent, AuditQuery};
use domain::store::PoolStats;
use domain::tenants::{NewTenant, Tenant, TenantListQuery, TenantPatch, TenantSlug};
use domain::users::{NewUser, User, UserListQuery, UserPatch};
use domain::{ApiKeyId, Error, Page, Result, Store, TenantId, UserId};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};

/// How long a request waits for a pooled connection before the store reports itself
/// unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// A [`Store`] backed by a PostgreSQL connection pool.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

fn options(url: &str) -> Result<PgConnectOptions> {
    PgConnectOptions::from_str(url)
        .map_err(|e| Error::internal(format!("invalid database URL: {e}")))
}

/// Settings of every pooled connection. JIT compilation only ever costs latency for the
/// short queries of this workload.
fn session_options(o: PgConnectOptions) -> PgConnectOptions {
    o.options([("jit", "off")])
}

fn valid_schema(schema: &str) -> Result<()> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::internal(format!(
            "invalid schema name {schema:?}: use 1 to 63 of a-z, 0-9 and _"
        )))
    }
}

async fn pool(o: PgConnectOptions, max_connections: u32) -> Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(max_connections.max(1))
        .acquire_timeout(ACQUIRE_TIMEOUT)
        // No ping before every query: it doubled the round trips of a one-statement
        // request. A connection that died (database restart) fails its next query with a
        // 503 and is discarded by the pool.
        .test_before_acquire(false)
        .connect_with(o)
        .await
        .map_err(error::db)
}

impl PgStore {
    /// Connects a pool of at most `max_connections` to `url` (tables in the default
    /// `search_path`).
    pub async fn connect(url: &str, max_connections: u32) -> Result<PgStore> {
        let o = session_options(options(url)?);
        Ok(PgStore {
            pool: pool(o, max_connections).await?,
        })
    }

    /// Like [`PgStore::connect`], but every connection works in `schema` (created when
    /// missing), so that several independent stores (e.g. one per test) share a database.
    /// The migrations, including sqlx's bookkeeping table, live in that schema too.
    pub async fn connect_in_schema(
        url: &str,
        schema: &str,
        max_connections: u32,
    ) -> Result<PgStore> {
        valid_schema(schema)?;
        let base = options(url)?;
        let mut conn = base.connect().await.map_err(error::db)?;
        // The name is validated above: lower-case letters, digits and '_' only.
        let created = sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
            .execute(&mut conn)
            .await;
        if let Err(e) = created {
            // Concurrent creation of the same schema races on the catalog's unique index.
            let exists: Option<bool> =
                sqlx::query_scalar("SELECT true FROM pg_namespace WHERE nspname = $1")
                    .bind(schema)
                    .fetch_optional(&mut conn)
                    .await
                    .map_err(error::db)?;
            if exists.is_none() {
                return Err(error::db(e));
            }
        }
        conn.close().await.map_err(error::db)?;
        let o = session_options(base).options([("search_path", schema)]);
        Ok(PgStore {
            pool: pool(o, max_connections).await?,
        })
    }

    /// Drops `schema` and everything in it.
    pub async fn drop_schema(url: &str, schema: &str) -> Result<()> {
        valid_schema(schema)?;
        let mut conn = options(url)?.connect().await.map_err(error::db)?;
        sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .execute(&mut conn)
            .await
            .map_err(error::db)?;
        conn.close().await.map_err(error::db)?;
        Ok(())
    }

    /// The underlying pool, for tools and tests.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("./migrations")
            .run(&self.pool)
            .await
            .map_err(|e| match e {
                sqlx::migrate::MigrateError::Execute(e) => error::db(e),
                other => Error::internal(other),
            })?;
        // Tenants created before authorization existed get their default roles.
        authz::backfill_default_roles(&self.pool).await
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(error::db)
    }

    fn pool_stats(&self) -> PoolStats {
        let size = self.pool.size();
        // sqlx's idle count can be briefly inconsistent while connections move: cap it.
        PoolStats {
            size,
            idle: u32::try_from(self.pool.num_idle())
                .unwrap_or(u32::MAX)
                .min(size),
            max: self.pool.options().get_max_connections(),
        }
    }

    async fn create_tenant(&self, new: NewTenant, ctx: &AuditContext) -> Result<Tenant> {
        self.create_tenant_impl(new, ctx).await
    }

    async fn get_tenant(&self, id: TenantId) -> Result<Tenant> {
        self.get_tenant_impl(id).await
    }

    async fn get_tenant_by_slug(&self, slug: &TenantSlug) -> Result<Tenant> {
        self.get_tenant_by_slug_impl(slug).await
    }

    async fn list_tenants(&self, q: &TenantListQuery) -> Result<Page<Tenant>> {
        self.list_tenants_impl(q).await
    }

    async fn update_tenant(
        &self,
        id: TenantId,
        patch: TenantPatch,
        action: &'static str,
        ctx: &AuditContext,
    ) -> Result<Tenant> {
        self.update_tenant_impl(id, patch, action, ctx).await
    }

    async fn create_api_key(
        &self,
        tenant: TenantId,
        new: NewApiKey,
        hash: &KeyHash,
        prefix: &str,
        ctx: &AuditContext,
    ) -> Result<ApiKey> {
        self.create_api_key_impl(tenant, new, hash, prefix, ctx)
            .await
    }

    async fn authenticate_api_key(&self, hash: &KeyHash) -> Result<Option<ApiKeyAuth>> {
        self.authenticate_api_key_impl(hash).await
    }

    async fn list_api_keys(&self, tenant: TenantId) -> Result<Vec<ApiKey>> {
        self.list_api_keys_impl(tenant).await
    }

    async fn revoke_api_key(
        &self,
        tenant: TenantId,
        id: ApiKeyId,
        ctx: &AuditContext,
    ) -> Result<ApiKey> {
        self.revoke_api_key_impl(tenant, id, ctx).await
    }

    async fn create_user(
        &self,
        tenant: TenantId,
        new: NewUser,
        ctx: &AuditContext,
    ) -> Result<User> {
        self.create_user_impl(tenant, new, ctx).await
    }

    async fn seed_users(
        &self,
        tenant: TenantId,
        users: Vec<User>,
        ctx: &AuditContext,
    ) -> Result<u64> {
        self.seed_users_impl(tenant, users, ctx).await
    }

    async fn get_user(&self, tenant: TenantId, id: UserId) -> Result<User> {
        self.get_user_impl(tenant, id).await
    }

    async fn list_users(&self, tenant: TenantId, q: &UserListQuery) -> Result<Page<User>> {
        self.list_users_impl(tenant, q).await
    }

    async fn update_user(
        &self,
        tenant: TenantId,
        id: UserId,
        patch: UserPatch,
        expected_version: Option<i64>,
        ctx: &AuditContext,
    ) -> Result<User> {
        self.update_user_impl(tenant, id, patch, expected_version, ctx)
            .await
    }

    async fn delete_user(
        &self,
        tenant: TenantId,
        id: UserId,
        expected_version: Option<i64>,
        ctx: &AuditContext,
    ) -> Result<User> {
        self.delete_user_impl(tenant, id, expected_version, ctx)
            .await
    }

    async fn restore_user(&self, tenant: TenantId, id: UserId, ctx: &AuditContext) -> Result<User> {
        self.restore_user_impl(tenant, id, ctx).await
    }

    async fn list_audit_events(
        &self,
        tenant: TenantId,
        q: &AuditQuery,
    ) -> Result<Page<AuditEvent>> {
        self.list_audit_events_impl(tenant, q).await
    }
}
