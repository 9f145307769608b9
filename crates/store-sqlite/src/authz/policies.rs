//! Transaction primitives of policies and their history.

use domain::audit::Actor;
use domain::authz::Policy;
use domain::ids::{PolicyId, TenantId};
use domain::time::to_micros;
use sqlx::sqlite::SqliteConnection;

use super::{execute_by, find_by, policy_from_row, POLICY_COLS};
use crate::error::{db_err, Result};

pub(crate) async fn find(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    id: PolicyId,
) -> Result<Option<Policy>> {
    let sql = format!("SELECT {POLICY_COLS} FROM policies WHERE tenant_id = ? AND id = ?");
    find_by(
        conn,
        &sql,
        &[tenant.into_uuid(), id.into_uuid()],
        policy_from_row,
    )
    .await
}

pub(crate) async fn insert(conn: &mut SqliteConnection, p: &Policy, by: Actor) -> Result<()> {
    sqlx::query(
        "INSERT INTO policies (id, tenant_id, name, description, effect, source, active, \
         version, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(p.id.into_uuid())
    .bind(p.tenant_id.into_uuid())
    .bind(&p.name)
    .bind(&p.description)
    .bind(p.effect.as_str())
    .bind(&p.source)
    .bind(p.active)
    .bind(p.version)
    .bind(to_micros(p.created_at))
    .bind(to_micros(p.updated_at))
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    insert_version(conn, p, by).await
}

pub(crate) async fn put(conn: &mut SqliteConnection, p: &Policy, by: Actor) -> Result<()> {
    sqlx::query(
        "UPDATE policies SET name = ?, description = ?, effect = ?, source = ?, \
         active = ?, version = ?, updated_at = ? WHERE tenant_id = ? AND id = ?",
    )
    .bind(&p.name)
    .bind(&p.description)
    .bind(p.effect.as_str())
    .bind(&p.source)
    .bind(p.active)
    .bind(p.version)
    .bind(to_micros(p.updated_at))
    .bind(p.tenant_id.into_uuid())
    .bind(p.id.into_uuid())
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    insert_version(conn, p, by).await
}

/// Its history goes with it (ON DELETE CASCADE); the audit trail keeps the policy.
pub(crate) async fn delete(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    id: PolicyId,
) -> Result<()> {
    execute_by(
        &mut *conn,
        "DELETE FROM policies WHERE tenant_id = ? AND id = ?",
        &[tenant.into_uuid(), id.into_uuid()],
    )
    .await?;
    Ok(())
}

/// Records `p` as it now is in its history.
async fn insert_version(conn: &mut SqliteConnection, p: &Policy, by: Actor) -> Result<()> {
    sqlx::query(
        "INSERT INTO policy_versions (policy_id, version, tenant_id, name, effect, source, \
         active, changed_at, changed_by_type, changed_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(p.id.into_uuid())
    .bind(p.version)
    .bind(p.tenant_id.into_uuid())
    .bind(&p.name)
    .bind(p.effect.as_str())
    .bind(&p.source)
    .bind(p.active)
    .bind(to_micros(p.updated_at))
    .bind(by.actor_type().as_str())
    .bind(by.id())
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    Ok(())
}
