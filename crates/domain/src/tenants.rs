//! Tenants: the organisations whose data Portcullis keeps apart. A tenant has a plan whose
//! `max_users` quota is enforced when users are created or restored.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use std::fmt;

use crate::error::FieldError;
use crate::ids::TenantId;
use crate::patch::Patch;
use crate::time::Timestamp;
use crate::values::{DisplayName, JsonObject};

/// The slug of the tenant created on first start.
pub const DEFAULT_TENANT_SLUG: &str = "default";

/// A URL-safe tenant name: 2..=63 of `a-z`, `0-9`, `-`, starting and ending with a letter
/// or digit. Immutable once created: it will name the tenant's token issuer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct TenantSlug(String);

impl TenantSlug {
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        let s = raw.trim();
        let ok = (2..=63).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(FieldError::new(
                field,
                "invalid_slug",
                "must be 2 to 63 of a-z, 0-9 and '-', starting and ending with a letter or digit",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Declares a string-valued enum with its wire names, `as_str`, `FromStr` and `ALL`.
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ::serde::Serialize, ::serde::Deserialize)]
        pub enum $name {
            $(#[serde(rename = $wire)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire),+
                }
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($wire => Ok($name::$variant),)+
                    _ => Err(format!(
                        "must be one of: {}",
                        [$($wire),+].join(", ")
                    )),
                }
            }
        }

        // Written out rather than derived: utoipa's derive cannot read the `rename`
        // literals through this macro and would document the Rust variant names.
        impl ::utoipa::PartialSchema for $name {
            fn schema() -> ::utoipa::openapi::RefOr<::utoipa::openapi::schema::Schema> {
                ::utoipa::openapi::ObjectBuilder::new()
                    .schema_type(::utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$($wire),+]))
                    .into()
            }
        }

        impl ::utoipa::ToSchema for $name {
            fn name() -> ::std::borrow::Cow<'static, str> {
                ::std::borrow::Cow::Borrowed(stringify!($name))
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use string_enum;

string_enum!(
    /// Whether a tenant's credentials work. A suspended tenant keeps its data.
    TenantStatus { Active => "active", Suspended => "suspended" }
);

string_enum!(
    /// The commercial plan; it sets the default user quota.
    Plan { Free => "free", Pro => "pro", Enterprise => "enterprise" }
);

impl Plan {
    /// The user quota a tenant on this plan gets unless it is given its own.
    pub fn default_max_users(self) -> Option<i64> {
        match self {
            Plan::Free => Some(100),
            Plan::Pro => Some(10_000),
            Plan::Enterprise => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Tenant {
    pub id: TenantId,
    pub slug: String,
    pub display_name: String,
    pub status: TenantStatus,
    pub plan: Plan,
    /// The most non-deleted users the tenant may hold; `None` is unlimited.
    pub max_users: Option<i64>,
    pub trial_ends_at: Option<DateTime<Utc>>,
    #[schema(value_type = Object)]
    pub settings: Map<String, Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A validated request to create a tenant.
#[derive(Debug, Clone)]
pub struct NewTenant {
    pub slug: TenantSlug,
    pub display_name: DisplayName,
    pub plan: Plan,
    pub max_users: Option<MaxUsers>,
    pub trial_ends_at: Option<DateTime<Utc>>,
    pub settings: JsonObject,
}

impl NewTenant {
    /// Builds the tenant row, giving it the plan's default quota when none was named.
    pub fn into_tenant(self, now: Timestamp) -> Tenant {
        Tenant {
            id: TenantId::new(),
            slug: self.slug.as_str().to_owned(),
            display_name: self.display_name.into_inner(),
            status: TenantStatus::Active,
            plan: self.plan,
            max_users: self
                .max_users
                .map(MaxUsers::get)
                .or(self.plan.default_max_users()),
            trial_ends_at: self.trial_ends_at,
            settings: self.settings.into_map(),
            created_at: now,
            updated_at: now,
        }
    }
}

/// A user quota: 1..=100,000,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxUsers(i64);

impl MaxUsers {
    pub fn parse(field: &str, n: i64) -> Result<Self, FieldError> {
        if (1..=100_000_000).contains(&n) {
            Ok(Self(n))
        } else {
            Err(FieldError::new(
                field,
                "out_of_range",
                "must be between 1 and 100000000",
            ))
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// A validated partial update of a tenant. Changing the plan without naming `max_users`
/// moves the quota to the new plan's default.
#[derive(Debug, Clone, Default)]
pub struct TenantPatch {
    pub display_name: Option<DisplayName>,
    pub status: Option<TenantStatus>,
    pub plan: Option<Plan>,
    pub max_users: Patch<MaxUsers>,
    pub trial_ends_at: Patch<Timestamp>,
    pub settings: Option<JsonObject>,
}

impl TenantPatch {
    pub fn apply(self, mut t: Tenant, now: Timestamp) -> Tenant {
        if let Some(v) = self.display_name {
            t.display_name = v.into_inner();
        }
        if let Some(v) = self.status {
            t.status = v;
        }
        if let Some(plan) = self.plan {
            if plan != t.plan && self.max_users.is_keep() {
                t.max_users = plan.default_max_users();
            }
            t.plan = plan;
        }
        t.max_users = self
            .max_users
            .apply(t.max_users.map(MaxUsers))
            .map(MaxUsers::get);
        t.trial_ends_at = self.trial_ends_at.apply(t.trial_ends_at);
        if let Some(v) = self.settings {
            t.settings = v.into_map();
        }
        t.updated_at = now;
        t
    }
}

/// Filters for listing tenants; newest first.
#[derive(Debug, Clone, Default)]
pub struct TenantListQuery {
    pub status: Option<TenantStatus>,
    pub limit: crate::page::PageSize,
    /// Continue after this tenant (from a previous page's cursor).
    pub after: Option<TenantId>,
}
