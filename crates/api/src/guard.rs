//! Authorization of API calls. Every administrative handler's first step after extracting
//! its input is `caller.authorize(&state, "resource", "action", target)`: the caller may
//! perform `resource:action` on the target, or the request ends with 403 problem+json
//! naming the reason. The answer is the reach the caller has (all of the tenant, their
//! department, or their own records), which list handlers turn into filters.
//!
//! - API keys are the tenant's administrator credential: every permission in their tenant;
//!   `tenants:*` needs a platform-admin key. Policies apply to users, not to keys.
//! - Users are decided by the decision engine (`portcullis-authz`): their roles, direct and
//!   through groups, and the tenant's Cedar policies, with the request's circumstances as
//!   context (time, IP, MFA level of the session).
//! - Granting is bounded by holding: a user may give a role or a permission only if they hold
//!   every permission it carries at the same or a wider scope (no self-escalation), and only
//!   super administrators (or platform-admin keys) give the super administrator role.

use std::sync::Arc;

use chrono::Utc;
use domain::authz::{ActionKey, PermissionKey, Role, Scope};
use domain::users::User;
use domain::UserId;
use portcullis_authz::{Check, Context, Effective, Resource};
use serde_json::{Map, Value};

use crate::auth::{Caller, Credential};
use crate::problem::ApiError;
use crate::state::AppState;

/// What an action is about.
pub enum Target<'a> {
    /// A collection (list, search, creation without a record yet).
    Collection,
    /// A user record (or a record of that user: their sessions, password, roles).
    User(&'a User),
    /// Another record with an optional department (e.g. a group).
    Record { id: String },
}

/// How far the caller reaches for the action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    All,
    /// Only records of this department (none if the caller has no department).
    Department(Option<String>),
    /// Only the caller's own records.
    Own(UserId),
}

impl Reach {
    /// Whether a user record is within reach.
    pub fn covers(&self, user: &User) -> bool {
        match self {
            Reach::All => true,
            Reach::Department(d) => d.is_some() && *d == user.department,
            Reach::Own(id) => *id == user.id,
        }
    }
}

fn forbidden(detail: String, reason: Option<Value>) -> ApiError {
    let e = ApiError::forbidden("forbidden", detail);
    match reason {
        Some(r) => e.reason(r),
        None => e,
    }
}

impl Caller {
    /// Whether the caller may perform `resource:action` on `target`, and how far it reaches.
    pub async fn authorize(
        &self,
        state: &AppState,
        resource: &str,
        action: &str,
        target: Target<'_>,
    ) -> Result<Reach, ApiError> {
        let session = match &self.credential {
            Credential::ApiKey { platform_admin, .. } => {
                if resource == "tenants" && !platform_admin {
                    return Err(ApiError::forbidden(
                        "platform_admin_required",
                        "this operation needs a platform-admin API key or a super administrator",
                    ));
                }
                return Ok(Reach::All);
            }
            Credential::User(session) => session,
        };
        if resource == "tenants" {
            // Tenant management is the platform's, never a tenant role's.
            if self.is_platform_admin(state).await? {
                return Ok(Reach::All);
            }
            return Err(ApiError::forbidden(
                "platform_admin_required",
                "this operation needs a platform-admin API key or a super administrator",
            ));
        }
        let action_key = ActionKey::parse("action", &format!("{resource}:{action}"))
            .map_err(domain::Error::from)?;
        let (id, attributes) = match target {
            Target::Collection => (None, Map::new()),
            Target::User(u) => {
                let mut attrs = Map::new();
                attrs.insert("owner".into(), Value::String(u.id.to_string()));
                if let Some(d) = &u.department {
                    attrs.insert("department".into(), Value::String(d.clone()));
                }
                if let Some(c) = u.clearance_level {
                    attrs.insert("classification".into(), Value::from(c));
                }
                (Some(u.id.to_string()), attrs)
            }
            Target::Record { id } => (Some(id), Map::new()),
        };
        let mut context = Context::at(Utc::now().fixed_offset());
        context.ip = self.meta.ip;
        context.mfa_level = i64::from(session.mfa_level);
        let check = Check {
            principal: session.user_id,
            action: action_key.clone(),
            resource: Resource {
                kind: resource.to_owned(),
                id,
                attributes,
            },
            context,
        };
        let decision = state.authz.check(self.tenant_id, &check).await?;
        if !decision.allowed {
            return Err(forbidden(
                decision.reason.message(&action_key),
                serde_json::to_value(&decision.reason).ok(),
            ));
        }
        Ok(match decision.scope.unwrap_or(Scope::All) {
            Scope::All => Reach::All,
            Scope::Department => {
                let department = self
                    .effective(state)
                    .await?
                    .and_then(|e| e.user.department.clone());
                Reach::Department(department)
            }
            Scope::Own => Reach::Own(session.user_id),
        })
    }

    /// The signed-in user's effective permissions; None for API keys (they hold everything
    /// in their tenant).
    pub async fn effective(&self, state: &AppState) -> Result<Option<Arc<Effective>>, ApiError> {
        let Credential::User(session) = &self.credential else {
            return Ok(None);
        };
        let effective = state
            .authz
            .effective(self.tenant_id, session.user_id, Utc::now())
            .await?
            .ok_or_else(|| ApiError::unauthorized("the signed-in user no longer exists"))?;
        Ok(Some(Arc::new(effective)))
    }

    /// Whether the caller is a platform administrator: a platform-admin API key or a super
    /// administrator.
    pub async fn is_platform_admin(&self, state: &AppState) -> Result<bool, ApiError> {
        match &self.credential {
            Credential::ApiKey { platform_admin, .. } => Ok(*platform_admin),
            Credential::User(_) => Ok(self.effective(state).await?.is_some_and(|e| {
                e.super_admin && e.user.status == domain::users::UserStatus::Active
            })),
        }
    }

    /// Refuses permissions the caller could not exercise themselves (no self-escalation).
    pub async fn may_grant_permissions(
        &self,
        state: &AppState,
        permissions: &[PermissionKey],
    ) -> Result<(), ApiError> {
        let Some(effective) = self.effective(state).await? else {
            return Ok(());
        };
        if effective.super_admin {
            return Ok(());
        }
        let missing: Vec<String> = permissions
            .iter()
            .filter(|p| {
                effective
                    .scope_for(p.resource(), p.action())
                    .is_none_or(|held| held < p.scope())
            })
            .map(ToString::to_string)
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "cannot_grant_unheld",
                format!(
                    "you can only grant permissions you hold yourself; missing: {}",
                    missing.join(", ")
                ),
            ))
        }
    }

    /// Refuses to manage (update, block, delete, set the password of, sign out) a user who
    /// holds permissions the caller lacks: a department manager cannot take over an
    /// administrator's account by changing their email or password.
    pub async fn may_manage(&self, state: &AppState, target: &User) -> Result<(), ApiError> {
        if self.user_id() == Some(target.id) {
            return Ok(());
        }
        let Some(mine) = self.effective(state).await? else {
            return Ok(());
        };
        if mine.super_admin {
            return Ok(());
        }
        let Some(theirs) = state
            .authz
            .effective(self.tenant_id, target.id, Utc::now())
            .await?
        else {
            return Ok(());
        };
        let stronger = theirs.super_admin
            || theirs.grants.iter().any(|g| {
                mine.scope_for(g.permission.resource(), g.permission.action())
                    .is_none_or(|held| held < g.permission.scope())
            });
        if stronger {
            return Err(ApiError::forbidden(
                "target_outranks_caller",
                "this user holds permissions you do not hold; ask someone who holds them",
            ));
        }
        Ok(())
    }

    /// Refuses to give a role the caller could not give: the super administrator role needs a
    /// platform administrator; any other role needs its permissions held by the caller.
    pub async fn may_grant_role(&self, state: &AppState, role: &Role) -> Result<(), ApiError> {
        if role.is_super_admin() {
            if self.is_platform_admin(state).await? {
                return Ok(());
            }
            return Err(ApiError::forbidden(
                "super_admin_required",
                "only a super administrator or a platform-admin API key can give the super administrator role",
            ));
        }
        self.may_grant_permissions(state, &role.permissions).await
    }
}
