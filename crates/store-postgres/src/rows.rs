//! Column lists and the mapping of rows to domain entities.

use std::str::FromStr;

use domain::api_keys::ApiKey;
use domain::audit::{ActorType, AuditEvent};
use domain::tenants::{Plan, Tenant, TenantStatus};
use domain::users::{User, UserStatus};
use domain::{ApiKeyId, AuditEventId, Result, TenantId, UserId};
use serde_json::{Map, Value};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::Row;

use crate::error::{corrupt, db};

pub(crate) const TENANT_COLUMNS: &str = "id, slug, display_name, status, plan, max_users, \
     trial_ends_at, settings, created_at, updated_at";

pub(crate) const API_KEY_COLUMNS: &str =
    "id, tenant_id, name, prefix, platform_admin, created_at, revoked_at";

pub(crate) const USER_COLUMNS: &str = "id, tenant_id, email, username, full_name, phone, \
     department, job_title, employee_id, manager_id, cost_center, clearance_level, language, \
     avatar_url, custom_attributes, status, last_login_at, created_at, updated_at, deleted_at, \
     version";

pub(crate) const AUDIT_COLUMNS: &str = "id, tenant_id, occurred_at, actor_type, actor_id, \
     action, entity_type, entity_id, before, after, ip, user_agent, request_id";

fn parse<T: FromStr>(what: &str, s: &str) -> Result<T> {
    s.parse().map_err(|_| corrupt(what, s))
}

fn get<'r, T>(row: &'r PgRow, col: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(col).map_err(db)
}

pub(crate) fn tenant(row: &PgRow) -> Result<Tenant> {
    let status: String = get(row, "status")?;
    let plan: String = get(row, "plan")?;
    let settings: Json<Map<String, Value>> = get(row, "settings")?;
    Ok(Tenant {
        id: TenantId::from_uuid(get(row, "id")?),
        slug: get(row, "slug")?,
        display_name: get(row, "display_name")?,
        status: parse::<TenantStatus>("tenant status", &status)?,
        plan: parse::<Plan>("plan", &plan)?,
        max_users: get(row, "max_users")?,
        trial_ends_at: get(row, "trial_ends_at")?,
        settings: settings.0,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
    })
}

pub(crate) fn api_key(row: &PgRow) -> Result<ApiKey> {
    Ok(ApiKey {
        id: ApiKeyId::from_uuid(get(row, "id")?),
        tenant_id: TenantId::from_uuid(get(row, "tenant_id")?),
        name: get(row, "name")?,
        prefix: get(row, "prefix")?,
        platform_admin: get(row, "platform_admin")?,
        created_at: get(row, "created_at")?,
        revoked_at: get(row, "revoked_at")?,
    })
}

pub(crate) fn user(row: &PgRow) -> Result<User> {
    let status: String = get(row, "status")?;
    let attrs: Json<Map<String, Value>> = get(row, "custom_attributes")?;
    let manager: Option<uuid::Uuid> = get(row, "manager_id")?;
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
        manager_id: manager.map(UserId::from_uuid),
        cost_center: get(row, "cost_center")?,
        clearance_level: get(row, "clearance_level")?,
        language: get(row, "language")?,
        avatar_url: get(row, "avatar_url")?,
        custom_attributes: attrs.0,
        status: parse::<UserStatus>("user status", &status)?,
        last_login_at: get(row, "last_login_at")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
        deleted_at: get(row, "deleted_at")?,
        version: get(row, "version")?,
    })
}

pub(crate) fn audit_event(row: &PgRow) -> Result<AuditEvent> {
    let actor_type: String = get(row, "actor_type")?;
    Ok(AuditEvent {
        id: AuditEventId::from_uuid(get(row, "id")?),
        tenant_id: TenantId::from_uuid(get(row, "tenant_id")?),
        occurred_at: get(row, "occurred_at")?,
        actor_type: parse::<ActorType>("actor type", &actor_type)?,
        actor_id: get(row, "actor_id")?,
        action: get(row, "action")?,
        entity_type: get(row, "entity_type")?,
        entity_id: get(row, "entity_id")?,
        before: get(row, "before")?,
        after: get(row, "after")?,
        ip: get(row, "ip")?,
        user_agent: get(row, "user_agent")?,
        request_id: get(row, "request_id")?,
    })
}

/// The words of a user that search matches: maximal runs of letters and digits of the full
/// name, username and email, lower-cased, separated by spaces. Split and folded here rather
/// than in SQL so that the result does not depend on the database's locale; the query
/// terms (`SearchQuery`) are split and folded the same way.
pub(crate) fn search_text(u: &User) -> String {
    let mut out = String::with_capacity(u.full_name.len() + u.email.len() + 32);
    let sources = [
        u.full_name.as_str(),
        u.username.as_deref().unwrap_or(""),
        u.email.as_str(),
    ];
    for source in sources {
        for word in source.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&word.to_lowercase());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_words() {
        let now = domain::time::now();
        let u = User {
            id: UserId::new(),
            tenant_id: TenantId::new(),
            email: "Ada.Lovelace+x@Example.COM".into(),
            username: Some("ada_l".into()),
            full_name: "Ada  Lovelace-Byron".into(),
            phone: None,
            department: None,
            job_title: None,
            employee_id: None,
            manager_id: None,
            cost_center: None,
            clearance_level: None,
            language: None,
            avatar_url: None,
            custom_attributes: Map::new(),
            status: UserStatus::Active,
            last_login_at: None,
            created_at: now,
            updated_at: now,
            deleted_at: None,
            version: 1,
        };
        assert_eq!(
            search_text(&u),
            "ada lovelace byron ada l ada lovelace x example com"
        );
    }
}
