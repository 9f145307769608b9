//! Tenants: their rows, the user quota as a creation sees it, and the sessions a
//! suspension ends.

use domain::ids::TenantId;
use domain::page::{encode_cursor, Page};
use domain::store::UserQuota;
use domain::tenants::{Tenant, TenantListQuery, TenantSlug};
use domain::time::{to_micros, Timestamp};
use domain::Error;
use sqlx::sqlite::{SqliteConnection, SqlitePool};
use sqlx::{QueryBuilder, Row, Sqlite};

use crate::error::{db_err, write_err, Result};
use crate::rows::{object_text, tenant_from_row, TENANT_COLS};
use crate::split_page;

pub(crate) async fn insert(conn: &mut SqliteConnection, t: &Tenant) -> Result<()> {
    sqlx::query(
        "INSERT INTO tenants (id, slug, display_name, status, plan, max_users, \
         trial_ends_at, settings, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(t.id.into_uuid())
    .bind(&t.slug)
    .bind(&t.display_name)
    .bind(t.status.as_str())
    .bind(t.plan.as_str())
    .bind(t.max_users)
    .bind(t.trial_ends_at.map(to_micros))
    .bind(object_text(&t.settings))
    .bind(to_micros(t.created_at))
    .bind(to_micros(t.updated_at))
    .execute(&mut *conn)
    .await
    .map_err(write_err)?;
    Ok(())
}

pub(crate) async fn load(conn: &mut SqliteConnection, id: TenantId) -> Result<Tenant> {
    let row = sqlx::query(&format!("SELECT {TENANT_COLS} FROM tenants WHERE id = ?"))
        .bind(id.into_uuid())
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err)?
        .ok_or(Error::NotFound { entity: "tenant" })?;
    tenant_from_row(&row)
}

pub(crate) async fn put(conn: &mut SqliteConnection, t: &Tenant) -> Result<()> {
    sqlx::query(
        "UPDATE tenants SET display_name = ?, status = ?, plan = ?, max_users = ?, \
         trial_ends_at = ?, settings = ?, updated_at = ? WHERE id = ?",
    )
    .bind(&t.display_name)
    .bind(t.status.as_str())
    .bind(t.plan.as_str())
    .bind(t.max_users)
    .bind(t.trial_ends_at.map(to_micros))
    .bind(object_text(&t.settings))
    .bind(to_micros(t.updated_at))
    .bind(t.id.into_uuid())
    .execute(&mut *conn)
    .await
    .map_err(write_err)?;
    Ok(())
}

/// `active_users` is kept by triggers on `users`.
pub(crate) async fn user_quota(conn: &mut SqliteConnection, tenant: TenantId) -> Result<UserQuota> {
    let row = sqlx::query("SELECT max_users, active_users FROM tenants WHERE id = ?")
        .bind(tenant.into_uuid())
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err)?
        .ok_or(Error::NotFound { entity: "tenant" })?;
    Ok(UserQuota {
        max_users: row.try_get("max_users").map_err(db_err)?,
        live_users: row.try_get("active_users").map_err(db_err)?,
    })
}

pub(crate) async fn revoke_sessions(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    reason: &str,
    at: Timestamp,
) -> Result<u64> {
    let done = sqlx::query(
        "UPDATE sessions SET revoked_at = ?, revoke_reason = ? \
         WHERE tenant_id = ? AND revoked_at IS NULL",
    )
    .bind(to_micros(at))
    .bind(reason)
    .bind(tenant.into_uuid())
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    Ok(done.rows_affected())
}

pub(crate) async fn get(reader: &SqlitePool, id: TenantId) -> Result<Tenant> {
    let mut conn = reader.acquire().await.map_err(db_err)?;
    load(&mut conn, id).await
}

pub(crate) async fn get_by_slug(reader: &SqlitePool, slug: &TenantSlug) -> Result<Tenant> {
    let row = sqlx::query(&format!("SELECT {TENANT_COLS} FROM tenants WHERE slug = ?"))
        .bind(slug.as_str())
        .fetch_optional(reader)
        .await
        .map_err(db_err)?
        .ok_or(Error::NotFound { entity: "tenant" })?;
    tenant_from_row(&row)
}

pub(crate) async fn list(reader: &SqlitePool, q: &TenantListQuery) -> Result<Page<Tenant>> {
    let mut qb: QueryBuilder<'_, Sqlite> =
        QueryBuilder::new(format!("SELECT {TENANT_COLS} FROM tenants WHERE 1 = 1"));
    if let Some(s) = q.status {
        qb.push(" AND status = ").push_bind(s.as_str());
    }
    if let Some(after) = q.after {
        qb.push(" AND id < ").push_bind(after.into_uuid());
    }
    qb.push(" ORDER BY id DESC LIMIT ")
        .push_bind(i64::from(q.limit.get()) + 1);
    let rows = qb.build().fetch_all(reader).await.map_err(db_err)?;
    let items = rows
        .iter()
        .map(tenant_from_row)
        .collect::<Result<Vec<_>>>()?;
    let (items, more) = split_page(items, q.limit.get());
    let next_cursor = match items.last() {
        Some(last) if more => Some(encode_cursor(&last.id)),
        _ => None,
    };
    Ok(Page { items, next_cursor })
}
