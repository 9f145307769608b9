//! API keys: stored by the SHA-256 of the key, found by it.

use std::str::FromStr;

use domain::api_keys::{ApiKey, ApiKeyAuth, KeyHash};
use domain::ids::{ApiKeyId, TenantId};
use domain::tenants::TenantStatus;
use domain::time::to_micros;
use sqlx::sqlite::{SqliteConnection, SqlitePool};
use sqlx::Row;

use crate::error::{corrupt, db_err, write_err, Result};
use crate::rows::{api_key_from_row, API_KEY_COLS};

pub(crate) async fn insert(
    conn: &mut SqliteConnection,
    key: &ApiKey,
    hash: &KeyHash,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO api_keys (id, tenant_id, name, prefix, key_hash, platform_admin, \
         created_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(key.id.into_uuid())
    .bind(key.tenant_id.into_uuid())
    .bind(&key.name)
    .bind(&key.prefix)
    .bind(hash.as_str())
    .bind(key.platform_admin)
    .bind(to_micros(key.created_at))
    .bind(key.revoked_at.map(to_micros))
    .execute(&mut *conn)
    .await
    .map_err(write_err)?;
    Ok(())
}

pub(crate) async fn load(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    id: ApiKeyId,
) -> Result<Option<ApiKey>> {
    let row = sqlx::query(&format!(
        "SELECT {API_KEY_COLS} FROM api_keys WHERE tenant_id = ? AND id = ?"
    ))
    .bind(tenant.into_uuid())
    .bind(id.into_uuid())
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_err)?;
    row.as_ref().map(api_key_from_row).transpose()
}

pub(crate) async fn put(conn: &mut SqliteConnection, key: &ApiKey) -> Result<()> {
    sqlx::query("UPDATE api_keys SET name = ?, revoked_at = ? WHERE tenant_id = ? AND id = ?")
        .bind(&key.name)
        .bind(key.revoked_at.map(to_micros))
        .bind(key.tenant_id.into_uuid())
        .bind(key.id.into_uuid())
        .execute(&mut *conn)
        .await
        .map_err(write_err)?;
    Ok(())
}

pub(crate) async fn authenticate(
    reader: &SqlitePool,
    hash: &KeyHash,
) -> Result<Option<ApiKeyAuth>> {
    let row = sqlx::query(
        "SELECT k.id, k.tenant_id, k.name, k.prefix, k.platform_admin, k.created_at, \
         k.revoked_at, t.status AS tenant_status \
         FROM api_keys k JOIN tenants t ON t.id = k.tenant_id \
         WHERE k.key_hash = ? AND k.revoked_at IS NULL",
    )
    .bind(hash.as_str())
    .fetch_optional(reader)
    .await
    .map_err(db_err)?;
    let Some(row) = row else {
        return Ok(None);
    };
    let status: String = row.try_get("tenant_status").map_err(db_err)?;
    Ok(Some(ApiKeyAuth {
        key: api_key_from_row(&row)?,
        tenant_status: TenantStatus::from_str(&status).map_err(corrupt)?,
    }))
}

pub(crate) async fn list(reader: &SqlitePool, tenant: TenantId) -> Result<Vec<ApiKey>> {
    let rows = sqlx::query(&format!(
        "SELECT {API_KEY_COLS} FROM api_keys WHERE tenant_id = ? ORDER BY id DESC"
    ))
    .bind(tenant.into_uuid())
    .fetch_all(reader)
    .await
    .map_err(db_err)?;
    rows.iter().map(api_key_from_row).collect()
}
