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
