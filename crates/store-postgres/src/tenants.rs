//! Tenants: their rows, and the sessions a suspension ends.

use domain::page::encode_cursor;
use domain::tenants::{Tenant, TenantListQuery, TenantSlug};
use domain::{Error, Page, Result, TenantId, Timestamp};
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres, QueryBuilder};

use crate::error::{db, write};
use crate::rows::{self, TENANT_COLUMNS};
use crate::PgStore;

fn not_found() -> Error {
    Error::NotFound { entity: "tenant" }
}

/// Writes every mutable column of `t`.
pub(crate) async fn put(conn: &mut PgConnection, t: &Tenant) -> Result<()> {
    sqlx::query(
        "UPDATE tenants SET display_name = $2, status = $3, plan = $4, max_users = $5, \
         trial_ends_at = $6, settings = $7, updated_at = $8 WHERE id = $1",
    )
    .bind(t.id.into_uuid())
    .bind(&t.display_name)
    .bind(t.status.as_str())
    .bind(t.plan.as_str())
    .bind(t.max_users)
    .bind(t.trial_ends_at)
    .bind(Json(&t.settings))
    .bind(t.updated_at)
    .execute(conn)
    .await
    .map_err(write)?;
    Ok(())
}

impl PgStore {
    pub(crate) async fn get_tenant_impl(&self, id: TenantId) -> Result<Tenant> {
        let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id.into_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .ok_or_else(not_found)?;
        rows::tenant(&row)
    }

    pub(crate) async fn get_tenant_by_slug_impl(&self, slug: &TenantSlug) -> Result<Tenant> {
        let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE slug = $1");
        let row = sqlx::query(&sql)
            .bind(slug.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .ok_or_else(not_found)?;
        rows::tenant(&row)
    }

    pub(crate) async fn list_tenants_impl(&self, q: &TenantListQuery) -> Result<Page<Tenant>> {
        let limit = q.limit.get() as usize;
        let mut qb = QueryBuilder::<Postgres>::new("SELECT ");
        qb.push(TENANT_COLUMNS).push(" FROM tenants WHERE true");
        if let Some(s) = q.status {
            qb.push(" AND status = ").push_bind(s.as_str());
        }
        if let Some(after) = q.after {
            qb.push(" AND id < ").push_bind(after.into_uuid());
        }
        qb.push(" ORDER BY id DESC LIMIT ")
            .push_bind(limit as i64 + 1);
        let fetched = qb.build().fetch_all(&self.pool).await.map_err(db)?;
        let mut items = fetched
            .iter()
            .map(rows::tenant)
            .collect::<Result<Vec<_>>>()?;
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|t| encode_cursor(&t.id))
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }
}

pub(crate) async fn insert(conn: &mut PgConnection, t: &Tenant) -> Result<()> {
    sqlx::query(
        "INSERT INTO tenants (id, slug, display_name, status, plan, max_users, \
         trial_ends_at, settings, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(t.id.into_uuid())
    .bind(&t.slug)
    .bind(&t.display_name)
    .bind(t.status.as_str())
    .bind(t.plan.as_str())
    .bind(t.max_users)
    .bind(t.trial_ends_at)
    .bind(Json(&t.settings))
    .bind(t.created_at)
    .bind(t.updated_at)
    .execute(conn)
    .await
    .map_err(write)?;
    Ok(())
}

/// NO KEY UPDATE: serialises with other tenant updates and with the quota checks of user
/// creation, without blocking the foreign-key checks of concurrent inserts.
pub(crate) async fn load_for_update(conn: &mut PgConnection, id: TenantId) -> Result<Tenant> {
    let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1 FOR NO KEY UPDATE");
    let row = sqlx::query(&sql)
        .bind(id.into_uuid())
        .fetch_optional(conn)
        .await
        .map_err(db)?
        .ok_or_else(not_found)?;
    rows::tenant(&row)
}

pub(crate) async fn revoke_sessions(
    conn: &mut PgConnection,
    tenant: TenantId,
    reason: &str,
    at: Timestamp,
) -> Result<u64> {
    let done = sqlx::query(
        "UPDATE sessions SET revoked_at = $1, revoke_reason = $2 \
         WHERE tenant_id = $3 AND revoked_at IS NULL",
    )
    .bind(at)
    .bind(reason)
    .bind(tenant.into_uuid())
    .execute(conn)
    .await
    .map_err(db)?;
    Ok(done.rows_affected())
}
