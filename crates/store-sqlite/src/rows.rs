//! Mapping between SQLite rows and domain values.

use domain::api_keys::ApiKey;
use domain::audit::{ActorType, AuditEvent};
use domain::ids::{ApiKeyId, AuditEventId, TenantId, UserId};
use domain::tenants::{Plan, Tenant, TenantStatus};
use domain::time::{from_micros, Timestamp};
use domain::users::{User, UserStatus};
use serde_json::{Map, Value};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use uuid::Uuid;

use crate::error::{corrupt, db_err, Result};

// --- scalars ---

pub(crate) fn ts(us: i64) -> Result<Timestamp> {
    from_micros(us).ok_or_else(|| corrupt(format_args!("timestamp {us} out of range")))
}

pub(crate) fn opt_ts(us: Option<i64>) -> Result<Option<Timestamp>> {
    us.map(ts).transpose()
}

pub(crate) fn json_object(text: &str) -> Result<Map<String, Value>> {
    serde_json::from_str(text).map_err(|e| corrupt(format_args!("JSON object: {e}")))
}

pub(crate) fn json_value(text: Option<String>) -> Result<Option<Value>> {
    text.map(|t| serde_json::from_str(&t).map_err(|e| corrupt(format_args!("JSON value: {e}"))))
        .transpose()
}

pub(crate) fn parse_enum<T: std::str::FromStr<Err = String>>(raw: &str) -> Result<T> {
    raw.parse::<T>()
        .map_err(|e| corrupt(format_args!("{raw:?}: {e}")))
}

pub(crate) fn get<'r, T>(row: &'r SqliteRow, col: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(col).map_err(db_err)
}

// --- rows ---

pub(crate) const TENANT_COLS: &str = "id, slug, display_name, status, plan, max_users, \
     trial_ends_at, settings, created_at, updated_at";

pub(crate) fn tenant_from_row(row: &SqliteRow) -> Result<Tenant> {
    Ok(Tenant {
        id: TenantId::from_uuid(get(row, "id")?),
        slug: get(row, "slug")?,
        display_name: get(row, "display_name")?,
        status: parse_enum::<TenantStatus>(&get::<String>(row, "status")?)?,
        plan: parse_enum::<Plan>(&get::<String>(row, "plan")?)?,
        max_users: get(row, "max_users")?,
        trial_ends_at: opt_ts(get(row, "trial_ends_at")?)?,
        settings: json_object(&get::<String>(row, "settings")?)?,
        created_at: ts(get(row, "created_at")?)?,
        updated_at: ts(get(row, "updated_at")?)?,
    })
}

pub(crate) const API_KEY_COLS: &str =
    "id, tenant_id, name, prefix, platform_admin, created_at, revoked_at";

pub(crate) fn api_key_from_row(row: &SqliteRow) -> Result<ApiKey> {
    Ok(ApiKey {
        id: ApiKeyId::from_uuid(get(row, "id")?),
        tenant_id: TenantId::from_uuid(get(row, "tenant_id")?),
        name: get(row, "name")?,
        prefix: get(row, "prefix")?,
        platform_admin: get(row, "platform_admin")?,
        created_at: ts(get(row, "created_at")?)?,
        revoked_at: opt_ts(get(row, "revoked_at")?)?,
    })
}

pub(crate) const USER_COLS: &str = "id, tenant_id, email, username, full_name, phone, \
     department, job_title, employee_id, manager_id, cost_center, clearance_level, language, \
     avatar_url, custom_attributes, status, last_login_at, created_at, updated_at, deleted_at, \
     version";

pub(crate) fn user_from_row(row: &SqliteRow) -> Result<User> {
    let clearance: Option<i64> = get(row, "clearance_level")?;
    let clearance_level = clearance
        .map(|c| i16::try_from(c).map_err(|_| corrupt(format_args!("clearance level {c}"))))
        .transpose()?;
    Ok(User {
        id: UserId::from_uuid(get(row, "id")?),
        tenant_id: TenantId::from_uuid(get(row, "tenant_id")?),
        email: get(row, "email")?,
        username: get(row, "username")?,
        full_name: get(row, "full_name")?,
        phone: get(row, "phone")?,
        department: get(row, "department")?,
        job_title: get(row, "job_title")?,
        employee_id: get(row, "employee_id")?,
        manager_id: get::<Option<Uuid>>(row, "manager_id")?.map(UserId::from_uuid),
        cost_center: get(row, "cost_center")?,
        clearance_level,
        language: get(row, "language")?,
        avatar_url: get(row, "avatar_url")?,
        custom_attributes: json_object(&get::<String>(row, "custom_attributes")?)?,
        status: parse_enum::<UserStatus>(&get::<String>(row, "status")?)?,
        last_login_at: opt_ts(get(row, "last_login_at")?)?,
        created_at: ts(get(row, "created_at")?)?,
        updated_at: ts(get(row, "updated_at")?)?,
        deleted_at: opt_ts(get(row, "deleted_at")?)?,
        version: get(row, "version")?,
    })
}

pub(crate) const AUDIT_COLS: &str = "id, tenant_id, occurred_at, actor_type, actor_id, action, \
     entity_type, entity_id, \"before\", \"after\", ip, user_agent, request_id";

pub(crate) fn audit_from_row(row: &SqliteRow) -> Result<AuditEvent> {
    Ok(AuditEvent {
        id: AuditEventId::from_uuid(get(row, "id")?),
        tenant_id: TenantId::from_uuid(get(row, "tenant_id")?),
        occurred_at: ts(get(row, "occurred_at")?)?,
        actor_type: parse_enum::<ActorType>(&get::<String>(row, "actor_type")?)?,
        actor_id: get(row, "actor_id")?,
        action: get(row, "action")?,
        entity_type: get(row, "entity_type")?,
        entity_id: get(row, "entity_id")?,
        before: json_value(get(row, "before")?)?,
        after: json_value(get(row, "after")?)?,
        ip: get(row, "ip")?,
        user_agent: get(row, "user_agent")?,
        request_id: get(row, "request_id")?,
    })
}

/// The JSON text of an object column.
pub(crate) fn object_text(m: &Map<String, Value>) -> String {
    // Serialising a map of JSON values cannot fail.
    serde_json::to_string(m).unwrap_or_else(|_| "{}".to_owned())
}
