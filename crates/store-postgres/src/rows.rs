//! Column lists and the mapping of rows to domain entities.

use std::str::FromStr;

use domain::api_keys::{ApiKey, KeyHash};
use domain::audit::{ActorType, AuditEvent};
use domain::auth::{
    Credentials, OneTimeToken, Session, SessionKind, SigningKeyRecord, TokenPurpose, TotpCredential,
};
use domain::authz::{
    Group, GroupMember, GroupMemberRole, GroupSummary, GroupType, Permission, PermissionKey,
    Policy, PolicyEffect, PolicyVersion, Role, RoleAssignment, RoleType, Scope,
};
use domain::tenants::{Plan, Tenant, TenantStatus};
use domain::users::{User, UserStatus};
use domain::{
    ApiKeyId, AuditEventId, GroupId, PolicyId, Result, RoleId, SessionId, TenantId, UserId,
};
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

pub(crate) const SESSION_COLUMNS: &str = "id, tenant_id, user_id, kind, device_label, ip, \
     user_agent, amr, mfa_level, created_at, last_seen_at, expires_at, revoked_at, revoke_reason";

/// The credential columns of `user_credentials c`, and whether `u` (the user) has a
/// confirmed TOTP enrolment. With a `LEFT JOIN`, a user without a row reads as empty.
pub(crate) const CREDENTIAL_COLUMNS: &str = "c.password_hash, c.password_changed_at, \
     c.must_change_password, c.email_verified_at, c.failed_count, c.failed_window_start, \
     c.locked_until, EXISTS (SELECT 1 FROM totp_credentials t WHERE t.tenant_id = u.tenant_id \
     AND t.user_id = u.id AND t.confirmed_at IS NOT NULL) AS totp_enabled";

pub(crate) const ONE_TIME_TOKEN_COLUMNS: &str = "hash, tenant_id, purpose, user_id, email, data, \
     created_at, expires_at, used_at, attempts";

pub(crate) const TOTP_COLUMNS: &str =
    "tenant_id, user_id, secret_ciphertext, confirmed_at, last_used_step, created_at";

pub(crate) const SIGNING_KEY_COLUMNS: &str =
    "kid, algorithm, private_key_ciphertext, public_jwk, created_at, retired_at";

/// The columns of a role `r`, with its permissions as `resource:action:scope` strings.
pub(crate) const ROLE_COLUMNS: &str = "r.id, r.tenant_id, r.name, r.display_name, \
     r.description, r.role_type, r.priority, r.active, r.created_at, r.updated_at, \
     ARRAY(SELECT p.resource || ':' || p.action || ':' || p.scope FROM role_permissions p \
     WHERE p.role_id = r.id) AS permissions";

/// The columns of an assignment `a` joined to its role `r`.
pub(crate) const ASSIGNMENT_COLUMNS: &str = "a.user_id, a.role_id, r.name AS role_name, \
     a.assigned_by_type, a.assigned_by, a.assigned_at, a.expires_at";

pub(crate) const GROUP_COLUMNS: &str = "g.id, g.tenant_id, g.name, g.display_name, \
     g.description, g.group_type, g.parent_id, g.max_members, g.active, g.settings, \
     g.created_at, g.updated_at";

/// [`GROUP_COLUMNS`] and the member counts of the group `g`: every member, and those whose
/// user is active (and not deleted).
pub(crate) const GROUP_SUMMARY_COLUMNS: &str = "g.id, g.tenant_id, g.name, g.display_name, \
     g.description, g.group_type, g.parent_id, g.max_members, g.active, g.settings, \
     g.created_at, g.updated_at, \
     (SELECT count(*) FROM group_members m WHERE m.group_id = g.id) AS member_count, \
     (SELECT count(*) FROM group_members m JOIN users u ON u.id = m.user_id \
      WHERE m.group_id = g.id AND u.status = 'active' AND u.deleted_at IS NULL) \
     AS active_member_count";

/// The columns of a membership `m` joined to its user `u`.
pub(crate) const MEMBER_COLUMNS: &str = "m.group_id, m.user_id, u.email, u.full_name, \
     u.department, u.job_title, u.status, m.role_in_group, m.joined_at, m.added_by_type, \
     m.added_by";

pub(crate) const POLICY_COLUMNS: &str = "id, tenant_id, name, description, effect, source, \
     active, version, created_at, updated_at";

pub(crate) const POLICY_VERSION_COLUMNS: &str = "policy_id, version, name, effect, source, \
     active, changed_at, changed_by_type, changed_by";

pub(crate) const PERMISSION_COLUMNS: &str = "resource, action, scope, description, created_at";

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

pub(crate) fn session(row: &PgRow) -> Result<Session> {
    let kind: String = get(row, "kind")?;
    let mfa_level: i16 = get(row, "mfa_level")?;
    Ok(Session {
        id: SessionId::from_uuid(get(row, "id")?),
        tenant_id: TenantId::from_uuid(get(row, "tenant_id")?),
        user_id: UserId::from_uuid(get(row, "user_id")?),
        kind: parse::<SessionKind>("session kind", &kind)?,
        device_label: get(row, "device_label")?,
        ip: get(row, "ip")?,
        user_agent: get(row, "user_agent")?,
        amr: get(row, "amr")?,
        mfa_level: u8::try_from(mfa_level)
            .map_err(|_| corrupt("MFA level", &mfa_level.to_string()))?,
        created_at: get(row, "created_at")?,
        last_seen_at: get(row, "last_seen_at")?,
        expires_at: get(row, "expires_at")?,
        revoked_at: get(row, "revoked_at")?,
        revoke_reason: get(row, "revoke_reason")?,
    })
}

fn count(what: &str, n: i32) -> Result<u32> {
    u32::try_from(n).map_err(|_| corrupt(what, &n.to_string()))
}

/// The credentials of [`CREDENTIAL_COLUMNS`] (all NULL when the user has no row).
pub(crate) fn credentials(
    row: &PgRow,
    tenant_id: TenantId,
    user_id: UserId,
) -> Result<Credentials> {
    let failed_count: Option<i32> = get(row, "failed_count")?;
    let must_change: Option<bool> = get(row, "must_change_password")?;
    Ok(Credentials {
        tenant_id,
        user_id,
        password_hash: get(row, "password_hash")?,
        password_changed_at: get(row, "password_changed_at")?,
        must_change_password: must_change.unwrap_or(false),
        email_verified_at: get(row, "email_verified_at")?,
        failed_count: count("failed count", failed_count.unwrap_or(0))?,
        failed_window_start: get(row, "failed_window_start")?,
        locked_until: get(row, "locked_until")?,
        totp_enabled: get(row, "totp_enabled")?,
    })
}

pub(crate) fn one_time_token(row: &PgRow) -> Result<OneTimeToken> {
    let purpose: String = get(row, "purpose")?;
    let user: Option<uuid::Uuid> = get(row, "user_id")?;
    let data: Json<Value> = get(row, "data")?;
    let attempts: i32 = get(row, "attempts")?;
    Ok(OneTimeToken {
        hash: KeyHash::from_hex(get(row, "hash")?),
        tenant_id: TenantId::from_uuid(get(row, "tenant_id")?),
        purpose: parse::<TokenPurpose>("token purpose", &purpose)?,
        user_id: user.map(UserId::from_uuid),
        email: get(row, "email")?,
        data: data.0,
        created_at: get(row, "created_at")?,
        expires_at: get(row, "expires_at")?,
        used_at: get(row, "used_at")?,
        attempts: count("token attempts", attempts)?,
    })
}

pub(crate) fn totp(row: &PgRow) -> Result<TotpCredential> {
    Ok(TotpCredential {
        tenant_id: TenantId::from_uuid(get(row, "tenant_id")?),
        user_id: UserId::from_uuid(get(row, "user_id")?),
        secret_ciphertext: get(row, "secret_ciphertext")?,
        confirmed_at: get(row, "confirmed_at")?,
        last_used_step: get(row, "last_used_step")?,
        created_at: get(row, "created_at")?,
    })
}

pub(crate) fn signing_key(row: &PgRow) -> Result<SigningKeyRecord> {
    let jwk: Json<Value> = get(row, "public_jwk")?;
    Ok(SigningKeyRecord {
        kid: get(row, "kid")?,
        algorithm: get(row, "algorithm")?,
        private_key_ciphertext: get(row, "private_key_ciphertext")?,
        public_jwk: jwk.0,
        created_at: get(row, "created_at")?,
        retired_at: get(row, "retired_at")?,
    })
}

pub(crate) fn role(row: &PgRow) -> Result<Role> {
    let role_type: String = get(row, "role_type")?;
    let tenant: Option<uuid::Uuid> = get(row, "tenant_id")?;
    let stored: Vec<String> = get(row, "permissions")?;
    let mut permissions = stored
        .iter()
        .map(|p| PermissionKey::parse("permission", p).map_err(|_| corrupt("permission", p)))
        .collect::<Result<Vec<_>>>()?;
    permissions.sort();
    Ok(Role {
        id: RoleId::from_uuid(get(row, "id")?),
        tenant_id: tenant.map(TenantId::from_uuid),
        name: get(row, "name")?,
        display_name: get(row, "display_name")?,
        description: get(row, "description")?,
        role_type: parse::<RoleType>("role type", &role_type)?,
        priority: get(row, "priority")?,
        active: get(row, "active")?,
        permissions,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
    })
}

pub(crate) fn assignment(row: &PgRow) -> Result<RoleAssignment> {
    let by_type: String = get(row, "assigned_by_type")?;
    Ok(RoleAssignment {
        user_id: UserId::from_uuid(get(row, "user_id")?),
        role_id: RoleId::from_uuid(get(row, "role_id")?),
        role_name: get(row, "role_name")?,
        assigned_by_type: parse::<ActorType>("actor type", &by_type)?,
        assigned_by: get(row, "assigned_by")?,
        assigned_at: get(row, "assigned_at")?,
        expires_at: get(row, "expires_at")?,
    })
}

pub(crate) fn group(row: &PgRow) -> Result<Group> {
    let group_type: String = get(row, "group_type")?;
    let parent: Option<uuid::Uuid> = get(row, "parent_id")?;
    let settings: Json<Map<String, Value>> = get(row, "settings")?;
    Ok(Group {
        id: GroupId::from_uuid(get(row, "id")?),
        tenant_id: TenantId::from_uuid(get(row, "tenant_id")?),
        name: get(row, "name")?,
        display_name: get(row, "display_name")?,
        description: get(row, "description")?,
        group_type: parse::<GroupType>("group type", &group_type)?,
        parent_id: parent.map(GroupId::from_uuid),
        max_members: get(row, "max_members")?,
        active: get(row, "active")?,
        settings: settings.0,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
    })
}

pub(crate) fn group_summary(row: &PgRow) -> Result<GroupSummary> {
    Ok(GroupSummary {
        group: group(row)?,
        member_count: get(row, "member_count")?,
        active_member_count: get(row, "active_member_count")?,
    })
}

pub(crate) fn member(row: &PgRow) -> Result<GroupMember> {
    let status: String = get(row, "status")?;
    let role_in_group: String = get(row, "role_in_group")?;
    let by_type: String = get(row, "added_by_type")?;
    Ok(GroupMember {
        group_id: GroupId::from_uuid(get(row, "group_id")?),
        user_id: UserId::from_uuid(get(row, "user_id")?),
        email: get(row, "email")?,
        full_name: get(row, "full_name")?,
        department: get(row, "department")?,
        job_title: get(row, "job_title")?,
        status: parse::<UserStatus>("user status", &status)?,
        role_in_group: parse::<GroupMemberRole>("group role", &role_in_group)?,
        joined_at: get(row, "joined_at")?,
        added_by_type: parse::<ActorType>("actor type", &by_type)?,
        added_by: get(row, "added_by")?,
    })
}

pub(crate) fn policy(row: &PgRow) -> Result<Policy> {
    let effect: String = get(row, "effect")?;
    Ok(Policy {
        id: PolicyId::from_uuid(get(row, "id")?),
        tenant_id: TenantId::from_uuid(get(row, "tenant_id")?),
        name: get(row, "name")?,
        description: get(row, "description")?,
        effect: parse::<PolicyEffect>("policy effect", &effect)?,
        source: get(row, "source")?,
        active: get(row, "active")?,
        version: get(row, "version")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
    })
}

pub(crate) fn policy_version(row: &PgRow) -> Result<PolicyVersion> {
    let effect: String = get(row, "effect")?;
    let by_type: String = get(row, "changed_by_type")?;
    Ok(PolicyVersion {
        policy_id: PolicyId::from_uuid(get(row, "policy_id")?),
        version: get(row, "version")?,
        name: get(row, "name")?,
        effect: parse::<PolicyEffect>("policy effect", &effect)?,
        source: get(row, "source")?,
        active: get(row, "active")?,
        changed_at: get(row, "changed_at")?,
        changed_by_type: parse::<ActorType>("actor type", &by_type)?,
        changed_by: get(row, "changed_by")?,
    })
}

/// A tenant-defined permission.
pub(crate) fn permission(row: &PgRow) -> Result<Permission> {
    let resource: String = get(row, "resource")?;
    let action: String = get(row, "action")?;
    let scope: String = get(row, "scope")?;
    let scope = parse::<Scope>("scope", &scope)?;
    let key = PermissionKey::new(&resource, &action, scope)
        .map_err(|_| corrupt("permission", &format!("{resource}:{action}")))?;
    Ok(Permission {
        permission: key,
        resource,
        action,
        scope,
        description: get(row, "description")?,
        built_in: false,
        created_at: Some(get(row, "created_at")?),
    })
}

/// Every prefix of a word up to this many characters is a lexeme of its own, so that a
/// search term of at most this length is one exact lexeme: a single posting list in the GIN
/// index, which intersects cheaply with the others of the query. A longer term is a prefix
/// match (`'term':*`) against the full words longer than this, which are stored too; a
/// term that long matches few distinct words. (A prefix match with a short term is what
/// must be avoided: `gra:*` would enumerate every distinct word starting with `gra`,
/// typically one username per user, and their postings besides.)
pub(crate) const PREFIX_LEXEMES: usize = 10;

/// The lexemes stored in `users.search` for a user: of each word (maximal run of letters
/// and digits of the full name, username and email, lower-cased), every prefix of up to
/// [`PREFIX_LEXEMES`] characters, and the word itself when it is longer. Space-separated,
/// sorted and without duplicates; the database turns them into a tsvector with
/// `array_to_tsvector(string_to_array(…, ' '))`, without any text-search parsing, so that
/// matching does not depend on its locale. [`search_tsquery`] is the counterpart.
pub(crate) fn search_lexemes(u: &User) -> String {
    let mut lexemes: Vec<String> = Vec::with_capacity(48);
    let sources = [
        u.full_name.as_str(),
        u.username.as_deref().unwrap_or(""),
        u.email.as_str(),
    ];
    for source in sources {
        for word in source
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            let word = word.to_lowercase();
            // The byte offsets where the prefixes of 1..=PREFIX_LEXEMES characters end.
            let ends = word
                .char_indices()
                .map(|(i, c)| i + c.len_utf8())
                .take(PREFIX_LEXEMES);
            for end in ends {
                if end < word.len() {
                    lexemes.push(word[..end].to_owned());
                }
            }
            lexemes.push(word);
        }
    }
    lexemes.sort_unstable();
    lexemes.dedup();
    lexemes.join(" ")
}

/// The tsquery (input syntax) of a search: every term must be a prefix of a word (see
/// [`search_lexemes`]). Terms are lower-case letters and digits (`SearchQuery`), so quoting
/// them needs no escaping.
pub(crate) fn search_tsquery(terms: &[String]) -> String {
    terms
        .iter()
        .map(|t| {
            if t.chars().nth(PREFIX_LEXEMES).is_none() {
                format!("'{t}'")
            } else {
                format!("'{t}':*")
            }
        })
        .collect::<Vec<_>>()
        .join(" & ")
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
            search_lexemes(&u),
            "a ad ada b by byr byro byron c co com e ex exa exam examp exampl example l lo lov \
             love lovel lovela lovelac lovelace x"
        );
        let long = User {
            full_name: "Wolfeschlegelsteinhausen Zoë".into(),
            username: None,
            email: "é@x.io".into(),
            ..u
        };
        assert_eq!(
            search_lexemes(&long),
            "i io w wo wol wolf wolfe wolfes wolfesc wolfesch wolfeschl wolfeschle \
             wolfeschlegelsteinhausen x z zo zoë é"
        );
        assert_eq!(
            search_tsquery(&["wolfeschle".into(), "wolfeschleg".into()]),
            "'wolfeschle' & 'wolfeschleg':*"
        );
    }
}
