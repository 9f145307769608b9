//! Users: the people of a tenant, their profile fields, statuses and soft deletion, and the
//! rules for listing them (filters, sort orders, keyset cursors and search).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, FieldError};
use crate::ids::{TenantId, UserId};
use crate::page::{decode_cursor, encode_cursor, PageSize};
use crate::patch::Patch;
use crate::tenants::string_enum;
use crate::time::{to_micros, Timestamp};
use crate::values::{
    AvatarUrl, ClearanceLevel, DisplayName, Email, JsonObject, Label, Language, Phone, SearchQuery,
    Username,
};

string_enum!(
    /// Where a user stands. Only `active` users will be able to sign in.
    UserStatus {
        Pending => "pending",
        Active => "active",
        Blocked => "blocked",
        Suspended => "suspended",
        Inactive => "inactive",
    }
);

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct User {
    pub id: UserId,
    pub tenant_id: TenantId,
    pub email: String,
    pub username: Option<String>,
    pub full_name: String,
    pub phone: Option<String>,
    pub department: Option<String>,
    pub job_title: Option<String>,
    pub employee_id: Option<String>,
    pub manager_id: Option<UserId>,
    pub cost_center: Option<String>,
    pub clearance_level: Option<i16>,
    pub language: Option<String>,
    pub avatar_url: Option<String>,
    #[schema(value_type = Object)]
    pub custom_attributes: Map<String, Value>,
    pub status: UserStatus,
    pub last_login_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    /// Incremented by every change; the ETag of the user.
    pub version: i64,
}

impl User {
    /// The lower-cased email uniqueness is decided on.
    pub fn email_normalized(&self) -> String {
        self.email.to_lowercase()
    }

    /// The lower-cased username uniqueness is decided on.
    pub fn username_normalized(&self) -> Option<String> {
        self.username.as_ref().map(|u| u.to_lowercase())
    }

    /// The key users are sorted by for `sort=name`: the lower-cased full name, compared
    /// bytewise by both backends so that order and cursors agree everywhere.
    pub fn name_sort_key(&self) -> String {
        self.full_name.to_lowercase()
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted_at.is_some()
    }

    /// This user soft-deleted at `now`: a new version.
    pub fn soft_deleted(&self, now: Timestamp) -> User {
        User {
            deleted_at: Some(now),
            updated_at: now,
            version: self.version + 1,
            ..self.clone()
        }
    }

    /// This user restored at `now`: a new version. Only a deleted user can be restored.
    pub fn restored(&self, now: Timestamp) -> Result<User, Error> {
        if !self.is_deleted() {
            return Err(Error::refused(crate::Code::NotDeleted));
        }
        Ok(User {
            deleted_at: None,
            updated_at: now,
            version: self.version + 1,
            ..self.clone()
        })
    }

    /// The audit-log form of the user.
    pub fn to_audit_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// A validated request to create a user.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: Email,
    pub username: Option<Username>,
    pub full_name: DisplayName,
    pub phone: Option<Phone>,
    pub department: Option<Label>,
    pub job_title: Option<Label>,
    pub employee_id: Option<Label>,
    pub manager_id: Option<UserId>,
    pub cost_center: Option<Label>,
    pub clearance_level: Option<ClearanceLevel>,
    pub language: Option<Language>,
    pub avatar_url: Option<AvatarUrl>,
    pub custom_attributes: JsonObject,
    pub status: UserStatus,
}

impl NewUser {
    /// Builds the user row.
    pub fn into_user(self, tenant_id: TenantId, now: Timestamp) -> User {
        User {
            id: UserId::new(),
            tenant_id,
            email: self.email.into_inner(),
            username: self.username.map(Username::into_inner),
            full_name: self.full_name.into_inner(),
            phone: self.phone.map(Phone::into_inner),
            department: self.department.map(Label::into_inner),
            job_title: self.job_title.map(Label::into_inner),
            employee_id: self.employee_id.map(Label::into_inner),
            manager_id: self.manager_id,
            cost_center: self.cost_center.map(Label::into_inner),
            clearance_level: self.clearance_level.map(ClearanceLevel::get),
            language: self.language.map(Language::into_inner),
            avatar_url: self.avatar_url.map(AvatarUrl::into_inner),
            custom_attributes: self.custom_attributes.into_map(),
            status: self.status,
            last_login_at: None,
            created_at: now,
            updated_at: now,
            deleted_at: None,
            version: 1,
        }
    }
}

/// A validated partial update of a user.
#[derive(Debug, Clone, Default)]
pub struct UserPatch {
    pub email: Option<Email>,
    pub username: Patch<Username>,
    pub full_name: Option<DisplayName>,
    pub phone: Patch<Phone>,
    pub department: Patch<Label>,
    pub job_title: Patch<Label>,
    pub employee_id: Patch<Label>,
    pub manager_id: Patch<UserId>,
    pub cost_center: Patch<Label>,
    pub clearance_level: Patch<ClearanceLevel>,
    pub language: Patch<Language>,
    pub avatar_url: Patch<AvatarUrl>,
    /// Replaces the whole object when given.
    pub custom_attributes: Option<JsonObject>,
    pub status: Option<UserStatus>,
}

/// Applies a patch of a validated type to the stored (plain) form of the field.
fn patch_with<T, U>(p: Patch<T>, current: Option<U>, stored: impl FnOnce(T) -> U) -> Option<U> {
    match p {
        Patch::Keep => current,
        Patch::Clear => None,
        Patch::Set(v) => Some(stored(v)),
    }
}

fn patch_string<T: Into<String>>(p: Patch<T>, current: Option<String>) -> Option<String> {
    patch_with(p, current, Into::into)
}

macro_rules! into_string {
    ($($t:ty),+) => {$(impl From<$t> for String { fn from(v: $t) -> String { v.into_inner() } })+};
}
into_string!(Username, Phone, Label, Language, AvatarUrl);

impl UserPatch {
    /// Whether the patch names the manager (so the store must check the new chain).
    pub fn changes_manager(&self) -> bool {
        !self.manager_id.is_keep()
    }

    /// Applies the patch to `user`, bumping its version. A user cannot manage themselves.
    pub fn apply(self, mut u: User, now: Timestamp) -> Result<User, Error> {
        if self.manager_id == Patch::Set(u.id) {
            return Err(Error::field(
                "manager_id",
                "manager_cycle",
                "a user cannot be their own manager",
            ));
        }
        if let Some(v) = self.email {
            u.email = v.into_inner();
        }
        u.username = patch_string(self.username, u.username);
        if let Some(v) = self.full_name {
            u.full_name = v.into_inner();
        }
        u.phone = patch_string(self.phone, u.phone);
        u.department = patch_string(self.department, u.department);
        u.job_title = patch_string(self.job_title, u.job_title);
        u.employee_id = patch_string(self.employee_id, u.employee_id);
        u.manager_id = self.manager_id.apply(u.manager_id);
        u.cost_center = patch_string(self.cost_center, u.cost_center);
        u.clearance_level =
            patch_with(self.clearance_level, u.clearance_level, ClearanceLevel::get);
        u.language = patch_string(self.language, u.language);
        u.avatar_url = patch_string(self.avatar_url, u.avatar_url);
        if let Some(v) = self.custom_attributes {
            u.custom_attributes = v.into_map();
        }
        if let Some(v) = self.status {
            u.status = v;
        }
        u.updated_at = now;
        u.version += 1;
        Ok(u)
    }
}

string_enum!(
    /// The fields a user list can be sorted by.
    UserSortField {
        Name => "name",
        Email => "email",
        Created => "created",
        LastLogin => "last_login",
    }
);

/// A sort order: a field, ascending unless `descending`; ties are broken by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSort {
    pub field: UserSortField,
    pub descending: bool,
}

impl Default for UserSort {
    fn default() -> Self {
        Self {
            field: UserSortField::Created,
            descending: false,
        }
    }
}

impl UserSort {
    /// Parses `name`, `-name` (descending), `email`, `created`, `last_login`, ….
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        let (descending, name) = match raw.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, raw),
        };
        let f = name.parse::<UserSortField>().map_err(|msg| {
            FieldError::new(
                field,
                "invalid_sort",
                format!("{msg} (prefix '-' for descending)"),
            )
        })?;
        Ok(Self {
            field: f,
            descending,
        })
    }
}

/// The value of the sort key at a cursor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SortValue {
    Text(String),
    /// A timestamp in microseconds since the epoch; a user who never signed in sorts as 0.
    Micros(i64),
}

/// Where a page of users ends: the last user's sort key and id, and the sort it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserCursor {
    #[serde(rename = "s")]
    pub sort: UserSort,
    #[serde(rename = "v")]
    pub value: SortValue,
    #[serde(rename = "i")]
    pub id: UserId,
}

impl UserCursor {
    /// The cursor just after `user` in `sort` order.
    pub fn after(user: &User, sort: UserSort) -> Self {
        let value = match sort.field {
            UserSortField::Name => SortValue::Text(user.name_sort_key()),
            UserSortField::Email => SortValue::Text(user.email_normalized()),
            UserSortField::Created => SortValue::Micros(to_micros(user.created_at)),
            UserSortField::LastLogin => SortValue::Micros(user.last_login_at.map_or(0, to_micros)),
        };
        Self {
            sort,
            value,
            id: user.id,
        }
    }

    pub fn encode(&self) -> String {
        encode_cursor(self)
    }

    /// Decodes a cursor and checks it belongs to `sort`.
    pub fn decode(raw: &str, sort: UserSort) -> Result<Self, Error> {
        let c: UserCursor = decode_cursor(raw)?;
        let kind_ok = matches!(
            (&c.value, c.sort.field),
            (
                SortValue::Text(_),
                UserSortField::Name | UserSortField::Email
            ) | (
                SortValue::Micros(_),
                UserSortField::Created | UserSortField::LastLogin
            )
        );
        if c.sort != sort || !kind_ok {
            return Err(Error::field(
                "cursor",
                "invalid_cursor",
                "is not a cursor returned by this endpoint for this sort order",
            ));
        }
        Ok(c)
    }
}

string_enum!(
    /// Which users a list shows with respect to soft deletion: `exclude` (the default) hides
    /// deleted users, `include` shows both, `only` shows just the deleted ones (to find one
    /// to restore).
    DeletedFilter { Exclude => "exclude", Include => "include", Only => "only" }
);

// Written out: `string_enum!` generates the enum and cannot mark a variant `#[default]`.
#[allow(clippy::derivable_impls)]
impl Default for DeletedFilter {
    fn default() -> Self {
        DeletedFilter::Exclude
    }
}

/// A validated user list request.
#[derive(Debug, Clone, Default)]
pub struct UserListQuery {
    /// Only this user (how a caller who reaches only their own record lists users).
    pub id: Option<UserId>,
    pub status: Option<UserStatus>,
    pub department: Option<String>,
    pub manager_id: Option<UserId>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub q: Option<SearchQuery>,
    pub deleted: DeletedFilter,
    pub sort: UserSort,
    pub limit: PageSize,
    pub after: Option<UserCursor>,
}
