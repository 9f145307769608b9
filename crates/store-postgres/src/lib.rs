//! The PostgreSQL implementation of [`domain::Store`]: reads here and in the capability
//! modules, changes through [`tx::PgTx`] ([`domain::store::Tx`]), the atomic sign-in steps
//! of [`domain::AuthStore`] in `auth`, the reads of [`domain::AuthzStore`] in `authz`.
//!
//! Queries are built at run time (`sqlx::query` + manual row mapping); the schema lives in
//! `migrations/`. Every query of tenant data names the tenant.

mod api_keys;
mod audit;
mod auth;
mod authz;
mod error;
mod outbox;
mod rows;
mod tenants;
#[cfg(test)]
mod tests;
mod tx;
mod users;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use domain::api_keys::{ApiKey, ApiKeyAuth, KeyHash};
use domain::audit::{AuditEvent, AuditQuery};
use domain::events::{Event, Position};
use domain::store::{PoolStats, Tx};
use domain::tenants::{Tenant, TenantListQuery, TenantSlug};
use domain::users::{User, UserListQuery};
use domain::{Error, Page, Result, Store, TenantId, Timestamp, UserId};
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

    async fn begin(&self) -> Result<Box<dyn Tx>> {
        let tx = self.pool.begin().await.map_err(error::db)?;
        Ok(Box::new(tx::PgTx {
            tx,
            events: Vec::new(),
        }))
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

    async fn authenticate_api_key(&self, hash: &KeyHash) -> Result<Option<ApiKeyAuth>> {
        self.authenticate_api_key_impl(hash).await
    }

    async fn list_api_keys(&self, tenant: TenantId) -> Result<Vec<ApiKey>> {
        self.list_api_keys_impl(tenant).await
    }

    async fn get_user(&self, tenant: TenantId, id: UserId) -> Result<User> {
        self.get_user_impl(tenant, id).await
    }

    async fn list_users(&self, tenant: TenantId, q: &UserListQuery) -> Result<Page<User>> {
        self.list_users_impl(tenant, q).await
    }

    async fn list_audit_events(
        &self,
        tenant: TenantId,
        q: &AuditQuery,
    ) -> Result<Page<AuditEvent>> {
        self.list_audit_events_impl(tenant, q).await
    }

    async fn outbox_head(&self) -> Result<Position> {
        outbox::head(&self.pool).await
    }

    async fn read_outbox(&self, after: Position, limit: u32) -> Result<Vec<Event>> {
        outbox::read(&self.pool, after, limit).await
    }

    async fn prune_outbox(&self, before: Timestamp) -> Result<u64> {
        outbox::prune(&self.pool, before).await
    }

    async fn outbox_cursor(&self, consumer: &str) -> Result<Option<Position>> {
        outbox::cursor(&self.pool, consumer).await
    }

    async fn save_outbox_cursor(&self, consumer: &str, position: Position) -> Result<()> {
        outbox::save_cursor(&self.pool, consumer, position).await
    }
}
