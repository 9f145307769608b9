//! Effective permissions: what a user holds through current direct assignments and through
//! the groups they belong to (and those groups' ancestors), as a pure function of a tenant's
//! role and group graph, the user's data and the time.

use std::collections::{BTreeSet, HashSet};

use chrono::{DateTime, Utc};
use domain::authz::{
    ActionKey, PermissionKey, PrincipalData, Scope, TenantAuthzData, SUPER_ADMIN_ROLE_ID,
    SUPER_ADMIN_ROLE_NAME,
};
use domain::{GroupId, RoleId};

use crate::fast_hash::FastMap;
use crate::model::{is_active, Grant};

/// A role as decisions need it.
#[derive(Debug, Clone)]
pub(crate) struct RoleNode {
    pub name: String,
    pub priority: i32,
    pub active: bool,
    pub permissions: Vec<PermissionKey>,
}

/// A group as decisions need it: where it sits in the tree and the roles granted to it.
#[derive(Debug, Clone)]
pub(crate) struct GroupEntry {
    pub name: String,
    pub parent: Option<GroupId>,
    pub active: bool,
    pub roles: Vec<RoleId>,
}

/// A tenant's roles and group tree.
#[derive(Debug, Clone, Default)]
pub(crate) struct Graph {
    pub roles: FastMap<RoleId, RoleNode>,
    pub groups: FastMap<GroupId, GroupEntry>,
    /// A number for every action a role carries: principals' grants are indexed by it.
    action_ids: FastMap<ActionKey, u32>,
}

impl Graph {
    pub fn new(data: &TenantAuthzData) -> Self {
        let roles = data
            .roles
            .iter()
            .map(|r| {
                (
                    r.id,
                    RoleNode {
                        name: r.name.clone(),
                        priority: r.priority,
                        active: r.active,
                        permissions: r.permissions.clone(),
                    },
                )
            })
            .collect();
        let mut groups: FastMap<GroupId, GroupEntry> = data
            .groups
            .iter()
            .map(|g| {
                (
                    g.id,
                    GroupEntry {
                        name: g.name.clone(),
                        parent: g.parent_id,
                        active: g.active,
                        roles: Vec::new(),
                    },
                )
            })
            .collect();
        for (group, role) in &data.group_roles {
            if let Some(g) = groups.get_mut(group) {
                g.roles.push(*role);
            }
        }
        let keys: BTreeSet<ActionKey> = data
            .roles
            .iter()
            .flat_map(|r| r.permissions.iter().map(PermissionKey::action_key))
            .collect();
        let action_ids = keys.into_iter().zip(0u32..).collect();
        Self {
            roles,
            groups,
            action_ids,
        }
    }

    /// The number of an action some role carries; None when no role carries it.
    pub fn action_id(&self, action: &ActionKey) -> Option<u32> {
        self.action_ids.get(action).copied()
    }

    /// The groups whose roles reach a member of `direct`: each direct group and its
    /// ancestors, walking up the parent chain and stopping at the first inactive group (it
    /// and everything above it give nothing through that path). Ordered by first reach.
    pub fn reachable_groups(&self, direct: &[GroupId]) -> Vec<GroupId> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for start in direct {
            let mut at = Some(*start);
            while let Some(id) = at {
                let Some(group) = self.groups.get(&id) else {
                    break;
                };
                // `seen` also ends the walk on a cycle, which a consistent store never has.
                if !group.active || !seen.insert(id) {
                    break;
                }
                out.push(id);
                at = group.parent;
            }
        }
        out
    }
}

/// What a user holds during one interval of time (between two assignment expiries).
#[derive(Debug, Clone, Default)]
pub(crate) struct Rights {
    /// The interval these rights hold for: `valid_from <= t < valid_until`.
    pub valid_from: Option<DateTime<Utc>>,
    pub valid_until: Option<DateTime<Utc>>,
    pub super_admin: bool,
    /// Sorted by permission, role name, group name; one per (permission, role, group).
    pub grants: Vec<Grant>,
    /// The grants again, compact, by action number (`Graph::action_id`) and for each action
    /// best first: widest scope, then highest role priority, then role name, then direct
    /// before through a group, then group name. A role check reads only these few
    /// contiguous bytes of the principal (its other data is usually out of the CPU's
    /// caches) and explains its decision from the tenant's graph, which stays in them.
    ranked: Box<[Ranked]>,
    /// (action number, start, end) of each action's entries in `ranked`, by action number.
    actions: Box<[(u32, u32, u32)]>,
    /// Names of the effective roles (active, current) and of the groups reached.
    pub role_names: BTreeSet<String>,
    pub group_names: BTreeSet<String>,
}

impl Rights {
    pub fn covers(&self, t: DateTime<Utc>) -> bool {
        self.valid_from.is_none_or(|f| t >= f) && self.valid_until.is_none_or(|u| t < u)
    }

    /// The grants of the action numbered `action`, best first.
    pub fn ranked(&self, action: u32) -> &[Ranked] {
        let at = self.actions.partition_point(|(a, _, _)| *a < action);
        match self.actions.get(at) {
            Some(&(a, start, end)) if a == action => self
                .ranked
                .get(start as usize..end as usize)
                .unwrap_or_default(),
            _ => &[],
        }
    }

    /// The grants for an action, best first.
    #[cfg(test)]
    pub fn for_action<'a>(
        &'a self,
        graph: &Graph,
        action: &ActionKey,
    ) -> impl Iterator<Item = &'a Grant> + 'a {
        let ranked = graph.action_id(action).map_or(&[][..], |a| self.ranked(a));
        ranked
            .iter()
            .filter_map(|r| self.grants.get(r.grant as usize))
    }
}

/// A grant as a role check reads it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ranked {
    pub scope: Scope,
    pub role: RoleId,
    /// The index of the permission in the role's permissions (`Graph::roles`).
    pub permission: u16,
    pub via_group: Option<GroupId>,
    /// The index of the grant in `Rights::grants`.
    pub grant: u32,
}

/// The user's rights at `now`. Inactive and deleted users hold nothing (their groups are
/// still listed, for the Cedar entity of a resource owner).
pub(crate) fn compute(graph: &Graph, principal: &PrincipalData, now: DateTime<Utc>) -> Rights {
    let groups = graph.reachable_groups(&principal.groups);
    let group_names = groups
        .iter()
        .filter_map(|g| graph.groups.get(g).map(|g| g.name.clone()))
        .collect();
    if !is_active(&principal.user) {
        return Rights {
            group_names,
            ..Rights::default()
        };
    }

    let mut valid_from: Option<DateTime<Utc>> = None;
    let mut valid_until: Option<DateTime<Utc>> = None;
    for t in principal.assignments.iter().filter_map(|a| a.expires_at) {
        if t <= now {
            valid_from = Some(valid_from.map_or(t, |f| f.max(t)));
        } else {
            valid_until = Some(valid_until.map_or(t, |u| u.min(t)));
        }
    }

    let mut grants = Vec::new();
    let mut role_names = BTreeSet::new();
    let mut super_admin = false;
    let mut add_role = |role_id: RoleId,
                        via: Option<(GroupId, &str)>,
                        expires_at: Option<DateTime<Utc>>,
                        grants: &mut Vec<Grant>| {
        let Some(role) = graph.roles.get(&role_id).filter(|r| r.active) else {
            return;
        };
        role_names.insert(role.name.clone());
        for p in &role.permissions {
            grants.push(Grant {
                permission: p.clone(),
                role_id,
                role_name: role.name.clone(),
                via_group_id: via.map(|(id, _)| id),
                via_group_name: via.map(|(_, name)| name.to_owned()),
                expires_at,
            });
        }
    };
    for a in principal.assignments.iter().filter(|a| a.is_current(now)) {
        if a.role_id == SUPER_ADMIN_ROLE_ID {
            super_admin = true;
        }
        add_role(a.role_id, None, a.expires_at, &mut grants);
    }
    for g in &groups {
        if let Some(group) = graph.groups.get(g) {
            for r in &group.roles {
                add_role(*r, Some((*g, group.name.as_str())), None, &mut grants);
            }
        }
    }
    if super_admin {
        role_names.insert(SUPER_ADMIN_ROLE_NAME.to_owned());
    }

    grants.sort_by(|a, b| {
        (&a.permission, &a.role_name, &a.via_group_name, a.role_id).cmp(&(
            &b.permission,
            &b.role_name,
            &b.via_group_name,
            b.role_id,
        ))
    });
    grants.dedup_by(|a, b| {
        a.permission == b.permission && a.role_id == b.role_id && a.via_group_id == b.via_group_id
    });

    let priority = |g: &Grant| graph.roles.get(&g.role_id).map_or(i32::MIN, |r| r.priority);
    let mut order: Vec<(u32, usize, Ranked)> = Vec::with_capacity(grants.len());
    for (i, g) in grants.iter().enumerate() {
        let (Some(action), Some(permission), Ok(grant)) = (
            graph.action_id(&g.permission.action_key()),
            graph.roles.get(&g.role_id).and_then(|r| {
                r.permissions
                    .iter()
                    .position(|p| *p == g.permission)
                    .and_then(|k| u16::try_from(k).ok())
            }),
            u32::try_from(i),
        ) else {
            continue;
        };
        order.push((
            action,
            i,
            Ranked {
                scope: g.permission.scope(),
                role: g.role_id,
                permission,
                via_group: g.via_group_id,
                grant,
            },
        ));
    }
    order.sort_by(|&(x, i, _), &(y, j, _)| {
        let (a, b) = (&grants[i], &grants[j]);
        x.cmp(&y)
            .then_with(|| b.permission.scope().cmp(&a.permission.scope()))
            .then_with(|| priority(b).cmp(&priority(a)))
            .then_with(|| a.role_name.cmp(&b.role_name))
            .then_with(|| a.via_group_name.cmp(&b.via_group_name))
    });
    let mut actions: Vec<(u32, u32, u32)> = Vec::new();
    for (k, (action, _, _)) in order.iter().enumerate() {
        let k = u32::try_from(k).unwrap_or(u32::MAX);
        match actions.last_mut() {
            Some((a, _, end)) if a == action => *end = k + 1,
            _ => actions.push((*action, k, k + 1)),
        }
    }

    Rights {
        valid_from,
        valid_until,
        super_admin,
        grants,
        ranked: order.into_iter().map(|(_, _, r)| r).collect(),
        actions: actions.into_boxed_slice(),
        role_names,
        group_names,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::*;
    use domain::authz::Scope;

    #[test]
    fn direct_assignments_count_until_they_expire() {
        let mut t = Tenant::new();
        let reader = t.role("reader", 10, &["docs:read:own"]);
        let now = Utc::now();
        let mut p = t.user("ann", None);
        p.assignments.push(assignment(&p, &t.role_of(reader), None));
        let writer = t.role("writer", 20, &["docs:write:all"]);
        let until = now + chrono::TimeDelta::hours(1);
        p.assignments
            .push(assignment(&p, &t.role_of(writer), Some(until)));
        let graph = Graph::new(&t.data());

        let r = compute(&graph, &p, now);
        assert_eq!(perms(&r), ["docs:read:own", "docs:write:all"]);
        assert_eq!(r.valid_until, Some(until));
        assert!(r.covers(now) && !r.covers(until));
        let write = r.grants.iter().find(|g| g.role_id == writer.id).unwrap();
        assert_eq!(write.expires_at, Some(until));

        let later = compute(&graph, &p, until);
        assert_eq!(perms(&later), ["docs:read:own"]);
        assert_eq!(later.valid_from, Some(until));
        assert!(later.covers(until) && !later.covers(now));
    }

    #[test]
    fn group_roles_are_inherited_up_to_the_first_inactive_group() {
        let mut t = Tenant::new();
        let a = t.role("a", 1, &["x:a:all"]);
        let b = t.role("b", 1, &["x:b:all"]);
        let c = t.role("c", 1, &["x:c:all"]);
        let d = t.role("d", 1, &["x:d:all"]);
        // top -> mid -> leaf; top2 -> off (inactive) -> under
        let top = t.group("top", None, true, &[a]);
        let mid = t.group("mid", Some(top), true, &[b]);
        let leaf = t.group("leaf", Some(mid), true, &[c]);
        let top2 = t.group("top2", None, true, &[d]);
        let off = t.group("off", Some(top2), false, &[d]);
        let under = t.group("under", Some(off), true, &[]);
        let graph = Graph::new(&t.data());
        let now = Utc::now();

        let mut p = t.user("bob", None);
        p.groups = vec![leaf];
        let r = compute(&graph, &p, now);
        assert_eq!(perms(&r), ["x:a:all", "x:b:all", "x:c:all"]);
        let via: Vec<_> = r.grants.iter().map(|g| g.via_group_name.clone()).collect();
        assert_eq!(
            via,
            [Some("top".into()), Some("mid".into()), Some("leaf".into())]
        );
        assert_eq!(
            r.group_names.iter().collect::<Vec<_>>(),
            ["leaf", "mid", "top"]
        );

        p.groups = vec![under];
        let r = compute(&graph, &p, now);
        assert!(r.grants.is_empty(), "the walk stops at the inactive group");
        assert_eq!(r.group_names.iter().collect::<Vec<_>>(), ["under"]);

        p.groups = vec![off];
        assert!(compute(&graph, &p, now).grants.is_empty());
    }

    #[test]
    fn inactive_roles_and_users_grant_nothing() {
        let mut t = Tenant::new();
        let on = t.role("on", 1, &["x:on:all"]);
        let off = t.role("off", 1, &["x:off:all"]);
        t.set_role_active(off, false);
        let g = t.group("g", None, true, &[off]);
        let graph = Graph::new(&t.data());
        let mut p = t.user("cy", None);
        p.groups = vec![g];
        p.assignments.push(assignment(&p, &t.role_of(on), None));
        p.assignments.push(assignment(&p, &t.role_of(off), None));
        let r = compute(&graph, &p, Utc::now());
        assert_eq!(perms(&r), ["x:on:all"]);
        assert_eq!(r.role_names.iter().collect::<Vec<_>>(), ["on"]);

        for status in [
            domain::users::UserStatus::Blocked,
            domain::users::UserStatus::Pending,
        ] {
            p.user.status = status;
            assert!(compute(&graph, &p, Utc::now()).grants.is_empty());
        }
        p.user.status = domain::users::UserStatus::Active;
        p.user.deleted_at = Some(Utc::now());
        let r = compute(&graph, &p, Utc::now());
        assert!(r.grants.is_empty() && !r.super_admin);
    }

    #[test]
    fn super_admin_must_be_held_directly_and_currently() {
        let mut t = Tenant::new();
        let g = t.group("g", None, true, &[RoleRef::super_admin()]);
        let graph = Graph::new(&t.data());
        let now = Utc::now();
        let mut p = t.user("dee", None);
        p.groups = vec![g];
        assert!(!compute(&graph, &p, now).super_admin);
        p.assignments.push(assignment(
            &p,
            &t.role_of(RoleRef::super_admin()),
            Some(now + chrono::TimeDelta::minutes(1)),
        ));
        let r = compute(&graph, &p, now);
        assert!(r.super_admin);
        assert!(r.role_names.contains(SUPER_ADMIN_ROLE_NAME));
        assert!(!compute(&graph, &p, now + chrono::TimeDelta::minutes(1)).super_admin);
    }

    #[test]
    fn grants_for_an_action_come_best_first() {
        let mut t = Tenant::new();
        let low = t.role("low", 1, &["users:read:all"]);
        let high = t.role("high", 9, &["users:read:all", "users:read:own"]);
        let dept = t.role("dept", 100, &["users:read:department"]);
        let g = t.group("g", None, true, &[high]);
        let graph = Graph::new(&t.data());
        let mut p = t.user("eve", None);
        p.groups = vec![g];
        for r in [low, high, dept] {
            p.assignments.push(assignment(&p, &t.role_of(r), None));
        }
        let r = compute(&graph, &p, Utc::now());
        let key = ActionKey::parse("a", "users:read").unwrap();
        let order: Vec<_> = r
            .for_action(&graph, &key)
            .map(|g| {
                (
                    g.permission.scope(),
                    g.role_name.as_str(),
                    g.via_group_name.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            order,
            [
                (Scope::All, "high", None),
                (Scope::All, "high", Some("g")),
                (Scope::All, "low", None),
                (Scope::Department, "dept", None),
                (Scope::Own, "high", None),
                (Scope::Own, "high", Some("g")),
            ]
        );
    }

    fn perms(r: &Rights) -> Vec<String> {
        let mut v: Vec<String> = r.grants.iter().map(|g| g.permission.to_string()).collect();
        v.dedup();
        v
    }
}
