//! Transaction primitives of policies and their history.

use domain::audit::Actor;
use domain::authz::Policy;
use domain::{PolicyId, Result, TenantId};
use sqlx::PgConnection;

use super::{execute_by, find_by};
use crate::error::write;
use crate::rows::{self, POLICY_COLUMNS};

pub(crate) async fn find(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: PolicyId,
) -> Result<Option<Policy>> {
    let sql = format!("SELECT {POLICY_COLUMNS} FROM policies WHERE tenant_id = $1 AND id = $2");
    find_by(
        conn,
        &sql,
        &[tenant.into_uuid(), id.into_uuid()],
        rows::policy,
    )
    .await
}

pub(crate) async fn insert(conn: &mut PgConnection, p: &Policy, by: Actor) -> Result<()> {
    sqlx::query(
        "INSERT INTO policies (id, tenant_id, name, description, effect, source, active, \
         version, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(p.id.into_uuid())
    .bind(p.tenant_id.into_uuid())
    .bind(&p.name)
    .bind(p.description.as_deref())
    .bind(p.effect.as_str())
    .bind(&p.source)
    .bind(p.active)
    .bind(p.version)
    .bind(p.created_at)
    .bind(p.updated_at)
    .execute(&mut *conn)
    .await
    .map_err(write)?;
    insert_version(conn, p, by).await
}

pub(crate) async fn put(conn: &mut PgConnection, p: &Policy, by: Actor) -> Result<()> {
    sqlx::query(
        "UPDATE policies SET name = $3, description = $4, effect = $5, source = $6, \
         active = $7, version = $8, updated_at = $9 WHERE tenant_id = $1 AND id = $2",
    )
    .bind(p.tenant_id.into_uuid())
    .bind(p.id.into_uuid())
    .bind(&p.name)
    .bind(p.description.as_deref())
    .bind(p.effect.as_str())
    .bind(&p.source)
    .bind(p.active)
    .bind(p.version)
    .bind(p.updated_at)
    .execute(&mut *conn)
    .await
    .map_err(write)?;
    insert_version(conn, p, by).await
}

/// Its history goes with it (ON DELETE CASCADE); the audit trail keeps the policy.
pub(crate) async fn delete(conn: &mut PgConnection, tenant: TenantId, id: PolicyId) -> Result<()> {
    execute_by(
        &mut *conn,
        "DELETE FROM policies WHERE tenant_id = $1 AND id = $2",
        &[tenant.into_uuid(), id.into_uuid()],
    )
    .await?;
    Ok(())
}

/// Records `p` as it is now in its history.
async fn insert_version(conn: &mut PgConnection, p: &Policy, by: Actor) -> Result<()> {
    sqlx::query(
        "INSERT INTO policy_versions (policy_id, version, tenant_id, name, effect, source, \
         active, changed_at, changed_by_type, changed_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(p.id.into_uuid())
    .bind(p.version)
    .bind(p.tenant_id.into_uuid())
    .bind(&p.name)
    .bind(p.effect.as_str())
    .bind(&p.source)
    .bind(p.active)
    .bind(p.updated_at)
    .bind(by.actor_type().as_str())
    .bind(by.id())
    .execute(conn)
    .await
    .map_err(write)?;
    Ok(())
}
