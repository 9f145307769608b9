//! Tenants (platform scope). A new tenant starts with its default roles (`authz`).

use domain::audit::{actions, AuditContext, AuditEvent, EntityRef};
use domain::page::encode_cursor;
use domain::tenants::{NewTenant, Tenant, TenantListQuery, TenantPatch, TenantSlug, TenantStatus};
use domain::{Error, Page, Result, TenantId};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres, QueryBuilder};

use crate::error::{db, write};
use crate::rows::{self, TENANT_COLUMNS};
use crate::{audit, authz, PgStore};

fn not_found() -> Error {
    Error::NotFound { entity: "tenant" }
}

fn to_json(t: &Tenant) -> Option<Value> {
    serde_json::to_value(t).ok()
}

/// Writes every mutable column of `t`.
async fn write_tenant(conn: &mut PgConnection, t: &Tenant) -> Result<()> {
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
    pub(crate) async fn create_tenant_impl(
        &self,
        new: NewTenant,
        ctx: &AuditContext,
    ) -> Result<Tenant> {
        let now = domain::time::now();
        let t = new.into_tenant(now);
        let mut tx = self.pool.begin().await.map_err(db)?;
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
        .execute(&mut *tx)
        .await
        .map_err(write)?;
        authz::seed_tenant(&mut tx, t.id, now).await?;
        let ev = AuditEvent::record(
            ctx,
            t.id,
            actions::TENANT_CREATE,
            EntityRef::tenant(t.id),
            (None, to_json(&t)),
            now,
        );
        audit::insert(&mut tx, &ev).await?;
        tx.commit().await.map_err(db)?;
        Ok(t)
    }

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

    pub(crate) async fn update_tenant_impl(
        &self,
        id: TenantId,
        patch: TenantPatch,
        action: &'static str,
        ctx: &AuditContext,
    ) -> Result<Tenant> {
        let now = domain::time::now();
        let mut tx = self.pool.begin().await.map_err(db)?;
        // NO KEY UPDATE: serialises with other tenant updates and with the quota checks of
        // user creation, without blocking the foreign-key checks of concurrent inserts.
        let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1 FOR NO KEY UPDATE");
        let row = sqlx::query(&sql)
            .bind(id.into_uuid())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
            .ok_or_else(not_found)?;
        let before = rows::tenant(&row)?;
        let after = patch.apply(before.clone(), now);
        write_tenant(&mut tx, &after).await?;
        let ev = AuditEvent::record(
            ctx,
            id,
            action,
            EntityRef::tenant(id),
            (to_json(&before), to_json(&after)),
            now,
        );
        audit::insert(&mut tx, &ev).await?;
        // A suspended tenant's users are signed out with it (the tenant event records why).
        if before.status != after.status && after.status == TenantStatus::Suspended {
            sqlx::query(
                "UPDATE sessions SET revoked_at = $1, revoke_reason = 'tenant_suspended' \
                 WHERE tenant_id = $2 AND revoked_at IS NULL",
            )
            .bind(now)
            .bind(id.into_uuid())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(after)
    }
}
