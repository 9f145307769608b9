//! The SQLite implementation of [`domain::Store`]: reads here and in the capability
//! modules, changes through [`tx::SqliteTx`] ([`domain::store::Tx`]), the atomic sign-in
//! steps of [`domain::AuthStore`] in `auth`, the reads of [`domain::AuthzStore`] in `authz`.
//!
//! One database file in WAL mode, reached through two pools: a writer pool of exactly one
//! connection that every transaction goes through (so a transaction that reads and then
//! writes never meets another writer and never fails with `SQLITE_BUSY` on the lock
//! upgrade), and a reader pool of a few `query_only` connections for everything else, which
//! WAL lets read concurrently with the writer.

mod api_keys;
mod audit;
mod auth;
mod authz;
mod error;
mod outbox;
mod rows;
mod tenants;
mod tx;
mod users;

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use domain::api_keys::{ApiKey, ApiKeyAuth, KeyHash};
use domain::audit::{AuditEvent, AuditQuery};
use domain::events::{Event, Position};
use domain::ids::{TenantId, UserId};
use domain::page::Page;
use domain::store::{PoolStats, Tx};
use domain::tenants::{Tenant, TenantListQuery, TenantSlug};
use domain::time::Timestamp;
use domain::users::{User, UserListQuery};
use domain::{Error, Store};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::error::db_err;

/// Connections of the reader pool.
const READERS: u32 = 4;
/// How long a request waits for a pooled connection before the store reports itself
/// unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// The SQLite store. Cheap to clone: the pools are shared.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file at `path`. Call [`Store::migrate`]
    /// before use.
    pub async fn open(path: &Path) -> domain::Result<SqliteStore> {
        let base = SqliteConnectOptions::new()
            .filename(path)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5))
            .pragma("temp_store", "MEMORY");

        let writer_opts = base
            .clone()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            // 64 MiB of page cache: the writer touches every index of a large tenant.
            .pragma("cache_size", "-65536");
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // An embedded file does not drop connections; a ping per use would be one more
            // hop to the connection's worker thread while holding the only writer.
            .test_before_acquire(false)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(writer_opts)
            .await
            .map_err(db_err)?;

        // The writer has created the file and switched it to WAL (a persistent setting), so
        // the readers need neither.
        let reader_opts = base
            .synchronous(SqliteSynchronous::Normal)
            .pragma("cache_size", "-16384")
            .pragma("query_only", "ON");
        let reader = SqlitePoolOptions::new()
            .max_connections(READERS)
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(false)
            .connect_with(reader_opts)
            .await
            .map_err(db_err)?;

        Ok(SqliteStore { writer, reader })
    }

    /// Closes both pools, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}

/// Cuts the `limit + 1` rows fetched into a page and whether more follow.
pub(crate) fn split_page<T>(mut items: Vec<T>, limit: u32) -> (Vec<T>, bool) {
    let limit = limit as usize;
    let more = items.len() > limit;
    items.truncate(limit);
    (items, more)
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> domain::Result<()> {
        sqlx::migrate!("./migrations")
            .run(&self.writer)
            .await
            .map_err(|e| match e {
                sqlx::migrate::MigrateError::Execute(e) => db_err(e),
                other => Error::internal(other),
            })?;
        // Tenants created before authorization existed get their default roles.
        let mut tx = self.writer.begin().await.map_err(db_err)?;
        authz::backfill_default_roles(&mut tx).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn ping(&self) -> domain::Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    fn pool_stats(&self) -> PoolStats {
        let (w, r) = (&self.writer, &self.reader);
        let size = w.size().saturating_add(r.size());
        // sqlx derives the idle count from counters that can be briefly inconsistent while
        // connections move (seen as a near-usize::MAX value): saturate and cap at the size.
        let idle = w.num_idle().saturating_add(r.num_idle());
        PoolStats {
            size,
            idle: u32::try_from(idle).unwrap_or(u32::MAX).min(size),
            max: w.options().get_max_connections() + r.options().get_max_connections(),
        }
    }

    async fn begin(&self) -> domain::Result<Box<dyn Tx>> {
        let tx = self.writer.begin().await.map_err(db_err)?;
        Ok(Box::new(tx::SqliteTx {
            tx,
            events: Vec::new(),
        }))
    }

    async fn get_tenant(&self, id: TenantId) -> domain::Result<Tenant> {
        tenants::get(&self.reader, id).await
    }

    async fn get_tenant_by_slug(&self, slug: &TenantSlug) -> domain::Result<Tenant> {
        tenants::get_by_slug(&self.reader, slug).await
    }

    async fn list_tenants(&self, q: &TenantListQuery) -> domain::Result<Page<Tenant>> {
        tenants::list(&self.reader, q).await
    }

    async fn authenticate_api_key(&self, hash: &KeyHash) -> domain::Result<Option<ApiKeyAuth>> {
        api_keys::authenticate(&self.reader, hash).await
    }

    async fn list_api_keys(&self, tenant: TenantId) -> domain::Result<Vec<ApiKey>> {
        api_keys::list(&self.reader, tenant).await
    }

    async fn get_user(&self, tenant: TenantId, id: UserId) -> domain::Result<User> {
        users::get(&self.reader, tenant, id).await
    }

    async fn list_users(&self, tenant: TenantId, q: &UserListQuery) -> domain::Result<Page<User>> {
        users::list(&self.reader, tenant, q).await
    }

    async fn list_audit_events(
        &self,
        tenant: TenantId,
        q: &AuditQuery,
    ) -> domain::Result<Page<AuditEvent>> {
        audit::list(&self.reader, tenant, q).await
    }

    async fn outbox_head(&self) -> domain::Result<Position> {
        outbox::head(&self.reader).await
    }

    async fn read_outbox(&self, after: Position, limit: u32) -> domain::Result<Vec<Event>> {
        outbox::read(&self.reader, after, limit).await
    }

    async fn prune_outbox(&self, before: Timestamp) -> domain::Result<u64> {
        outbox::prune(&self.writer, before).await
    }

    async fn outbox_cursor(&self, consumer: &str) -> domain::Result<Option<Position>> {
        outbox::cursor(&self.reader, consumer).await
    }

    async fn save_outbox_cursor(&self, consumer: &str, position: Position) -> domain::Result<()> {
        outbox::save_cursor(&self.writer, consumer, position).await
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod auth_tests;

#[cfg(test)]
mod authz_tests;
