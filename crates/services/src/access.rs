//! Who may do what: the authorisation every operation starts with, and the rules that bound
//! what one principal may do to another. Refusals are `domain::Error::Refused` with a code
//! from the catalogue (and, for decisions, the structured `reason`).
//!
//! - API keys are the tenant's administrator credential: every permission in their tenant;
//!   `tenants:*`, super administrators and other tenants need a platform-admin key.
//!   Policies apply to users, not to keys. The system (operator, jobs) has platform powers.
//! - Users are decided by the decision engine: their roles, direct and through groups, and
//!   the tenant's Cedar policies, with the request's circumstances as context. The answer
//!   is a [`Reach`]: all of the tenant, the caller's department, or their own records.
//!   - A `permit` policy allows the action on the resource it was asked about; it never
//!     widens a list or unlocks a security field: its reach is the caller's own records.
//!   - For built-in resources whose records have no owner or department (roles, groups,
//!     policies, settings, …) only scope `all` counts: a `policies:create:own` holder may
//!     not create policies (and such grants are refused when a role is given them).
//! - Granting is bounded by holding: a user may give a role or a permission only if they
//!   hold every permission it carries at the same or a wider scope, and for no longer than
//!   they hold it (a time-bound grant bounds the grants it allows); nobody changes their own
//!   roles or group memberships; only platform administrators give the super administrator
//!   role.
//! - Managing a user (updating, blocking, deleting, setting a password, signing out,
//!   changing roles or memberships) is bounded by rank: the target must not hold — or,
//!   while not active, would not hold when active — a permission the caller lacks; and only
//!   platform administrators manage a super administrator.
//! - Renaming, or changing who belongs to or holds, a group or role that a policy names
//!   changes what the policy decides: it needs `policies:update`.

use std::collections::{BTreeSet, HashMap};

use chrono::Utc;
use domain::authz::{
    is_built_in, ActionKey, Group, PermissionKey, Role, Scope, SUPER_ADMIN_ROLE_ID,
};
use domain::time::Timestamp;
use domain::users::{User, UserStatus};
use domain::{Code, Error, GroupId, Result, UserId};
use portcullis_authz::{Check, Context, Effective, Reason, Resource};
use serde_json::{json, Map, Value};

use crate::{Actor, ActorKind, Core, Services};

/// What an action is about.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// A collection (list, search, creation without a record yet, a record without owner).
    Collection,
    /// A user record (or a record of that user: their sessions, password, roles).
    User(&'a User),
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

/// Built-in resources whose records have an owner or a department, so that a scope below
/// `all` means something: users and their sessions, audit events (by actor), decisions
/// about oneself, and role assignments (by the user who receives the role).
pub fn scope_applies(resource: &str, action: &str) -> bool {
    matches!(resource, "users" | "sessions" | "audit_logs" | "authz")
        || (resource == "roles" && action == "assign")
        || !is_built_in(resource, action)
}

/// Refuses permissions of built-in resources at a scope their records cannot have.
pub fn check_scopes(field: &str, keys: &[PermissionKey]) -> Result<()> {
    let errors: Vec<domain::FieldError> = keys
        .iter()
        .filter(|k| k.scope() != Scope::All && !scope_applies(k.resource(), k.action()))
        .map(|k| domain::FieldError::rule(format!("{field}: {k}"), Code::ScopeNotApplicable))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Validation(errors))
    }
}

fn forbidden(reason: &Reason) -> Error {
    Error::refused(Code::Forbidden).with_reason(serde_json::to_value(reason).unwrap_or(Value::Null))
}

impl Core {
    /// Whether the actor may perform `resource:action` on `target`, and how far it reaches.
    pub(crate) async fn authorize(
        &self,
        actor: &Actor,
        resource: &str,
        action: &str,
        target: Target<'_>,
    ) -> Result<Reach> {
        let session = match &actor.kind {
            ActorKind::System => return Ok(Reach::All),
            ActorKind::ApiKey { platform_admin, .. } => {
                if resource == "tenants" && !platform_admin {
                    return Err(Error::refused(Code::PlatformAdminRequired));
                }
                return Ok(Reach::All);
            }
            ActorKind::User(session) => session,
        };
        if resource == "tenants" {
            // Tenant management is the platform's, never a tenant role's.
            if self.is_platform_admin(actor).await? {
                return Ok(Reach::All);
            }
            return Err(Error::refused(Code::PlatformAdminRequired));
        }
        let action_key = ActionKey::parse("action", &format!("{resource}:{action}"))?;
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
        };
        let mut context = Context::at(Utc::now().fixed_offset());
        context.ip = actor.meta.ip;
        context.mfa_level = i64::from(session.mfa_level);
        let check = Check {
            principal: session.user_id,
            action: action_key,
            resource: Resource {
                kind: resource.to_owned(),
                id,
                attributes,
            },
            context,
        };
        let decision = self.authz.check(actor.tenant, &check).await?;
        if !decision.allowed {
            return Err(forbidden(&decision.reason));
        }
        let scope = match decision.reason {
            // A permit reaches the resource it was asked about, nothing wider.
            Reason::PolicyPermit { .. } => return Ok(Reach::Own(session.user_id)),
            Reason::SuperAdmin => Scope::All,
            _ => decision.scope.unwrap_or(Scope::Own),
        };
        if scope != Scope::All && !scope_applies(resource, action) {
            return Err(forbidden(&Reason::OutOfScope {
                permission: check.action.with_scope(Scope::All),
            }));
        }
        Ok(match scope {
            Scope::All => Reach::All,
            Scope::Department => {
                let department = self
                    .effective(actor)
                    .await?
                    .and_then(|e| e.user.department.clone());
                Reach::Department(department)
            }
            Scope::Own => Reach::Own(session.user_id),
        })
    }

    /// The signed-in user's effective permissions; None for API keys and the system (they
    /// hold everything in their tenant).
    pub(crate) async fn effective(&self, actor: &Actor) -> Result<Option<Effective>> {
        let Some(user) = actor.user_id() else {
            return Ok(None);
        };
        self.authz
            .effective(actor.tenant, user, Utc::now())
            .await?
            .map(Some)
            .ok_or(Error::refused(Code::SessionRevoked))
    }

    /// Whether the actor is a platform administrator: a platform-admin API key, the
    /// system, or an active super administrator.
    pub(crate) async fn is_platform_admin(&self, actor: &Actor) -> Result<bool> {
        match &actor.kind {
            ActorKind::ApiKey { platform_admin, .. } => Ok(*platform_admin),
            ActorKind::System => Ok(true),
            ActorKind::User(_) => Ok(self
                .effective(actor)
                .await?
                .is_some_and(|e| e.super_admin && e.user.status == UserStatus::Active)),
        }
    }

    /// Refuses a change of the actor's own roles or group memberships.
    pub(crate) fn refuse_own(&self, actor: &Actor, target: UserId) -> Result<()> {
        if actor.user_id() == Some(target) {
            return Err(Error::refused(Code::OwnAssignment));
        }
        Ok(())
    }

    /// Refuses to manage a user who holds — or, while not active, would hold when active —
    /// a permission the actor lacks, and a super administrator unless the actor is a
    /// platform administrator. Acting on oneself is judged elsewhere.
    pub(crate) async fn may_manage(&self, actor: &Actor, target: &User) -> Result<()> {
        if actor.user_id() == Some(target.id) {
            return Ok(());
        }
        // The platform's administrators manage everyone.
        if matches!(
            actor.kind,
            ActorKind::System
                | ActorKind::ApiKey {
                    platform_admin: true,
                    ..
                }
        ) {
            return Ok(());
        }
        let theirs = self
            .authz
            .potential(actor.tenant, target.id, Utc::now())
            .await?;
        let Some(theirs) = theirs else {
            return Ok(());
        };
        if theirs.super_admin {
            if self.is_platform_admin(actor).await? {
                return Ok(());
            }
            return Err(Error::refused(Code::SuperAdminRequired));
        }
        let Some(mine) = self.effective(actor).await? else {
            return Ok(());
        };
        if mine.super_admin {
            return Ok(());
        }
        let stronger: Vec<String> = theirs
            .grants
            .iter()
            .filter(|g| {
                mine.scope_for(g.permission.resource(), g.permission.action())
                    .is_none_or(|held| held < g.permission.scope())
            })
            .map(|g| g.permission.to_string())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if stronger.is_empty() {
            Ok(())
        } else {
            Err(Error::refused(Code::TargetOutranksCaller)
                .with_reason(json!({ "missing": stronger })))
        }
    }

    /// Refuses permissions the actor could not exercise themselves (no self-escalation);
    /// answers until when the actor may grant them: the earliest end of the time-bound
    /// grants they hold them through (None: for good).
    pub(crate) async fn may_grant_permissions(
        &self,
        actor: &Actor,
        permissions: &[PermissionKey],
    ) -> Result<Option<Timestamp>> {
        let Some(mine) = self.effective(actor).await? else {
            return Ok(None);
        };
        if mine.super_admin {
            return self.super_admin_until(actor).await;
        }
        // For each permission, the best grant that covers it: permanent, else the latest.
        let mut best: HashMap<&PermissionKey, Option<Option<Timestamp>>> = HashMap::new();
        for p in permissions {
            let held = mine
                .grants
                .iter()
                .filter(|g| {
                    g.permission.resource() == p.resource()
                        && g.permission.action() == p.action()
                        && g.permission.scope() >= p.scope()
                })
                .map(|g| g.expires_at)
                .reduce(|a, b| match (a, b) {
                    (None, _) | (_, None) => None,
                    (Some(x), Some(y)) => Some(x.max(y)),
                });
            best.insert(p, held);
        }
        let missing: BTreeSet<String> = best
            .iter()
            .filter(|(_, held)| held.is_none())
            .map(|(p, _)| p.to_string())
            .collect();
        if !missing.is_empty() {
            return Err(
                Error::refused(Code::CannotGrantUnheld).with_reason(json!({ "missing": missing }))
            );
        }
        Ok(best.values().filter_map(|h| h.flatten()).min())
    }

    /// Until when a super administrator holds the role (None: for good).
    async fn super_admin_until(&self, actor: &Actor) -> Result<Option<Timestamp>> {
        let Some(user) = actor.user_id() else {
            return Ok(None);
        };
        let now = Utc::now();
        let held = self.store.list_user_roles(actor.tenant, user).await?;
        Ok(held
            .iter()
            .filter(|a| a.role_id == SUPER_ADMIN_ROLE_ID && a.is_current(now))
            .map(|a| a.expires_at)
            .reduce(|a, b| match (a, b) {
                (None, _) | (_, None) => None,
                (Some(x), Some(y)) => Some(x.max(y)),
            })
            .flatten())
    }

    /// Refuses a role the actor could not give: the super administrator role needs a
    /// platform administrator; any other role needs its permissions held by the actor.
    /// Answers until when the actor may give it (see [`Core::may_grant_permissions`]).
    pub(crate) async fn may_grant_role(
        &self,
        actor: &Actor,
        role: &Role,
    ) -> Result<Option<Timestamp>> {
        if role.is_super_admin() {
            if self.is_platform_admin(actor).await? {
                return self.super_admin_until(actor).await;
            }
            return Err(Error::refused(Code::SuperAdminRequired));
        }
        self.may_grant_permissions(actor, &role.permissions).await
    }

    /// Refuses a grant that would outlive what allows the actor to give it.
    pub(crate) fn within(until: Option<Timestamp>, expires_at: Option<Timestamp>) -> Result<()> {
        match (until, expires_at) {
            (Some(limit), None) => {
                Err(Error::refused(Code::GrantOutlivesGranter)
                    .with_reason(json!({ "until": limit })))
            }
            (Some(limit), Some(t)) if t > limit => {
                Err(Error::refused(Code::GrantOutlivesGranter)
                    .with_reason(json!({ "until": limit })))
            }
            _ => Ok(()),
        }
    }

    /// Refuses, unless the actor may update policies, a change that alters what a policy
    /// decides because the policy names the role.
    pub(crate) async fn guard_named_role(&self, actor: &Actor, role: &str) -> Result<()> {
        if actor.user_id().is_none() {
            return Ok(());
        }
        if !self
            .authz
            .policy_names(actor.tenant)
            .await?
            .roles
            .contains(role)
        {
            return Ok(());
        }
        self.require_policy_power(actor).await
    }

    /// Likewise for groups: `chain` is the groups whose membership the change alters (a
    /// group and those above it: their members include its members).
    pub(crate) async fn guard_named_groups(&self, actor: &Actor, chain: &[&Group]) -> Result<()> {
        if actor.user_id().is_none() || chain.is_empty() {
            return Ok(());
        }
        let named = self.authz.policy_names(actor.tenant).await?.groups;
        if !chain.iter().any(|g| named.contains(&g.name)) {
            return Ok(());
        }
        self.require_policy_power(actor).await
    }

    async fn require_policy_power(&self, actor: &Actor) -> Result<()> {
        match self
            .authorize(actor, "policies", "update", Target::Collection)
            .await
        {
            Ok(Reach::All) => Ok(()),
            Ok(_) | Err(Error::Refused { .. }) => Err(Error::refused(Code::PolicyReferenced)),
            Err(e) => Err(e),
        }
    }

    /// The groups whose members are members of `group` for policies: it and its
    /// ancestors, by the parent map (the walk stops at a cycle or an unknown group).
    pub(crate) fn group_chain(
        parents: &HashMap<GroupId, Option<GroupId>>,
        start: Option<GroupId>,
    ) -> Vec<GroupId> {
        let mut chain = Vec::new();
        let mut at = start;
        while let Some(g) = at.filter(|g| parents.contains_key(g)) {
            if chain.contains(&g) {
                break;
            }
            chain.push(g);
            at = parents.get(&g).copied().flatten();
        }
        chain
    }
}

impl Services {
    /// See [`Core::authorize`].
    pub(crate) async fn authorize(
        &self,
        actor: &Actor,
        resource: &str,
        action: &str,
        target: Target<'_>,
    ) -> Result<Reach> {
        self.core.authorize(actor, resource, action, target).await
    }

    pub(crate) async fn is_platform_admin(&self, actor: &Actor) -> Result<bool> {
        self.core.is_platform_admin(actor).await
    }
}
