//! API keys.

use domain::api_keys::{ApiKey, ApiKeyAuth, KeyHash, NewApiKey};
use domain::audit::{actions, AuditContext, AuditEvent, EntityRef};
use domain::tenants::TenantStatus;
use domain::{ApiKeyId, Error, Result, TenantId};
use serde_json::Value;
use sqlx::Row;

use crate::error::{corrupt, db, write};
use crate::rows::{self, API_KEY_COLUMNS};
use crate::{audit, PgStore};

fn not_found() -> Error {
    Error::NotFound { entity: "api_key" }
}

fn to_json(k: &ApiKey) -> Option<Value> {
    serde_json::to_value(k).ok()
}

impl PgStore {
    pub(crate) async fn create_api_key_impl(
        &self,
        tenant: TenantId,
        new: NewApiKey,
        hash: &KeyHash,
        prefix: &str,
        ctx: &AuditContext,
    ) -> Result<ApiKey> {
        let now = domain::time::now();
        let key = ApiKey {
            id: ApiKeyId::new(),
            tenant_id: tenant,
            name: new.name.into_inner(),
            prefix: prefix.to_owned(),
            platform_admin: new.platform_admin,
            created_at: now,
            revoked_at: None,
        };
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, name, prefix, key_hash, platform_admin, \
             created_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL)",
        )
        .bind(key.id.into_uuid())
        .bind(tenant.into_uuid())
        .bind(&key.name)
        .bind(&key.prefix)
        .bind(hash.as_str())
        .bind(key.platform_admin)
        .bind(key.created_at)
        .execute(&mut *tx)
        .await
        .map_err(write)?;
        let ev = AuditEvent::record(
            ctx,
            tenant,
            actions::API_KEY_CREATE,
            EntityRef::api_key(key.id),
            (None, to_json(&key)),
            now,
        );
        audit::insert(&mut tx, &ev).await?;
        tx.commit().await.map_err(db)?;
        Ok(key)
    }

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

    pub(crate) async fn revoke_api_key_impl(
        &self,
        tenant: TenantId,
        id: ApiKeyId,
        ctx: &AuditContext,
    ) -> Result<ApiKey> {
        let now = domain::time::now();
        let mut tx = self.pool.begin().await.map_err(db)?;
        let sql = format!(
            "UPDATE api_keys SET revoked_at = $3 \
             WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL RETURNING {API_KEY_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(tenant.into_uuid())
            .bind(id.into_uuid())
            .bind(now)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
            .ok_or_else(not_found)?;
        let after = rows::api_key(&row)?;
        let before = ApiKey {
            revoked_at: None,
            ..after.clone()
        };
        let ev = AuditEvent::record(
            ctx,
            tenant,
            actions::API_KEY_REVOKE,
            EntityRef::api_key(id),
            (to_json(&before), to_json(&after)),
            now,
        );
        audit::insert(&mut tx, &ev).await?;
        tx.commit().await.map_err(db)?;
        Ok(after)
    }
}
