//! The decision, as a pure function of a tenant's compiled snapshot, the principal's state
//! and the check (the rules are listed in the crate's top comment).

use std::collections::BTreeSet;

use cedar_policy::{Authorizer, Effect, Entity};
use chrono::{DateTime, Utc};
use domain::authz::{is_built_in, ActionKey, PrincipalData, Scope, TenantAuthzData};
use domain::users::UserStatus;
use domain::{Error, FieldError, UserId};
use serde_json::{Map, Value};

use crate::cedar::{all_actions, CedarPrincipal, Satisfied, TenantCedar};
use crate::fast_hash::FastSet;
use crate::model::{Check, Decision, Reason, Resource};
use crate::rights::{compute, Graph, Rights};

/// What the engine keeps of a tenant: its role and group graph and its compiled Cedar state.
pub(crate) struct Snapshot {
    /// The tenant's authorization version the data was read at.
    pub version: i64,
    pub graph: Graph,
    /// Every action of the tenant: the built-in ones and its own.
    actions: FastSet<ActionKey>,
    pub cedar: TenantCedar,
}

impl Snapshot {
    pub fn compile(data: &TenantAuthzData) -> Result<Self, Error> {
        let custom: BTreeSet<ActionKey> = data
            .custom_permissions
            .iter()
            .map(|p| p.permission.action_key())
            .filter(|a| !is_built_in(a.resource(), a.action()))
            .collect();
        Ok(Self {
            version: data.version,
            graph: Graph::new(data),
            cedar: TenantCedar::compile(&custom, &data.policies)?,
            actions: all_actions(&custom).into_iter().collect(),
        })
    }

    /// Whether `resource:action` is built in or defined by the tenant.
    pub fn knows(&self, action: &ActionKey) -> bool {
        self.actions.contains(action)
    }

    /// Whether some policy that may apply to the action looks into the resource owner's
    /// entity (which then has to be loaded).
    pub fn needs_owner_entity(&self, action: &ActionKey) -> bool {
        let policies = self.cedar.policies.for_action(action);
        !policies.is_empty() && policies.uses.owner_entity
    }
}

/// A principal's rights during one interval of time and its Cedar entity.
pub(crate) struct PrincipalState {
    pub rights: Rights,
    pub cedar: CedarPrincipal,
}

impl PrincipalState {
    pub fn build(snap: &Snapshot, data: &PrincipalData, now: DateTime<Utc>) -> Result<Self, Error> {
        let rights = compute(&snap.graph, data, now);
        let cedar = snap.cedar.principal(data, &rights)?;
        Ok(Self { rights, cedar })
    }
}

/// The principal of a check as the decision sees it.
pub(crate) struct Principal<'a> {
    pub data: &'a PrincipalData,
    pub state: &'a PrincipalState,
}

/// The resource attributes a check gives, sorted into Cedar's attributes and tags.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct ResourceAttrs {
    pub owner: Option<String>,
    /// `owner`, when it is a user id.
    owner_id: Option<UserId>,
    pub department: Option<String>,
    pub classification: Option<i64>,
    pub tags: Vec<(String, String)>,
}

impl ResourceAttrs {
    /// Sorts and checks the attributes; every offending one is reported.
    pub fn parse(attributes: &Map<String, Value>) -> Result<Self, Error> {
        let mut out = Self::default();
        let mut errors = Vec::new();
        let field = |k: &str| format!("resource.attributes.{k}");
        for (k, v) in attributes {
            match (k.as_str(), v) {
                (_, Value::Null) => {}
                ("owner", Value::String(s)) => {
                    out.owner_id = s.parse().ok();
                    out.owner = Some(s.clone());
                }
                ("department", Value::String(s)) => out.department = Some(s.clone()),
                ("classification", Value::Number(n)) if n.as_i64().is_some() => {
                    out.classification = n.as_i64();
                }
                ("owner" | "department", _) => errors.push(FieldError::new(
                    field(k),
                    "invalid_type",
                    "must be a string",
                )),
                ("classification", _) => errors.push(FieldError::new(
                    field(k),
                    "invalid_type",
                    "must be an integer",
                )),
                (_, Value::String(s)) => out.tags.push((k.clone(), s.clone())),
                (_, Value::Bool(b)) => out.tags.push((k.clone(), b.to_string())),
                (_, Value::Number(n)) if n.as_i64().is_some() || n.as_u64().is_some() => {
                    out.tags.push((k.clone(), n.to_string()));
                }
                _ => errors.push(FieldError::new(
                    field(k),
                    "unsupported_value",
                    "resource attributes are strings, integers or booleans",
                )),
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(Error::Validation(errors))
        }
    }

    /// The owner, when it is a user id.
    pub fn owner_id(&self) -> Option<UserId> {
        self.owner_id
    }
}

/// Decides a check. `owner` is the Cedar entity of the resource's owner, when the resource
/// names one who is a user of the tenant; it only matters when policies apply.
pub(crate) fn decide(
    snap: &Snapshot,
    authorizer: &Authorizer,
    principal: Option<Principal<'_>>,
    check: &Check,
    attrs: &ResourceAttrs,
    owner: Option<&Entity>,
) -> Result<Decision, Error> {
    // 1. No policy can give rights to a missing, deleted or inactive principal.
    let Some(p) = principal else {
        return Ok(Decision::deny(Reason::PrincipalNotFound));
    };
    let user = &p.data.user;
    if user.deleted_at.is_some() {
        return Ok(Decision::deny(Reason::PrincipalDeleted));
    }
    if user.status != UserStatus::Active {
        return Ok(Decision::deny(Reason::PrincipalInactive {
            status: user.status,
        }));
    }

    // 2. What the roles say; it stands unless a policy decides otherwise below.
    let roles = by_roles(&snap.graph, &p, check, attrs);
    let policies = snap.cedar.policies.for_action(&check.action);
    if policies.is_empty() {
        return Ok(match roles {
            Roles::Allow(d) => d,
            Roles::Deny(r) => Decision::deny(r),
        });
    }
    let input = || {
        snap.cedar.input(
            &p.state.cedar,
            &check.action,
            &check.resource,
            attrs,
            &check.context,
            owner,
            policies.uses,
        )
    };
    let forbidden = |s: Satisfied| {
        Decision::deny(Reason::PolicyForbid {
            policy_id: s.id,
            policy_name: s.name,
        })
    };
    match roles {
        // 3. A forbid that applies wins over every role, the super administrator's too.
        Roles::Allow(allowed) => {
            if let Some(forbid) = &policies.forbid {
                if let Some(s) = snap.cedar.policies.satisfied(authorizer, forbid, &input()?) {
                    return Ok(forbidden(s));
                }
            }
            Ok(allowed)
        }
        // 3 and 4 in one evaluation: a forbid that applies denies; else a permit that
        // applies allows (`PolicyPermit`, scope all); else the roles' denial stands.
        Roles::Deny(denied) => {
            if let Some(all) = &policies.all {
                if let Some(s) = snap.cedar.policies.satisfied(authorizer, all, &input()?) {
                    return Ok(match s.effect {
                        Effect::Forbid => forbidden(s),
                        Effect::Permit => Decision::allow(
                            Scope::All,
                            Reason::PolicyPermit {
                                policy_id: s.id,
                                policy_name: s.name,
                            },
                        ),
                    });
                }
            }
            Ok(Decision::deny(denied))
        }
    }
}

/// What the principal's roles say about a check.
enum Roles {
    Allow(Decision),
    Deny(Reason),
}

/// The decision of the principal's roles: allowed (super administrator, or the best grant
/// whose scope reaches the resource), or why not (`OutOfScope` when some grant of the
/// action does not reach it, else `NoPermission`).
fn by_roles(graph: &Graph, p: &Principal<'_>, check: &Check, attrs: &ResourceAttrs) -> Roles {
    let rights = &p.state.rights;
    if rights.super_admin {
        return Roles::Allow(Decision::allow(Scope::All, Reason::SuperAdmin));
    }
    let ranked = graph
        .action_id(&check.action)
        .map_or(&[][..], |a| rights.ranked(a));
    let user = &p.data.user;
    for r in ranked {
        if covers(
            r.scope,
            user.id,
            user.department.as_deref(),
            &check.resource,
            attrs,
        ) {
            // Explained from the tenant's graph (shared and warm) rather than from the
            // principal's copy of the grant.
            let reason = match (graph.roles.get(&r.role), r.via_group) {
                (Some(role), via) => {
                    role.permissions
                        .get(usize::from(r.permission))
                        .map(|permission| Reason::Permission {
                            permission: permission.clone(),
                            role_id: r.role,
                            role_name: role.name.clone(),
                            via_group_id: via,
                            via_group_name: via
                                .and_then(|g| graph.groups.get(&g))
                                .map(|g| g.name.clone()),
                        })
                }
                _ => None,
            };
            let reason = reason.or_else(|| {
                rights
                    .grants
                    .get(r.grant as usize)
                    .map(|g| Reason::Permission {
                        permission: g.permission.clone(),
                        role_id: g.role_id,
                        role_name: g.role_name.clone(),
                        via_group_id: g.via_group_id,
                        via_group_name: g.via_group_name.clone(),
                    })
            });
            if let Some(reason) = reason {
                return Roles::Allow(Decision::allow(r.scope, reason));
            }
        }
    }
    Roles::Deny(match ranked.first() {
        Some(r) => Reason::OutOfScope {
            permission: graph
                .roles
                .get(&r.role)
                .and_then(|role| role.permissions.get(usize::from(r.permission)))
                .or_else(|| rights.grants.get(r.grant as usize).map(|g| &g.permission))
                .cloned()
                .unwrap_or_else(|| check.action.with_scope(r.scope)),
        },
        None => Reason::NoPermission,
    })
}

/// Whether a permission at `scope` reaches the resource. Any scope reaches a collection
/// (the caller filters it by the decision's scope).
fn covers(
    scope: Scope,
    principal: UserId,
    department: Option<&str>,
    resource: &Resource,
    attrs: &ResourceAttrs,
) -> bool {
    let Some(id) = &resource.id else {
        return true;
    };
    match scope {
        Scope::All => true,
        Scope::Department => department.is_some() && attrs.department.as_deref() == department,
        Scope::Own => {
            attrs.owner_id() == Some(principal)
                || (resource.kind == "users" && id.parse::<UserId>().ok() == Some(principal))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Context;
    use crate::testdata::*;
    use chrono::{FixedOffset, TimeZone};
    use domain::authz::PermissionKey;
    use serde_json::json;

    struct World {
        t: Tenant,
    }

    impl World {
        fn decide_at(
            &self,
            p: Option<&PrincipalData>,
            action: &str,
            resource: Resource,
            context: Context,
            owner: Option<&PrincipalData>,
        ) -> Result<Decision, Error> {
            let snap = Snapshot::compile(&self.t.data()).unwrap();
            let now = context.now.with_timezone(&Utc);
            let state = p.map(|p| PrincipalState::build(&snap, p, now).unwrap());
            let owner_state = owner.map(|o| PrincipalState::build(&snap, o, now).unwrap());
            let check = Check {
                principal: p.map_or_else(UserId::new, |p| p.user.id),
                action: ActionKey::parse("action", action).unwrap(),
                resource,
                context,
            };
            assert!(snap.knows(&check.action), "{action}");
            let attrs = ResourceAttrs::parse(&check.resource.attributes)?;
            decide(
                &snap,
                &Authorizer::new(),
                p.zip(state.as_ref())
                    .map(|(data, state)| Principal { data, state }),
                &check,
                &attrs,
                owner_state.as_ref().map(|s| &s.cedar.entity),
            )
        }

        fn decide(&self, p: &PrincipalData, action: &str, resource: Resource) -> Decision {
            self.decide_at(Some(p), action, resource, ctx(), None)
                .unwrap()
        }
    }

    fn ctx() -> Context {
        Context::at(Utc::now().fixed_offset())
    }

    fn res(kind: &str, id: Option<&str>, attrs: serde_json::Value) -> Resource {
        Resource {
            kind: kind.into(),
            id: id.map(str::to_owned),
            attributes: attrs.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn scopes_reach_own_department_or_all_records() {
        let mut t = Tenant::new();
        let own = t.role("own", 1, &["users:read:own"]);
        let dept = t.role("dept", 2, &["users:read:department"]);
        let mut ann = t.user("ann", Some("sales"));
        ann.assignments
            .push(assignment(&ann, &t.role_of(own), None));
        let w = World { t };
        let other = UserId::new().to_string();
        let me = ann.user.id.to_string();

        let d = w.decide(&ann, "users:read", res("users", Some(&me), json!({})));
        assert!(d.allowed);
        assert_eq!(d.scope, Some(Scope::Own));
        let d = w.decide(&ann, "users:read", res("users", Some(&other), json!({})));
        assert_eq!(
            d.reason,
            Reason::OutOfScope {
                permission: PermissionKey::parse("p", "users:read:own").unwrap()
            }
        );
        let d = w.decide(
            &ann,
            "users:read",
            res("sessions", Some("s1"), json!({ "owner": me })),
        );
        assert!(d.allowed, "owner attribute reaches own records");
        let d = w.decide(&ann, "users:read", res("users", None, json!({})));
        assert_eq!((d.allowed, d.scope), (true, Some(Scope::Own)));

        let mut w = w;
        ann.assignments
            .push(assignment(&ann, &w.t.role_of(dept), None));
        let d = w.decide(
            &ann,
            "users:read",
            res("users", Some(&other), json!({ "department": "sales" })),
        );
        assert_eq!(d.scope, Some(Scope::Department));
        assert!(matches!(&d.reason, Reason::Permission { role_name, .. } if role_name == "dept"));
        let d = w.decide(
            &ann,
            "users:read",
            res("users", Some(&other), json!({ "department": "ops" })),
        );
        assert!(!d.allowed);
        // The widest held scope tells a list endpoint which filter to apply.
        let d = w.decide(&ann, "users:read", res("users", None, json!({})));
        assert_eq!(d.scope, Some(Scope::Department));

        ann.user.department = None;
        let d = w.decide(
            &ann,
            "users:read",
            res("users", Some(&other), json!({ "department": "sales" })),
        );
        assert!(!d.allowed, "no department reaches no department's records");

        let all = w.t.role("all", 0, &["users:read:all"]);
        ann.assignments
            .push(assignment(&ann, &w.t.role_of(all), None));
        let d = w.decide(&ann, "users:read", res("users", Some(&other), json!({})));
        assert_eq!(d.scope, Some(Scope::All));
        let d = w.decide(&ann, "users:delete", res("users", Some(&me), json!({})));
        assert_eq!(d.reason, Reason::NoPermission);
        assert!(d.scope.is_none());
    }

    #[test]
    fn principals_without_rights_are_denied_whatever_the_policies() {
        let mut t = Tenant::new();
        t.policy("everyone", "permit(principal, action, resource);");
        let w = World { t };
        let mut p = w.t.user("bo", None);
        p.assignments
            .push(assignment(&p, &w.t.role_of(RoleRef::super_admin()), None));
        let r = || res("users", None, json!({}));
        assert_eq!(w.decide(&p, "users:read", r()).reason, Reason::SuperAdmin);
        p.user.status = UserStatus::Blocked;
        assert_eq!(
            w.decide(&p, "users:read", r()).reason,
            Reason::PrincipalInactive {
                status: UserStatus::Blocked
            }
        );
        p.user.deleted_at = Some(Utc::now());
        assert_eq!(
            w.decide(&p, "users:read", r()).reason,
            Reason::PrincipalDeleted
        );
        let d = w.decide_at(None, "users:read", r(), ctx(), None).unwrap();
        assert_eq!(d.reason, Reason::PrincipalNotFound);
        assert!(!d.allowed);
    }

    #[test]
    fn forbid_wins_over_roles_and_super_admin_and_permit_comes_last() {
        let mut t = Tenant::new();
        let admin = t.role("admin", 100, &["users:read:all", "users:update:own"]);
        let zz = t.policy(
            "zz-risky",
            "forbid(principal, action, resource) when { context.risk_score > 50 };",
        );
        let aa = t.policy(
            "aa-risky",
            "forbid(principal, action, resource) when { context.risk_score > 70 };",
        );
        let permit = t.policy(
            "trusted-update",
            r#"permit(principal, action == Action::"users:update", resource)
               when { context.device_trusted };"#,
        );
        let w = World { t };
        let mut p = w.t.user("cy", None);
        p.assignments
            .push(assignment(&p, &w.t.role_of(admin), None));
        let r = || res("users", Some("x"), json!({}));
        let mut c = ctx();
        c.risk_score = 60;
        let d = w
            .decide_at(Some(&p), "users:read", r(), c.clone(), None)
            .unwrap();
        assert_eq!(
            d.reason,
            Reason::PolicyForbid {
                policy_id: zz,
                policy_name: "zz-risky".into()
            }
        );
        c.risk_score = 90;
        let d = w
            .decide_at(Some(&p), "users:read", r(), c.clone(), None)
            .unwrap();
        assert_eq!(
            d.reason,
            Reason::PolicyForbid {
                policy_id: aa,
                policy_name: "aa-risky".into()
            },
            "the first forbid by name explains"
        );
        p.assignments
            .push(assignment(&p, &w.t.role_of(RoleRef::super_admin()), None));
        let d = w
            .decide_at(Some(&p), "users:read", r(), c.clone(), None)
            .unwrap();
        assert!(!d.allowed, "forbid applies to super admins too");
        p.assignments.pop();

        // users:update:own does not reach record x; the permit does.
        let mut c = ctx();
        let d = w
            .decide_at(Some(&p), "users:update", r(), c.clone(), None)
            .unwrap();
        assert!(matches!(d.reason, Reason::OutOfScope { .. }));
        c.device_trusted = true;
        let d = w
            .decide_at(Some(&p), "users:update", r(), c.clone(), None)
            .unwrap();
        assert_eq!(
            (d.allowed, d.scope, d.reason),
            (
                true,
                Some(Scope::All),
                Reason::PolicyPermit {
                    policy_id: permit,
                    policy_name: "trusted-update".into()
                }
            )
        );
        // A role that allows is preferred to the permit as the explanation.
        let d = w.decide_at(Some(&p), "users:read", r(), c, None).unwrap();
        assert!(matches!(d.reason, Reason::Permission { .. }));
    }

    /// The explanation names the permission, the role and the group it came through.
    #[test]
    fn a_permission_through_a_group_is_explained() {
        let mut t = Tenant::new();
        let low = t.role("low", 1, &["users:read:own", "users:update:own"]);
        let high = t.role("high", 50, &["users:read:department", "users:read:own"]);
        let top = t.group("top", None, true, &[high]);
        let team = t.group("team", Some(top), true, &[]);
        let w = World { t };
        let mut p = w.t.user("ida", Some("ops"));
        p.groups = vec![team];
        p.assignments.push(assignment(&p, &w.t.role_of(low), None));
        let other = UserId::new().to_string();
        let d = w.decide(
            &p,
            "users:read",
            res("users", Some(&other), json!({ "department": "ops" })),
        );
        assert_eq!(
            d.reason,
            Reason::Permission {
                permission: PermissionKey::parse("p", "users:read:department").unwrap(),
                role_id: high.id,
                role_name: "high".into(),
                via_group_id: Some(top),
                via_group_name: Some("top".into()),
            }
        );
        let me = p.user.id.to_string();
        let d = w.decide(&p, "users:update", res("users", Some(&me), json!({})));
        assert_eq!(
            d.reason,
            Reason::Permission {
                permission: PermissionKey::parse("p", "users:update:own").unwrap(),
                role_id: low.id,
                role_name: "low".into(),
                via_group_id: None,
                via_group_name: None,
            }
        );
        let d = w.decide(&p, "users:update", res("users", Some(&other), json!({})));
        assert_eq!(
            d.reason,
            Reason::OutOfScope {
                permission: PermissionKey::parse("p", "users:update:own").unwrap()
            }
        );
    }

    /// When the roles deny, forbids and permits are evaluated together: a forbid still wins.
    #[test]
    fn when_the_roles_deny_a_forbid_still_wins_over_a_permit() {
        let mut t = Tenant::new();
        t.permission("docs:read:all");
        let permit = t.policy(
            "b-readers",
            r#"permit(principal, action in [Action::"docs:read", Action::"users:read"], resource)
               when { context.mfa_level >= 1 };"#,
        );
        let forbid = t.policy(
            "a-risky",
            r#"forbid(principal, action == Action::"docs:read", resource)
               when { context.risk_score > 50 };"#,
        );
        let w = World { t };
        let p = w.t.user("di", None);
        let r = || res("docs", Some("1"), json!({}));
        let mut c = ctx();
        c.mfa_level = 2;
        let d = w
            .decide_at(Some(&p), "docs:read", r(), c.clone(), None)
            .unwrap();
        assert_eq!(
            d.reason,
            Reason::PolicyPermit {
                policy_id: permit,
                policy_name: "b-readers".into()
            }
        );
        c.risk_score = 80;
        let d = w
            .decide_at(Some(&p), "docs:read", r(), c.clone(), None)
            .unwrap();
        assert_eq!(
            d.reason,
            Reason::PolicyForbid {
                policy_id: forbid,
                policy_name: "a-risky".into()
            }
        );
        // The forbid names docs:read only.
        let d = w.decide_at(Some(&p), "users:read", r(), c, None).unwrap();
        assert!(matches!(d.reason, Reason::PolicyPermit { .. }));
        c = ctx();
        let d = w.decide_at(Some(&p), "docs:read", r(), c, None).unwrap();
        assert_eq!(d.reason, Reason::NoPermission);
    }

    /// The principal's Cedar entity keeps, of its groups and roles, those the policies name:
    /// membership through a group's ancestors and through a group's roles still shows.
    #[test]
    fn principals_are_in_the_groups_and_roles_policies_name() {
        let mut t = Tenant::new();
        t.permission("docs:read:all");
        let auditor = t.role("auditor", 1, &[]);
        let top = t.group("top", None, true, &[auditor]);
        let leaf = t.group("leaf", Some(top), true, &[]);
        t.policy(
            "by-role",
            r#"permit(principal in Role::"auditor", action == Action::"docs:read", resource);"#,
        );
        t.policy(
            "by-group",
            r#"forbid(principal in Group::"top", action == Action::"docs:read", resource)
               when { context.risk_score > 50 };"#,
        );
        let w = World { t };
        let mut p = w.t.user("fi", None);
        p.groups = vec![leaf];
        let r = || res("docs", Some("1"), json!({}));
        let d = w
            .decide_at(Some(&p), "docs:read", r(), ctx(), None)
            .unwrap();
        assert!(
            matches!(&d.reason, Reason::PolicyPermit { policy_name, .. } if policy_name == "by-role"),
            "{d:?}"
        );
        let mut c = ctx();
        c.risk_score = 60;
        let d = w.decide_at(Some(&p), "docs:read", r(), c, None).unwrap();
        assert!(
            matches!(&d.reason, Reason::PolicyForbid { policy_name, .. } if policy_name == "by-group"),
            "{d:?}"
        );
        let stranger = w.t.user("gu", None);
        let d = w
            .decide_at(Some(&stranger), "docs:read", r(), ctx(), None)
            .unwrap();
        assert_eq!(d.reason, Reason::NoPermission);
    }

    #[test]
    fn policies_see_the_principal_the_resource_and_the_context() {
        let mut t = Tenant::new();
        t.permission("docs:read:all");
        let eng = t.group("engineering", None, true, &[]);
        let backend = t.group("backend", Some(eng), true, &[]);
        let boss = t.user("boss", Some("eng"));
        let mid = t.user("mid", Some("eng"));
        let mut ann = t.user("ann", Some("eng"));
        ann.user.manager_id = Some(mid.user.id);
        ann.manager_chain = vec![mid.user.id, boss.user.id];
        ann.groups = vec![backend];
        ann.user.clearance_level = Some(3);
        ann.user
            .custom_attributes
            .insert("gdpr_consent_at".into(), json!("2024-01-01T00:00:00Z"));
        let policies = [
            (
                "org",
                format!(
                    r#"permit(principal, action == Action::"docs:read", resource)
                       when {{ principal.managers.contains(User::"{}")
                               && principal.manager == User::"{}" && principal in Group::"engineering"
                               && principal.gdpr_consent && principal.clearance_level >= 3 }};"#,
                    boss.user.id, mid.user.id
                ),
            ),
            (
                "hours",
                r#"forbid(principal, action, resource)
                   unless { context.now.hour >= 9 && context.now.hour < 17 && context.now.weekday <= 5 };"#
                    .to_owned(),
            ),
            (
                "tags",
                r#"forbid(principal, action, resource)
                   when { resource.hasTag("project") && resource.getTag("project") == "secret"
                          && !(context has ip && context.ip.isInRange(ip("10.0.0.0/8"))) };"#
                    .to_owned(),
            ),
            (
                "classified",
                r#"forbid(principal, action, resource)
                   when { resource has classification && resource.classification > principal.clearance_level };"#
                    .to_owned(),
            ),
        ];
        for (name, src) in &policies {
            t.policy(name, src);
        }
        let w = World { t };
        // A Wednesday at 10:00 in UTC+02:00.
        let tz = FixedOffset::east_opt(2 * 3600).unwrap();
        let wed10 = tz.with_ymd_and_hms(2025, 6, 4, 10, 0, 0).unwrap();
        let doc = |attrs: serde_json::Value| res("document", Some("d1"), attrs);
        let at = |t, attrs, ip: Option<&str>| {
            let mut c = Context::at(t);
            c.ip = ip.map(|i| i.parse().unwrap());
            w.decide_at(Some(&ann), "docs:read", doc(attrs), c, None)
                .unwrap()
        };
        let d = at(wed10, json!({}), None);
        assert!(
            matches!(&d.reason, Reason::PolicyPermit { policy_name, .. } if policy_name == "org"),
            "{d:?}"
        );
        let d = at(
            tz.with_ymd_and_hms(2025, 6, 4, 8, 59, 0).unwrap(),
            json!({}),
            None,
        );
        assert!(
            matches!(&d.reason, Reason::PolicyForbid { policy_name, .. } if policy_name == "hours")
        );
        let d = at(
            tz.with_ymd_and_hms(2025, 6, 7, 10, 0, 0).unwrap(),
            json!({}),
            None,
        );
        assert!(!d.allowed, "Saturday");
        let d = at(wed10, json!({ "project": "secret" }), Some("192.168.1.1"));
        assert!(
            matches!(&d.reason, Reason::PolicyForbid { policy_name, .. } if policy_name == "tags")
        );
        let d = at(wed10, json!({ "project": "secret" }), Some("10.1.2.3"));
        assert!(d.allowed);
        let d = at(wed10, json!({ "classification": 4 }), None);
        assert!(
            matches!(&d.reason, Reason::PolicyForbid { policy_name, .. } if policy_name == "classified")
        );
        let d = at(
            wed10,
            json!({ "classification": 3, "reviewed": true, "n": 7 }),
            None,
        );
        assert!(d.allowed);

        // Without the consent the permit no longer applies.
        let mut no_consent = ann.clone();
        no_consent.user.custom_attributes.clear();
        let d = w
            .decide_at(
                Some(&no_consent),
                "docs:read",
                doc(json!({})),
                Context::at(wed10),
                None,
            )
            .unwrap();
        assert_eq!(d.reason, Reason::NoPermission);
    }

    #[test]
    fn a_resource_owner_who_reports_to_the_principal_is_seen() {
        let mut t = Tenant::new();
        t.permission("docs:approve:all");
        t.policy(
            "approve-reports",
            r#"permit(principal, action == Action::"docs:approve", resource)
               when { resource has owner && resource.owner.managers.contains(principal) };"#,
        );
        let w = World { t };
        let boss = w.t.user("boss", None);
        let mut report = w.t.user("report", None);
        report.manager_chain = vec![boss.user.id];
        report.user.manager_id = Some(boss.user.id);
        let stranger = w.t.user("stranger", None);
        let doc = |owner: &PrincipalData| {
            res(
                "document",
                Some("d"),
                json!({ "owner": owner.user.id.to_string() }),
            )
        };
        let d = w
            .decide_at(
                Some(&boss),
                "docs:approve",
                doc(&report),
                ctx(),
                Some(&report),
            )
            .unwrap();
        assert!(d.allowed, "{d:?}");
        let d = w
            .decide_at(
                Some(&boss),
                "docs:approve",
                doc(&stranger),
                ctx(),
                Some(&stranger),
            )
            .unwrap();
        assert!(!d.allowed);
        let d = w
            .decide_at(
                Some(&report),
                "docs:approve",
                doc(&boss),
                ctx(),
                Some(&boss),
            )
            .unwrap();
        assert!(!d.allowed);
    }

    #[test]
    fn an_owner_who_reports_to_the_principal_does_not_inherit_the_principals_groups() {
        let mut t = Tenant::new();
        t.permission("docs:read:all");
        let finance = t.group("finance", None, true, &[]);
        t.policy(
            "finance-docs",
            r#"permit(principal, action == Action::"docs:read", resource)
               when { resource has owner && resource.owner in Group::"finance" };"#,
        );
        let w = World { t };
        let mut boss = w.t.user("boss", None);
        boss.groups = vec![finance];
        let mut report = w.t.user("report", None);
        report.manager_chain = vec![boss.user.id];
        report.user.manager_id = Some(boss.user.id);
        let doc = res(
            "document",
            Some("d"),
            json!({ "owner": report.user.id.to_string() }),
        );
        let d = w
            .decide_at(Some(&boss), "docs:read", doc, ctx(), Some(&report))
            .unwrap();
        assert_eq!(
            d.reason,
            Reason::NoPermission,
            "the report is not in finance"
        );
    }

    #[test]
    fn stored_policies_that_do_not_parse_fail_closed() {
        let mut t = Tenant::new();
        let reader = t.role("reader", 1, &["users:read:all"]);
        t.policy("broken-permit", "permit (principal, action resource);");
        let mut ann = t.user("ann", None);
        ann.assignments
            .push(assignment(&ann, &t.role_of(reader), None));
        let mut w = World { t };
        let bob = w.t.user("bob", None);
        let r = || res("users", Some("x"), json!({}));
        // A broken permit allows nothing, and does not stop the roles.
        assert_eq!(
            w.decide(&bob, "users:read", r()).reason,
            Reason::NoPermission
        );
        assert!(w.decide(&ann, "users:read", r()).allowed);
        // A broken forbid forbids everything, in its own name.
        let broken =
            w.t.policy("broken-forbid", "forbid (principal, action resource) when");
        let d = w.decide(&ann, "users:read", r());
        assert_eq!(
            d.reason,
            Reason::PolicyForbid {
                policy_id: broken,
                policy_name: "broken-forbid".into()
            }
        );
    }

    #[test]
    fn resource_attributes_are_checked() {
        let a = ResourceAttrs::parse(
            json!({ "owner": "u", "department": "d", "classification": 2, "x": "y",
                    "flag": false, "n": -3, "gone": null })
            .as_object()
            .unwrap(),
        )
        .unwrap();
        assert_eq!(a.owner.as_deref(), Some("u"));
        assert_eq!(a.classification, Some(2));
        let mut tags = a.tags.clone();
        tags.sort();
        assert_eq!(
            tags,
            [
                ("flag".to_owned(), "false".to_owned()),
                ("n".into(), "-3".into()),
                ("x".into(), "y".into())
            ]
        );
        let Err(Error::Validation(errors)) = ResourceAttrs::parse(
            json!({ "owner": 3, "classification": "high", "nested": { "a": 1 }, "list": [1],
                    "ratio": 0.5 })
            .as_object()
            .unwrap(),
        ) else {
            panic!("expected a validation error")
        };
        let mut fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        fields.sort();
        assert_eq!(
            fields,
            [
                "resource.attributes.classification",
                "resource.attributes.list",
                "resource.attributes.nested",
                "resource.attributes.owner",
                "resource.attributes.ratio"
            ]
        );
    }

    #[test]
    fn unknown_actions_are_not_known() {
        let mut t = Tenant::new();
        t.permission("docs:read:own");
        let snap = Snapshot::compile(&t.data()).unwrap();
        assert!(snap.knows(&ActionKey::parse("a", "docs:read").unwrap()));
        assert!(snap.knows(&ActionKey::parse("a", "users:read").unwrap()));
        assert!(!snap.knows(&ActionKey::parse("a", "docs:write").unwrap()));
        assert!(!snap.knows(&ActionKey::parse("a", "users:fly").unwrap()));
    }

    #[test]
    fn the_documented_example_policies_do_what_they_say() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/policies");
        let example =
            |name: &str| std::fs::read_to_string(dir.join(format!("{name}.cedar"))).unwrap();
        let admin_permissions: Vec<String> = domain::authz::default_roles()[0]
            .permissions
            .iter()
            .map(|p| p.to_string())
            .collect();
        let admin_permissions: Vec<&str> = admin_permissions.iter().map(String::as_str).collect();
        // A world with one example policy, an administrator and a user without roles.
        let world = |name: &str| {
            let mut t = Tenant::new();
            let admin = t.role("admin", 100, &admin_permissions);
            t.policy(name, &example(name));
            let mut boss = t.user("boss", Some("eng"));
            boss.assignments
                .push(assignment(&boss, &t.role_of(admin), None));
            let plain = t.user("plain", Some("eng"));
            (World { t }, boss, plain)
        };
        let tz = FixedOffset::east_opt(-5 * 3600).unwrap();
        let wed = |h| Context::at(tz.with_ymd_and_hms(2025, 6, 4, h, 30, 0).unwrap());
        let sat = Context::at(tz.with_ymd_and_hms(2025, 6, 7, 10, 30, 0).unwrap());
        let user_record = || res("users", Some("u1"), json!({ "department": "eng" }));
        let forbidden_by = |d: Decision, name: &str| matches!(&d.reason, Reason::PolicyForbid { policy_name, .. } if policy_name == name);
        let run = |w: &World, p: &PrincipalData, action: &str, r: Resource, c: Context| {
            w.decide_at(Some(p), action, r, c, None).unwrap()
        };

        let (w, boss, _) = world("working_hours");
        assert!(run(&w, &boss, "users:update", user_record(), wed(16)).allowed);
        assert!(forbidden_by(
            run(&w, &boss, "users:update", user_record(), wed(17)),
            "working_hours"
        ));
        assert!(run(&w, &boss, "users:read", user_record(), wed(20)).allowed);

        let (w, boss, _) = world("business_days");
        assert!(run(&w, &boss, "users:export", user_record(), wed(10)).allowed);
        assert!(forbidden_by(
            run(&w, &boss, "users:export", user_record(), sat.clone()),
            "business_days"
        ));

        let (w, boss, _) = world("risk_below");
        let mut risky = wed(10);
        risky.risk_score = 69;
        assert!(run(&w, &boss, "roles:read", user_record(), risky.clone()).allowed);
        risky.risk_score = 70;
        assert!(forbidden_by(
            run(&w, &boss, "roles:read", user_record(), risky),
            "risk_below"
        ));

        let (w, boss, _) = world("trusted_device");
        let mut trusted = wed(10);
        trusted.device_trusted = true;
        assert!(run(&w, &boss, "users:delete", user_record(), trusted).allowed);
        assert!(forbidden_by(
            run(&w, &boss, "users:delete", user_record(), wed(10)),
            "trusted_device"
        ));

        let (w, mut boss, _) = world("gdpr_consented");
        assert!(forbidden_by(
            run(&w, &boss, "users:export", user_record(), wed(10)),
            "gdpr_consented"
        ));
        boss.user
            .custom_attributes
            .insert("gdpr_consent".into(), json!(true));
        assert!(run(&w, &boss, "users:export", user_record(), wed(10)).allowed);

        let (w, mut boss, _) = world("data_classified");
        boss.user.clearance_level = Some(2);
        let doc = |c: i64| res("users", Some("u1"), json!({ "classification": c }));
        assert!(run(&w, &boss, "users:read", doc(2), wed(10)).allowed);
        assert!(forbidden_by(
            run(&w, &boss, "users:read", doc(3), wed(10)),
            "data_classified"
        ));

        let (w, _, mut plain) = world("reports_to");
        let head: UserId = "00000000-0000-7000-8000-000000000042".parse().unwrap();
        assert_eq!(
            run(
                &w,
                &plain,
                "audit_logs:read",
                res("audit_logs", None, json!({})),
                wed(10)
            )
            .reason,
            Reason::NoPermission
        );
        plain.user.manager_id = Some(head);
        plain.manager_chain = vec![head];
        let d = run(
            &w,
            &plain,
            "audit_logs:read",
            res("audit_logs", None, json!({})),
            wed(10),
        );
        assert!(matches!(d.reason, Reason::PolicyPermit { .. }), "{d:?}");

        let (w, _, mut plain) = world("in_org_tree");
        let cto: UserId = "00000000-0000-7000-8000-000000000007".parse().unwrap();
        plain.manager_chain = vec![UserId::new(), UserId::new(), cto];
        let engineering = || res("users", Some("u1"), json!({ "department": "engineering" }));
        assert!(run(&w, &plain, "users:read", engineering(), wed(10)).allowed);
        let ops = res("users", Some("u1"), json!({ "department": "ops" }));
        assert!(!run(&w, &plain, "users:read", ops, wed(10)).allowed);
        plain.manager_chain.pop();
        assert!(!run(&w, &plain, "users:read", engineering(), wed(10)).allowed);
    }
}
