//! `portcullis dev seed-authz`: fills a tenant whose users `dev seed` created with a
//! realistic authorization set-up, for development and the authorization benchmark
//! (`bench/authz.sh`): application permissions, custom roles, a forest of nested groups
//! with role grants, memberships for every user, direct (some time-bound) role assignments
//! and active Cedar policies. Everything goes through the `Store` trait, as an
//! administrator's requests would (with their audit events); the same `--seed` over the same
//! users gives the same set-up.
//!
//! The policies name application actions only (`document:*`, `invoice:*`), never a
//! built-in one: checks of built-in actions such as `users:read` stay pure role checks,
//! which is what the benchmark's RBAC scenario measures.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::TimeDelta;
use domain::authz::{
    GroupMemberRole, GroupType, NewGroup, NewPermission, NewPolicy, NewRole, PermissionKey, Scope,
};
use domain::tenants::TenantSlug;
use domain::users::{User, UserListQuery};
use domain::values::{Description, DisplayName, Identifier, JsonObject};
use domain::{GroupId, RoleId, UserId};
use indicatif::{ProgressBar, ProgressStyle};
use portcullis_services::{Actor, Services};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// The application's resources and their actions, defined as tenant permissions at every
/// scope.
pub const APP_ACTIONS: &[(&str, &[&str])] = &[
    (
        "document",
        &[
            "read", "create", "update", "delete", "approve", "export", "share",
        ],
    ),
    ("invoice", &["read", "create", "approve", "pay", "export"]),
];

/// Built-in permissions custom roles may also carry (besides application ones).
const BUILT_IN_EXTRAS: &[&str] = &[
    "users:read:department",
    "users:read:all",
    "users:update:department",
    "groups:read:all",
    "roles:read:all",
    "directory:read:all",
    "sessions:read:department",
    "audit_logs:read:all",
];

/// What custom roles are for; the name's second part and the kind of permissions.
const FLAVOURS: &[&str] = &[
    "viewer", "editor", "approver", "auditor", "exporter", "manager", "clerk",
];

/// Job titles `dev seed` gives (for policies on `principal.job_title`).
const TITLES: &[&str] = &["Engineer", "Analyst", "Manager", "Director", "Lead"];

/// Members added per `add_group_members` call.
const MEMBER_CHUNK: usize = 1000;

/// Share of users given direct custom roles, and the share of those assignments that are
/// time-bound.
const ASSIGNED_SHARE: f64 = 0.05;
const TIME_BOUND_SHARE: f64 = 0.3;

/// What to create.
#[derive(Debug, Clone)]
pub struct SeedAuthzOptions {
    pub tenant: String,
    pub groups: usize,
    pub roles: usize,
    pub policies: usize,
    pub seed: u64,
}

/// What was created, and how long each phase took.
#[derive(Debug, Default)]
pub struct SeedAuthzReport {
    pub users: usize,
    pub permissions: usize,
    pub roles: usize,
    pub groups: usize,
    pub inactive_groups: usize,
    pub group_roles: usize,
    pub memberships: usize,
    pub assignments: usize,
    pub time_bound: usize,
    pub policies: usize,
    pub forbid_policies: usize,
    /// (phase, items, time), in order.
    pub phases: Vec<(&'static str, usize, Duration)>,
    pub elapsed: Duration,
}

impl SeedAuthzReport {
    pub fn to_json(&self) -> serde_json::Value {
        let phases: serde_json::Map<String, serde_json::Value> = self
            .phases
            .iter()
            .map(|(name, n, d)| {
                (
                    (*name).to_owned(),
                    serde_json::json!({"items": n, "seconds": round3(d.as_secs_f64())}),
                )
            })
            .collect();
        serde_json::json!({
            "users": self.users,
            "permissions": self.permissions,
            "roles": self.roles,
            "groups": self.groups,
            "inactive_groups": self.inactive_groups,
            "group_roles": self.group_roles,
            "memberships": self.memberships,
            "assignments": self.assignments,
            "time_bound_assignments": self.time_bound,
            "policies": self.policies,
            "forbid_policies": self.forbid_policies,
            "seconds": round3(self.elapsed.as_secs_f64()),
            "phases": phases,
        })
    }

    pub fn summary(&self) -> String {
        let phases: Vec<String> = self
            .phases
            .iter()
            .map(|(name, n, d)| format!("{name} {n} in {:.1}s", d.as_secs_f64()))
            .collect();
        format!(
            "seeded authorization for {} users in {:.1}s: {}",
            self.users,
            self.elapsed.as_secs_f64(),
            phases.join(", ")
        )
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A group being planned: its department (none for project groups) and depth (1 = root).
struct PlannedGroup {
    id: GroupId,
    name: String,
    department: Option<String>,
    depth: u8,
}

/// Fills the tenant `opts.tenant` (whose users exist already) with roles, groups,
/// memberships, assignments and policies.
pub async fn seed_authz(
    services: &Services,
    opts: &SeedAuthzOptions,
    progress: bool,
) -> anyhow::Result<SeedAuthzReport> {
    let slug = TenantSlug::parse("tenant", &opts.tenant)?;
    let tenant = services
        .tenant_by_slug(&Actor::operator(), &slug)
        .await
        .with_context(|| format!("tenant {slug}"))?
        .id;
    // The operator, in the tenant: every change goes through the services' rules.
    let ctx = Actor::system(tenant);
    if !services.list_groups(&ctx).await?.is_empty() {
        bail!("tenant {slug} already has groups: seed-authz fills a tenant once");
    }
    let started = Instant::now();
    let mut rng = SmallRng::seed_from_u64(opts.seed);
    let bar = if progress {
        ProgressBar::new(0)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{msg:<12} {bar:40} {pos}/{len}  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut report = SeedAuthzReport::default();
    let mut phase = Phase::new(&bar);

    // Users, in creation order (deterministic for the same users).
    phase.start("users", 0);
    let users = all_users(services, &ctx, &bar).await?;
    if users.is_empty() {
        bail!("tenant {slug} has no users: run `portcullis dev seed` first");
    }
    report.users = users.len();
    let departments: Vec<String> = users
        .iter()
        .filter_map(|u| u.department.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    phase.end(&mut report, users.len());

    // Permissions.
    let app_keys = app_permissions()?;
    phase.start("permissions", app_keys.len());
    for key in &app_keys {
        let description = format!(
            "{} {}s ({} scope)",
            key.action(),
            key.resource(),
            key.scope().as_str()
        );
        services
            .create_permission(
                &ctx,
                NewPermission {
                    key: key.clone(),
                    description: Some(Description::parse("description", &description)?),
                },
            )
            .await
            .with_context(|| format!("creating permission {key}"))?;
        bar.inc(1);
    }
    report.permissions = app_keys.len();
    phase.end(&mut report, app_keys.len());

    // Roles.
    phase.start("roles", opts.roles);
    let extras: Vec<PermissionKey> = BUILT_IN_EXTRAS
        .iter()
        .map(|k| PermissionKey::parse("permission", k))
        .collect::<Result<_, _>>()?;
    let mut roles: Vec<(RoleId, String)> = Vec::with_capacity(opts.roles);
    for i in 0..opts.roles {
        let flavour = FLAVOURS[i % FLAVOURS.len()];
        let name = format!("r{i:03}_{flavour}");
        let permissions = role_permissions(&mut rng, flavour, &app_keys, &extras);
        let role = services
            .create_role(
                &ctx,
                NewRole {
                    name: Identifier::parse("name", &name)?,
                    display_name: DisplayName::parse(
                        "display_name",
                        &format!("{} {i:03}", capitalise(flavour)),
                    )?,
                    description: Some(Description::parse(
                        "description",
                        &format!("Synthetic {flavour} role (seed-authz)"),
                    )?),
                    priority: rng.gen_range(1..=90),
                    // A few roles are switched off: they grant nothing.
                    active: !rng.gen_bool(0.05),
                    permissions,
                },
            )
            .await
            .with_context(|| format!("creating role {name}"))?;
        roles.push((role.id, role.name));
        bar.inc(1);
    }
    report.roles = roles.len();
    phase.end(&mut report, roles.len());

    // Groups: a root per department, teams below (up to four levels), and project groups.
    phase.start("groups", opts.groups);
    let mut groups: Vec<PlannedGroup> = Vec::with_capacity(opts.groups);
    for i in 0..opts.groups {
        let (name, department, depth, parent, group_type) = if i < departments.len() {
            let d = &departments[i];
            (
                format!("dept-{}", slugify(d)),
                Some(d.clone()),
                1,
                None,
                GroupType::Department,
            )
        } else if rng.gen_bool(0.05) || groups.is_empty() {
            (format!("project-{i:04}"), None, 1, None, GroupType::Custom)
        } else {
            // A parent at depth 1 to 3, so that the tree is at most four levels deep.
            let parent = loop {
                let p = &groups[rng.gen_range(0..groups.len())];
                if p.depth < 4 {
                    break p;
                }
            };
            let prefix = parent
                .department
                .as_deref()
                .map_or_else(|| "project".to_owned(), slugify);
            (
                format!("{prefix}-team-{i:04}"),
                parent.department.clone(),
                parent.depth + 1,
                Some(parent.id),
                GroupType::Team,
            )
        };
        let active = depth == 1 || !rng.gen_bool(0.03);
        let group = services
            .create_group(
                &ctx,
                NewGroup {
                    name: Identifier::parse("name", &name)?,
                    display_name: DisplayName::parse("display_name", &name.replace('-', " "))?,
                    description: None,
                    group_type,
                    parent_id: parent,
                    max_members: None,
                    active,
                    settings: JsonObject::default(),
                },
            )
            .await
            .with_context(|| format!("creating group {name}"))?;
        report.inactive_groups += usize::from(!active);
        groups.push(PlannedGroup {
            id: group.id,
            name,
            department,
            depth,
        });
        bar.inc(1);
    }
    report.groups = groups.len();
    phase.end(&mut report, groups.len());

    // Group role grants: department roots one or two roles, other groups none to two.
    phase.start("group roles", 0);
    let mut grants = Vec::new();
    for g in &groups {
        let n = if g.depth == 1 && g.department.is_some() {
            rng.gen_range(1..=2)
        } else {
            rng.gen_range(0..=2)
        };
        for (role, _) in roles.choose_multiple(&mut rng, n) {
            grants.push((g.id, *role));
        }
    }
    bar.set_length(grants.len() as u64);
    for (group, role) in &grants {
        services
            .grant_group_role(&ctx, *group, *role)
            .await
            .context("granting a role to a group")?;
        bar.inc(1);
    }
    report.group_roles = grants.len();
    phase.end(&mut report, grants.len());

    // Memberships: every user in one to three groups, the first within their department.
    let mut by_department: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, g) in groups.iter().enumerate() {
        if let Some(d) = &g.department {
            by_department.entry(d.as_str()).or_default().push(i);
        }
    }
    let mut members: Vec<Vec<UserId>> = vec![Vec::new(); groups.len()];
    for u in &users {
        let mut mine: Vec<usize> = Vec::with_capacity(3);
        let first = u
            .department
            .as_deref()
            .and_then(|d| by_department.get(d))
            .and_then(|list| list.choose(&mut rng).copied())
            .unwrap_or_else(|| rng.gen_range(0..groups.len()));
        mine.push(first);
        let extra = match rng.gen_range(0..10) {
            0..=4 => 0,
            5..=7 => 1,
            _ => 2,
        };
        for _ in 0..extra {
            let g = rng.gen_range(0..groups.len());
            if !mine.contains(&g) {
                mine.push(g);
            }
        }
        for g in mine {
            members[g].push(u.id);
        }
    }
    let total: usize = members.iter().map(Vec::len).sum();
    phase.start("memberships", total);
    for (g, list) in groups.iter().zip(&members) {
        // The first member owns the group; the others are plain members.
        let (owners, rest) = list.split_at(list.len().min(1));
        let batches = std::iter::once((owners, GroupMemberRole::Owner)).chain(
            rest.chunks(MEMBER_CHUNK)
                .map(|c| (c, GroupMemberRole::Member)),
        );
        for (chunk, role) in batches.filter(|(c, _)| !c.is_empty()) {
            let results = services
                .add_members(&ctx, g.id, chunk.to_vec(), role)
                .await
                .with_context(|| format!("adding members to {}", g.name))?;
            if let Some(failed) = results.iter().find(|r| r.outcome.is_err()) {
                bail!(
                    "adding {} to {}: {:?}",
                    failed.user_id,
                    g.name,
                    failed.outcome.as_ref().err()
                );
            }
            bar.inc(chunk.len() as u64);
        }
    }
    report.memberships = total;
    phase.end(&mut report, total);

    // Direct assignments: a share of the users get one or two custom roles, some until a
    // time in the future.
    let assigned: Vec<&User> = users
        .iter()
        .filter(|_| rng.gen_bool(ASSIGNED_SHARE))
        .collect();
    let mut planned = Vec::new();
    let now = domain::time::now();
    for u in assigned {
        let n = if rng.gen_bool(0.8) { 1 } else { 2 };
        for (role, _) in roles.choose_multiple(&mut rng, n) {
            let expires = rng
                .gen_bool(TIME_BOUND_SHARE)
                .then(|| now + TimeDelta::days(rng.gen_range(7..=365)));
            planned.push((u.id, *role, expires));
        }
    }
    phase.start("assignments", planned.len());
    for (user, role, expires) in &planned {
        services
            .assign_role(&ctx, *user, *role, *expires)
            .await
            .context("assigning a role")?;
        report.time_bound += usize::from(expires.is_some());
        bar.inc(1);
    }
    report.assignments = planned.len();
    phase.end(&mut report, planned.len());

    // Policies, each validated against the tenant's schema (which now has the application
    // actions) before it is stored.
    phase.start("policies", opts.policies);
    let engine = services.engine();
    let world = World {
        departments: &departments,
        groups: &groups,
        roles: &roles,
        users: &users,
    };
    for i in 0..opts.policies {
        let (name, description, source) = policy(&mut rng, i, &world);
        let effect = engine
            .validate_policy(tenant, &source)
            .await
            .with_context(|| format!("policy {name} does not validate:\n{source}"))?;
        services
            .create_policy(
                &ctx,
                NewPolicy {
                    name: Identifier::parse("name", &name)?,
                    description: Some(Description::parse("description", &description)?),
                    effect,
                    source,
                    active: true,
                },
            )
            .await
            .with_context(|| format!("creating policy {name}"))?;
        report.forbid_policies += usize::from(effect == domain::authz::PolicyEffect::Forbid);
        bar.inc(1);
    }
    report.policies = opts.policies;
    phase.end(&mut report, opts.policies);

    bar.finish_and_clear();
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Times the phases and drives the progress bar.
struct Phase<'a> {
    bar: &'a ProgressBar,
    name: &'static str,
    started: Instant,
}

impl<'a> Phase<'a> {
    fn new(bar: &'a ProgressBar) -> Self {
        Self {
            bar,
            name: "",
            started: Instant::now(),
        }
    }

    fn start(&mut self, name: &'static str, len: usize) {
        self.name = name;
        self.started = Instant::now();
        self.bar.set_message(name);
        self.bar.set_length(len as u64);
        self.bar.set_position(0);
        self.bar.reset_eta();
    }

    fn end(&mut self, report: &mut SeedAuthzReport, items: usize) {
        report
            .phases
            .push((self.name, items, self.started.elapsed()));
    }
}

/// Every non-deleted user of the tenant, oldest first.
async fn all_users(
    services: &Services,
    ctx: &Actor,
    bar: &ProgressBar,
) -> anyhow::Result<Vec<User>> {
    let mut q = UserListQuery {
        limit: domain::page::PageSize::new(Some(domain::page::MAX_PAGE_SIZE))?,
        ..UserListQuery::default()
    };
    let mut out = Vec::new();
    loop {
        let page = services.list_users(ctx, q.clone()).await?;
        let Some(last) = page.items.last() else {
            break;
        };
        q.after = Some(domain::users::UserCursor::after(last, q.sort));
        let done = page.next_cursor.is_none();
        out.extend(page.items);
        bar.set_position(out.len() as u64);
        if done {
            break;
        }
    }
    Ok(out)
}

/// Every application `resource:action` at every scope.
fn app_permissions() -> anyhow::Result<Vec<PermissionKey>> {
    let mut out = Vec::new();
    for (resource, actions) in APP_ACTIONS {
        for action in *actions {
            for scope in Scope::ALL {
                out.push(PermissionKey::new(resource, action, *scope)?);
            }
        }
    }
    Ok(out)
}

/// Three to twelve permissions fitting the role's flavour.
fn role_permissions(
    rng: &mut SmallRng,
    flavour: &str,
    app: &[PermissionKey],
    extras: &[PermissionKey],
) -> Vec<PermissionKey> {
    let fits = |k: &PermissionKey| match flavour {
        "viewer" | "auditor" => k.action() == "read",
        "editor" => matches!(k.action(), "read" | "create" | "update" | "share"),
        "approver" => matches!(k.action(), "read" | "approve"),
        "exporter" => matches!(k.action(), "read" | "export"),
        "clerk" => k.resource() == "invoice" && k.action() != "approve",
        _ => true,
    };
    let pool: Vec<&PermissionKey> = app.iter().filter(|k| fits(k)).collect();
    let n = rng.gen_range(2..=8).min(pool.len());
    let mut out: Vec<PermissionKey> = pool.choose_multiple(rng, n).map(|k| (*k).clone()).collect();
    let m = rng.gen_range(1..=4).min(extras.len());
    out.extend(extras.choose_multiple(rng, m).cloned());
    out.sort();
    out.dedup();
    out
}

/// What policies may refer to.
struct World<'a> {
    departments: &'a [String],
    groups: &'a [PlannedGroup],
    roles: &'a [(RoleId, String)],
    users: &'a [User],
}

impl World<'_> {
    fn department(&self, rng: &mut SmallRng) -> String {
        self.departments
            .choose(rng)
            .cloned()
            .unwrap_or_else(|| "Engineering".to_owned())
    }
}

/// `Action::"a"` or `action in [...]` of one to three application actions of `resource`
/// (any resource when none), as the action clause of a policy.
fn actions_clause(rng: &mut SmallRng, resource: Option<&str>, only: &[&str]) -> String {
    let pool: Vec<String> = APP_ACTIONS
        .iter()
        .filter(|(r, _)| resource.is_none_or(|x| x == *r))
        .flat_map(|(r, actions)| {
            actions
                .iter()
                .filter(|a| only.is_empty() || only.contains(a))
                .map(move |a| format!("{r}:{a}"))
        })
        .collect();
    let n = rng.gen_range(1..=3).min(pool.len()).max(1);
    let chosen: Vec<&String> = pool.choose_multiple(rng, n).collect();
    if let [one] = chosen.as_slice() {
        format!("action == Action::\"{one}\"")
    } else {
        let list: Vec<String> = chosen.iter().map(|a| format!("Action::\"{a}\"")).collect();
        format!("action in [{}]", list.join(", "))
    }
}

fn resource_kind(rng: &mut SmallRng) -> &'static str {
    if rng.gen_bool(0.6) {
        "document"
    } else {
        "invoice"
    }
}

/// The `i`th policy: its name, description and Cedar source, a mix of forbid guards and
/// attribute-based permits over the application actions.
fn policy(rng: &mut SmallRng, i: usize, w: &World<'_>) -> (String, String, String) {
    const KINDS: usize = 17;
    let kind = i % KINDS;
    let r = resource_kind(rng);
    let (slug, description, source) = match kind {
        0 => {
            let t = rng.gen_range(60..=95);
            let a = actions_clause(rng, Some(r), &["delete", "export", "pay", "approve"]);
            (
                "forbid-risky",
                format!("Nothing sensitive at a risk score of {t} or more"),
                format!("forbid (principal, {a}, resource)\nwhen {{ context.risk_score >= {t} }};"),
            )
        }
        1 => {
            let a = actions_clause(rng, Some(r), &["delete", "pay", "approve"]);
            (
                "forbid-without-mfa",
                "Two factors for destructive and money-moving actions".to_owned(),
                format!("forbid (principal, {a}, resource)\nunless {{ context.mfa_level >= 2 }};"),
            )
        }
        2 => {
            let t = rng.gen_range(20..=60);
            let a = actions_clause(rng, Some(r), &[]);
            (
                "forbid-untrusted-device",
                format!("An untrusted device above risk {t} is refused"),
                format!(
                    "forbid (principal, {a}, resource)\nwhen {{ !context.device_trusted && context.risk_score > {t} }};"
                ),
            )
        }
        3 => {
            let a = actions_clause(rng, None, &[]);
            (
                "forbid-classified",
                "Classification above the principal's clearance".to_owned(),
                format!(
                    "forbid (principal, {a}, resource)\nwhen {{ resource has classification && resource.classification > principal.clearance_level }};"
                ),
            )
        }
        4 => {
            let a = actions_clause(rng, Some("invoice"), &["pay", "approve", "create"]);
            (
                "forbid-weekend",
                "No payments and approvals at weekends".to_owned(),
                format!("forbid (principal, {a}, resource)\nwhen {{ context.now.weekday > 5 }};"),
            )
        }
        5 => {
            let (from, to) = (rng.gen_range(6..=9), rng.gen_range(18..=22));
            let a = actions_clause(rng, Some(r), &["update", "delete", "approve", "pay"]);
            (
                "forbid-after-hours",
                format!("Changes only between {from}:00 and {to}:00 local time"),
                format!(
                    "forbid (principal, {a}, resource)\nunless {{ context.now.hour >= {from} && context.now.hour < {to} }};"
                ),
            )
        }
        6 => {
            let a = actions_clause(rng, Some(r), &["export", "share", "read"]);
            (
                "forbid-confidential",
                "Confidential resources leave only with two factors".to_owned(),
                format!(
                    "forbid (principal, {a}, resource)\nwhen {{ resource.hasTag(\"confidential\") && resource.getTag(\"confidential\") == \"true\" && context.mfa_level < 2 }};"
                ),
            )
        }
        7 => {
            let t = rng.gen_range(10..=50);
            let a = actions_clause(rng, Some(r), &[]);
            (
                "forbid-off-network",
                format!("Off the corporate network, only below risk {t}"),
                format!(
                    "forbid (principal, {a}, resource)\nwhen {{ context has ip && !context.ip.isInRange(ip(\"10.0.0.0/8\")) && context.risk_score > {t} }};"
                ),
            )
        }
        8 => {
            let d = w.department(rng);
            let a = actions_clause(rng, Some(r), &["read", "update", "share"]);
            (
                "permit-own-department",
                format!("{d} works on {d}'s {r}s"),
                format!(
                    "permit (principal, {a}, resource)\nwhen {{ principal has department && principal.department == \"{d}\" && resource has department && resource.department == principal.department }};"
                ),
            )
        }
        9 => {
            let g = &w.groups[rng.gen_range(0..w.groups.len())];
            let d = g.department.clone().unwrap_or_else(|| w.department(rng));
            let a = actions_clause(rng, Some(r), &["read", "update", "approve"]);
            (
                "permit-group",
                format!("Members of {} handle {d}'s {r}s", g.name),
                format!(
                    "permit (principal in Group::\"{}\", {a}, resource)\nwhen {{ resource has department && resource.department == \"{d}\" }};",
                    g.name
                ),
            )
        }
        10 => {
            let (_, role) = &w.roles[rng.gen_range(0..w.roles.len())];
            let a = actions_clause(rng, Some(r), &[]);
            (
                "permit-role-mfa",
                format!("{role} with at least one factor"),
                format!(
                    "permit (principal in Role::\"{role}\", {a}, resource)\nwhen {{ context.mfa_level >= 1 }};"
                ),
            )
        }
        11 => {
            let a = actions_clause(rng, Some(r), &["read", "update", "share", "export"]);
            (
                "permit-owner",
                format!("Owners of a {r} work on it"),
                format!(
                    "permit (principal, {a}, resource)\nwhen {{ resource has owner && resource.owner == principal }};"
                ),
            )
        }
        12 => {
            let a = actions_clause(rng, Some(r), &["approve", "read"]);
            (
                "permit-reports-to",
                format!("Managers approve their reports' {r}s"),
                format!(
                    "permit (principal, {a}, resource)\nwhen {{ resource has owner && resource.owner has manager && resource.owner.manager == principal }};"
                ),
            )
        }
        13 => {
            let title = TITLES[rng.gen_range(0..TITLES.len())];
            let level = rng.gen_range(1..=4);
            let a = actions_clause(rng, Some(r), &["read", "approve", "export"]);
            (
                "permit-cleared-title",
                format!("{title}s cleared to level {level}"),
                format!(
                    "permit (principal, {a}, resource)\nwhen {{ principal has job_title && principal.job_title == \"{title}\" && principal.clearance_level >= {level} && resource has classification && resource.classification <= {level} }};"
                ),
            )
        }
        14 => {
            let u = &w.users[rng.gen_range(0..w.users.len())];
            let a = actions_clause(rng, Some(r), &["read"]);
            (
                "permit-org-tree",
                format!("Everyone below {} reads {r}s", u.full_name),
                format!(
                    "permit (principal, {a}, resource)\nwhen {{ principal.managers.contains(User::\"{}\") }};",
                    u.id
                ),
            )
        }
        15 => {
            let (_, role) = &w.roles[rng.gen_range(0..w.roles.len())];
            let a = actions_clause(rng, Some(r), &[]);
            (
                "permit-role-office-hours",
                format!("{role} during office hours"),
                format!(
                    "permit (principal, {a}, resource)\nwhen {{ principal.roles.contains(\"{role}\") && context.now.hour >= 8 && context.now.hour < 18 }};"
                ),
            )
        }
        _ => {
            let day = ["12-25", "01-01", "05-01", "12-24"][rng.gen_range(0..4)];
            let a = actions_clause(rng, Some("invoice"), &["pay", "create"]);
            (
                "forbid-holiday",
                format!("No invoices on {day}"),
                format!(
                    "forbid (principal, {a}, resource)\nwhen {{ context.now.date like \"*-{day}\" }};"
                ),
            )
        }
    };
    (format!("p{i:03}-{slug}"), description, source)
}

fn slugify(s: &str) -> String {
    s.to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_name_only_application_actions() {
        let mut rng = SmallRng::seed_from_u64(7);
        for _ in 0..200 {
            let a = actions_clause(&mut rng, None, &[]);
            assert!(a.starts_with("action"), "{a}");
            assert!(
                a.contains("document:") || a.contains("invoice:"),
                "{a} names an application action"
            );
        }
    }
}
