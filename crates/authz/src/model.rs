//! What a caller asks (`Check`) and what the engine answers (`Decision` with its `Reason`,
//! `Effective` permissions with their `Grant`s).

use std::net::IpAddr;

use chrono::{DateTime, FixedOffset, Utc};
use domain::authz::{ActionKey, PermissionKey, Scope};
use domain::users::{User, UserStatus};
use domain::{GroupId, PolicyId, RoleId, UserId};
use serde::Serialize;
use serde_json::{Map, Value};

/// One question: may `principal` do `action` on `resource`, in `context`?
#[derive(Debug, Clone)]
pub struct Check {
    pub principal: UserId,
    /// `resource:action`, e.g. `users:read`.
    pub action: ActionKey,
    pub resource: Resource,
    pub context: Context,
}

/// The object of a check.
#[derive(Debug, Clone)]
pub struct Resource {
    /// e.g. "users", "document" (free, 1..=64 characters).
    pub kind: String,
    /// None = the collection (for list endpoints).
    pub id: Option<String>,
    /// Well-known: "owner" (user id string), "department" (string), "classification"
    /// (integer). Any other attribute (string, integer or boolean) becomes a Cedar entity
    /// tag (`resource.hasTag("x") && resource.getTag("x") == "y"`, tags typed String;
    /// integer and boolean values are given as their decimal/`true`/`false` text). A null
    /// is the same as an absent attribute. Nested objects/arrays → Validation error field
    /// "resource.attributes.<key>".
    pub attributes: Map<String, Value>,
}

impl Resource {
    /// A resource without attributes.
    pub fn new(kind: impl Into<String>, id: Option<String>) -> Self {
        Self {
            kind: kind.into(),
            id,
            attributes: Map::new(),
        }
    }
}

/// The circumstances of a check, as Cedar policies see them in `context`.
#[derive(Debug, Clone)]
pub struct Context {
    /// Time of the request in the caller's offset. Policies see its local hour, minute,
    /// weekday and date; assignment expiry is judged at this instant.
    pub now: DateTime<FixedOffset>,
    pub ip: Option<IpAddr>,
    /// 0..=100, default 0.
    pub risk_score: i64,
    /// 0 none, 1 password, 2 two factors; 0..=3.
    pub mfa_level: i64,
    pub device_trusted: bool,
}

impl Context {
    /// A context at `now` with every other field at its default.
    pub fn at(now: DateTime<FixedOffset>) -> Self {
        Self {
            now,
            ip: None,
            risk_score: 0,
            mfa_level: 0,
            device_trusted: false,
        }
    }
}

/// The answer to a check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub allowed: bool,
    /// When a role allowed: the scope of the permission that did; `All` for super admins
    /// and for policy permits. None when denied.
    pub scope: Option<Scope>,
    pub reason: Reason,
}

impl Decision {
    pub(crate) fn allow(scope: Scope, reason: Reason) -> Self {
        Self {
            allowed: true,
            scope: Some(scope),
            reason,
        }
    }

    pub(crate) fn deny(reason: Reason) -> Self {
        Self {
            allowed: false,
            scope: None,
            reason,
        }
    }
}

/// Why a check was decided as it was.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    SuperAdmin,
    Permission {
        permission: PermissionKey,
        role_id: RoleId,
        role_name: String,
        via_group_id: Option<GroupId>,
        via_group_name: Option<String>,
    },
    PolicyPermit {
        policy_id: PolicyId,
        policy_name: String,
    },
    PolicyForbid {
        policy_id: PolicyId,
        policy_name: String,
    },
    /// The principal holds the action only at a narrower scope than the resource needs.
    OutOfScope {
        permission: PermissionKey,
    },
    NoPermission,
    /// The principal's status is not `active`.
    PrincipalInactive {
        status: UserStatus,
    },
    /// The principal is deleted (whatever its status).
    PrincipalDeleted,
    PrincipalNotFound,
}

impl Reason {
    /// One English sentence explaining the decision on `action`.
    pub fn message(&self, action: &ActionKey) -> String {
        match self {
            Reason::SuperAdmin => {
                format!("Allowed: the principal is a super administrator, who may do {action}.")
            }
            Reason::Permission {
                permission,
                role_name,
                via_group_name,
                ..
            } => match via_group_name {
                Some(group) => format!(
                    "Allowed by permission {permission} of role '{role_name}', held through \
                     group '{group}'."
                ),
                None => format!("Allowed by permission {permission} of role '{role_name}'."),
            },
            Reason::PolicyPermit { policy_name, .. } => {
                format!("Allowed by policy '{policy_name}', which permits {action} here.")
            }
            Reason::PolicyForbid { policy_name, .. } => {
                format!("Denied by policy '{policy_name}', which forbids {action} here.")
            }
            Reason::OutOfScope { permission } => format!(
                "Denied: the principal holds {action} only as {permission}, whose scope does \
                 not reach this resource."
            ),
            Reason::NoPermission => {
                format!("Denied: no role or policy gives the principal {action}.")
            }
            Reason::PrincipalInactive { status } => {
                format!("Denied: the principal's account is {status}, not active.")
            }
            Reason::PrincipalDeleted => "Denied: the principal's account is deleted.".to_owned(),
            Reason::PrincipalNotFound => "Denied: no such user in this tenant.".to_owned(),
        }
    }
}

/// A user's effective permissions, each with where it comes from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Effective {
    /// For scope filters (department, id).
    pub user: User,
    /// Held directly and current; also false for inactive and deleted users.
    pub super_admin: bool,
    /// Sorted by permission (then role name and group name); one entry per
    /// (permission, source). Empty for inactive and deleted users.
    pub grants: Vec<Grant>,
}

/// One permission and where the user gets it from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Grant {
    pub permission: PermissionKey,
    pub role_id: RoleId,
    pub role_name: String,
    /// The group holding the role (a group of the user or one of its ancestors); none for a
    /// direct assignment.
    pub via_group_id: Option<GroupId>,
    pub via_group_name: Option<String>,
    /// When the direct assignment that gives it ends; none for groups and for permanent
    /// assignments.
    pub expires_at: Option<DateTime<Utc>>,
}

impl Effective {
    /// The widest scope at which the principal holds `resource:action` via roles (All for a
    /// super admin), None when not at all. Inactive/deleted users: None.
    pub fn scope_for(&self, resource: &str, action: &str) -> Option<Scope> {
        if !is_active(&self.user) {
            return None;
        }
        if self.super_admin {
            return Some(Scope::All);
        }
        self.grants
            .iter()
            .filter(|g| g.permission.resource() == resource && g.permission.action() == action)
            .map(|g| g.permission.scope())
            .max()
    }
}

/// Whether the user may hold rights at all: active and not deleted.
pub(crate) fn is_active(user: &User) -> bool {
    user.deleted_at.is_none() && user.status == UserStatus::Active
}
