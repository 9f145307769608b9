//! API keys: stored by the SHA-256 of the key, found by it.

use domain::api_keys::{ApiKey, ApiKeyAuth, KeyHash};
use domain::tenants::TenantStatus;
use domain::{ApiKeyId, Result, TenantId};
use sqlx::{PgConnection, Row};

use crate::error::{corrupt, db, write};
use crate::rows::{self, API_KEY_COLUMNS};
use crate::PgStore;

impl PgStore {
    pub(crate) async fn authenticate_api_key_impl(
        &self,
        hash: &KeyHash,
    ) -> Result<Option<ApiKeyAuth>> {
        let row = sqlx::query(
            "SELECT k.id, k.tenant_id, k.name, k.prefix, k.platform_admin, k.created_at, \
             k.revoked_at, t.status AS tenant_status \
             FROM api_keys k JOIN tenants t ON t.id = k.tenant_id \
             WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
        )
        .bind(hash.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let status: String = row.try_get("tenant_status").map_err(db)?;
        let tenant_status = status
            .parse::<TenantStatus>()
            .map_err(|_| corrupt("tenant status", &status))?;
        Ok(Some(ApiKeyAuth {
            key: rows::api_key(&row)?,
            tenant_status,
        }))
    }

    pub(crate) async fn list_api_keys_impl(&self, tenant: TenantId) -> Result<Vec<ApiKey>> {
        let sql =
            format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 ORDER BY id DESC");
        sqlx::query(&sql)
            .bind(tenant.into_uuid())
            .fetch_all(&self.pool)
            .await
            .map_err(db)?
            .iter()
            .map(rows::api_key)
            .collect()
    }
}

pub(crate) async fn insert(conn: &mut PgConnection, key: &ApiKey, hash: &KeyHash) -> Result<()> {
    sqlx::query(
        "INSERT INTO api_keys (id, tenant_id, name, prefix, key_hash, platform_admin, \
         created_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(key.id.into_uuid())
    .bind(key.tenant_id.into_uuid())
    .bind(&key.name)
    .bind(&key.prefix)
    .bind(hash.as_str())
    .bind(key.platform_admin)
    .bind(key.created_at)
    .bind(key.revoked_at)
    .execute(conn)
    .await
    .map_err(write)?;
    Ok(())
}

pub(crate) async fn load_for_update(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: ApiKeyId,
) -> Result<Option<ApiKey>> {
    let sql = format!(
        "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 AND id = $2 FOR UPDATE"
    );
    let row = sqlx::query(&sql)
        .bind(tenant.into_uuid())
        .bind(id.into_uuid())
        .fetch_optional(conn)
        .await
        .map_err(db)?;
    row.as_ref().map(rows::api_key).transpose()
}

pub(crate) async fn put(conn: &mut PgConnection, key: &ApiKey) -> Result<()> {
    sqlx::query("UPDATE api_keys SET name = $3, revoked_at = $4 WHERE tenant_id = $1 AND id = $2")
        .bind(key.tenant_id.into_uuid())
        .bind(key.id.into_uuid())
        .bind(&key.name)
        .bind(key.revoked_at)
        .execute(conn)
        .await
        .map_err(write)?;
    Ok(())
}
