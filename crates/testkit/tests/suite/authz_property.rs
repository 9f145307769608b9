//! Properties of the decision engine (`portcullis-authz`) over a real store, on SQLite and
//! on PostgreSQL:
//!
//! - random graphs of roles (random permissions, priorities, active flags), a forest of
//!   groups with role grants, users with direct (some time-bound) assignments and
//!   memberships, and Cedar policies over groups and roles; then a random sequence of
//!   changes through the services (whose events reach the engine's cache: nothing
//!   invalidates it by hand). After every change,
//!   for every user, action and resource, at the present and at a time when the time-bound
//!   assignments have expired, the cached engine's decision equals a brand-new engine's
//!   (a direct recomputation from the database) and the decision of a model of the rules
//!   written here, independently of the engine;
//! - invalidation is correct under concurrency: while a writer toggles an assignment,
//!   every check that starts after a change (and its invalidation) completed and ends
//!   before the next change starts sees that change; after the last one, so does the next
//!   check.
//!
//! PostgreSQL runs need `PORTCULLIS_TEST_DATABASE_URL`; without it they are skipped, except
//! under CI.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, TimeDelta, Utc};
use domain::audit::{Actor, AuditContext};
use domain::authz::{
    GroupMemberRole, GroupPatch, GroupType, NewGroup, NewPermission, NewPolicy, NewRole,
    PermissionKey, PolicyEffect, PolicyPatch, RolePatch, Scope, SUPER_ADMIN_ROLE_ID,
};
use domain::patch::Patch;
use domain::users::{UserPatch, UserStatus};
use domain::values::{DisplayName, Identifier, JsonObject, Label};
use domain::{ApiKeyId, GroupId, PolicyId, RoleId, TenantId, UserId};
use portcullis_authz::{ActionKey, Check, Context, Decision, Engine, Reason, Resource};
use portcullis_testkit::fixtures::{new_tenant, new_user};
use portcullis_testkit::rig::{fresh_rig, Rig};
use portcullis_testkit::Backend;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use uuid::Uuid;

// ------------------------------------------------------------------------------------------
// The generated scenario
// ------------------------------------------------------------------------------------------

/// Every permission roles are given: built in (`users:read`) and tenant-defined (`docs`).
const PERMS: [&str; 9] = [
    "users:read:own",
    "users:read:department",
    "users:read:all",
    "docs:read:own",
    "docs:read:department",
    "docs:read:all",
    "docs:write:own",
    "docs:write:department",
    "docs:write:all",
];
const ACTIONS: [&str; 3] = ["docs:read", "docs:write", "users:read"];
const DEPARTMENTS: [&str; 2] = ["a", "b"];

/// Indexes are taken modulo the length of what they pick from when used.
#[derive(Debug, Clone)]
struct RoleSpec {
    perms: Vec<usize>,
    priority: i32,
    active: bool,
}

#[derive(Debug, Clone)]
struct GroupSpec {
    parent: Option<usize>,
    active: bool,
    roles: Vec<usize>,
}

#[derive(Debug, Clone)]
struct UserSpec {
    department: Option<usize>,
    /// (role, time-bound)
    assignments: Vec<(usize, bool)>,
    groups: Vec<usize>,
}

#[derive(Debug, Clone)]
enum Step {
    Assign {
        user: usize,
        role: usize,
        expiring: bool,
    },
    Unassign {
        user: usize,
        role: usize,
    },
    AddMember {
        user: usize,
        group: usize,
    },
    RemoveMember {
        user: usize,
        group: usize,
    },
    Reparent {
        group: usize,
        parent: Option<usize>,
    },
    Grant {
        group: usize,
        role: usize,
    },
    Revoke {
        group: usize,
        role: usize,
    },
    RolePermissions {
        role: usize,
        add: Vec<usize>,
        remove: Vec<usize>,
    },
    RoleActive {
        role: usize,
        active: bool,
    },
    GroupActive {
        group: usize,
        active: bool,
    },
    UserActive {
        user: usize,
        active: bool,
    },
    UserDepartment {
        user: usize,
        department: Option<usize>,
    },
    /// A forbid of `docs:write` to a group's members, or a permit of `docs:read` to a
    /// role's holders.
    CreatePolicy {
        forbid: bool,
        target: usize,
    },
    PolicyActive {
        policy: usize,
        active: bool,
    },
    DeletePolicy {
        policy: usize,
    },
}

#[derive(Debug, Clone)]
struct Scenario {
    roles: Vec<RoleSpec>,
    groups: Vec<GroupSpec>,
    users: Vec<UserSpec>,
    /// `Step::CreatePolicy` arguments.
    policies: Vec<(bool, usize)>,
    steps: Vec<Step>,
}

fn idx() -> impl Strategy<Value = usize> {
    0usize..12
}

fn role_spec() -> impl Strategy<Value = RoleSpec> {
    (
        prop::collection::vec(0..PERMS.len(), 0..5),
        // Few priorities, so that ties are decided by name.
        0i32..2,
        prop::bool::weighted(0.85),
    )
        .prop_map(|(perms, priority, active)| RoleSpec {
            perms,
            priority,
            active,
        })
}

fn group_spec() -> impl Strategy<Value = GroupSpec> {
    (
        prop::option::weighted(0.8, idx()),
        prop::bool::weighted(0.85),
        prop::collection::vec(idx(), 0..3),
    )
        .prop_map(|(parent, active, roles)| GroupSpec {
            parent,
            active,
            roles,
        })
}

fn user_spec() -> impl Strategy<Value = UserSpec> {
    (
        prop::option::of(0..DEPARTMENTS.len()),
        prop::collection::vec((idx(), any::<bool>()), 0..3),
        prop::collection::vec(idx(), 0..4),
    )
        .prop_map(|(department, assignments, groups)| UserSpec {
            department,
            assignments,
            groups,
        })
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (idx(), idx(), any::<bool>()).prop_map(|(user, role, expiring)| Step::Assign {
            user,
            role,
            expiring
        }),
        (idx(), idx()).prop_map(|(user, role)| Step::Unassign { user, role }),
        (idx(), idx()).prop_map(|(user, group)| Step::AddMember { user, group }),
        (idx(), idx()).prop_map(|(user, group)| Step::RemoveMember { user, group }),
        (idx(), prop::option::of(idx()))
            .prop_map(|(group, parent)| Step::Reparent { group, parent }),
        (idx(), idx()).prop_map(|(group, role)| Step::Grant { group, role }),
        (idx(), idx()).prop_map(|(group, role)| Step::Revoke { group, role }),
        (
            idx(),
            prop::collection::vec(0..PERMS.len(), 0..3),
            prop::collection::vec(0..PERMS.len(), 0..3)
        )
            .prop_map(|(role, add, remove)| Step::RolePermissions { role, add, remove }),
        (idx(), any::<bool>()).prop_map(|(role, active)| Step::RoleActive { role, active }),
        (idx(), any::<bool>()).prop_map(|(group, active)| Step::GroupActive { group, active }),
        (idx(), any::<bool>()).prop_map(|(user, active)| Step::UserActive { user, active }),
        (idx(), prop::option::of(0..DEPARTMENTS.len()))
            .prop_map(|(user, department)| Step::UserDepartment { user, department }),
        (any::<bool>(), idx()).prop_map(|(forbid, target)| Step::CreatePolicy { forbid, target }),
        (idx(), any::<bool>()).prop_map(|(policy, active)| Step::PolicyActive { policy, active }),
        idx().prop_map(|policy| Step::DeletePolicy { policy }),
    ]
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        prop::collection::vec(role_spec(), 1..=4),
        prop::collection::vec(group_spec(), 0..=6),
        prop::collection::vec(user_spec(), 1..=4),
        prop::collection::vec((any::<bool>(), idx()), 0..=4),
        prop::collection::vec(step(), 1..=16),
    )
        .prop_map(|(roles, groups, users, policies, steps)| Scenario {
            roles,
            groups,
            users,
            policies,
            steps,
        })
}

// ------------------------------------------------------------------------------------------
// The model: the decision rules, written again from the crate's documentation
// ------------------------------------------------------------------------------------------

struct MRole {
    id: RoleId,
    name: String,
    priority: i32,
    active: bool,
    perms: BTreeSet<PermissionKey>,
}

struct MGroup {
    id: GroupId,
    name: String,
    parent: Option<usize>,
    active: bool,
    roles: BTreeSet<usize>,
}

struct MUser {
    id: UserId,
    department: Option<String>,
    active: bool,
    /// role → expiry
    assignments: BTreeMap<usize, Option<DateTime<Utc>>>,
    groups: BTreeSet<usize>,
}

#[derive(Clone, Copy)]
enum MPolicyKind {
    ForbidWriteToGroup(usize),
    PermitReadToRole(usize),
}

struct MPolicy {
    id: PolicyId,
    name: String,
    active: bool,
    kind: MPolicyKind,
}

/// What a check is about, for one user.
#[derive(Debug, Clone, Copy)]
enum Res {
    /// The `docs` collection.
    Collection,
    /// A document of department "a".
    OfDepartmentA,
    /// A document the user owns.
    Owned,
    /// The user's own user record.
    Me,
    /// A document with no owner nor department.
    Plain,
}

const RESOURCES: [Res; 5] = [
    Res::Collection,
    Res::OfDepartmentA,
    Res::Owned,
    Res::Me,
    Res::Plain,
];

#[derive(Default)]
struct Model {
    /// Index 0 is the super administrator role.
    roles: Vec<MRole>,
    groups: Vec<MGroup>,
    users: Vec<MUser>,
    policies: Vec<MPolicy>,
    policy_counter: usize,
}

impl Model {
    fn is_super_admin(&self, role: usize) -> bool {
        self.roles[role].id == SUPER_ADMIN_ROLE_ID
    }

    /// A role other than the super administrator's.
    fn ordinary_role(&self, i: usize) -> usize {
        1 + i % (self.roles.len() - 1)
    }

    /// The groups whose roles reach the user: up each direct group's parent chain, until an
    /// inactive group.
    fn reachable(&self, user: &MUser) -> BTreeSet<usize> {
        let mut out = BTreeSet::new();
        for &start in &user.groups {
            let mut at = Some(start);
            while let Some(g) = at {
                if !self.groups[g].active || !out.insert(g) {
                    break;
                }
                at = self.groups[g].parent;
            }
        }
        out
    }

    fn would_cycle(&self, group: usize, parent: Option<usize>) -> bool {
        let mut at = parent;
        while let Some(p) = at {
            if p == group {
                return true;
            }
            at = self.groups[p].parent;
        }
        false
    }

    fn decide(&self, u: usize, action: &str, res: Res, at: DateTime<Utc>) -> Decision {
        let user = &self.users[u];
        let deny = |reason| Decision {
            allowed: false,
            scope: None,
            reason,
        };
        if !user.active {
            return deny(Reason::PrincipalInactive {
                status: UserStatus::Blocked,
            });
        }
        let current = |e: &Option<DateTime<Utc>>| e.is_none_or(|t| t > at);
        let super_admin = user
            .assignments
            .iter()
            .any(|(r, e)| self.is_super_admin(*r) && current(e));

        // (permission, role, through group)
        let mut grants: Vec<(PermissionKey, usize, Option<usize>)> = Vec::new();
        let mut role_names = BTreeSet::new();
        for (&r, e) in &user.assignments {
            if current(e) && self.roles[r].active {
                role_names.insert(self.roles[r].name.clone());
                for p in &self.roles[r].perms {
                    grants.push((p.clone(), r, None));
                }
            }
        }
        let reached = self.reachable(user);
        for &g in &reached {
            for &r in &self.groups[g].roles {
                if self.roles[r].active {
                    role_names.insert(self.roles[r].name.clone());
                    for p in &self.roles[r].perms {
                        grants.push((p.clone(), r, Some(g)));
                    }
                }
            }
        }

        let applying = |effect_applies: &dyn Fn(MPolicyKind) -> bool| {
            self.policies
                .iter()
                .filter(|p| p.active && effect_applies(p.kind))
                .min_by(|a, b| a.name.cmp(&b.name))
        };
        let forbid = applying(&|k| match k {
            MPolicyKind::ForbidWriteToGroup(g) => action == "docs:write" && reached.contains(&g),
            MPolicyKind::PermitReadToRole(_) => false,
        });
        if let Some(p) = forbid {
            return deny(Reason::PolicyForbid {
                policy_id: p.id,
                policy_name: p.name.clone(),
            });
        }
        if super_admin {
            return Decision {
                allowed: true,
                scope: Some(Scope::All),
                reason: Reason::SuperAdmin,
            };
        }

        let group_name = |g: Option<usize>| g.map(|g| self.groups[g].name.clone());
        let mut mine: Vec<_> = grants
            .into_iter()
            .filter(|(p, _, _)| format!("{}:{}", p.resource(), p.action()) == action)
            .collect();
        mine.sort_by(|(pa, ra, ga), (pb, rb, gb)| {
            pb.scope()
                .cmp(&pa.scope())
                .then(self.roles[*rb].priority.cmp(&self.roles[*ra].priority))
                .then(self.roles[*ra].name.cmp(&self.roles[*rb].name))
                .then(group_name(*ga).cmp(&group_name(*gb)))
        });
        let reaches = |scope: Scope| match (res, scope) {
            (Res::Collection, _) | (_, Scope::All) => true,
            (Res::OfDepartmentA, Scope::Department) => user.department.as_deref() == Some("a"),
            (Res::Owned | Res::Me, Scope::Own) => true,
            _ => false,
        };
        if let Some((p, r, g)) = mine.iter().find(|(p, _, _)| reaches(p.scope())) {
            return Decision {
                allowed: true,
                scope: Some(p.scope()),
                reason: Reason::Permission {
                    permission: p.clone(),
                    role_id: self.roles[*r].id,
                    role_name: self.roles[*r].name.clone(),
                    via_group_id: g.map(|g| self.groups[g].id),
                    via_group_name: group_name(*g),
                },
            };
        }
        let permit = applying(&|k| match k {
            MPolicyKind::PermitReadToRole(r) => {
                action == "docs:read" && role_names.contains(&self.roles[r].name)
            }
            MPolicyKind::ForbidWriteToGroup(_) => false,
        });
        if let Some(p) = permit {
            return Decision {
                allowed: true,
                scope: Some(Scope::All),
                reason: Reason::PolicyPermit {
                    policy_id: p.id,
                    policy_name: p.name.clone(),
                },
            };
        }
        deny(match mine.first() {
            Some((p, _, _)) => Reason::OutOfScope {
                permission: p.clone(),
            },
            None => Reason::NoPermission,
        })
    }
}

// ------------------------------------------------------------------------------------------
// Driving the store
// ------------------------------------------------------------------------------------------

fn ctx() -> AuditContext {
    AuditContext {
        actor: Actor::ApiKey(ApiKeyId::from_uuid(Uuid::from_u128(0xB0B))),
        ip: None,
        user_agent: None,
        request_id: None,
    }
}

fn ident(s: &str) -> Identifier {
    Identifier::parse("name", s).unwrap()
}

fn perm(i: usize) -> PermissionKey {
    PermissionKey::parse("permission", PERMS[i]).unwrap()
}

fn department(i: Option<usize>) -> Option<String> {
    i.map(|i| DEPARTMENTS[i].to_owned())
}

struct World {
    store: Rig,
    /// Validates policies before they are saved, as the HTTP layer does.
    validator: Engine,
    tenant: TenantId,
    model: Model,
    /// When time-bound assignments made now end.
    expiry: DateTime<Utc>,
}

impl World {
    async fn build(store: Rig, s: &Scenario) -> World {
        let c = ctx();
        let tenant = store
            .create_tenant(new_tenant("prop"), &c)
            .await
            .unwrap()
            .id;
        for key in PERMS.iter().filter(|k| k.starts_with("docs:")) {
            let new = NewPermission {
                key: PermissionKey::parse("permission", key).unwrap(),
                description: None,
            };
            store.create_permission(tenant, new, &c).await.unwrap();
        }
        let mut model = Model::default();
        // The super administrator first, then the default roles, then the generated ones.
        let mut stored = store.list_roles(tenant).await.unwrap();
        stored.sort_by_key(|r| (r.id != SUPER_ADMIN_ROLE_ID, r.name.clone()));
        for r in stored {
            model.roles.push(MRole {
                id: r.id,
                name: r.name,
                priority: r.priority,
                active: r.active,
                perms: r.permissions.into_iter().collect(),
            });
        }
        for (i, spec) in s.roles.iter().enumerate() {
            let name = format!("r{i}");
            let new = NewRole {
                name: ident(&name),
                display_name: DisplayName::parse("display_name", &name).unwrap(),
                description: None,
                priority: spec.priority,
                active: spec.active,
                permissions: spec.perms.iter().map(|p| perm(*p)).collect(),
            };
            let r = store.create_role(tenant, new, &c).await.unwrap();
            model.roles.push(MRole {
                id: r.id,
                name,
                priority: spec.priority,
                active: spec.active,
                perms: spec.perms.iter().map(|p| perm(*p)).collect(),
            });
        }
        for (i, spec) in s.groups.iter().enumerate() {
            let name = format!("g{i}");
            // Earlier groups only: the generated tree is a forest.
            let parent = spec.parent.filter(|_| i > 0).map(|p| p % i);
            let new = NewGroup {
                name: ident(&name),
                display_name: DisplayName::parse("display_name", &name).unwrap(),
                description: None,
                group_type: GroupType::Team,
                parent_id: parent.map(|p| model.groups[p].id),
                max_members: None,
                active: spec.active,
                settings: JsonObject::default(),
            };
            let g = store.create_group(tenant, new, &c).await.unwrap();
            model.groups.push(MGroup {
                id: g.id,
                name,
                parent,
                active: spec.active,
                roles: BTreeSet::new(),
            });
            for r in &spec.roles {
                let r = r % model.roles.len();
                // The super administrator role is for users only.
                if model.roles[r].id != SUPER_ADMIN_ROLE_ID && model.groups[i].roles.insert(r) {
                    store
                        .grant_group_role(tenant, g.id, model.roles[r].id, &c)
                        .await
                        .unwrap();
                }
            }
        }
        let user_role = model.roles.iter().position(|r| r.name == "user").unwrap();
        let mut w = World {
            validator: Engine::new(store.store.clone()),
            store,
            tenant,
            model,
            expiry: Utc::now() + TimeDelta::hours(1),
        };
        for (i, spec) in s.users.iter().enumerate() {
            let mut new = new_user(&format!("u{i}@example.com"), &format!("User {i}"));
            new.department =
                department(spec.department).map(|d| Label::parse("department", &d).unwrap());
            let u = w.store.create_user(tenant, new, &c).await.unwrap();
            w.model.users.push(MUser {
                id: u.id,
                department: department(spec.department),
                active: true,
                // New users hold the tenant's `user` role.
                assignments: BTreeMap::from([(user_role, None)]),
                groups: BTreeSet::new(),
            });
            for (role, expiring) in &spec.assignments {
                w.apply(&Step::Assign {
                    user: i,
                    role: *role,
                    expiring: *expiring,
                })
                .await;
            }
            for group in &spec.groups {
                w.apply(&Step::AddMember {
                    user: i,
                    group: *group,
                })
                .await;
            }
        }
        for (forbid, target) in &s.policies {
            w.apply(&Step::CreatePolicy {
                forbid: *forbid,
                target: *target,
            })
            .await;
        }
        w
    }

    /// Makes the change through the store and, when the store accepts it, in the model.
    async fn apply(&mut self, step: &Step) {
        let (store, t, c, m) = (&self.store, self.tenant, ctx(), &mut self.model);
        let (nu, ng, nr) = (m.users.len(), m.groups.len(), m.roles.len());
        match step {
            Step::Assign {
                user,
                role,
                expiring,
            } => {
                let (u, r) = (user % nu, role % nr);
                // The super administrator role is given for good: its last holder is
                // protected, which the model then need not guess about expired holders.
                let expires = (*expiring && !m.is_super_admin(r)).then_some(self.expiry);
                store
                    .assign_role(t, m.users[u].id, m.roles[r].id, expires, &c)
                    .await
                    .unwrap();
                m.users[u].assignments.insert(r, expires);
            }
            Step::Unassign { user, role } => {
                let (u, r) = (user % nu, role % nr);
                let result = store
                    .unassign_role(t, m.users[u].id, m.roles[r].id, &c)
                    .await;
                let held = m.users[u].assignments.contains_key(&r);
                let last_super_admin = m.is_super_admin(r)
                    && m.users[u].active
                    && m.users
                        .iter()
                        .filter(|x| x.active && x.assignments.contains_key(&r))
                        .count()
                        == 1;
                assert_eq!(result.is_ok(), held && !last_super_admin, "{result:?}");
                if result.is_ok() {
                    m.users[u].assignments.remove(&r);
                }
            }
            Step::AddMember { user, group } => {
                if ng == 0 {
                    return;
                }
                let (u, g) = (user % nu, group % ng);
                let results = store
                    .add_group_members(
                        t,
                        m.groups[g].id,
                        vec![m.users[u].id],
                        GroupMemberRole::Member,
                        &c,
                    )
                    .await
                    .unwrap();
                let added = results[0].outcome.is_ok();
                assert_eq!(added, m.users[u].groups.insert(g), "{results:?}");
            }
            Step::RemoveMember { user, group } => {
                if ng == 0 {
                    return;
                }
                let (u, g) = (user % nu, group % ng);
                let result = store
                    .remove_group_member(t, m.groups[g].id, m.users[u].id, &c)
                    .await;
                assert_eq!(result.is_ok(), m.users[u].groups.remove(&g), "{result:?}");
            }
            Step::Reparent { group, parent } => {
                if ng == 0 {
                    return;
                }
                let g = group % ng;
                let parent = parent.map(|p| p % ng);
                let patch = GroupPatch {
                    parent_id: match parent {
                        Some(p) => Patch::Set(m.groups[p].id),
                        None => Patch::Clear,
                    },
                    ..Default::default()
                };
                let result = store.update_group(t, m.groups[g].id, patch, &c).await;
                assert_eq!(result.is_ok(), !m.would_cycle(g, parent), "{result:?}");
                if result.is_ok() {
                    m.groups[g].parent = parent;
                }
            }
            Step::Grant { group, role } => {
                if ng == 0 {
                    return;
                }
                let (g, r) = (group % ng, role % nr);
                let result = store
                    .grant_group_role(t, m.groups[g].id, m.roles[r].id, &c)
                    .await;
                // The super administrator role is for users only.
                let grants = !m.is_super_admin(r) && !m.groups[g].roles.contains(&r);
                assert_eq!(result.is_ok(), grants, "{result:?}");
                if grants {
                    m.groups[g].roles.insert(r);
                }
            }
            Step::Revoke { group, role } => {
                if ng == 0 {
                    return;
                }
                let (g, r) = (group % ng, role % nr);
                let result = store
                    .revoke_group_role(t, m.groups[g].id, m.roles[r].id, &c)
                    .await;
                assert_eq!(result.is_ok(), m.groups[g].roles.remove(&r), "{result:?}");
            }
            Step::RolePermissions { role, add, remove } => {
                let r = m.ordinary_role(*role);
                let add: Vec<_> = add.iter().map(|p| perm(*p)).collect();
                let remove: Vec<_> = remove.iter().map(|p| perm(*p)).collect();
                store
                    .update_role_permissions(t, m.roles[r].id, add.clone(), remove.clone(), &c)
                    .await
                    .unwrap();
                // Adds, then removes.
                m.roles[r].perms.extend(add);
                for p in &remove {
                    m.roles[r].perms.remove(p);
                }
            }
            Step::RoleActive { role, active } => {
                let r = m.ordinary_role(*role);
                let patch = RolePatch {
                    active: Some(*active),
                    ..Default::default()
                };
                store
                    .update_role(t, m.roles[r].id, patch, &c)
                    .await
                    .unwrap();
                m.roles[r].active = *active;
            }
            Step::GroupActive { group, active } => {
                if ng == 0 {
                    return;
                }
                let g = group % ng;
                let patch = GroupPatch {
                    active: Some(*active),
                    ..Default::default()
                };
                store
                    .update_group(t, m.groups[g].id, patch, &c)
                    .await
                    .unwrap();
                m.groups[g].active = *active;
            }
            Step::UserActive { user, active } => {
                let u = user % nu;
                let status = if *active {
                    UserStatus::Active
                } else {
                    UserStatus::Blocked
                };
                let patch = UserPatch {
                    status: Some(status),
                    ..Default::default()
                };
                let result = store.update_user(t, m.users[u].id, patch, None, &c).await;
                let last_super_admin = !*active
                    && m.users[u].active
                    && m.users[u].assignments.contains_key(&0)
                    && m.users
                        .iter()
                        .filter(|x| x.active && x.assignments.contains_key(&0))
                        .count()
                        == 1;
                assert_eq!(result.is_ok(), !last_super_admin, "{result:?}");
                if result.is_ok() {
                    m.users[u].active = *active;
                }
            }
            Step::UserDepartment {
                user,
                department: d,
            } => {
                let u = user % nu;
                let patch = UserPatch {
                    department: match department(*d) {
                        Some(d) => Patch::Set(Label::parse("department", &d).unwrap()),
                        None => Patch::Clear,
                    },
                    ..Default::default()
                };
                store
                    .update_user(t, m.users[u].id, patch, None, &c)
                    .await
                    .unwrap();
                m.users[u].department = department(*d);
            }
            Step::CreatePolicy { forbid, target } => {
                let name = format!("p{}", m.policy_counter);
                m.policy_counter += 1;
                let (kind, source, effect) = if *forbid && ng > 0 {
                    let g = target % ng;
                    (
                        MPolicyKind::ForbidWriteToGroup(g),
                        format!(
                            "forbid(principal in Group::\"{}\", action == Action::\"docs:write\", resource);",
                            m.groups[g].name
                        ),
                        PolicyEffect::Forbid,
                    )
                } else {
                    let r = m.ordinary_role(*target);
                    (
                        MPolicyKind::PermitReadToRole(r),
                        format!(
                            "permit(principal in Role::\"{}\", action == Action::\"docs:read\", resource);",
                            m.roles[r].name
                        ),
                        PolicyEffect::Permit,
                    )
                };
                let validated = self.validator.validate_policy(t, &source).await.unwrap();
                assert_eq!(validated, effect);
                let new = NewPolicy {
                    name: ident(&name),
                    description: None,
                    effect,
                    source,
                    active: true,
                };
                let p = store.create_policy(t, new, &c).await.unwrap();
                m.policies.push(MPolicy {
                    id: p.id,
                    name,
                    active: true,
                    kind,
                });
            }
            Step::PolicyActive { policy, active } => {
                if m.policies.is_empty() {
                    return;
                }
                let p = policy % m.policies.len();
                let patch = PolicyPatch {
                    active: Some(*active),
                    ..Default::default()
                };
                store
                    .update_policy(t, m.policies[p].id, patch, None, &c)
                    .await
                    .unwrap();
                m.policies[p].active = *active;
            }
            Step::DeletePolicy { policy } => {
                if m.policies.is_empty() {
                    return;
                }
                let p = policy % m.policies.len();
                store.delete_policy(t, m.policies[p].id, &c).await.unwrap();
                m.policies.remove(p);
            }
        }
    }

    fn check(&self, u: usize, action: &str, res: Res, at: DateTime<Utc>) -> Check {
        let me = self.model.users[u].id.to_string();
        let mut attributes = serde_json::Map::new();
        let (kind, id) = match res {
            Res::Collection => ("docs", None),
            Res::OfDepartmentA => {
                attributes.insert("department".into(), "a".into());
                ("docs", Some("d1".to_owned()))
            }
            Res::Owned => {
                attributes.insert("owner".into(), me.into());
                ("docs", Some("d2".to_owned()))
            }
            Res::Me => ("users", Some(me)),
            Res::Plain => ("docs", Some("d3".to_owned())),
        };
        // Checks come with the caller's offset: expiry is judged at the same instant.
        let offset = FixedOffset::east_opt(-3 * 3600).unwrap();
        Check {
            principal: self.model.users[u].id,
            action: ActionKey::parse("action", action).unwrap(),
            resource: Resource {
                kind: kind.into(),
                id,
                attributes,
            },
            context: Context::at(at.with_timezone(&offset)),
        }
    }

    /// Every user, action and resource, now and once the time-bound assignments ended: the
    /// cached engine, a new engine and the model agree.
    async fn verify(&self, cached: &Engine, when: &str) -> Result<(), TestCaseError> {
        let fresh = Engine::new(self.store.store.clone());
        for at in [Utc::now(), self.expiry + TimeDelta::hours(1), Utc::now()] {
            for u in 0..self.model.users.len() {
                for action in ACTIONS {
                    for res in RESOURCES {
                        let check = self.check(u, action, res, at);
                        let expected = self.model.decide(u, action, res, at);
                        let got = cached.check(self.tenant, &check).await.unwrap();
                        prop_assert_eq!(
                            &got,
                            &expected,
                            "cached engine, {}: user {} {} {:?} at {}",
                            when,
                            u,
                            action,
                            res,
                            at
                        );
                        let direct = fresh.check(self.tenant, &check).await.unwrap();
                        prop_assert_eq!(&direct, &expected, "new engine, {}", when);
                    }
                }
            }
        }
        Ok(())
    }
}

async fn run_case(backend: Backend, s: Scenario) -> Result<(), TestCaseError> {
    let Some((store, _db)) = fresh_rig(backend).await else {
        return Ok(());
    };
    // The services' own engine: nothing invalidates it by hand; the events of the changes
    // reach it through the dispatcher.
    let engine = store.services.engine().clone();
    let mut w = World::build(store, &s).await;
    w.verify(&engine, "initially").await?;
    for (i, step) in s.steps.iter().enumerate() {
        w.apply(step).await;
        w.verify(&engine, &format!("after step {i} {step:?}"))
            .await?;
    }
    Ok(())
}

fn property(backend: Backend) {
    if backend == Backend::Postgres && portcullis_testkit::postgres_url().is_none() {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut runner = TestRunner::new(Config {
        cases: 24,
        max_shrink_iters: 64,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&scenario(), |s| runtime.block_on(run_case(backend, s)));
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn cached_decisions_equal_recomputation_and_model_sqlite() {
    property(Backend::Sqlite);
}

#[test]
fn cached_decisions_equal_recomputation_and_model_postgres() {
    property(Backend::Postgres);
}

// ------------------------------------------------------------------------------------------
// Invalidation under concurrency
// ------------------------------------------------------------------------------------------

async fn concurrent_toggling(backend: Backend) {
    let Some((store, _db)) = fresh_rig(backend).await else {
        return;
    };
    let c = ctx();
    let tenant = store
        .create_tenant(new_tenant("race"), &c)
        .await
        .unwrap()
        .id;
    store
        .create_permission(
            tenant,
            NewPermission {
                key: PermissionKey::parse("permission", "docs:read:all").unwrap(),
                description: None,
            },
            &c,
        )
        .await
        .unwrap();
    let role = store
        .create_role(
            tenant,
            NewRole {
                name: ident("reader"),
                display_name: DisplayName::parse("display_name", "Reader").unwrap(),
                description: None,
                priority: 1,
                active: true,
                permissions: vec![PermissionKey::parse("permission", "docs:read:all").unwrap()],
            },
            &c,
        )
        .await
        .unwrap();
    let user = store
        .create_user(tenant, new_user("racer@example.com", "Racer"), &c)
        .await
        .unwrap();
    let engine = store.services.engine().clone();
    let check = Check {
        principal: user.id,
        action: ActionKey::parse("action", "docs:read").unwrap(),
        resource: Resource::new("docs", None),
        context: Context::at(Utc::now().fixed_offset()),
    };

    // Step k assigns the role when k is odd and takes it away when k is even.
    const STEPS: usize = 41;
    let started = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let judged = Arc::new(AtomicUsize::new(0));

    let mut readers = Vec::new();
    for _ in 0..3 {
        let (engine, check) = (engine.clone(), check.clone());
        let (started, done, finished, judged) = (
            started.clone(),
            done.clone(),
            finished.clone(),
            judged.clone(),
        );
        readers.push(tokio::spawn(async move {
            while !finished.load(Ordering::SeqCst) {
                let d1 = done.load(Ordering::SeqCst);
                let s1 = started.load(Ordering::SeqCst);
                let allowed = engine.check(tenant, &check).await.unwrap().allowed;
                let s2 = started.load(Ordering::SeqCst);
                // Only a check that ran entirely between two changes can be judged.
                if s1 == d1 && s2 == s1 {
                    assert_eq!(allowed, d1 % 2 == 1, "after {d1} completed changes");
                    judged.fetch_add(1, Ordering::SeqCst);
                }
                tokio::task::yield_now().await;
            }
        }));
    }

    for k in 1..=STEPS {
        started.fetch_add(1, Ordering::SeqCst);
        if k % 2 == 1 {
            store
                .assign_role(tenant, user.id, role.id, None, &c)
                .await
                .unwrap();
        } else {
            store
                .unassign_role(tenant, user.id, role.id, &c)
                .await
                .unwrap();
        }
        done.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    finished.store(true, Ordering::SeqCst);
    for r in readers {
        r.await.unwrap();
    }
    assert!(
        judged.load(Ordering::SeqCst) > 0,
        "no check could be judged"
    );

    // The last change (an assignment) is what the next check sees, cached or not.
    assert!(engine.check(tenant, &check).await.unwrap().allowed);
    let fresh = Engine::new(store.store.clone());
    assert!(fresh.check(tenant, &check).await.unwrap().allowed);
    store
        .unassign_role(tenant, user.id, role.id, &c)
        .await
        .unwrap();
    assert!(!engine.check(tenant, &check).await.unwrap().allowed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_is_correct_under_concurrent_writes_sqlite() {
    concurrent_toggling(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_is_correct_under_concurrent_writes_postgres() {
    concurrent_toggling(Backend::Postgres).await;
}
