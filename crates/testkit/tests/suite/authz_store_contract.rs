//! The authorization storage contract ([`domain::AuthzStore`]): one set of cases, run
//! against every backend through `Arc<dyn Store>`, so that both keep the invariants listed
//! on the trait identically.
//!
//! Each case gets a fresh database: a file in a temporary directory for SQLite, a fresh
//! schema for PostgreSQL. The PostgreSQL variants need `PORTCULLIS_TEST_DATABASE_URL`
//! (e.g. `postgres://postgres@127.0.0.1:5432/test`); without it they are skipped, except
//! under CI (`CI` set), where a missing database is a failure.
//!
//! Choices this contract fixes where the trait leaves room (both backends follow them):
//! - `authz_version` of a tenant that never changed (or of no tenant at all) is 0; every
//!   successful mutation makes it strictly greater, a failed one leaves it as it was, and
//!   another tenant's version never moves with it;
//! - `get_role` answers the super administrator role in every tenant; a role, group or
//!   policy of another tenant is `NotFound` (`role`, `group`, `policy`) for every method
//!   that names it, exactly like an unknown id; a method naming a group checks the group
//!   first (`NotFound("group")` before any member or role question);
//! - a tenant-defined permission exists at exactly the scope it was defined with
//!   (`invoices:approve:department` does not define `invoices:approve:all`), and only in
//!   its tenant; `create_role` with an unknown permission is `Validation` code
//!   `unknown_permission` on `permissions`;
//! - a system role may change its display name, description, priority and permissions
//!   (only its name and its existence are fixed);
//! - `list_custom_permissions` is sorted by key; `list_user_roles` by priority (highest
//!   first) then name, like `list_roles`, and is `NotFound("user")` for a user the tenant
//!   never had (a deleted user's assignments are still listed);
//! - `unassign_role` of a role the user does not hold directly is
//!   `NotFound("role_assignment")`; `assign_role` to, or `unassign_role` from, an unknown,
//!   deleted or foreign user is `NotFound("user")`; a foreign or unknown role is
//!   `Validation` `role_id`/`unknown_role` (also for `grant_group_role`);
//! - `last_super_admin` counts the non-deleted, `active` users of the whole platform who
//!   hold `super_admin` directly: a holder who is blocked, suspended, inactive, pending or
//!   deleted protects nobody and may lose the role;
//! - `add_group_members` judges each user in request order by the first of: not a
//!   non-deleted user of the tenant (`UserNotFound`), already a member, including earlier
//!   in the same request (`AlreadyMember`), the group at `max_members` counting every
//!   member whatever their status (`GroupFull`);
//! - `remove_group_member` of a non-member is `NotFound("group_member")`, like
//!   `update_group_member`;
//! - `update_policy` with a stale `expected_version` is
//!   `PreconditionFailed { entity: "policy", .. }`; the first entry of the history is
//!   written at creation, with the creator as `changed_by` and `created_at` as
//!   `changed_at`;
//! - `load_principal` follows at most 64 managers (whether the chain goes on through a
//!   deleted manager is not judged here);
//! - audit events: `role` events carry the role (with its permissions) before/after;
//!   `permission.create` has no entity id and the permission in `after`; assignments are
//!   `user` events with the assignment before (`None` for a new one) and after (`None`
//!   for an unassignment); member and group-role events are `group` events, an addition
//!   or grant with only `after`, a removal or revocation with only `before`, a member
//!   update with both; `policy` and `group` events carry the entity before/after.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;
use std::time::Duration;

use chrono::TimeDelta;
use domain::audit::{actions, Actor, ActorType, AuditContext, AuditEvent, AuditQuery};
use domain::auth::NewPassword;
use domain::authz::{
    default_roles, AvailableUsersQuery, Group, GroupMember, GroupMemberRole, GroupNode, GroupPatch,
    GroupSummary, GroupType, MemberAddFailure, MemberAddResult, NewGroup, NewPermission, NewPolicy,
    NewRole, Permission, PermissionKey, Policy, PolicyEffect, PolicyPatch, PolicyVersion, Role,
    RoleAssignment, RolePatch, RoleType, Scope, TenantAuthzData, ADMIN_ROLE, MANAGER_ROLE,
    SUPER_ADMIN_ROLE_ID, SUPER_ADMIN_ROLE_NAME, USER_ROLE,
};
use domain::page::{decode_cursor, PageSize};
use domain::patch::Patch;
use domain::tenants::Tenant;
use domain::time::now;
use domain::users::{NewUser, User, UserPatch, UserStatus};
use domain::values::{Description, DisplayName, Identifier, JsonObject, Label, SearchQuery};
use domain::{ApiKeyId, AuditEventId, Error, GroupId, PolicyId, RoleId, TenantId, UserId};
use portcullis_testkit::fixtures::{new_tenant, new_user};
use portcullis_testkit::rig::Rig;
use portcullis_testkit::rig_tests;
use serde_json::{json, Value};
use uuid::Uuid;

rig_tests!(
    case_default_roles_seeded_and_listed,
    case_new_users_hold_the_user_role,
    case_role_crud,
    case_role_permissions_and_custom_permissions,
    case_assignments,
    case_last_super_admin,
    case_groups_crud_parents_and_cycles,
    case_deletes_cascade,
    case_group_member_counts,
    case_add_group_members_mixed,
    case_add_group_members_in_bulk,
    case_group_members_update_and_remove,
    case_available_users,
    case_group_roles,
    case_policies_and_versions,
    case_load_tenant_authz,
    case_load_principal,
    case_authz_version_tracks_every_change,
    case_failed_mutations_change_nothing,
    case_audit_events,
    case_authz_tenant_isolation,
    case_concurrent_reparenting_keeps_tree_acyclic,
    case_concurrent_additions_respect_max_members,
    case_concurrent_super_admin_removals_keep_one,
    case_user_and_authorization_writes_do_not_deadlock,
);

// ------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------

const KEY: u128 = 0xA11CE;

fn ctx() -> AuditContext {
    AuditContext {
        actor: Actor::ApiKey(ApiKeyId::from_uuid(Uuid::from_u128(KEY))),
        ip: Some("203.0.113.7".into()),
        user_agent: Some("contract-test/1.0".into()),
        request_id: Some("req-authz-contract".into()),
    }
}

/// Gives `user` the tenant's `admin` role, so that changes `by_user` are theirs to make.
async fn make_admin(store: &Rig, tenant: TenantId, user: UserId) {
    let admin = role_named(store, tenant, ADMIN_ROLE).await;
    store
        .assign_role(tenant, user, admin.id, None, &ctx())
        .await
        .unwrap();
}

/// A change made by a signed-in user.
fn by_user(id: UserId) -> AuditContext {
    AuditContext {
        actor: Actor::User(id),
        ip: Some("198.51.100.9".into()),
        user_agent: None,
        request_id: Some("req-authz-user".into()),
    }
}

async fn tenant(store: &Rig, slug: &str) -> Tenant {
    store.create_tenant(new_tenant(slug), &ctx()).await.unwrap()
}

async fn user(store: &Rig, tenant: TenantId, email: &str, name: &str) -> User {
    store
        .create_user(tenant, new_user(email, name), &ctx())
        .await
        .unwrap()
}

async fn user_with(store: &Rig, tenant: TenantId, new: NewUser) -> User {
    store.create_user(tenant, new, &ctx()).await.unwrap()
}

fn in_department(new: NewUser, department: &str) -> NewUser {
    NewUser {
        department: Some(Label::parse("department", department).unwrap()),
        ..new
    }
}

/// A user row for `seed_users`, every optional field empty.
fn seed_user(tenant: TenantId, email: &str, full_name: &str) -> User {
    let at = now();
    User {
        id: UserId::new(),
        tenant_id: tenant,
        email: email.to_owned(),
        username: None,
        full_name: full_name.to_owned(),
        phone: None,
        department: None,
        job_title: None,
        employee_id: None,
        manager_id: None,
        cost_center: None,
        clearance_level: None,
        language: None,
        avatar_url: None,
        custom_attributes: serde_json::Map::new(),
        status: UserStatus::Active,
        last_login_at: None,
        created_at: at,
        updated_at: at,
        deleted_at: None,
        version: 1,
    }
}

fn status(status: UserStatus) -> UserPatch {
    UserPatch {
        status: Some(status),
        ..Default::default()
    }
}

fn rename(name: &str) -> UserPatch {
    UserPatch {
        full_name: Some(DisplayName::parse("full_name", name).unwrap()),
        ..Default::default()
    }
}

fn ident(s: &str) -> Identifier {
    Identifier::parse("name", s).unwrap()
}

fn display(s: &str) -> DisplayName {
    DisplayName::parse("display_name", s).unwrap()
}

fn desc(s: &str) -> Description {
    Description::parse("description", s).unwrap()
}

fn object(v: Value) -> JsonObject {
    JsonObject::parse("settings", v.as_object().unwrap().clone()).unwrap()
}

fn perm(s: &str) -> PermissionKey {
    PermissionKey::parse("permission", s).unwrap()
}

fn perms(list: &[&str]) -> Vec<PermissionKey> {
    list.iter().map(|s| perm(s)).collect()
}

/// The keys sorted and without duplicates: how a role holds them.
fn sorted(list: &[&str]) -> Vec<PermissionKey> {
    let set: BTreeSet<PermissionKey> = perms(list).into_iter().collect();
    set.into_iter().collect()
}

fn new_role(name: &str, priority: i32, permissions: &[&str]) -> NewRole {
    NewRole {
        name: ident(name),
        display_name: display(&format!("Role {name}")),
        description: None,
        priority,
        active: true,
        permissions: perms(permissions),
    }
}

async fn role(
    store: &Rig,
    tenant: TenantId,
    name: &str,
    priority: i32,
    permissions: &[&str],
) -> Role {
    store
        .create_role(tenant, new_role(name, priority, permissions), &ctx())
        .await
        .unwrap()
}

async fn role_named(store: &Rig, tenant: TenantId, name: &str) -> Role {
    store
        .list_roles(tenant)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no role {name}"))
}

fn role_names(roles: &[Role]) -> Vec<&str> {
    roles.iter().map(|r| r.name.as_str()).collect()
}

fn new_group(name: &str, parent: Option<GroupId>) -> NewGroup {
    NewGroup {
        name: ident(name),
        display_name: display(&format!("Group {name}")),
        description: None,
        group_type: GroupType::Team,
        parent_id: parent,
        max_members: None,
        active: true,
        settings: JsonObject::default(),
    }
}

async fn group(store: &Rig, tenant: TenantId, name: &str, parent: Option<GroupId>) -> Group {
    store
        .create_group(tenant, new_group(name, parent), &ctx())
        .await
        .unwrap()
}

async fn capped_group(store: &Rig, tenant: TenantId, name: &str, max: i32) -> Group {
    let new = NewGroup {
        max_members: Some(max),
        ..new_group(name, None)
    };
    store.create_group(tenant, new, &ctx()).await.unwrap()
}

fn set_parent(parent: Option<GroupId>) -> GroupPatch {
    GroupPatch {
        parent_id: match parent {
            Some(p) => Patch::Set(p),
            None => Patch::Clear,
        },
        ..Default::default()
    }
}

fn rename_group(name: &str) -> GroupPatch {
    GroupPatch {
        name: Some(ident(name)),
        ..Default::default()
    }
}

async fn add(
    store: &Rig,
    tenant: TenantId,
    group: GroupId,
    users: &[UserId],
) -> Vec<MemberAddResult> {
    store
        .add_group_members(
            tenant,
            group,
            users.to_vec(),
            GroupMemberRole::Member,
            &ctx(),
        )
        .await
        .unwrap()
}

/// Adds one user and returns the member.
async fn add_one(store: &Rig, tenant: TenantId, group: GroupId, user: UserId) -> GroupMember {
    let mut results = add(store, tenant, group, &[user]).await;
    assert_eq!(results.len(), 1);
    let r = results.remove(0);
    assert_eq!(r.user_id, user);
    r.outcome.unwrap()
}

fn outcomes(results: &[MemberAddResult]) -> Vec<Result<UserId, MemberAddFailure>> {
    results
        .iter()
        .map(|r| r.outcome.as_ref().map(|m| m.user_id).map_err(|f| *f))
        .collect()
}

fn member_ids(members: &[GroupMember]) -> Vec<UserId> {
    members.iter().map(|m| m.user_id).collect()
}

async fn members(store: &Rig, tenant: TenantId, group: GroupId) -> Vec<UserId> {
    member_ids(&store.list_group_members(tenant, group).await.unwrap())
}

/// A valid policy told apart by `name` (the department it is about).
fn cedar(effect: PolicyEffect, name: &str) -> String {
    format!(
        "{}(principal, action == Action::\"users:read\", resource) \
         when {{ resource has department && resource.department == \"{name}\" }};",
        effect.as_str()
    )
}

fn new_policy(name: &str, effect: PolicyEffect, active: bool) -> NewPolicy {
    NewPolicy {
        name: ident(name),
        description: None,
        effect,
        source: cedar(effect, name),
        active,
    }
}

async fn policy(
    store: &Rig,
    tenant: TenantId,
    name: &str,
    effect: PolicyEffect,
    active: bool,
) -> Policy {
    store
        .create_policy(tenant, new_policy(name, effect, active), &ctx())
        .await
        .unwrap()
}

/// The user's direct assignments, by role name.
async fn user_roles(store: &Rig, tenant: TenantId, user: UserId) -> Vec<RoleAssignment> {
    let mut v = store.list_user_roles(tenant, user).await.unwrap();
    v.sort_by(|a, b| a.role_name.cmp(&b.role_name));
    v
}

async fn user_role_names(store: &Rig, tenant: TenantId, user: UserId) -> Vec<String> {
    user_roles(store, tenant, user)
        .await
        .into_iter()
        .map(|a| a.role_name)
        .collect()
}

async fn version(store: &Rig, tenant: TenantId) -> i64 {
    store.authz_version(tenant).await.unwrap()
}

fn err<T: Debug>(r: domain::Result<T>) -> Error {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e,
    }
}

#[track_caller]
fn assert_field_error(e: &Error, field: &str, code: &str) {
    match e {
        Error::Validation(errors) => assert!(
            errors.iter().any(|f| f.field == field && f.code == code),
            "expected {field}/{code}, got {errors:?}"
        ),
        other => panic!("expected a validation error {field}/{code}, got {other:?}"),
    }
}

#[track_caller]
fn assert_not_found(e: &Error, entity: &str) {
    assert!(
        matches!(e, Error::NotFound { entity: got } if *got == entity),
        "expected {entity} not found, got {e:?}"
    );
}

/// A conflict with this code (and this field, when one is given).
#[track_caller]
fn assert_conflict(e: &Error, code: &str, field: Option<&str>) {
    match e {
        Error::Refused {
            code: got,
            fields: got_fields,
            ..
        } => {
            assert_eq!(got.as_str(), code, "{e:?}");
            if let Some(f) = field {
                assert_eq!(got_fields.as_slice(), [f], "{e:?}");
            }
        }
        other => panic!("expected a conflict {code}, got {other:?}"),
    }
}

#[track_caller]
fn assert_forbidden(e: &Error, code: &str) {
    assert!(
        matches!(e, Error::Refused { code: got, .. } if got.as_str() == code),
        "expected forbidden {code}, got {e:?}"
    );
}

#[track_caller]
fn assert_last_super_admin(e: &Error) {
    assert_conflict(e, "last_super_admin", None);
}

/// Every audit event of `tenant` that `base` selects, newest first.
async fn walk_events(store: &Rig, tenant: TenantId, base: &AuditQuery) -> Vec<AuditEvent> {
    let mut q = base.clone();
    q.limit = PageSize::new(Some(200)).unwrap();
    q.before_id = None;
    let mut all = Vec::new();
    loop {
        let page = store.list_audit_events(tenant, &q).await.unwrap();
        all.extend(page.items);
        match page.next_cursor {
            Some(c) => q.before_id = Some(decode_cursor::<AuditEventId>(&c).unwrap()),
            None => break,
        }
        assert!(all.len() <= 100_000, "paging does not end");
    }
    all
}

async fn all_events(store: &Rig, tenant: TenantId) -> Vec<AuditEvent> {
    walk_events(store, tenant, &AuditQuery::default()).await
}

/// The events of one action, newest first.
async fn events_of(store: &Rig, tenant: TenantId, action: &str) -> Vec<AuditEvent> {
    let q = AuditQuery {
        action: Some(action.to_owned()),
        ..Default::default()
    };
    walk_events(store, tenant, &q).await
}

/// The events of one action about one entity, newest first.
async fn events_about(
    store: &Rig,
    tenant: TenantId,
    action: &str,
    entity: Uuid,
) -> Vec<AuditEvent> {
    let q = AuditQuery {
        action: Some(action.to_owned()),
        entity_id: Some(entity),
        ..Default::default()
    };
    walk_events(store, tenant, &q).await
}

/// The one event of `action` about `entity`.
async fn only_event(store: &Rig, tenant: TenantId, action: &str, entity: Uuid) -> AuditEvent {
    let mut events = events_about(store, tenant, action, entity).await;
    assert_eq!(
        events.len(),
        1,
        "{action} events about {entity}: {events:?}"
    );
    events.remove(0)
}

/// The events of one action about a user's assignment of one role, newest first (the
/// trail may also record the `user` role every new user is given).
async fn assignment_events(
    store: &Rig,
    tenant: TenantId,
    action: &str,
    user: UserId,
    role: RoleId,
) -> Vec<AuditEvent> {
    events_about(store, tenant, action, user.into_uuid())
        .await
        .into_iter()
        .filter(|e| {
            [&e.before, &e.after]
                .iter()
                .any(|v| v.as_ref().is_some_and(|v| v["role_id"] == json!(role)))
        })
        .collect()
}

/// `TenantAuthzData` in a comparable, order-independent form.
#[derive(Debug, PartialEq)]
struct Loaded {
    version: i64,
    roles: Vec<Role>,
    groups: Vec<GroupNode>,
    group_roles: Vec<(GroupId, RoleId)>,
    policies: Vec<Policy>,
    custom_permissions: Vec<Permission>,
}

fn comparable(d: TenantAuthzData) -> Loaded {
    let mut roles = d.roles;
    roles.sort_by_key(|r| r.id);
    let mut groups = d.groups;
    groups.sort_by_key(|g| g.id);
    let mut group_roles = d.group_roles;
    group_roles.sort();
    let mut policies = d.policies;
    policies.sort_by_key(|p| p.id);
    let mut custom_permissions = d.custom_permissions;
    custom_permissions.sort_by(|a, b| a.permission.cmp(&b.permission));
    Loaded {
        version: d.version,
        roles,
        groups,
        group_roles,
        policies,
        custom_permissions,
    }
}

async fn loaded(store: &Rig, tenant: TenantId) -> Loaded {
    comparable(store.load_tenant_authz(tenant).await.unwrap())
}

/// Everything the authorization store (and the trail) holds for a tenant.
#[derive(Debug, PartialEq)]
struct Snapshot {
    version: i64,
    loaded: Loaded,
    roles: Vec<Role>,
    custom_permissions: Vec<Permission>,
    groups: Vec<GroupSummary>,
    members: Vec<Vec<GroupMember>>,
    group_roles: Vec<Vec<Role>>,
    policies: Vec<Policy>,
    policy_versions: Vec<Vec<PolicyVersion>>,
    users: Vec<User>,
    user_roles: Vec<Vec<RoleAssignment>>,
    events: Vec<AuditEvent>,
}

async fn snapshot(store: &Rig, tenant: TenantId, users: &[UserId]) -> Snapshot {
    let s = store;
    let groups = s.list_groups(tenant).await.unwrap();
    let mut members = Vec::new();
    let mut group_roles = Vec::new();
    for g in &groups {
        members.push(s.list_group_members(tenant, g.group.id).await.unwrap());
        group_roles.push(s.list_group_roles(tenant, g.group.id).await.unwrap());
    }
    let policies = s.list_policies(tenant).await.unwrap();
    let mut policy_versions = Vec::new();
    for p in &policies {
        policy_versions.push(s.list_policy_versions(tenant, p.id).await.unwrap());
    }
    let mut user_rows = Vec::new();
    let mut assignments = Vec::new();
    for u in users {
        user_rows.push(s.get_user(tenant, *u).await.unwrap());
        assignments.push(user_roles(s, tenant, *u).await);
    }
    let mut custom_permissions = s.list_custom_permissions(tenant).await.unwrap();
    custom_permissions.sort_by(|a, b| a.permission.cmp(&b.permission));
    Snapshot {
        version: version(s, tenant).await,
        loaded: loaded(s, tenant).await,
        roles: s.list_roles(tenant).await.unwrap(),
        custom_permissions,
        groups,
        members,
        group_roles,
        policies,
        policy_versions,
        users: user_rows,
        user_roles: assignments,
        events: all_events(s, tenant).await,
    }
}

/// Asserts the group tree of the tenant has no cycle.
async fn assert_acyclic(store: &Rig, tenant: TenantId) {
    let groups = store.list_groups(tenant).await.unwrap();
    let parent: HashMap<GroupId, Option<GroupId>> = groups
        .iter()
        .map(|g| (g.group.id, g.group.parent_id))
        .collect();
    for start in parent.keys() {
        let mut at = Some(*start);
        let mut steps = 0;
        while let Some(g) = at {
            assert!(steps <= parent.len(), "a cycle through {start}: {groups:?}");
            at = parent.get(&g).copied().flatten();
            steps += 1;
        }
    }
}

// ------------------------------------------------------------------------------------------
// Roles and permissions
// ------------------------------------------------------------------------------------------

async fn case_default_roles_seeded_and_listed(store: Rig) {
    let s = &store;
    let before = now();
    let t = tenant(s, "acme").await;
    let other = tenant(s, "globex").await;

    let roles = s.list_roles(t.id).await.unwrap();
    assert_eq!(
        role_names(&roles),
        [SUPER_ADMIN_ROLE_NAME, ADMIN_ROLE, MANAGER_ROLE, USER_ROLE]
    );
    let sa = &roles[0];
    assert_eq!(sa.id, SUPER_ADMIN_ROLE_ID);
    assert!(sa.is_super_admin());
    assert_eq!(sa.tenant_id, None);
    assert_eq!(sa.display_name, "Super administrator");
    assert_eq!(sa.role_type, RoleType::System);
    assert_eq!(sa.priority, 1000);
    assert!(sa.active);
    assert!(sa.permissions.is_empty());
    assert_eq!(s.get_role(t.id, SUPER_ADMIN_ROLE_ID).await.unwrap(), *sa);

    let defaults = default_roles();
    assert_eq!(defaults.len(), 3);
    for (role, default) in roles[1..].iter().zip(&defaults) {
        assert_eq!(role.name, default.name);
        assert_eq!(role.tenant_id, Some(t.id));
        assert_eq!(role.display_name, default.display_name);
        assert_eq!(role.description.as_deref(), Some(default.description));
        assert_eq!(role.role_type, RoleType::System);
        assert_eq!(role.priority, default.priority);
        assert!(role.active);
        assert_eq!(role.permissions, default.permissions, "{}", role.name);
        assert!(role.created_at >= before);
        assert_eq!(s.get_role(t.id, role.id).await.unwrap(), *role);
    }

    // Each tenant has its own copies; the super administrator role is one for all.
    let theirs = s.list_roles(other.id).await.unwrap();
    assert_eq!(role_names(&theirs), role_names(&roles));
    assert_eq!(theirs[0], *sa);
    for (mine, their) in roles[1..].iter().zip(&theirs[1..]) {
        assert_ne!(mine.id, their.id);
        assert_eq!(their.tenant_id, Some(other.id));
        assert_eq!(their.permissions, mine.permissions);
        assert_not_found(&err(s.get_role(t.id, their.id).await), "role");
    }
    assert_not_found(&err(s.get_role(t.id, RoleId::new()).await), "role");
    assert!(s.list_custom_permissions(t.id).await.unwrap().is_empty());

    // The engine sees the same roles.
    let mut listed = roles.clone();
    listed.sort_by_key(|r| r.id);
    assert_eq!(loaded(s, t.id).await.roles, listed);

    // Migrating again neither duplicates nor changes them.
    s.migrate().await.unwrap();
    assert_eq!(s.list_roles(t.id).await.unwrap(), roles);
    assert_eq!(s.list_roles(other.id).await.unwrap(), theirs);
}

async fn case_new_users_hold_the_user_role(store: Rig) {
    let s = &store;
    let t = tenant(s, "acme").await;
    let other = tenant(s, "globex").await;
    let user_role = role_named(s, t.id, USER_ROLE).await;

    let created = user(s, t.id, "created@acme.test", "Created").await;
    let registered = s
        .create_user_with_password(
            t.id,
            new_user("registered@acme.test", "Registered"),
            Some(NewPassword {
                hash: "$argon2id$registered".into(),
                must_change: false,
                keep_history: 5,
            }),
            actions::USER_REGISTER,
            &ctx(),
        )
        .await
        .unwrap();
    let invited = s
        .create_user_with_password(
            t.id,
            new_user("invited@acme.test", "Invited"),
            None,
            actions::USER_CREATE,
            &ctx(),
        )
        .await
        .unwrap();
    let seeded = vec![
        seed_user(t.id, "seed1@acme.test", "Seed One"),
        seed_user(t.id, "seed2@acme.test", "Seed Two"),
    ];
    assert_eq!(s.seed_users(t.id, seeded.clone(), &ctx()).await.unwrap(), 2);

    let everyone = [
        created.id,
        registered.id,
        invited.id,
        seeded[0].id,
        seeded[1].id,
    ];
    let mut assignments = Vec::new();
    for u in everyone {
        let held = s.list_user_roles(t.id, u).await.unwrap();
        assert_eq!(held.len(), 1, "{held:?}");
        let a = &held[0];
        assert_eq!(a.user_id, u);
        assert_eq!(a.role_id, user_role.id);
        assert_eq!(a.role_name, USER_ROLE);
        assert_eq!(a.assigned_by_type, ActorType::System);
        assert_eq!(a.assigned_by, None);
        assert_eq!(a.expires_at, None);
        let p = s.load_principal(t.id, u).await.unwrap().unwrap();
        assert_eq!(p.assignments, held);
        assignments.push(held);
    }

    // A user of another tenant is given that tenant's own `user` role.
    let theirs = user(s, other.id, "them@globex.test", "Them").await;
    let held = s.list_user_roles(other.id, theirs.id).await.unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].role_id, role_named(s, other.id, USER_ROLE).await.id);
    assert_ne!(held[0].role_id, user_role.id);

    // Migrating again does not give anyone a second copy.
    s.migrate().await.unwrap();
    for (u, before) in everyone.iter().zip(&assignments) {
        assert_eq!(&s.list_user_roles(t.id, *u).await.unwrap(), before);
    }
}

async fn case_role_crud(store: Rig) {
    let s = &store;
    let t = tenant(s, "acme").await;
    let other = tenant(s, "globex").await;

    let before = now();
    let new = NewRole {
        name: ident("auditor"),
        display_name: display("Auditor"),
        description: Some(desc("Reads the trail")),
        priority: 40,
        active: true,
        permissions: perms(&["users:read:all", "audit_logs:read:all", "users:read:all"]),
    };
    let r = s.create_role(t.id, new, &ctx()).await.unwrap();
    assert_eq!(r.tenant_id, Some(t.id));
    assert_eq!(r.name, "auditor");
    assert_eq!(r.display_name, "Auditor");
    assert_eq!(r.description.as_deref(), Some("Reads the trail"));
    assert_eq!(r.role_type, RoleType::Custom);
    assert_eq!(r.priority, 40);
    assert!(r.active);
    assert_eq!(
        r.permissions,
        sorted(&["audit_logs:read:all", "users:read:all"]),
        "sorted, without duplicates"
    );
    assert!(r.created_at >= before && r.updated_at == r.created_at);
    assert_eq!(s.get_role(t.id, r.id).await.unwrap(), r);

    // By priority, highest first, then by name.
    let zeta = role(s, t.id, "zeta", 50, &[]).await;
    let alpha = role(s, t.id, "alpha", 50, &["groups:read:all"]).await;
    assert_eq!(
        role_names(&s.list_roles(t.id).await.unwrap()),
        [
            "super_admin",
            "admin",
            "alpha",
            "manager",
            "zeta",
            "auditor",
            "user"
        ]
    );

    // Names are unique per tenant, default roles included.
    for name in ["auditor", "admin", "user"] {
        let e = err(s.create_role(t.id, new_role(name, 1, &[]), &ctx()).await);
        assert_conflict(&e, "role_name_taken", Some("name"));
    }
    let e = err(s
        .update_role(
            t.id,
            alpha.id,
            RolePatch {
                name: Some(ident("zeta")),
                ..Default::default()
            },
            &ctx(),
        )
        .await);
    assert_conflict(&e, "role_name_taken", Some("name"));
    assert_eq!(s.get_role(t.id, alpha.id).await.unwrap(), alpha);
    // The same name is free in another tenant.
    let theirs = role(s, other.id, "auditor", 40, &[]).await;
    assert_eq!(theirs.tenant_id, Some(other.id));

    // An update of every field.
    let patch = RolePatch {
        name: Some(ident("auditors")),
        display_name: Some(display("Auditors")),
        description: Patch::Clear,
        priority: Some(45),
        active: Some(false),
    };
    let u = s.update_role(t.id, r.id, patch, &ctx()).await.unwrap();
    assert_eq!(
        u,
        Role {
            name: "auditors".into(),
            display_name: "Auditors".into(),
            description: None,
            priority: 45,
            active: false,
            updated_at: u.updated_at,
            ..r.clone()
        }
    );
    assert!(u.updated_at >= r.updated_at);
    assert_eq!(s.get_role(t.id, r.id).await.unwrap(), u);
    // Inactive roles are still listed.
    assert!(role_names(&s.list_roles(t.id).await.unwrap()).contains(&"auditors"));
    // Keeping one's own name is no conflict; setting a description back works.
    let u2 = s
        .update_role(
            t.id,
            r.id,
            RolePatch {
                name: Some(ident("auditors")),
                description: Patch::Set(desc("Again")),
                ..Default::default()
            },
            &ctx(),
        )
        .await
        .unwrap();
    assert_eq!(u2.name, "auditors");
    assert_eq!(u2.description.as_deref(), Some("Again"));

    // A system role keeps its name and cannot be deleted, but may be reworded.
    let manager = role_named(s, t.id, MANAGER_ROLE).await;
    let e = err(s
        .update_role(
            t.id,
            manager.id,
            RolePatch {
                name: Some(ident("boss")),
                ..Default::default()
            },
            &ctx(),
        )
        .await);
    assert_forbidden(&e, "system_role");
    assert_forbidden(
        &err(s.delete_role(t.id, manager.id, &ctx()).await),
        "system_role",
    );
    assert_eq!(s.get_role(t.id, manager.id).await.unwrap(), manager);
    let m2 = s
        .update_role(
            t.id,
            manager.id,
            RolePatch {
                name: Some(ident("manager")),
                display_name: Some(display("Line manager")),
                priority: Some(60),
                ..Default::default()
            },
            &ctx(),
        )
        .await
        .unwrap();
    assert_eq!(
        m2,
        Role {
            display_name: "Line manager".into(),
            priority: 60,
            updated_at: m2.updated_at,
            ..manager.clone()
        }
    );

    // The super administrator role cannot change at all.
    let sa = s.get_role(t.id, SUPER_ADMIN_ROLE_ID).await.unwrap();
    for patch in [
        RolePatch::default(),
        RolePatch {
            display_name: Some(display("Root")),
            ..Default::default()
        },
        RolePatch {
            name: Some(ident("root")),
            ..Default::default()
        },
    ] {
        let e = err(s
            .update_role(t.id, SUPER_ADMIN_ROLE_ID, patch, &ctx())
            .await);
        assert_forbidden(&e, "super_admin_immutable");
    }
    assert_forbidden(
        &err(s.delete_role(t.id, SUPER_ADMIN_ROLE_ID, &ctx()).await),
        "super_admin_immutable",
    );
    let e = err(s
        .update_role_permissions(
            t.id,
            SUPER_ADMIN_ROLE_ID,
            perms(&["users:read:all"]),
            vec![],
            &ctx(),
        )
        .await);
    assert_forbidden(&e, "super_admin_immutable");
    assert_eq!(s.get_role(t.id, SUPER_ADMIN_ROLE_ID).await.unwrap(), sa);

    // A role cannot be created with a permission that does not exist.
    let e = err(s
        .create_role(t.id, new_role("broken", 1, &["users:fly:all"]), &ctx())
        .await);
    assert_field_error(&e, "permissions", "unknown_permission");
    assert!(!role_names(&s.list_roles(t.id).await.unwrap()).contains(&"broken"));

    // Deleting a custom role.
    let gone = s.delete_role(t.id, zeta.id, &ctx()).await.unwrap();
    assert_eq!(gone, zeta);
    assert_not_found(&err(s.get_role(t.id, zeta.id).await), "role");
    assert_not_found(&err(s.delete_role(t.id, zeta.id, &ctx()).await), "role");
    assert_not_found(
        &err(s
            .update_role(t.id, zeta.id, RolePatch::default(), &ctx())
            .await),
        "role",
    );
    assert_not_found(
        &err(s
            .update_role_permissions(t.id, zeta.id, vec![], vec![], &ctx())
            .await),
        "role",
    );
    assert!(!role_names(&s.list_roles(t.id).await.unwrap()).contains(&"zeta"));
    // Its name is free again.
    role(s, t.id, "zeta", 5, &[]).await;
}

async fn case_role_permissions_and_custom_permissions(store: Rig) {
    let s = &store;
    let t = tenant(s, "acme").await;
    let other = tenant(s, "globex").await;
    let r = role(s, t.id, "support", 20, &["users:read:own"]).await;
    let events_before = events_of(s, t.id, actions::ROLE_PERMISSIONS_UPDATE)
        .await
        .len();
    let mut calls = 0;

    // Additions (a duplicate is harmless), then removals (of a permission not held, too).
    let u = s
        .update_role_permissions(
            t.id,
            r.id,
            perms(&["users:read:all", "users:read:own", "sessions:delete:all"]),
            perms(&["sessions:read:own"]),
            &ctx(),
        )
        .await
        .unwrap();
    calls += 1;
    assert_eq!(
        u.permissions,
        sorted(&["sessions:delete:all", "users:read:all", "users:read:own"])
    );
    assert_eq!(u.id, r.id);
    assert_eq!(s.get_role(t.id, r.id).await.unwrap(), u);

    // A key in both lists ends up removed: additions come first.
    let u2 = s
        .update_role_permissions(
            t.id,
            r.id,
            perms(&["users:update:own"]),
            perms(&["users:update:own", "users:read:own"]),
            &ctx(),
        )
        .await
        .unwrap();
    calls += 1;
    assert_eq!(
        u2.permissions,
        sorted(&["sessions:delete:all", "users:read:all"])
    );

    // Unknown permissions refuse the whole change.
    let version_before = version(s, t.id).await;
    for bad in [
        &["users:fly:all"][..],
        &["invoices:approve:department"][..],
        &["users:read:department", "reports:export:all"][..],
    ] {
        let e = err(s
            .update_role_permissions(t.id, r.id, perms(bad), vec![], &ctx())
            .await);
        assert_field_error(&e, "add", "unknown_permission");
    }
    assert_eq!(s.get_role(t.id, r.id).await.unwrap(), u2);
    assert_eq!(version(s, t.id).await, version_before);

    // A tenant's own permission.
    let before = now();
    let p = s
        .create_permission(
            t.id,
            NewPermission {
                key: perm("invoices:approve:department"),
                description: Some(desc("Approve the invoices of one's department")),
            },
            &ctx(),
        )
        .await
        .unwrap();
    assert_eq!(p.permission, perm("invoices:approve:department"));
    assert_eq!(p.resource, "invoices");
    assert_eq!(p.action, "approve");
    assert_eq!(p.scope, Scope::Department);
    assert_eq!(p.description, "Approve the invoices of one's department");
    assert!(!p.built_in);
    assert!(p.created_at.is_some_and(|at| at >= before));
    assert_eq!(
        s.list_custom_permissions(t.id).await.unwrap(),
        vec![p.clone()]
    );
    let e = err(s
        .create_permission(
            t.id,
            NewPermission {
                key: perm("invoices:approve:department"),
                description: None,
            },
            &ctx(),
        )
        .await);
    assert_conflict(&e, "permission_exists", None);
    assert_eq!(
        s.list_custom_permissions(t.id).await.unwrap(),
        vec![p.clone()]
    );

    // ... is usable in roles from then on, at the scope it was defined with.
    let u3 = s
        .update_role_permissions(
            t.id,
            r.id,
            perms(&["invoices:approve:department"]),
            vec![],
            &ctx(),
        )
        .await
        .unwrap();
    calls += 1;
    assert_eq!(
        u3.permissions,
        sorted(&[
            "invoices:approve:department",
            "sessions:delete:all",
            "users:read:all"
        ])
    );
    let approver = role(s, t.id, "approver", 5, &["invoices:approve:department"]).await;
    assert_eq!(
        approver.permissions,
        perms(&["invoices:approve:department"])
    );
    let e = err(s
        .update_role_permissions(t.id, r.id, perms(&["invoices:approve:all"]), vec![], &ctx())
        .await);
    assert_field_error(&e, "add", "unknown_permission");

    // ... but not in another tenant, which has a catalogue of its own.
    let theirs = role(s, other.id, "support", 20, &[]).await;
    let e = err(s
        .update_role_permissions(
            other.id,
            theirs.id,
            perms(&["invoices:approve:department"]),
            vec![],
            &ctx(),
        )
        .await);
    assert_field_error(&e, "add", "unknown_permission");
    assert!(s
        .list_custom_permissions(other.id)
        .await
        .unwrap()
        .is_empty());
    let their_p = s
        .create_permission(
            other.id,
            NewPermission {
                key: perm("invoices:approve:department"),
                description: None,
            },
            &ctx(),
        )
        .await
        .unwrap();
    assert_eq!(
        s.list_custom_permissions(other.id).await.unwrap(),
        vec![their_p]
    );
    assert_eq!(s.list_custom_permissions(t.id).await.unwrap(), vec![p]);

    // A system role's permissions may change.
    let user_role = role_named(s, t.id, USER_ROLE).await;
    let ur = s
        .update_role_permissions(
            t.id,
            user_role.id,
            perms(&["groups:read:all"]),
            perms(&["directory:read:all"]),
            &ctx(),
        )
        .await
        .unwrap();
    calls += 1;
    assert!(ur.permissions.contains(&perm("groups:read:all")));
    assert!(!ur.permissions.contains(&perm("directory:read:all")));
    assert_eq!(ur.role_type, RoleType::System);

    // Removing only what the role lacks is no error and changes nothing of the role.
    let same = s
        .update_role_permissions(t.id, r.id, vec![], perms(&["tenants:delete:all"]), &ctx())
        .await
        .unwrap();
    calls += 1;
    assert_eq!(same.permissions, u3.permissions);

    // One event per successful call.
    assert_eq!(
        events_of(s, t.id, actions::ROLE_PERMISSIONS_UPDATE)
            .await
            .len(),
        events_before + calls
    );
}

async fn case_assignments(store: Rig) {
    let s = &store;
    let t = tenant(s, "acme").await;
    let other = tenant(s, "globex").await;
    let u = user(s, t.id, "u@acme.test", "U").await;
    let gone = user(s, t.id, "gone@acme.test", "Gone").await;
    s.delete_user(t.id, gone.id, None, &ctx()).await.unwrap();
    let theirs = user(s, other.id, "them@globex.test", "Them").await;
    let r = role(s, t.id, "oncall", 30, &["sessions:read:all"]).await;
    let their_role = role(s, other.id, "oncall", 30, &[]).await;

    let before = now();
    let e1 = now() + TimeDelta::days(7);
    let (a, new) = s
        .assign_role(t.id, u.id, r.id, Some(e1), &ctx())
        .await
        .unwrap();
    assert!(new);
    assert_eq!(a.user_id, u.id);
    assert_eq!(a.role_id, r.id);
    assert_eq!(a.role_name, "oncall");
    assert_eq!(a.assigned_by_type, ActorType::ApiKey);
    assert_eq!(a.assigned_by, Some(Uuid::from_u128(KEY)));
    assert!(a.assigned_at >= before);
    assert_eq!(a.expires_at, Some(e1));
    let held = user_roles(s, t.id, u.id).await;
    assert_eq!(held.len(), 2);
    assert_eq!(held[0], a);
    assert_eq!(held[1].role_name, USER_ROLE);

    // Assigning again changes the expiry of the one assignment.
    let e2 = now() + TimeDelta::days(30);
    let (b, new) = s
        .assign_role(t.id, u.id, r.id, Some(e2), &ctx())
        .await
        .unwrap();
    assert!(!new);
    assert_eq!((b.user_id, b.role_id), (u.id, r.id));
    assert_eq!(b.expires_at, Some(e2));
    let held = user_roles(s, t.id, u.id).await;
    assert_eq!(held.len(), 2);
    assert_eq!(held[0], b);
    let (c, new) = s.assign_role(t.id, u.id, r.id, None, &ctx()).await.unwrap();
    assert!(!new);
    assert_eq!(c.expires_at, None);
    assert_eq!(user_roles(s, t.id, u.id).await[0], c);

    // The super administrator role may be given to a tenant's users.
    let (sa, new) = s
        .assign_role(t.id, u.id, SUPER_ADMIN_ROLE_ID, None, &ctx())
        .await
        .unwrap();
    assert!(new);
    assert_eq!(sa.role_name, SUPER_ADMIN_ROLE_NAME);
    assert_eq!(
        user_role_names(s, t.id, u.id).await,
        ["oncall", "super_admin", "user"]
    );
    // Listed by priority, highest first, then by name.
    let low = role(s, t.id, "alpha", 30, &[]).await;
    s.assign_role(t.id, u.id, low.id, None, &ctx())
        .await
        .unwrap();
    let listed: Vec<String> = s
        .list_user_roles(t.id, u.id)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.role_name)
        .collect();
    assert_eq!(listed, ["super_admin", "alpha", "oncall", "user"]);
    s.unassign_role(t.id, u.id, low.id, &ctx()).await.unwrap();
    // Listing needs a user of the tenant; a deleted one's assignments are still there.
    for who in [UserId::new(), theirs.id] {
        assert_not_found(&err(s.list_user_roles(t.id, who).await), "user");
    }

    // Only to a live user of the tenant, and only a role of the tenant.
    for who in [UserId::new(), gone.id, theirs.id] {
        assert_not_found(
            &err(s.assign_role(t.id, who, r.id, None, &ctx()).await),
            "user",
        );
    }
    for what in [their_role.id, RoleId::new()] {
        let e = err(s.assign_role(t.id, u.id, what, None, &ctx()).await);
        assert_field_error(&e, "role_id", "unknown_role");
    }
    assert_eq!(user_role_names(s, t.id, gone.id).await, ["user"]);
    assert_eq!(user_role_names(s, other.id, theirs.id).await, ["user"]);

    // Unassigning.
    let removed = s.unassign_role(t.id, u.id, r.id, &ctx()).await.unwrap();
    assert_eq!(removed, c);
    assert_eq!(
        user_role_names(s, t.id, u.id).await,
        ["super_admin", "user"]
    );
    assert_not_found(
        &err(s.unassign_role(t.id, u.id, r.id, &ctx()).await),
        "role_assignment",
    );
    assert_not_found(
        &err(s.unassign_role(t.id, u.id, their_role.id, &ctx()).await),
        "role_assignment",
    );
    // The role every user starts with goes like any other.
    let user_role = role_named(s, t.id, USER_ROLE).await;
    let removed = s
        .unassign_role(t.id, u.id, user_role.id, &ctx())
        .await
        .unwrap();
    assert_eq!(removed.role_id, user_role.id);
    assert_eq!(user_role_names(s, t.id, u.id).await, ["super_admin"]);
    // ... and may come back.
    let (_, new) = s
        .assign_role(t.id, u.id, user_role.id, None, &ctx())
        .await
        .unwrap();
    assert!(new);
}

async fn case_last_super_admin(store: Rig) {
    let s = &store;
    let a = tenant(s, "acme").await;
    let b = tenant(s, "globex").await;
    let a1 = user(s, a.id, "a1@acme.test", "A One").await;
    let a2 = user(s, a.id, "a2@acme.test", "A Two").await;
    let b1 = user(s, b.id, "b1@globex.test", "B One").await;

    // Nobody holds the role: nothing is protected.
    s.update_user(a.id, a1.id, status(UserStatus::Blocked), None, &ctx())
        .await
        .unwrap();
    s.update_user(a.id, a1.id, status(UserStatus::Active), None, &ctx())
        .await
        .unwrap();
    s.delete_user(a.id, a2.id, None, &ctx()).await.unwrap();
    s.restore_user(a.id, a2.id, &ctx()).await.unwrap();

    // One holder: it cannot lose the role, be deleted, or stop being active.
    s.assign_role(a.id, a1.id, SUPER_ADMIN_ROLE_ID, None, &ctx())
        .await
        .unwrap();
    let a1_now = s.get_user(a.id, a1.id).await.unwrap();
    let version_before = version(s, a.id).await;
    let events_before = all_events(s, a.id).await;
    assert_last_super_admin(&err(s
        .unassign_role(a.id, a1.id, SUPER_ADMIN_ROLE_ID, &ctx())
        .await));
    assert_last_super_admin(&err(s.delete_user(a.id, a1.id, None, &ctx()).await));
    for st in UserStatus::ALL
        .iter()
        .filter(|st| **st != UserStatus::Active)
    {
        assert_last_super_admin(&err(s
            .update_user(a.id, a1.id, status(*st), None, &ctx())
            .await));
        // Together with other changes, too.
        let patch = UserPatch {
            status: Some(*st),
            ..rename("Renamed Too")
        };
        assert_last_super_admin(&err(s.update_user(a.id, a1.id, patch, None, &ctx()).await));
    }
    assert_eq!(s.get_user(a.id, a1.id).await.unwrap(), a1_now);
    assert_eq!(
        user_role_names(s, a.id, a1.id).await,
        ["super_admin", "user"]
    );
    assert_eq!(version(s, a.id).await, version_before);
    assert_eq!(all_events(s, a.id).await, events_before);

    // Changes that keep the holder active are fine.
    s.update_user(a.id, a1.id, rename("A Prime"), None, &ctx())
        .await
        .unwrap();
    s.update_user(a.id, a1.id, status(UserStatus::Active), None, &ctx())
        .await
        .unwrap();

    // A second holder, in another tenant: either may go, but not both.
    s.assign_role(b.id, b1.id, SUPER_ADMIN_ROLE_ID, None, &ctx())
        .await
        .unwrap();
    s.unassign_role(a.id, a1.id, SUPER_ADMIN_ROLE_ID, &ctx())
        .await
        .unwrap();
    assert_last_super_admin(&err(s.delete_user(b.id, b1.id, None, &ctx()).await));
    assert_last_super_admin(&err(s
        .unassign_role(b.id, b1.id, SUPER_ADMIN_ROLE_ID, &ctx())
        .await));
    assert_last_super_admin(&err(s
        .update_user(b.id, b1.id, status(UserStatus::Suspended), None, &ctx())
        .await));
    s.assign_role(a.id, a1.id, SUPER_ADMIN_ROLE_ID, None, &ctx())
        .await
        .unwrap();
    s.delete_user(b.id, b1.id, None, &ctx()).await.unwrap();
    s.restore_user(b.id, b1.id, &ctx()).await.unwrap();

    // Holders who are not active protect nobody ...
    s.update_user(b.id, b1.id, status(UserStatus::Blocked), None, &ctx())
        .await
        .unwrap();
    assert_last_super_admin(&err(s.delete_user(a.id, a1.id, None, &ctx()).await));
    s.assign_role(a.id, a2.id, SUPER_ADMIN_ROLE_ID, None, &ctx())
        .await
        .unwrap();
    s.delete_user(a.id, a2.id, None, &ctx()).await.unwrap();
    assert_last_super_admin(&err(s
        .update_user(a.id, a1.id, status(UserStatus::Inactive), None, &ctx())
        .await));
    assert_last_super_admin(&err(s
        .unassign_role(a.id, a1.id, SUPER_ADMIN_ROLE_ID, &ctx())
        .await));
    // ... and may lose the role themselves.
    s.unassign_role(b.id, b1.id, SUPER_ADMIN_ROLE_ID, &ctx())
        .await
        .unwrap();
    s.update_user(b.id, b1.id, status(UserStatus::Active), None, &ctx())
        .await
        .unwrap();
    assert_last_super_admin(&err(s
        .unassign_role(a.id, a1.id, SUPER_ADMIN_ROLE_ID, &ctx())
        .await));
    assert_eq!(
        user_role_names(s, a.id, a1.id).await,
        ["super_admin", "user"]
    );
}

// ------------------------------------------------------------------------------------------
// Groups
// ------------------------------------------------------------------------------------------

async fn case_groups_crud_parents_and_cycles(store: Rig) {
    let s = &store;
    let t = tenant(s, "acme").await;
    let other = tenant(s, "globex").await;

    let before = now();
    let new = NewGroup {
        name: ident("engineering"),
        display_name: display("Engineering"),
        description: Some(desc("Builds things")),
        group_type: GroupType::Department,
        parent_id: None,
        max_members: Some(50),
        active: true,
        settings: object(json!({ "slack": "#eng", "budget": { "q1": 10, "ratio": 0.5 } })),
    };
    let root = s.create_group(t.id, new, &ctx()).await.unwrap();
    assert_eq!(root.tenant_id, t.id);
    assert_eq!(root.name, "engineering");
    assert_eq!(root.display_name, "Engineering");
    assert_eq!(root.description.as_deref(), Some("Builds things"));
    assert_eq!(root.group_type, GroupType::Department);
    assert_eq!(root.parent_id, None);
    assert_eq!(root.max_members, Some(50));
    assert!(root.active);
    assert_eq!(
        Value::Object(root.settings.clone()),
        json!({ "slack": "#eng", "budget": { "q1": 10, "ratio": 0.5 } })
    );
    assert!(root.created_at >= before && root.updated_at == root.created_at);
    assert_eq!(
        s.get_group(t.id, root.id).await.unwrap(),
        GroupSummary {
            group: root.clone(),
            member_count: 0,
            active_member_count: 0
        }
    );
    let child = group(s, t.id, "backend", Some(root.id)).await;
    let leaf = group(s, t.id, "databases", Some(child.id)).await;
    assert_eq!(child.parent_id, Some(root.id));
    assert_eq!(leaf.parent_id, Some(child.id));
    let listed = s.list_groups(t.id).await.unwrap();
    let names: Vec<&str> = listed.iter().map(|g| g.group.name.as_str()).collect();
    assert_eq!(names, ["backend", "databases", "engineering"], "by name");
    assert_eq!(listed[2].group, root);

    // Names are unique per tenant.
    let e = err(s
        .create_group(t.id, new_group("backend", None), &ctx())
        .await);
    assert_conflict(&e, "group_name_taken", Some("name"));
    let e = err(s
        .update_group(t.id, leaf.id, rename_group("backend"), &ctx())
        .await);
    assert_conflict(&e, "group_name_taken", Some("name"));
    let foreign = group(s, other.id, "backend", None).await;

    // A parent is a group of the same tenant.
    for parent in [GroupId::new(), foreign.id] {
        let e = err(s
            .create_group(t.id, new_group("orphan", Some(parent)), &ctx())
            .await);
        assert_field_error(&e, "parent_id", "unknown_group");
        let e = err(s
            .update_group(t.id, leaf.id, set_parent(Some(parent)), &ctx())
            .await);
        assert_field_error(&e, "parent_id", "unknown_group");
    }

    // No group becomes its own ancestor: engineering → backend → databases.
    for (g, p) in [
        (root.id, leaf.id),
        (root.id, child.id),
        (child.id, leaf.id),
        (root.id, root.id),
        (leaf.id, leaf.id),
    ] {
        let e = err(s.update_group(t.id, g, set_parent(Some(p)), &ctx()).await);
        assert_field_error(&e, "parent_id", "cycle");
    }
    assert_eq!(s.get_group(t.id, root.id).await.unwrap().group, root);
    assert_eq!(s.get_group(t.id, child.id).await.unwrap().group, child);
    assert_eq!(s.get_group(t.id, leaf.id).await.unwrap().group, leaf);

    // Legal moves: databases under engineering, backend a root, then backend under
    // databases (engineering → databases → backend).
    let moved = s
        .update_group(t.id, leaf.id, set_parent(Some(root.id)), &ctx())
        .await
        .unwrap();
    assert_eq!(moved.parent_id, Some(root.id));
    let top = s
        .update_group(t.id, child.id, set_parent(None), &ctx())
        .await
        .unwrap();
    assert_eq!(top.parent_id, None);
    let under = s
        .update_group(t.id, child.id, set_parent(Some(leaf.id)), &ctx())
        .await
        .unwrap();
    assert_eq!(under.parent_id, Some(leaf.id));
    // Setting the parent one already has is fine.
    s.update_group(t.id, child.id, set_parent(Some(leaf.id)), &ctx())
        .await
        .unwrap();
    let e = err(s
        .update_group(t.id, root.id, set_parent(Some(child.id)), &ctx())
        .await);
    assert_field_error(&e, "parent_id", "cycle");
    assert_acyclic(s, t.id).await;

    // A group with children cannot be deleted.
    for g in [root.id, leaf.id] {
        let e = err(s.delete_group(t.id, g, &ctx()).await);
        assert_conflict(&e, "group_has_children", None);
    }

    // An update of every field but the parent.
    let current = s.get_group(t.id, root.id).await.unwrap().group;
    let patch = GroupPatch {
        name: Some(ident("platform")),
        display_name: Some(display("Platform")),
        description: Patch::Clear,
        group_type: Some(GroupType::Custom),
        parent_id: Patch::Keep,
        max_members: Patch::Clear,
        active: Some(false),
        settings: Some(object(json!({ "x": [1, 2] }))),
    };
    let updated = s.update_group(t.id, root.id, patch, &ctx()).await.unwrap();
    assert_eq!(
        updated,
        Group {
            name: "platform".into(),
            display_name: "Platform".into(),
            description: None,
            group_type: GroupType::Custom,
            max_members: None,
            active: false,
            settings: json!({ "x": [1, 2] }).as_object().unwrap().clone(),
            updated_at: updated.updated_at,
            ..current.clone()
        }
    );
    assert!(updated.updated_at >= current.updated_at);
    assert_eq!(s.get_group(t.id, root.id).await.unwrap().group, updated);
    let back = s
        .update_group(
            t.id,
            root.id,
            GroupPatch {
                max_members: Patch::Set(7),
                description: Patch::Set(desc("Back")),
                ..Default::default()
            },
            &ctx(),
        )
        .await
        .unwrap();
    assert_eq!(back.max_members, Some(7));
    assert_eq!(back.description.as_deref(), Some("Back"));

    // Deleting from the leaves up.
    let backend = s.get_group(t.id, child.id).await.unwrap().group;
    assert_eq!(
        s.delete_group(t.id, child.id, &ctx()).await.unwrap(),
        backend
    );
    assert_not_found(&err(s.get_group(t.id, child.id).await), "group");
    assert_not_found(&err(s.delete_group(t.id, child.id, &ctx()).await), "group");
    assert_not_found(
        &err(s
            .update_group(t.id, child.id, GroupPatch::default(), &ctx())
            .await),
        "group",
    );
    s.delete_group(t.id, leaf.id, &ctx()).await.unwrap();
    s.delete_group(t.id, root.id, &ctx()).await.unwrap();
    assert!(s.list_groups(t.id).await.unwrap().is_empty());
    // The other tenant's group is untouched.
    assert_eq!(
        s.get_group(other.id, foreign.id).await.unwrap().group,
        foreign
    );
}

async fn case_deletes_cascade(store: Rig) {
    let s = &store;
    let t = tenant(s, "acme").await;
    let u = user(s, t.id, "u@acme.test", "U").await;
    let v = user(s, t.id, "v@acme.test", "V").await;
    let r = role(s, t.id, "reviewer", 30, &["users:read:all"]).await;
    let g = group(s, t.id, "squad", None).await;
    let h = group(s, t.id, "guild", None).await;
    add(s, t.id, g.id, &[u.id, v.id]).await;
    add_one(s, t.id, h.id, u.id).await;
    s.grant_group_role(t.id, g.id, r.id, &ctx()).await.unwrap();
    s.grant_group_role(t.id, h.id, r.id, &ctx()).await.unwrap();

    // Deleting a group takes its memberships and grants with it.
    let g_now = s.get_group(t.id, g.id).await.unwrap().group;
    assert_eq!(s.delete_group(t.id, g.id, &ctx()).await.unwrap(), g_now);
    assert_not_found(&err(s.list_group_members(t.id, g.id).await), "group");
    assert_not_found(&err(s.list_group_roles(t.id, g.id).await), "group");
    let pu = s.load_principal(t.id, u.id).await.unwrap().unwrap();
    assert_eq!(pu.groups, vec![h.id]);
    let pv = s.load_principal(t.id, v.id).await.unwrap().unwrap();
    assert!(pv.groups.is_empty());
    let data = loaded(s, t.id).await;
    assert_eq!(data.group_roles, vec![(h.id, r.id)]);
    let ids: Vec<GroupId> = data.groups.iter().map(|n| n.id).collect();
    assert_eq!(ids, vec![h.id]);
    assert_eq!(members(s, t.id, h.id).await, vec![u.id]);
    // A new group of the same name starts empty.
    let again = group(s, t.id, "squad", None).await;
    let summary = s.get_group(t.id, again.id).await.unwrap();
    assert_eq!((summary.member_count, summary.active_member_count), (0, 0));
    assert!(s.list_group_roles(t.id, again.id).await.unwrap().is_empty());

    // Deleting a role takes its assignments and group grants with it.
    s.assign_role(t.id, u.id, r.id, None, &ctx()).await.unwrap();
    s.grant_group_role(t.id, again.id, r.id, &ctx())
        .await
        .unwrap();
    assert_eq!(s.delete_role(t.id, r.id, &ctx()).await.unwrap(), r);
    assert_eq!(user_role_names(s, t.id, u.id).await, ["user"]);
    assert!(s.list_group_roles(t.id, h.id).await.unwrap().is_empty());
    assert!(s.list_group_roles(t.id, again.id).await.unwrap().is_empty());
    let data = loaded(s, t.id).await;
    assert!(data.group_roles.is_empty());
    assert!(data.roles.iter().all(|x| x.id != r.id));
    let pu = s.load_principal(t.id, u.id).await.unwrap().unwrap();
    assert!(pu.assignments.iter().all(|a| a.role_id != r.id));
    // Its name is free again, and the new role is granted to nobody.
    let r2 = role(s, t.id, "reviewer", 30, &[]).await;
    assert!(user_roles(s, t.id, u.id)
        .await
        .iter()
        .all(|a| a.role_id != r2.id));
}

async fn case_group_member_counts(store: Rig) {
    let s = &store;
    let t = tenant(s, "acme").await;
    let active1 = user(s, t.id, "a1@acme.test", "Active One").await;
    let active2 = user(s, t.id, "a2@acme.test", "Active Two").await;
    let blocked = user(s, t.id, "blocked@acme.test", "Blocked").await;
    let pending = user_with(
        s,
        t.id,
        NewUser {
            status: UserStatus::Pending,
            ..new_user("pending@acme.test", "Pending")
        },
    )
    .await;
    s.update_user(t.id, blocked.id, status(UserStatus::Blocked), None, &ctx())
        .await
        .unwrap();
    let g = group(s, t.id, "crowd", None).await;
    let empty = group(s, t.id, "empty", None).await;
    let results = add(
        s,
        t.id,
        g.id,
        &[active1.id, active2.id, blocked.id, pending.id],
    )
    .await;
    assert!(results.iter().all(|r| r.outcome.is_ok()), "{results:?}");

    let counts = |list: &[GroupSummary], id: GroupId| {
        let g = list.iter().find(|x| x.group.id == id).unwrap();
        (g.member_count, g.active_member_count)
    };
    let list = s.list_groups(t.id).await.unwrap();
    assert_eq!(counts(&list, g.id), (4, 2), "every member; active ones");
    assert_eq!(counts(&list, empty.id), (0, 0));
    let one = s.get_group(t.id, g.id).await.unwrap();
    assert_eq!((one.member_count, one.active_member_count), (4, 2));
    assert_eq!(list.iter().find(|x| x.group.id == g.id).unwrap(), &one);

    // The counts follow the users' status and the memberships.
    s.update_user(
        t.id,
        active2.id,
        status(UserStatus::Suspended),
        None,
        &ctx(),
    )
    .await
    .unwrap();
    let one = s.get_group(t.id, g.id).await.unwrap();
    assert_eq!((one.member_count, one.active_member_count), (4, 1));
    s.update_user(t.id, blocked.id, status(UserStatus::Active), None, &ctx())
        .await
        .unwrap();
    s.remove_group_member(t.id, g.id, pending.id, &ctx())
        .await
        .unwrap();
    let list = s.list_groups(t.id).await.unwrap();
    assert_eq!(counts(&list, g.id), (3, 2));
    // A member's status shows in the member list too.
    let listed = s.list_group_members(t.id, g.id).await.unwrap();
    let a2 = listed.iter().find(|m| m.user_id == active2.id).unwrap();
    assert_eq!(a2.status, UserStatus::Suspended);
}

async fn case_add_group_members_mixed(store: Rig) {
    let s = &store;
    let t = tenant(s, "acme").await;
    let other = tenant(s, "globex").await;
    let g = capped_group(s, t.id, "limited", 3).await;
    let m0 = user(s, t.id, "m0@acme.test", "Member Zero").await;
    let v1 = user_with(
        s,
        t.id,
        NewUser {
            job_title: Some(Label::parse("job_title", "Engineer").unwrap()),
            ..in_department(new_user("v1@acme.test", "Valid One"), "Ops")
        },
    )
    .await;
    let v2 = user(s, t.id, "v2@acme.test", "Valid Two").await;
    let v3 = user(s, t.id, "v3@acme.test", "Valid Three").await;
    let gone = user(s, t.id, "gone@acme.test", "Gone").await;
    s.delete_user(t.id, gone.id, None, &ctx()).await.unwrap();
    let theirs = user(s, other.id, "them@globex.test", "Them").await;
    let first = add_one(s, t.id, g.id, m0.id).await;
    assert_eq!(first.role_in_group, GroupMemberRole::Member);
    let version_before = version(s, t.id).await;

    let before = now();
    let request = vec![
        v1.id,
        UserId::new(),
        theirs.id,
        gone.id,
        m0.id,
        v2.id,
        v3.id,
    ];
    let results = s
        .add_group_members(
            t.id,
            g.id,
            request.clone(),
            GroupMemberRole::Manager,
            &ctx(),
        )
        .await
        .unwrap();
    // One result per user, in request order.
    assert_eq!(
        results.iter().map(|r| r.user_id).collect::<Vec<_>>(),
        request
    );
    assert_eq!(
        outcomes(&results),
        vec![
            Ok(v1.id),
            Err(MemberAddFailure::UserNotFound),
            Err(MemberAddFailure::UserNotFound),
            Err(MemberAddFailure::UserNotFound),
            Err(MemberAddFailure::AlreadyMember),
            Ok(v2.id),
            Err(MemberAddFailure::GroupFull),
        ]
    );
    let added_v1 = results[0].outcome.clone().unwrap();
    assert_eq!(added_v1.group_id, g.id);
    assert_eq!(added_v1.email, "v1@acme.test");
    assert_eq!(added_v1.full_name, "Valid One");
    assert_eq!(added_v1.department.as_deref(), Some("Ops"));
    assert_eq!(added_v1.job_title.as_deref(), Some("Engineer"));
    assert_eq!(added_v1.status, UserStatus::Active);
    assert_eq!(added_v1.role_in_group, GroupMemberRole::Manager);
    assert_eq!(added_v1.added_by_type, ActorType::ApiKey);
    assert_eq!(added_v1.added_by, Some(Uuid::from_u128(KEY)));
    assert!(added_v1.joined_at >= before);
    let added_v2 = results[5].outcome.clone().unwrap();

    // The successful ones are stored, exactly as returned; the failures changed nothing.
    let listed = s.list_group_members(t.id, g.id).await.unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(
        listed[0], first,
        "the existing member keeps its place and role"
    );
    let rest: BTreeSet<UserId> = listed[1..].iter().map(|m| m.user_id).collect();
    assert_eq!(rest, [v1.id, v2.id].into_iter().collect());
    assert!(listed.contains(&added_v1) && listed.contains(&added_v2));
    let summary = s.get_group(t.id, g.id).await.unwrap();
    assert_eq!((summary.member_count, summary.active_member_count), (3, 3));
    let added_events = events_about(s, t.id, actions::GROUP_MEMBER_ADD, g.id.into_uuid()).await;
    assert_eq!(added_events.len(), 3, "one per added member");
    assert!(version(s, t.id).await > version_before);
    for (u, tenant_id) in [(theirs.id, other.id), (gone.id, t.id), (v3.id, t.id)] {
        let p = s.load_principal(tenant_id, u).await.unwrap().unwrap();
        assert!(p.groups.is_empty(), "{u} joined nothing");
    }
    assert!(s.list_groups(other.id).await.unwrap().is_empty());

    // A full group: checks go user, membership, then capacity.
    let results = add(s, t.id, g.id, &[UserId::new(), m0.id, v3.id, theirs.id]).await;
    assert_eq!(
        outcomes(&results),
        vec![
            Err(MemberAddFailure::UserNotFound),
            Err(MemberAddFailure::AlreadyMember),
            Err(MemberAddFailure::GroupFull),
            Err(MemberAddFailure::UserNotFound),
        ]
    );
    assert_eq!(s.list_group_members(t.id, g.id).await.unwrap(), listed);

    // The same user twice in one request.
    let open = group(s, t.id, "open", None).await;
    let results = add(s, t.id, open.id, &[v3.id, v3.id]).await;
    assert_eq!(
        outcomes(&results),
        vec![Ok(v3.id), Err(MemberAddFailure::AlreadyMember)]
    );
    assert_eq!(members(s, t.id, open.id).await, vec![v3.id]);

    // max_members 2, three valid new users.
    let pair = capped_group(s, t.id, "pair", 2).await;
    let results = add(s, t.id, pair.id, &[v1.id, v2.id, v3.id]).await;
    assert_eq!(
        outcomes(&results),
        vec![Ok(v1.id), Ok(v2.id), Err(MemberAddFailure::GroupFull)]
    );
    let stored: BTreeSet<UserId> = members(s, t.id, pair.id).await.into_iter().collect();
    assert_eq!(stored, [v1.id, v2.id].into_iter().collect());
    // Removing a member makes room again.
    s.remove_group_member(t.id, pair.id, v1.id, &ctx())
        .await
        .unwrap();
    assert_eq!(
        outcomes(&add(s, t.id, pair.id, &[v3.id, v1.id]).await),
        vec![Ok(v3.id), Err(MemberAddFailure::GroupFull)]
    );

    // NotFound only for the group itself.
    let foreign = group(s, other.id, "foreign", None).await;
    for gid in [GroupId::new(), foreign.id] {
        let e = err(s
            .add_group_members(t.id, gid, vec![v1.id], GroupMemberRole::Member, &ctx())
            .await);
        assert_not_found(&e, "group");
    }
    assert!(members(s, other.id, foreign.id).await.is_empty());
}

async fn case_group_members_update_and_remove(store: Rig) {
    let s = &store;
    let t = tenant(s, "acme").await;
    let u1 = user(s, t.id, "u1@acme.test", "U1").await;
    let u2 = user(s, t.id, "u2@acme.test", "U2").await;
    let u3 = user(s, t.id, "u3@acme.test", "U3").await;
    make_admin(s, t.id, u1.id).await;
    let outsider = user(s, t.id, "out@acme.test", "Outsider").await;
    let g = group(s, t.id, "team", None).await;
    for u in [u1.id, u2.id, u3.id] {
        add_one(s, t.id, g.id, u).await;
    }
    let listed = s.list_group_members(t.id, g.id).await.unwrap();
    assert_eq!(
        member_ids(&listed),
        vec![u1.id, u2.id, u3.id],
        "by join time"
    );
    assert!(listed.windows(2).all(|w| w[0].joined_at <= w[1].joined_at));

    let m = s
        .update_group_member(t.id, g.id, u2.id, GroupMemberRole::Owner, &by_user(u1.id))
        .await
        .unwrap();
    assert_eq!(
        m,
        GroupMember {
            role_in_group: GroupMemberRole::Owner,
            ..listed[1].clone()
        },
        "only the role in the group changes"
    );
    let after = s.list_group_members(t.id, g.id).await.unwrap();
    assert_eq!(after, vec![listed[0].clone(), m.clone(), listed[2].clone()]);

    for e in [
        err(s
            .update_group_member(t.id, g.id, outsider.id, GroupMemberRole::Owner, &ctx())
            .await),
        err(s
            .update_group_member(t.id, g.id, UserId::new(), GroupMemberRole::Owner, &ctx())
            .await),
        err(s.remove_group_member(t.id, g.id, outsider.id, &ctx()).await),
    ] {
        assert_not_found(&e, "group_member");
    }
    for e in [
        err(s
            .update_group_member(t.id, GroupId::new(), u1.id, GroupMemberRole::Owner, &ctx())
            .await),
        err(s
            .remove_group_member(t.id, GroupId::new(), u1.id, &ctx())
            .await),
        err(s.list_group_members(t.id, GroupId::new()).await),
    ] {
        assert_not_found(&e, "group");
    }

    let removed = s
        .remove_group_member(t.id, g.id, u2.id, &ctx())
        .await
        .unwrap();
    assert_eq!(removed, m);
    assert_eq!(members(s, t.id, g.id).await, vec![u1.id, u3.id]);
    assert_not_found(
        &err(s.remove_group_member(t.id, g.id, u2.id, &ctx()).await),
        "group_member",
    );
    let p = s.load_principal(t.id, u2.id).await.unwrap().unwrap();
    assert!(p.groups.is_empty());
    let p = s.load_principal(t.id, u1.id).await.unwrap().unwrap();
    assert_eq!(p.groups, vec![g.id]);
    // Coming back joins anew, at the end.
    let back = add_one(s, t.id, g.id, u2.id).await;
    assert_eq!(back.role_in_group, GroupMemberRole::Member);
    assert_eq!(members(s, t.id, g.id).await, vec![u1.id, u3.id, u2.id]);
}

async fn case_available_users(store: Rig) {
    let s = &store;
    let t = tenant(s, "acme").await;
    let other = tenant(s, "globex").await;
    let ada = user_with(
        s,
        t.id,
        in_department(
            new_user("ada.lovelace@engines.test", "Ada Lovelace"),
            "Math",
        ),
    )
    .await;
    let adaline = user_with(
        s,
        t.id,
        in_department(new_user("asmith@sales.test", "Adaline Smith"), "Sales"),
    )
    .await;
    let bob = user_with(
        s,
        t.id,
        in_department(new_user("bob.b@yard.test", "Bob Builder"), "Math"),
    )
    .await;
    let blocked = user_with(
        s,
        t.id,
        in_department(new_user("carl@yard.test", "Carl Blocked"), "Math"),
    )
    .await;
    s.update_user(t.id, blocked.id, status(UserStatus::Blocked), None, &ctx())
        .await
        .unwrap();
    let member = user_with(
        s,
        t.id,
        in_department(new_user("ada.member@engines.test", "Ada Member"), "Math"),
    )
    .await;
    let gone = user_with(
        s,
        t.id,
        in_department(new_user("ada.gone@engines.test", "Ada Gone"), "Math"),
    )
    .await;
    s.delete_user(t.id, gone.id, None, &ctx()).await.unwrap();
    user_with(
        s,
        other.id,
        in_department(new_user("ada@other.test", "Ada Other"), "Math"),
    )
    .await;
    let g = group(s, t.id, "team", None).await;
    add_one(s, t.id, g.id, member.id).await;

    let find = |search: Option<&str>, department: Option<&str>, limit: u32| {
        let q = AvailableUsersQuery {
            search: search.map(|x| SearchQuery::parse("search", x).unwrap()),
            department: department.map(str::to_owned),
            limit,
        };
        async move {
            s.available_users(t.id, g.id, &q)
                .await
                .unwrap()
                .into_iter()
                .map(|u| u.id)
                .collect::<Vec<UserId>>()
        }
    };

    // Non-deleted users of the tenant who are not members, by name (blocked ones too).
    assert_eq!(
        find(None, None, 100).await,
        vec![ada.id, adaline.id, bob.id, blocked.id]
    );
    // Searching names and emails.
    assert_eq!(find(Some("ada"), None, 100).await, vec![ada.id, adaline.id]);
    assert_eq!(find(Some("lovelace"), None, 100).await, vec![ada.id]);
    assert_eq!(
        find(Some("yard"), None, 100).await,
        vec![bob.id, blocked.id]
    );
    assert_eq!(find(Some("asmith"), None, 100).await, vec![adaline.id]);
    assert!(find(Some("nobody"), None, 100).await.is_empty());
    // The department filter, alone and with a search.
    assert_eq!(
        find(None, Some("Math"), 100).await,
        vec![ada.id, bob.id, blocked.id]
    );
    assert_eq!(find(Some("ada"), Some("Math"), 100).await, vec![ada.id]);
    assert!(find(None, Some("Physics"), 100).await.is_empty());
    // The limit keeps the first by name.
    assert_eq!(find(None, None, 1).await, vec![ada.id]);
    assert_eq!(find(None, Some("Math"), 2).await, vec![ada.id, bob.id]);

    // A member who leaves is available again; a deleted user who comes back too.
    s.remove_group_member(t.id, g.id, member.id, &ctx())
        .await
        .unwrap();
    s.restore_user(t.id, gone.id, &ctx()).await.unwrap();
    assert_eq!(
        find(Some("ada"), None, 100).await,
        vec![gone.id, ada.id, member.id, adaline.id]
    );

    let q = AvailableUsersQuery {
        search: None,
        department: None,
        limit: 10,
    };
    assert_not_found(
        &err(s.available_users(t.id, GroupId::new(), &q).await),
        "group",
    );
}

async fn case_group_roles(store: Rig) {
    let s = &store;
    let t = tenant(s, "acme").await;
    let other = tenant(s, "globex").await;
    let g = group(s, t.id, "team", None).await;
    let h = group(s, t.id, "other-team", None).await;
    let reviewer = role(s, t.id, "reviewer", 30, &["users:read:all"]).await;
    let alpha = role(s, t.id, "alpha", 30, &[]).await;
    let admin = role_named(s, t.id, ADMIN_ROLE).await;
    let their_role = role(s, other.id, "reviewer", 30, &[]).await;

    assert!(s.list_group_roles(t.id, g.id).await.unwrap().is_empty());
    assert_eq!(
        s.grant_group_role(t.id, g.id, reviewer.id, &ctx())
            .await
            .unwrap(),
        reviewer
    );
    assert_eq!(
        s.grant_group_role(t.id, g.id, admin.id, &ctx())
            .await
            .unwrap(),
        admin
    );
    s.grant_group_role(t.id, g.id, alpha.id, &ctx())
        .await
        .unwrap();
    s.grant_group_role(t.id, h.id, reviewer.id, &ctx())
        .await
        .unwrap();
    // By priority, then name.
    assert_eq!(
        s.list_group_roles(t.id, g.id).await.unwrap(),
        vec![admin.clone(), alpha.clone(), reviewer.clone()]
    );

    let e = err(s.grant_group_role(t.id, g.id, reviewer.id, &ctx()).await);
    assert_conflict(&e, "already_granted", None);
    for r in [their_role.id, RoleId::new()] {
        let e = err(s.grant_group_role(t.id, g.id, r, &ctx()).await);
        assert_field_error(&e, "role_id", "unknown_role");
    }
    assert_not_found(
        &err(s
            .grant_group_role(t.id, GroupId::new(), reviewer.id, &ctx())
            .await),
        "group",
    );

    assert_eq!(
        s.revoke_group_role(t.id, g.id, reviewer.id, &ctx())
            .await
            .unwrap(),
        reviewer
    );
    assert_eq!(
        s.list_group_roles(t.id, g.id).await.unwrap(),
        vec![admin.clone(), alpha.clone()]
    );
    for r in [reviewer.id, RoleId::new(), their_role.id] {
        assert_not_found(
            &err(s.revoke_group_role(t.id, g.id, r, &ctx()).await),
            "group_role",
        );
    }
    assert_not_found(
        &err(s
            .revoke_group_role(t.id, GroupId::new(), admin.id, &ctx())
            .await),
        "group",
    );
    // The other group keeps its grant.
    assert_eq!(
        s.list_group_roles(t.id, h.id).await.unwrap(),
        vec![reviewer.clone()]
    );
    let mut expected = vec![(g.id, admin.id), (g.id, alpha.id), (h.id, reviewer.id)];
    expected.sort();
    assert_eq!(loaded(s, t.id).await.group_roles, expected);
    // A revoked role can be granted again.
    s.grant_group_role(t.id, g.id, reviewer.id, &ctx())
        .await
        .unwrap();
}

// ------------------------------------------------------------------------------------------
// Policies
// ------------------------------------------------------------------------------------------

async fn case_policies_and_versions(store: Rig) {
    let s = &store;
    let t = tenant(s, "acme").await;
    let other = tenant(s, "globex").await;
    let editor = user(s, t.id, "editor@acme.test", "Editor").await;
    make_admin(s, t.id, editor.id).await;

    let before = now();
    let source = cedar(PolicyEffect::Forbid, "working_hours");
    let p = s
        .create_policy(
            t.id,
            NewPolicy {
                name: ident("working_hours"),
                description: Some(desc("No access at night")),
                effect: PolicyEffect::Forbid,
                source: source.clone(),
                active: true,
            },
            &ctx(),
        )
        .await
        .unwrap();
    assert_eq!(p.tenant_id, t.id);
    assert_eq!(p.name, "working_hours");
    assert_eq!(p.description.as_deref(), Some("No access at night"));
    assert_eq!(p.effect, PolicyEffect::Forbid);
    assert_eq!(p.source, source);
    assert!(p.active);
    assert_eq!(p.version, 1);
    assert!(p.created_at >= before && p.updated_at == p.created_at);
    assert_eq!(s.get_policy(t.id, p.id).await.unwrap(), p);
    let v1 = PolicyVersion {
        policy_id: p.id,
        version: 1,
        name: "working_hours".into(),
        effect: PolicyEffect::Forbid,
        source: source.clone(),
        active: true,
        changed_at: p.created_at,
        changed_by_type: ActorType::ApiKey,
        changed_by: Some(Uuid::from_u128(KEY)),
    };
    assert_eq!(
        s.list_policy_versions(t.id, p.id).await.unwrap(),
        vec![v1.clone()]
    );

    // Inactive policies are kept and listed, by name.
    let q = policy(s, t.id, "allow_reads", PolicyEffect::Permit, false).await;
    assert!(!q.active);
    assert_eq!(
        s.list_policies(t.id).await.unwrap(),
        vec![q.clone(), p.clone()]
    );

    // Names are unique per tenant.
    let e = err(s
        .create_policy(
            t.id,
            new_policy("working_hours", PolicyEffect::Permit, true),
            &ctx(),
        )
        .await);
    assert_conflict(&e, "policy_name_taken", None);
    let theirs = policy(s, other.id, "working_hours", PolicyEffect::Permit, true).await;
    assert_eq!(theirs.tenant_id, other.id);

    // An update is a new version; the old one stays in the history.
    let new_source = cedar(PolicyEffect::Permit, "working_hours_v2");
    let u = s
        .update_policy(
            t.id,
            p.id,
            PolicyPatch {
                description: Patch::Clear,
                source: Some((new_source.clone(), PolicyEffect::Permit)),
                ..Default::default()
            },
            Some(1),
            &by_user(editor.id),
        )
        .await
        .unwrap();
    assert_eq!(
        u,
        Policy {
            description: None,
            effect: PolicyEffect::Permit,
            source: new_source.clone(),
            version: 2,
            updated_at: u.updated_at,
            ..p.clone()
        }
    );
    assert!(u.updated_at >= p.updated_at);
    assert_eq!(s.get_policy(t.id, p.id).await.unwrap(), u);
    let versions = s.list_policy_versions(t.id, p.id).await.unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(
        versions[0],
        PolicyVersion {
            policy_id: p.id,
            version: 2,
            name: "working_hours".into(),
            effect: PolicyEffect::Permit,
            source: new_source.clone(),
            active: true,
            changed_at: versions[0].changed_at,
            changed_by_type: ActorType::User,
            changed_by: Some(editor.id.into_uuid()),
        }
    );
    assert!(versions[0].changed_at >= p.created_at);
    assert_eq!(versions[1], v1, "the replaced version keeps its source");

    // A stale version is refused and changes nothing.
    let e = err(s
        .update_policy(
            t.id,
            p.id,
            PolicyPatch {
                active: Some(false),
                ..Default::default()
            },
            Some(1),
            &ctx(),
        )
        .await);
    assert!(
        matches!(
            e,
            Error::PreconditionFailed {
                entity: "policy",
                expected: 1,
                current: 2
            }
        ),
        "{e:?}"
    );
    assert_eq!(s.get_policy(t.id, p.id).await.unwrap(), u);
    assert_eq!(s.list_policy_versions(t.id, p.id).await.unwrap().len(), 2);

    // Without a precondition.
    let w = s
        .update_policy(
            t.id,
            p.id,
            PolicyPatch {
                active: Some(false),
                ..Default::default()
            },
            None,
            &ctx(),
        )
        .await
        .unwrap();
    assert_eq!(w.version, 3);
    assert!(!w.active);
    let e = err(s
        .update_policy(
            t.id,
            p.id,
            PolicyPatch {
                name: Some(ident("allow_reads")),
                ..Default::default()
            },
            None,
            &ctx(),
        )
        .await);
    assert_conflict(&e, "policy_name_taken", None);
    let renamed = s
        .update_policy(
            t.id,
            p.id,
            PolicyPatch {
                name: Some(ident("office_hours")),
                ..Default::default()
            },
            Some(3),
            &ctx(),
        )
        .await
        .unwrap();
    assert_eq!(renamed.version, 4);
    assert_eq!(renamed.name, "office_hours");
    let versions = s.list_policy_versions(t.id, p.id).await.unwrap();
    assert_eq!(
        versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        [4, 3, 2, 1],
        "newest first"
    );
    assert_eq!(versions[0].name, "office_hours");
    assert!(!versions[1].active);
    assert_eq!(versions[3], v1);

    // Deleting.
    let q_now = s.get_policy(t.id, q.id).await.unwrap();
    assert_eq!(s.delete_policy(t.id, q.id, &ctx()).await.unwrap(), q_now);
    assert_not_found(&err(s.get_policy(t.id, q.id).await), "policy");
    assert_not_found(&err(s.delete_policy(t.id, q.id, &ctx()).await), "policy");
    assert_not_found(
        &err(s
            .update_policy(t.id, q.id, PolicyPatch::default(), None, &ctx())
            .await),
        "policy",
    );
    assert_not_found(
        &err(s.list_policy_versions(t.id, PolicyId::new()).await),
        "policy",
    );
    assert_eq!(s.list_policies(t.id).await.unwrap(), vec![renamed]);
    // Its name is free again.
    policy(s, t.id, "allow_reads", PolicyEffect::Permit, true).await;
    assert_eq!(s.list_policies(other.id).await.unwrap(), vec![theirs]);
}

// ------------------------------------------------------------------------------------------
// What the decision engine reads
// ------------------------------------------------------------------------------------------

async fn case_load_tenant_authz(store: Rig) {
    let s = &store;
    let t = tenant(s, "acme").await;
    let other = tenant(s, "globex").await;
    let p = s
        .create_permission(
            t.id,
            NewPermission {
                key: perm("reports:export:all"),
                description: None,
            },
            &ctx(),
        )
        .await
        .unwrap();
    for key in ["alerts:mute:own", "reports:export:own"] {
        s.create_permission(
            t.id,
            NewPermission {
                key: perm(key),
                description: None,
            },
            &ctx(),
        )
        .await
        .unwrap();
    }
    let custom = s.list_custom_permissions(t.id).await.unwrap();
    assert_eq!(
        custom
            .iter()
            .map(|c| c.permission.clone())
            .collect::<Vec<_>>(),
        perms(&[
            "alerts:mute:own",
            "reports:export:own",
            "reports:export:all"
        ]),
        "by key"
    );
    let exporter = role(
        s,
        t.id,
        "exporter",
        20,
        &["reports:export:all", "users:read:all"],
    )
    .await;
    let parent = group(s, t.id, "company", None).await;
    let child = group(s, t.id, "finance", Some(parent.id)).await;
    let dormant = s
        .create_group(
            t.id,
            NewGroup {
                active: false,
                ..new_group("dormant", Some(child.id))
            },
            &ctx(),
        )
        .await
        .unwrap();
    s.grant_group_role(t.id, child.id, exporter.id, &ctx())
        .await
        .unwrap();
    let admin = role_named(s, t.id, ADMIN_ROLE).await;
    s.grant_group_role(t.id, parent.id, admin.id, &ctx())
        .await
        .unwrap();
    let live = policy(s, t.id, "live", PolicyEffect::Forbid, true).await;
    let off = policy(s, t.id, "off", PolicyEffect::Permit, false).await;
    // The other tenant's data must not show.
    role(s, other.id, "exporter", 20, &[]).await;
    group(s, other.id, "company", None).await;
    policy(s, other.id, "live", PolicyEffect::Permit, true).await;

    let data = loaded(s, t.id).await;
    assert_eq!(data.version, version(s, t.id).await);
    let mut roles = s.list_roles(t.id).await.unwrap();
    roles.sort_by_key(|r| r.id);
    assert_eq!(data.roles, roles);
    assert!(data
        .roles
        .iter()
        .any(|r| r.id == exporter.id && r.permissions == exporter.permissions));
    assert!(data.roles.iter().any(|r| r.id == SUPER_ADMIN_ROLE_ID));
    let mut groups = vec![
        GroupNode {
            id: parent.id,
            name: "company".into(),
            parent_id: None,
            active: true,
        },
        GroupNode {
            id: child.id,
            name: "finance".into(),
            parent_id: Some(parent.id),
            active: true,
        },
        GroupNode {
            id: dormant.id,
            name: "dormant".into(),
            parent_id: Some(child.id),
            active: false,
        },
    ];
    groups.sort_by_key(|g| g.id);
    assert_eq!(data.groups, groups);
    let mut group_roles = vec![(child.id, exporter.id), (parent.id, admin.id)];
    group_roles.sort();
    assert_eq!(data.group_roles, group_roles);
    assert_eq!(data.policies, vec![live.clone()], "active policies only");
    assert_eq!(data.custom_permissions, custom);
    assert!(custom.contains(&p));

    // Switching policies on and off shows in the next load, with a newer version.
    s.update_policy(
        t.id,
        live.id,
        PolicyPatch {
            active: Some(false),
            ..Default::default()
        },
        None,
        &ctx(),
    )
    .await
    .unwrap();
    let on = s
        .update_policy(
            t.id,
            off.id,
            PolicyPatch {
                active: Some(true),
                ..Default::default()
            },
            None,
            &ctx(),
        )
        .await
        .unwrap();
    let again = loaded(s, t.id).await;
    assert_eq!(again.policies, vec![on]);
    assert!(again.version > data.version);
    assert_eq!(again.version, version(s, t.id).await);

    // A fresh tenant: its default roles and the super administrator role, nothing else.
    let theirs = tenant(s, "initech").await;
    let fresh = loaded(s, theirs.id).await;
    assert_eq!(fresh.roles.len(), 4);
    assert!(fresh.groups.is_empty());
    assert!(fresh.group_roles.is_empty());
    assert!(fresh.policies.is_empty());
    assert!(fresh.custom_permissions.is_empty());
    assert_eq!(fresh.version, version(s, theirs.id).await);
}

async fn case_load_principal(store: Rig) {
    let s = &store;
    let t = tenant(s, "acme").await;
    let other = tenant(s, "globex").await;
    let boss = user_with(
        s,
        t.id,
        in_department(new_user("boss@acme.test", "Boss"), "Exec"),
    )
    .await;
    let mid = user_with(
        s,
        t.id,
        NewUser {
            manager_id: Some(boss.id),
            ..new_user("mid@acme.test", "Mid")
        },
    )
    .await;
    let worker = user_with(
        s,
        t.id,
        NewUser {
            manager_id: Some(mid.id),
            ..in_department(new_user("worker@acme.test", "Worker"), "Ops")
        },
    )
    .await;
    let parent = group(s, t.id, "company", None).await;
    let child = group(s, t.id, "ops", Some(parent.id)).await;
    let side = group(s, t.id, "side", None).await;
    add_one(s, t.id, child.id, worker.id).await;
    add_one(s, t.id, side.id, worker.id).await;
    add_one(s, t.id, parent.id, boss.id).await;
    let r = role(s, t.id, "temp", 10, &["users:read:all"]).await;
    let expiry = now() + TimeDelta::milliseconds(1500);
    s.assign_role(t.id, worker.id, r.id, Some(expiry), &ctx())
        .await
        .unwrap();
    // Let the assignment expire: it is still returned.
    tokio::time::sleep(Duration::from_millis(1700)).await;

    let p = s.load_principal(t.id, worker.id).await.unwrap().unwrap();
    assert_eq!(p.user, s.get_user(t.id, worker.id).await.unwrap());
    assert_eq!(p.manager_chain, vec![mid.id, boss.id], "nearest first");
    let mut assignments = p.assignments.clone();
    assignments.sort_by(|a, b| a.role_name.cmp(&b.role_name));
    assert_eq!(assignments, user_roles(s, t.id, worker.id).await);
    assert_eq!(
        assignments
            .iter()
            .map(|a| a.role_name.as_str())
            .collect::<Vec<_>>(),
        ["temp", "user"]
    );
    assert!(!assignments[0].is_current(now()), "expired, yet returned");
    let mut groups = p.groups.clone();
    groups.sort();
    let mut direct = vec![child.id, side.id];
    direct.sort();
    assert_eq!(groups, direct, "direct memberships only");

    let top = s.load_principal(t.id, boss.id).await.unwrap().unwrap();
    assert!(top.manager_chain.is_empty());
    assert_eq!(top.groups, vec![parent.id]);

    // Nobody of that id in the tenant.
    assert!(s
        .load_principal(t.id, UserId::new())
        .await
        .unwrap()
        .is_none());
    assert!(s
        .load_principal(other.id, worker.id)
        .await
        .unwrap()
        .is_none());

    // Deleted users are returned (they have no rights; the engine decides).
    let deleted = s.delete_user(t.id, mid.id, None, &ctx()).await.unwrap();
    let pm = s.load_principal(t.id, mid.id).await.unwrap().unwrap();
    assert_eq!(pm.user, deleted);
    assert!(pm.user.deleted_at.is_some());
    assert_eq!(pm.manager_chain, vec![boss.id]);

    // At most 64 managers are followed.
    let mut chain: Vec<User> = Vec::new();
    for i in 0..70 {
        let mut u = seed_user(t.id, &format!("chain{i}@acme.test"), &format!("Chain {i}"));
        u.manager_id = chain.last().map(|m| m.id);
        chain.push(u);
    }
    s.seed_users(t.id, chain.clone(), &ctx()).await.unwrap();
    let last = chain.last().unwrap();
    let pl = s.load_principal(t.id, last.id).await.unwrap().unwrap();
    let expected: Vec<UserId> = chain.iter().rev().skip(1).take(64).map(|u| u.id).collect();
    assert_eq!(pl.manager_chain, expected);
}

async fn case_authz_version_tracks_every_change(store: Rig) {
    let s = &store;
    assert_eq!(version(s, TenantId::new()).await, 0);
    let t = tenant(s, "acme").await;
    let other = tenant(s, "globex").await;
    let u = user(s, t.id, "u@acme.test", "U").await;
    let w = user(s, t.id, "w@acme.test", "W").await;
    let other_version = version(s, other.id).await;
    let mut last = version(s, t.id).await;
    assert!(last >= 0);

    async fn bumped(s: &Rig, t: TenantId, last: &mut i64, what: &str) {
        let v = s.authz_version(t).await.unwrap();
        assert!(v > *last, "{what}: version {v}, was {last}");
        let data = s.load_tenant_authz(t).await.unwrap();
        assert_eq!(data.version, v, "{what}: the snapshot carries the version");
        *last = v;
    }

    s.create_permission(
        t.id,
        NewPermission {
            key: perm("reports:export:all"),
            description: None,
        },
        &ctx(),
    )
    .await
    .unwrap();
    bumped(s, t.id, &mut last, "create_permission").await;
    let r = role(s, t.id, "exporter", 20, &[]).await;
    bumped(s, t.id, &mut last, "create_role").await;
    s.update_role(
        t.id,
        r.id,
        RolePatch {
            priority: Some(21),
            ..Default::default()
        },
        &ctx(),
    )
    .await
    .unwrap();
    bumped(s, t.id, &mut last, "update_role").await;
    s.update_role_permissions(t.id, r.id, perms(&["reports:export:all"]), vec![], &ctx())
        .await
        .unwrap();
    bumped(s, t.id, &mut last, "update_role_permissions").await;
    s.assign_role(t.id, u.id, r.id, Some(now() + TimeDelta::days(1)), &ctx())
        .await
        .unwrap();
    bumped(s, t.id, &mut last, "assign_role").await;
    s.assign_role(t.id, u.id, r.id, Some(now() + TimeDelta::days(2)), &ctx())
        .await
        .unwrap();
    bumped(s, t.id, &mut last, "assign_role (new expiry)").await;
    s.unassign_role(t.id, u.id, r.id, &ctx()).await.unwrap();
    bumped(s, t.id, &mut last, "unassign_role").await;
    let g = group(s, t.id, "team", None).await;
    bumped(s, t.id, &mut last, "create_group").await;
    let h = group(s, t.id, "sub", Some(g.id)).await;
    bumped(s, t.id, &mut last, "create_group (child)").await;
    s.update_group(t.id, h.id, set_parent(None), &ctx())
        .await
        .unwrap();
    bumped(s, t.id, &mut last, "update_group").await;
    add_one(s, t.id, g.id, u.id).await;
    bumped(s, t.id, &mut last, "add_group_members").await;
    s.update_group_member(t.id, g.id, u.id, GroupMemberRole::Owner, &ctx())
        .await
        .unwrap();
    bumped(s, t.id, &mut last, "update_group_member").await;
    s.remove_group_member(t.id, g.id, u.id, &ctx())
        .await
        .unwrap();
    bumped(s, t.id, &mut last, "remove_group_member").await;
    s.grant_group_role(t.id, g.id, r.id, &ctx()).await.unwrap();
    bumped(s, t.id, &mut last, "grant_group_role").await;
    s.revoke_group_role(t.id, g.id, r.id, &ctx()).await.unwrap();
    bumped(s, t.id, &mut last, "revoke_group_role").await;
    s.delete_group(t.id, h.id, &ctx()).await.unwrap();
    bumped(s, t.id, &mut last, "delete_group").await;
    let p = policy(s, t.id, "rule", PolicyEffect::Permit, true).await;
    bumped(s, t.id, &mut last, "create_policy").await;
    s.update_policy(
        t.id,
        p.id,
        PolicyPatch {
            active: Some(false),
            ..Default::default()
        },
        Some(1),
        &ctx(),
    )
    .await
    .unwrap();
    bumped(s, t.id, &mut last, "update_policy").await;
    s.delete_policy(t.id, p.id, &ctx()).await.unwrap();
    bumped(s, t.id, &mut last, "delete_policy").await;
    s.delete_role(t.id, r.id, &ctx()).await.unwrap();
    bumped(s, t.id, &mut last, "delete_role").await;
    s.update_user(t.id, w.id, rename("W Renamed"), None, &ctx())
        .await
        .unwrap();
    bumped(s, t.id, &mut last, "update_user (name)").await;
    let dept = UserPatch {
        department: Patch::Set(Label::parse("department", "Ops").unwrap()),
        ..Default::default()
    };
    s.update_user(t.id, w.id, dept, None, &ctx()).await.unwrap();
    bumped(s, t.id, &mut last, "update_user (department)").await;
    s.update_user(t.id, w.id, status(UserStatus::Blocked), None, &ctx())
        .await
        .unwrap();
    bumped(s, t.id, &mut last, "update_user (status)").await;
    s.delete_user(t.id, w.id, None, &ctx()).await.unwrap();
    bumped(s, t.id, &mut last, "delete_user").await;
    s.restore_user(t.id, w.id, &ctx()).await.unwrap();
    bumped(s, t.id, &mut last, "restore_user").await;

    // Every tenant's version, for replicas.
    let all = s.authz_versions().await.unwrap();
    assert!(all.contains(&(t.id, last)), "{all:?}");
    assert_eq!(
        all.iter().filter(|(id, _)| *id == t.id).count(),
        1,
        "one entry per tenant"
    );
    assert!(all
        .iter()
        .all(|(id, v)| *id != other.id || *v == other_version));
    // The other tenant's version did not move.
    assert_eq!(version(s, other.id).await, other_version);

    // Failed mutations and reads leave it as it was.
    let r2 = role(s, t.id, "second", 20, &[]).await;
    let g2 = group(s, t.id, "parent", None).await;
    let c2 = group(s, t.id, "child", Some(g2.id)).await;
    s.grant_group_role(t.id, g2.id, r2.id, &ctx())
        .await
        .unwrap();
    let p2 = policy(s, t.id, "rule2", PolicyEffect::Forbid, true).await;
    last = version(s, t.id).await;
    let manager = role_named(s, t.id, MANAGER_ROLE).await;
    err(s
        .create_role(t.id, new_role("second", 1, &[]), &ctx())
        .await);
    err(s
        .update_role_permissions(t.id, r2.id, perms(&["nothing:here:all"]), vec![], &ctx())
        .await);
    err(s.delete_role(t.id, manager.id, &ctx()).await);
    err(s
        .update_role(t.id, SUPER_ADMIN_ROLE_ID, RolePatch::default(), &ctx())
        .await);
    err(s.assign_role(t.id, u.id, RoleId::new(), None, &ctx()).await);
    err(s.unassign_role(t.id, u.id, r2.id, &ctx()).await);
    err(s
        .update_group(t.id, g2.id, set_parent(Some(c2.id)), &ctx())
        .await);
    err(s.delete_group(t.id, g2.id, &ctx()).await);
    err(s.grant_group_role(t.id, g2.id, r2.id, &ctx()).await);
    err(s.revoke_group_role(t.id, c2.id, r2.id, &ctx()).await);
    err(s
        .update_policy(t.id, p2.id, PolicyPatch::default(), Some(9), &ctx())
        .await);
    err(s
        .update_user(t.id, u.id, rename("Stale"), Some(99), &ctx())
        .await);
    err(s.delete_user(t.id, u.id, Some(99), &ctx()).await);
    err(s.restore_user(t.id, u.id, &ctx()).await);
    s.list_roles(t.id).await.unwrap();
    s.load_tenant_authz(t.id).await.unwrap();
    s.load_principal(t.id, u.id).await.unwrap();
    s.list_groups(t.id).await.unwrap();
    assert_eq!(version(s, t.id).await, last);
}

async fn case_failed_mutations_change_nothing(store: Rig) {
    let s = &store;
    let t = tenant(s, "acme").await;
    let other = tenant(s, "globex").await;
    let holder = user(s, t.id, "root@acme.test", "Root").await;
    let u = user(s, t.id, "u@acme.test", "U").await;
    let outsider = user(s, t.id, "out@acme.test", "Outsider").await;
    let gone = user(s, t.id, "gone@acme.test", "Gone").await;
    s.delete_user(t.id, gone.id, None, &ctx()).await.unwrap();
    let theirs = user(s, other.id, "them@globex.test", "Them").await;
    let their_role = role(s, other.id, "foreign", 1, &[]).await;
    let their_group = group(s, other.id, "foreign", None).await;
    s.assign_role(t.id, holder.id, SUPER_ADMIN_ROLE_ID, None, &ctx())
        .await
        .unwrap();
    s.create_permission(
        t.id,
        NewPermission {
            key: perm("reports:export:all"),
            description: None,
        },
        &ctx(),
    )
    .await
    .unwrap();
    let r = role(s, t.id, "reporter", 20, &["reports:export:all"]).await;
    let r2 = role(s, t.id, "reader", 15, &[]).await;
    s.assign_role(t.id, u.id, r.id, None, &ctx()).await.unwrap();
    let g = group(s, t.id, "parent", None).await;
    let c = group(s, t.id, "child", Some(g.id)).await;
    add_one(s, t.id, g.id, u.id).await;
    s.grant_group_role(t.id, g.id, r.id, &ctx()).await.unwrap();
    let p = policy(s, t.id, "rule", PolicyEffect::Permit, true).await;
    policy(s, t.id, "other_rule", PolicyEffect::Forbid, false).await;
    let users = [holder.id, u.id, outsider.id, gone.id];
    let before = snapshot(s, t.id, &users).await;
    let other_before = snapshot(s, other.id, &[theirs.id]).await;
    let manager = role_named(s, t.id, MANAGER_ROLE).await;

    let failures: Vec<Error> = vec![
        err(s
            .create_role(t.id, new_role("reporter", 1, &[]), &ctx())
            .await),
        err(s
            .create_role(t.id, new_role("fresh", 1, &["reports:export:own"]), &ctx())
            .await),
        err(s
            .update_role(
                t.id,
                r2.id,
                RolePatch {
                    name: Some(ident("reporter")),
                    priority: Some(99),
                    ..Default::default()
                },
                &ctx(),
            )
            .await),
        err(s
            .update_role(
                t.id,
                manager.id,
                RolePatch {
                    name: Some(ident("boss")),
                    priority: Some(1),
                    ..Default::default()
                },
                &ctx(),
            )
            .await),
        err(s
            .update_role(t.id, SUPER_ADMIN_ROLE_ID, RolePatch::default(), &ctx())
            .await),
        err(s.delete_role(t.id, manager.id, &ctx()).await),
        err(s.delete_role(t.id, SUPER_ADMIN_ROLE_ID, &ctx()).await),
        err(s.delete_role(t.id, their_role.id, &ctx()).await),
        err(s
            .update_role_permissions(
                t.id,
                r2.id,
                perms(&["users:read:all", "reports:export:own"]),
                perms(&["users:read:own"]),
                &ctx(),
            )
            .await),
        err(s
            .create_permission(
                t.id,
                NewPermission {
                    key: perm("reports:export:all"),
                    description: Some(desc("again")),
                },
                &ctx(),
            )
            .await),
        err(s.assign_role(t.id, gone.id, r2.id, None, &ctx()).await),
        err(s.assign_role(t.id, theirs.id, r2.id, None, &ctx()).await),
        err(s.assign_role(t.id, u.id, their_role.id, None, &ctx()).await),
        err(s.unassign_role(t.id, u.id, r2.id, &ctx()).await),
        err(s
            .unassign_role(t.id, holder.id, SUPER_ADMIN_ROLE_ID, &ctx())
            .await),
        err(s.delete_user(t.id, holder.id, None, &ctx()).await),
        err(s
            .update_user(t.id, holder.id, status(UserStatus::Blocked), None, &ctx())
            .await),
        err(s.create_group(t.id, new_group("child", None), &ctx()).await),
        err(s
            .create_group(t.id, new_group("orphan", Some(their_group.id)), &ctx())
            .await),
        err(s
            .update_group(
                t.id,
                g.id,
                GroupPatch {
                    parent_id: Patch::Set(c.id),
                    display_name: Some(display("Changed")),
                    ..Default::default()
                },
                &ctx(),
            )
            .await),
        err(s
            .update_group(t.id, c.id, rename_group("parent"), &ctx())
            .await),
        err(s.delete_group(t.id, g.id, &ctx()).await),
        err(s.delete_group(t.id, their_group.id, &ctx()).await),
        err(s
            .add_group_members(
                t.id,
                their_group.id,
                vec![u.id],
                GroupMemberRole::Member,
                &ctx(),
            )
            .await),
        err(s
            .update_group_member(t.id, g.id, outsider.id, GroupMemberRole::Owner, &ctx())
            .await),
        err(s.remove_group_member(t.id, c.id, u.id, &ctx()).await),
        err(s.grant_group_role(t.id, g.id, r.id, &ctx()).await),
        err(s.grant_group_role(t.id, c.id, their_role.id, &ctx()).await),
        err(s.revoke_group_role(t.id, c.id, r.id, &ctx()).await),
        err(s
            .create_policy(t.id, new_policy("rule", PolicyEffect::Forbid, true), &ctx())
            .await),
        err(s
            .update_policy(
                t.id,
                p.id,
                PolicyPatch {
                    active: Some(false),
                    ..Default::default()
                },
                Some(7),
                &ctx(),
            )
            .await),
        err(s
            .update_policy(
                t.id,
                p.id,
                PolicyPatch {
                    name: Some(ident("other_rule")),
                    ..Default::default()
                },
                None,
                &ctx(),
            )
            .await),
        err(s.delete_policy(t.id, PolicyId::new(), &ctx()).await),
    ];
    assert_eq!(failures.len(), 33);
    assert!(
        failures
            .iter()
            .all(|e| !matches!(e, Error::Internal(_) | Error::Unavailable(_))),
        "{failures:?}"
    );

    assert_eq!(snapshot(s, t.id, &users).await, before);
    assert_eq!(snapshot(s, other.id, &[theirs.id]).await, other_before);
}

async fn case_audit_events(store: Rig) {
    let s = &store;
    let t = tenant(s, "acme").await;
    let u = user(s, t.id, "u@acme.test", "U").await;
    make_admin(s, t.id, u.id).await;

    // Roles.
    let r = role(s, t.id, "auditor", 20, &["audit_logs:read:all"]).await;
    let ev = only_event(s, t.id, actions::ROLE_CREATE, r.id.into_uuid()).await;
    assert_eq!(ev.tenant_id, t.id);
    assert_eq!(ev.entity_type, "role");
    assert_eq!(ev.actor_type, ActorType::ApiKey);
    assert_eq!(ev.actor_id, Some(Uuid::from_u128(KEY)));
    assert_eq!(ev.ip.as_deref(), Some("203.0.113.7"));
    assert_eq!(ev.user_agent.as_deref(), Some("contract-test/1.0"));
    assert_eq!(ev.request_id.as_deref(), Some("req-authz-contract"));
    assert_eq!(ev.before, None);
    assert_eq!(ev.after, Some(r.to_audit_json()));

    let r2 = s
        .update_role(
            t.id,
            r.id,
            RolePatch {
                display_name: Some(display("Auditors")),
                ..Default::default()
            },
            &by_user(u.id),
        )
        .await
        .unwrap();
    let ev = only_event(s, t.id, actions::ROLE_UPDATE, r.id.into_uuid()).await;
    assert_eq!(ev.entity_type, "role");
    assert_eq!(ev.actor_type, ActorType::User);
    assert_eq!(ev.actor_id, Some(u.id.into_uuid()));
    assert_eq!(ev.ip.as_deref(), Some("198.51.100.9"));
    assert_eq!(ev.request_id.as_deref(), Some("req-authz-user"));
    assert_eq!(ev.before, Some(r.to_audit_json()));
    assert_eq!(ev.after, Some(r2.to_audit_json()));

    let r3 = s
        .update_role_permissions(
            t.id,
            r.id,
            perms(&["sessions:read:all"]),
            perms(&["audit_logs:read:all"]),
            &ctx(),
        )
        .await
        .unwrap();
    let ev = only_event(s, t.id, actions::ROLE_PERMISSIONS_UPDATE, r.id.into_uuid()).await;
    assert_eq!(ev.entity_type, "role");
    let before = ev.before.clone().unwrap().to_string();
    let after = ev.after.clone().unwrap().to_string();
    assert!(before.contains("audit_logs:read:all") && !before.contains("sessions:read:all"));
    assert!(after.contains("sessions:read:all") && !after.contains("audit_logs:read:all"));

    let p = s
        .create_permission(
            t.id,
            NewPermission {
                key: perm("reports:export:all"),
                description: None,
            },
            &ctx(),
        )
        .await
        .unwrap();
    let events = events_of(s, t.id, actions::PERMISSION_CREATE).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].entity_type, "permission");
    assert_eq!(events[0].entity_id, None);
    assert_eq!(events[0].before, None);
    assert!(events[0]
        .after
        .as_ref()
        .unwrap()
        .to_string()
        .contains(&p.permission.to_string()));

    // Assignments: events about the user.
    let (a, _) = s
        .assign_role(t.id, u.id, r.id, Some(now() + TimeDelta::days(3)), &ctx())
        .await
        .unwrap();
    let events = assignment_events(s, t.id, actions::ROLE_ASSIGN, u.id, r.id).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].entity_type, "user");
    assert_eq!(events[0].before, None);
    assert_eq!(events[0].after, Some(a.to_audit_json()));
    let (a2, _) = s.assign_role(t.id, u.id, r.id, None, &ctx()).await.unwrap();
    let events = assignment_events(s, t.id, actions::ROLE_ASSIGN, u.id, r.id).await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].before, Some(a.to_audit_json()));
    assert_eq!(events[0].after, Some(a2.to_audit_json()));
    let removed = s.unassign_role(t.id, u.id, r.id, &ctx()).await.unwrap();
    let mut events = assignment_events(s, t.id, actions::ROLE_UNASSIGN, u.id, r.id).await;
    assert_eq!(events.len(), 1);
    let ev = events.remove(0);
    assert_eq!(ev.entity_type, "user");
    assert_eq!(ev.before, Some(removed.to_audit_json()));
    assert_eq!(ev.after, None);

    // Groups, members and group roles: events about the group.
    let g = group(s, t.id, "team", None).await;
    let ev = only_event(s, t.id, actions::GROUP_CREATE, g.id.into_uuid()).await;
    assert_eq!(ev.entity_type, "group");
    assert_eq!((ev.before, ev.after), (None, Some(g.to_audit_json())));
    let g2 = s
        .update_group(
            t.id,
            g.id,
            GroupPatch {
                max_members: Patch::Set(10),
                ..Default::default()
            },
            &ctx(),
        )
        .await
        .unwrap();
    let ev = only_event(s, t.id, actions::GROUP_UPDATE, g.id.into_uuid()).await;
    assert_eq!(
        (ev.before, ev.after),
        (Some(g.to_audit_json()), Some(g2.to_audit_json()))
    );
    let m = add_one(s, t.id, g.id, u.id).await;
    let ev = only_event(s, t.id, actions::GROUP_MEMBER_ADD, g.id.into_uuid()).await;
    assert_eq!(ev.entity_type, "group");
    assert_eq!((ev.before, ev.after), (None, Some(m.to_audit_json())));
    let m2 = s
        .update_group_member(t.id, g.id, u.id, GroupMemberRole::Owner, &ctx())
        .await
        .unwrap();
    let ev = only_event(s, t.id, actions::GROUP_MEMBER_UPDATE, g.id.into_uuid()).await;
    assert_eq!(
        (ev.before, ev.after),
        (Some(m.to_audit_json()), Some(m2.to_audit_json()))
    );
    let m3 = s
        .remove_group_member(t.id, g.id, u.id, &ctx())
        .await
        .unwrap();
    let ev = only_event(s, t.id, actions::GROUP_MEMBER_REMOVE, g.id.into_uuid()).await;
    assert_eq!((ev.before, ev.after), (Some(m3.to_audit_json()), None));
    s.grant_group_role(t.id, g.id, r.id, &ctx()).await.unwrap();
    let grant = json!({ "role_id": r.id, "role_name": "auditor" });
    let ev = only_event(s, t.id, actions::GROUP_ROLE_GRANT, g.id.into_uuid()).await;
    assert_eq!((ev.before, ev.after), (None, Some(grant.clone())));
    s.revoke_group_role(t.id, g.id, r.id, &ctx()).await.unwrap();
    let ev = only_event(s, t.id, actions::GROUP_ROLE_REVOKE, g.id.into_uuid()).await;
    assert_eq!((ev.before, ev.after), (Some(grant), None));
    let gone = s.delete_group(t.id, g.id, &ctx()).await.unwrap();
    let ev = only_event(s, t.id, actions::GROUP_DELETE, g.id.into_uuid()).await;
    assert_eq!((ev.before, ev.after), (Some(gone.to_audit_json()), None));

    // Policies.
    let p = policy(s, t.id, "rule", PolicyEffect::Permit, true).await;
    let ev = only_event(s, t.id, actions::POLICY_CREATE, p.id.into_uuid()).await;
    assert_eq!(ev.entity_type, "policy");
    assert_eq!((ev.before, ev.after), (None, Some(p.to_audit_json())));
    let p2 = s
        .update_policy(
            t.id,
            p.id,
            PolicyPatch {
                active: Some(false),
                ..Default::default()
            },
            None,
            &ctx(),
        )
        .await
        .unwrap();
    let ev = only_event(s, t.id, actions::POLICY_UPDATE, p.id.into_uuid()).await;
    assert_eq!(
        (ev.before, ev.after),
        (Some(p.to_audit_json()), Some(p2.to_audit_json()))
    );
    s.delete_policy(t.id, p.id, &ctx()).await.unwrap();
    let ev = only_event(s, t.id, actions::POLICY_DELETE, p.id.into_uuid()).await;
    assert_eq!((ev.before, ev.after), (Some(p2.to_audit_json()), None));

    // Deleting the role last.
    s.delete_role(t.id, r.id, &ctx()).await.unwrap();
    let ev = only_event(s, t.id, actions::ROLE_DELETE, r.id.into_uuid()).await;
    assert_eq!((ev.before, ev.after), (Some(r3.to_audit_json()), None));

    // Every authorization event of the tenant is in the tenant's trail only.
    for ev in all_events(s, t.id).await {
        assert_eq!(ev.tenant_id, t.id);
    }
}

// ------------------------------------------------------------------------------------------
// Tenant isolation
// ------------------------------------------------------------------------------------------

async fn case_authz_tenant_isolation(store: Rig) {
    let s = &store;
    let a = tenant(s, "acme").await;
    let b = tenant(s, "globex").await;
    let a_user = user(s, a.id, "a@acme.test", "A User").await;
    let a_other = user(s, a.id, "a2@acme.test", "A Other").await;
    let b_user = user(s, b.id, "b@globex.test", "B User").await;
    let a_role = role(s, a.id, "secret", 20, &["users:read:all"]).await;
    let a_admin = role_named(s, a.id, ADMIN_ROLE).await;
    let b_role = role(s, b.id, "mine", 20, &[]).await;
    s.assign_role(a.id, a_user.id, a_role.id, None, &ctx())
        .await
        .unwrap();
    let a_group = group(s, a.id, "vault", None).await;
    let b_group = group(s, b.id, "lobby", None).await;
    add_one(s, a.id, a_group.id, a_user.id).await;
    s.grant_group_role(a.id, a_group.id, a_role.id, &ctx())
        .await
        .unwrap();
    let a_policy = policy(s, a.id, "rule", PolicyEffect::Forbid, true).await;
    let users_a = [a_user.id, a_other.id];
    let before_a = snapshot(s, a.id, &users_a).await;

    // Tenant B can neither read nor change A's roles ...
    assert_not_found(&err(s.get_role(b.id, a_role.id).await), "role");
    assert_not_found(&err(s.get_role(b.id, a_admin.id).await), "role");
    assert_not_found(
        &err(s
            .update_role(
                b.id,
                a_role.id,
                RolePatch {
                    priority: Some(1),
                    ..Default::default()
                },
                &ctx(),
            )
            .await),
        "role",
    );
    assert_not_found(
        &err(s
            .update_role_permissions(b.id, a_role.id, vec![], perms(&["users:read:all"]), &ctx())
            .await),
        "role",
    );
    assert_not_found(&err(s.delete_role(b.id, a_role.id, &ctx()).await), "role");
    assert_not_found(&err(s.delete_role(b.id, a_admin.id, &ctx()).await), "role");
    // ... nor its users' assignments ...
    assert_not_found(
        &err(s
            .assign_role(b.id, a_user.id, b_role.id, None, &ctx())
            .await),
        "user",
    );
    let e = err(s
        .assign_role(b.id, b_user.id, a_role.id, None, &ctx())
        .await);
    assert_field_error(&e, "role_id", "unknown_role");
    let e = err(s
        .assign_role(a.id, a_other.id, b_role.id, None, &ctx())
        .await);
    assert_field_error(&e, "role_id", "unknown_role");
    assert_not_found(
        &err(s.unassign_role(b.id, a_user.id, a_role.id, &ctx()).await),
        "user",
    );
    assert!(s.load_principal(b.id, a_user.id).await.unwrap().is_none());
    // ... nor its groups, members and group roles ...
    assert_not_found(&err(s.get_group(b.id, a_group.id).await), "group");
    assert_not_found(
        &err(s
            .update_group(b.id, a_group.id, rename_group("stolen"), &ctx())
            .await),
        "group",
    );
    assert_not_found(
        &err(s.delete_group(b.id, a_group.id, &ctx()).await),
        "group",
    );
    assert_not_found(&err(s.list_group_members(b.id, a_group.id).await), "group");
    assert_not_found(
        &err(s
            .add_group_members(
                b.id,
                a_group.id,
                vec![b_user.id],
                GroupMemberRole::Member,
                &ctx(),
            )
            .await),
        "group",
    );
    assert_not_found(
        &err(s
            .update_group_member(b.id, a_group.id, a_user.id, GroupMemberRole::Owner, &ctx())
            .await),
        "group",
    );
    assert_not_found(
        &err(s
            .remove_group_member(b.id, a_group.id, a_user.id, &ctx())
            .await),
        "group",
    );
    let q = AvailableUsersQuery {
        search: None,
        department: None,
        limit: 100,
    };
    assert_not_found(&err(s.available_users(b.id, a_group.id, &q).await), "group");
    assert_not_found(&err(s.list_group_roles(b.id, a_group.id).await), "group");
    assert_not_found(
        &err(s
            .grant_group_role(b.id, a_group.id, b_role.id, &ctx())
            .await),
        "group",
    );
    assert_not_found(
        &err(s
            .revoke_group_role(b.id, a_group.id, a_role.id, &ctx())
            .await),
        "group",
    );
    let e = err(s
        .grant_group_role(b.id, b_group.id, a_role.id, &ctx())
        .await);
    assert_field_error(&e, "role_id", "unknown_role");
    let e = err(s
        .create_group(b.id, new_group("child", Some(a_group.id)), &ctx())
        .await);
    assert_field_error(&e, "parent_id", "unknown_group");
    let e = err(s
        .update_group(b.id, b_group.id, set_parent(Some(a_group.id)), &ctx())
        .await);
    assert_field_error(&e, "parent_id", "unknown_group");
    // A's users cannot join B's groups, and B's available users are B's.
    let results = add(s, b.id, b_group.id, &[a_user.id]).await;
    assert_eq!(
        outcomes(&results),
        vec![Err(MemberAddFailure::UserNotFound)]
    );
    let avail: Vec<UserId> = s
        .available_users(b.id, b_group.id, &q)
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(avail, vec![b_user.id]);
    // ... nor its policies.
    assert_not_found(&err(s.get_policy(b.id, a_policy.id).await), "policy");
    assert_not_found(
        &err(s
            .update_policy(
                b.id,
                a_policy.id,
                PolicyPatch {
                    active: Some(false),
                    ..Default::default()
                },
                None,
                &ctx(),
            )
            .await),
        "policy",
    );
    assert_not_found(
        &err(s.delete_policy(b.id, a_policy.id, &ctx()).await),
        "policy",
    );
    assert_not_found(
        &err(s.list_policy_versions(b.id, a_policy.id).await),
        "policy",
    );

    // B's lists and snapshot hold nothing of A.
    let b_roles = s.list_roles(b.id).await.unwrap();
    assert!(b_roles
        .iter()
        .all(|r| r.tenant_id == Some(b.id) || r.id == SUPER_ADMIN_ROLE_ID));
    let b_groups = s.list_groups(b.id).await.unwrap();
    assert_eq!(b_groups.len(), 1);
    assert_eq!(b_groups[0].group.id, b_group.id);
    assert!(s.list_policies(b.id).await.unwrap().is_empty());
    let b_data = loaded(s, b.id).await;
    assert!(b_data
        .roles
        .iter()
        .all(|r| r.tenant_id == Some(b.id) || r.id == SUPER_ADMIN_ROLE_ID));
    assert_eq!(b_data.groups.len(), 1);
    assert!(b_data.group_roles.is_empty());
    assert!(b_data.policies.is_empty());

    // And A is exactly as it was, trail and version included.
    assert_eq!(snapshot(s, a.id, &users_a).await, before_a);
    let a_uuids = [
        a_role.id.into_uuid(),
        a_group.id.into_uuid(),
        a_policy.id.into_uuid(),
        a_user.id.into_uuid(),
    ];
    for ev in all_events(s, b.id).await {
        assert!(
            !ev.entity_id.is_some_and(|id| a_uuids.contains(&id)),
            "{ev:?}"
        );
    }
}

// ------------------------------------------------------------------------------------------
// Concurrency
// ------------------------------------------------------------------------------------------

async fn case_concurrent_reparenting_keeps_tree_acyclic(store: Rig) {
    let t = tenant(&store, "acme").await;
    for round in 0..8 {
        // Two roots, each made the other's child at the same time.
        let a = group(&store, t.id, &format!("a{round}"), None).await;
        let b = group(&store, t.id, &format!("b{round}"), None).await;
        let tasks: Vec<_> = [(a.id, b.id), (b.id, a.id)]
            .into_iter()
            .map(|(g, p)| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .update_group(t.id, g, set_parent(Some(p)), &ctx())
                        .await
                })
            })
            .collect();
        let mut ok = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => ok += 1,
                Err(e) => assert_field_error(&e, "parent_id", "cycle"),
            }
        }
        assert_eq!(ok, 1, "round {round}: exactly one of the two moves wins");
        assert_acyclic(&store, t.id).await;
    }

    // Three groups in a ring: at most two of the three moves can succeed.
    for round in 0..4 {
        let ids: Vec<GroupId> = {
            let mut v = Vec::new();
            for i in 0..3 {
                v.push(
                    group(&store, t.id, &format!("ring{round}-{i}"), None)
                        .await
                        .id,
                );
            }
            v
        };
        let tasks: Vec<_> = (0..3)
            .map(|i| {
                let store = store.clone();
                let (g, p) = (ids[i], ids[(i + 1) % 3]);
                tokio::spawn(async move {
                    store
                        .update_group(t.id, g, set_parent(Some(p)), &ctx())
                        .await
                })
            })
            .collect();
        let mut ok = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => ok += 1,
                Err(e) => assert_field_error(&e, "parent_id", "cycle"),
            }
        }
        assert_eq!(ok, 2, "ring {round}");
        assert_acyclic(&store, t.id).await;
    }
}

async fn case_concurrent_additions_respect_max_members(store: Rig) {
    let t = tenant(&store, "acme").await;
    let mut users = Vec::new();
    for i in 0..12 {
        users.push(
            user(
                &store,
                t.id,
                &format!("u{i}@acme.test"),
                &format!("User {i}"),
            )
            .await
            .id,
        );
    }
    for round in 0..4 {
        let g = capped_group(&store, t.id, &format!("cap{round}"), 5).await;
        let tasks: Vec<_> = users
            .chunks(3)
            .map(|chunk| {
                let store = store.clone();
                let chunk = chunk.to_vec();
                tokio::spawn(async move {
                    store
                        .add_group_members(t.id, g.id, chunk, GroupMemberRole::Member, &ctx())
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut added = 0;
        let mut full = 0;
        for task in tasks {
            for r in task.await.unwrap() {
                match r.outcome {
                    Ok(_) => added += 1,
                    Err(MemberAddFailure::GroupFull) => full += 1,
                    Err(other) => panic!("round {round}: unexpected {other:?}"),
                }
            }
        }
        assert_eq!((added, full), (5, 7), "round {round}");
        assert_eq!(members(&store, t.id, g.id).await.len(), 5);
        assert_eq!(store.get_group(t.id, g.id).await.unwrap().member_count, 5);
    }

    // The same user added twice at once joins once.
    for (round, &u) in users.iter().enumerate().take(4) {
        let g = group(&store, t.id, &format!("twice{round}"), None).await;
        let tasks: Vec<_> = (0..2)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .add_group_members(t.id, g.id, vec![u], GroupMemberRole::Member, &ctx())
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut got = Vec::new();
        for task in tasks {
            got.extend(outcomes(&task.await.unwrap()));
        }
        got.sort_by_key(|o| o.is_err());
        assert_eq!(
            got,
            vec![Ok(u), Err(MemberAddFailure::AlreadyMember)],
            "round {round}"
        );
        assert_eq!(members(&store, t.id, g.id).await, vec![u]);
    }
}

async fn case_concurrent_super_admin_removals_keep_one(store: Rig) {
    let a = tenant(&store, "acme").await;
    let b = tenant(&store, "globex").await;
    let mut survivor: Option<(TenantId, UserId)> = None;
    for round in 0..8 {
        let x = user(&store, a.id, &format!("x{round}@acme.test"), "X").await;
        let y = user(&store, b.id, &format!("y{round}@globex.test"), "Y").await;
        store
            .assign_role(a.id, x.id, SUPER_ADMIN_ROLE_ID, None, &ctx())
            .await
            .unwrap();
        store
            .assign_role(b.id, y.id, SUPER_ADMIN_ROLE_ID, None, &ctx())
            .await
            .unwrap();
        // The last round's survivor steps down: x and y are the only holders.
        if let Some((tenant_id, id)) = survivor.take() {
            store
                .unassign_role(tenant_id, id, SUPER_ADMIN_ROLE_ID, &ctx())
                .await
                .unwrap();
        }
        let (sx, sy) = (store.clone(), store.clone());
        let (ta, tb) = (a.id, b.id);
        // Each round removes both holders at once, in a different way.
        let rx = tokio::spawn(async move {
            match round % 3 {
                0 => sx
                    .unassign_role(ta, x.id, SUPER_ADMIN_ROLE_ID, &ctx())
                    .await
                    .map(|_| ()),
                1 => sx.delete_user(ta, x.id, None, &ctx()).await.map(|_| ()),
                _ => sx
                    .update_user(ta, x.id, status(UserStatus::Blocked), None, &ctx())
                    .await
                    .map(|_| ()),
            }
        });
        let ry = tokio::spawn(async move {
            match round % 2 {
                0 => sy
                    .unassign_role(tb, y.id, SUPER_ADMIN_ROLE_ID, &ctx())
                    .await
                    .map(|_| ()),
                _ => sy.delete_user(tb, y.id, None, &ctx()).await.map(|_| ()),
            }
        });
        let (rx, ry) = (rx.await.unwrap(), ry.await.unwrap());
        match (rx, ry) {
            (Ok(()), Err(e)) => {
                assert_last_super_admin(&e);
                survivor = Some((b.id, y.id));
            }
            (Err(e), Ok(())) => {
                assert_last_super_admin(&e);
                survivor = Some((a.id, x.id));
            }
            other => panic!("round {round}: exactly one removal must win, got {other:?}"),
        }
        // The survivor is still an active holder.
        let (tenant_id, id) = survivor.unwrap();
        let held = store.get_user(tenant_id, id).await.unwrap();
        assert_eq!(held.status, UserStatus::Active);
        assert_eq!(held.deleted_at, None);
        assert!(user_role_names(&store, tenant_id, id)
            .await
            .contains(&SUPER_ADMIN_ROLE_NAME.to_owned()));
    }
}

/// User changes, role assignments, group membership, sign-in failures and principal loads
/// of one user, all at once: the services take their locks in one order (the tenant's
/// authorization, then the user), so none of them deadlocks or fails.
async fn case_user_and_authorization_writes_do_not_deadlock(store: Rig) {
    let t = tenant(&store, "race").await;
    let u = user(&store, t.id, "u@race.test", "U").await;
    let r = role(&store, t.id, "oncall", 5, &[]).await;
    let g = group(&store, t.id, "team", None).await;
    let rounds = 16;
    let mut tasks = Vec::new();
    for i in 0..rounds {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            let patch = UserPatch {
                full_name: Some(DisplayName::parse("full_name", &format!("Name {i}")).unwrap()),
                ..Default::default()
            };
            s.update_user(t.id, u.id, patch, None, &ctx())
                .await
                .map(|_| ())
        }));
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                s.assign_role(t.id, u.id, r.id, None, &ctx())
                    .await
                    .map(|_| ())
            } else {
                match s.unassign_role(t.id, u.id, r.id, &ctx()).await {
                    Err(Error::NotFound { .. }) => Ok(()),
                    other => other.map(|_| ()),
                }
            }
        }));
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                s.add_group_members(t.id, g.id, vec![u.id], GroupMemberRole::Member, &ctx())
                    .await
                    .map(|_| ())
            } else {
                match s.remove_group_member(t.id, g.id, u.id, &ctx()).await {
                    Err(Error::NotFound { .. }) => Ok(()),
                    other => other.map(|_| ()),
                }
            }
        }));
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            // A sign-in attempt's write: the user's credentials alone.
            let mut tx = s.begin().await?;
            let c = tx.credentials_for_update(t.id, u.id).await?;
            let policy = domain::auth::LockoutPolicy::default();
            if let Some(reserved) = c.reserve_attempt(&policy, now()) {
                tx.put_lock_state(t.id, u.id, &reserved).await?;
            }
            tx.commit().await.map(|_| ())
        }));
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.load_principal(t.id, u.id).await.map(|_| ())
        }));
    }
    let all = futures::future::join_all(tasks);
    let results = tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("no deadlock");
    for r in results {
        r.unwrap().unwrap();
    }
    assert!(version(&store, t.id).await >= i64::from(rounds));
}

/// More members than one statement takes (the backends read and write a batch at a time):
/// every one is added, answered in request order, stored once and recorded once; the
/// unknown and repeated ones are refused where they stand.
async fn case_add_group_members_in_bulk(s: Rig) {
    let t = tenant(&s, "bulk").await;
    let people: Vec<domain::users::User> = (0..1_205)
        .map(|i| domain::testing::user(t.id, &format!("bulk{i:04}@acme.test")))
        .collect();
    domain::testing::seed(s.store.as_ref(), t.id, &people, None).await;
    let g = group(&s, t.id, "everyone", None).await;
    let mut request: Vec<UserId> = people.iter().map(|u| u.id).collect();
    let stranger = UserId::new();
    request.insert(700, stranger);
    request.push(people[3].id);
    let results = add(&s, t.id, g.id, &request).await;
    assert_eq!(
        results.iter().map(|r| r.user_id).collect::<Vec<_>>(),
        request
    );
    for (i, r) in results.iter().enumerate() {
        let expected = if i == 700 {
            Err(MemberAddFailure::UserNotFound)
        } else if i == request.len() - 1 {
            Err(MemberAddFailure::AlreadyMember)
        } else {
            Ok(request[i])
        };
        assert_eq!(
            r.outcome.as_ref().map(|m| m.user_id).map_err(|f| *f),
            expected,
            "item {i}"
        );
        if let Ok(m) = &r.outcome {
            let who = people.iter().find(|u| u.id == m.user_id).unwrap();
            assert_eq!(m.email, who.email, "item {i} reads back its own user");
        }
    }
    let stored: BTreeSet<UserId> = members(&s, t.id, g.id).await.into_iter().collect();
    assert_eq!(stored, people.iter().map(|u| u.id).collect());
    let summary = s.get_group(t.id, g.id).await.unwrap();
    assert_eq!(summary.member_count, 1_205);
    let recorded = events_about(&s, t.id, actions::GROUP_MEMBER_ADD, g.id.into_uuid()).await;
    assert_eq!(recorded.len(), 1_205, "one record per added member");
    let recorded: BTreeSet<String> = recorded
        .iter()
        .map(|e| {
            e.after.as_ref().unwrap()["user_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(recorded.len(), 1_205, "each member recorded once");
}
