//! The authorization scenarios: single decisions of the engine in-process (`authz-rbac`,
//! `authz-cedar`), and `POST /api/v1/authz/check` over HTTP (`authz-check`). See the crate
//! documentation for what each measures.
//!
//! The checks are made up from the tenant as `portcullis dev seed` and
//! `portcullis dev seed-authz` left it: principals among a sample of its active users, RBAC
//! checks on built-in actions (which seed-authz's policies never name: no Cedar work), and
//! Cedar checks on the tenant's own application actions (`document:*`, `invoice:*`, which
//! its policies do name) with resource attributes and contexts that make the policies'
//! conditions go either way.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use chrono::{DateTime, FixedOffset, Offset as _, Utc};
use domain::authz::ActionKey;
use domain::page::{PageSize, MAX_PAGE_SIZE};
use domain::tenants::TenantSlug;
use domain::users::{UserCursor, UserListQuery, UserStatus};
use domain::{Store, TenantId, UserId};
use hdrhistogram::Histogram;
use portcullis_authz::{Check, Context, Engine, Reason, Resource};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use reqwest::{Client, Url};
use serde_json::{json, Map, Value};

use super::auth::Extra;
use super::{get_json, MakeRequest, Measured};

/// Built-in actions of the RBAC checks, on a user resource, with their weights: what
/// Portcullis's own endpoints ask.
const RBAC_ACTIONS: &[(&str, u32)] =
    &[("users:read", 6), ("users:update", 2), ("sessions:read", 2)];

/// UTC offsets the checks come from (so that local working hours differ).
const OFFSETS_MINUTES: &[i32] = &[-480, -300, 0, 60, 120, 330, 540];

/// A user a check may be about.
#[derive(Debug, Clone)]
pub struct SampleUser {
    pub id: UserId,
    pub department: Option<String>,
}

/// One check, before it becomes an engine `Check` or an HTTP body.
#[derive(Debug, Clone)]
pub struct Spec {
    pub principal: UserId,
    pub action: ActionKey,
    pub kind: String,
    pub id: Option<String>,
    pub attributes: Map<String, Value>,
    pub offset: FixedOffset,
    pub ip: Option<IpAddr>,
    pub risk_score: i64,
    pub mfa_level: i64,
    pub device_trusted: bool,
}

impl Spec {
    /// The engine's check, at `now` in the spec's offset.
    pub fn check(&self, now: DateTime<Utc>) -> Check {
        let mut context = Context::at(now.with_timezone(&self.offset));
        context.ip = self.ip;
        context.risk_score = self.risk_score;
        context.mfa_level = self.mfa_level;
        context.device_trusted = self.device_trusted;
        Check {
            principal: self.principal,
            action: self.action.clone(),
            resource: Resource {
                kind: self.kind.clone(),
                id: self.id.clone(),
                attributes: self.attributes.clone(),
            },
            context,
        }
    }

    /// The body of `POST /api/v1/authz/check`, at `now` in the spec's offset.
    pub fn body(&self, now: DateTime<Utc>) -> Value {
        let mut context = json!({
            "time": now.with_timezone(&self.offset).to_rfc3339(),
            "risk_score": self.risk_score,
            "mfa_level": self.mfa_level,
            "device_trusted": self.device_trusted,
        });
        if let (Some(ip), Value::Object(c)) = (self.ip, &mut context) {
            c.insert("ip".into(), json!(ip.to_string()));
        }
        json!({
            "principal": self.principal.to_string(),
            "action": self.action.to_string(),
            "resource": {"type": self.kind, "id": self.id, "attributes": self.attributes},
            "context": context,
        })
    }
}

/// Makes up checks about a sample of users.
pub struct Workload {
    users: Vec<SampleUser>,
    /// Each user's usual address (by index): 70 % on the corporate network (10.0.0.0/8).
    homes: Vec<IpAddr>,
    departments: Vec<String>,
    /// The tenant's own `resource:action`s (what its policies name).
    app_actions: Vec<ActionKey>,
}

impl Workload {
    pub fn new(users: Vec<SampleUser>, app_actions: Vec<ActionKey>) -> anyhow::Result<Self> {
        if users.is_empty() {
            bail!("the tenant has no active users: run `portcullis dev seed` first");
        }
        if app_actions.is_empty() {
            bail!(
                "the tenant defines no application permissions: run `portcullis dev seed-authz` first"
            );
        }
        let departments = users
            .iter()
            .filter_map(|u| u.department.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut rng = SmallRng::seed_from_u64(4);
        let homes = users.iter().map(|_| random_ip(&mut rng, 0.7)).collect();
        Ok(Self {
            users,
            homes,
            departments,
            app_actions,
        })
    }

    pub fn users(&self) -> &[SampleUser] {
        &self.users
    }

    fn user(&self, rng: &mut SmallRng) -> (usize, &SampleUser) {
        let i = rng.gen_range(0..self.users.len());
        (i, &self.users[i])
    }

    /// The circumstances of a check by the `principal`th user: mostly from its usual
    /// address.
    fn context(&self, rng: &mut SmallRng, spec: &mut Spec, principal: usize) {
        let minutes = OFFSETS_MINUTES[rng.gen_range(0..OFFSETS_MINUTES.len())];
        spec.offset = FixedOffset::east_opt(minutes * 60).unwrap_or(Utc.fix());
        spec.ip = match rng.gen_range(0..10) {
            0 => None,
            1 => Some(random_ip(rng, 0.3)),
            _ => self.homes.get(principal).copied(),
        };
        // Mostly low risk and two factors on a trusted device, now and then not.
        let r: f64 = rng.gen();
        spec.risk_score = (r * r * r * 100.0) as i64;
        spec.mfa_level = match rng.gen_range(0..10) {
            0 => 0,
            1..=3 => 1,
            _ => 2,
        };
        spec.device_trusted = rng.gen_bool(0.75);
    }

    /// A check of a built-in action on a user of the sample (sometimes the principal).
    pub fn rbac(&self, rng: &mut SmallRng) -> anyhow::Result<Spec> {
        let index = rng.gen_range(0..self.users.len());
        self.rbac_by(rng, index)
    }

    /// A check of a built-in action by the `index`th user of the sample.
    pub fn rbac_by(&self, rng: &mut SmallRng, index: usize) -> anyhow::Result<Spec> {
        let principal = self
            .users
            .get(index)
            .ok_or_else(|| anyhow!("no user {index} in the sample"))?;
        let total: u32 = RBAC_ACTIONS.iter().map(|(_, w)| w).sum();
        let mut pick = rng.gen_range(0..total);
        let mut action = RBAC_ACTIONS[0].0;
        for (a, w) in RBAC_ACTIONS {
            if pick < *w {
                action = a;
                break;
            }
            pick -= w;
        }
        let target = if rng.gen_bool(0.1) {
            principal
        } else {
            self.user(rng).1
        };
        let mut attributes = Map::new();
        if let Some(d) = &target.department {
            attributes.insert("department".into(), json!(d));
        }
        attributes.insert("owner".into(), json!(target.id.to_string()));
        let (kind, id) = if action.starts_with("sessions:") {
            ("sessions", format!("s-{}", rng.gen::<u32>()))
        } else {
            ("users", target.id.to_string())
        };
        let mut spec = Spec {
            principal: principal.id,
            action: ActionKey::parse("action", action).map_err(|e| anyhow!("{e:?}"))?,
            kind: kind.to_owned(),
            id: Some(id),
            attributes,
            offset: Utc.fix(),
            ip: None,
            risk_score: 0,
            mfa_level: 0,
            device_trusted: false,
        };
        self.context(rng, &mut spec, index);
        Ok(spec)
    }

    /// A check of an application action, with the attributes and context its policies
    /// look at.
    pub fn cedar(&self, rng: &mut SmallRng) -> Spec {
        let (index, principal) = self.user(rng);
        let action = self.app_actions[rng.gen_range(0..self.app_actions.len())].clone();
        let mut attributes = Map::new();
        let department = if rng.gen_bool(0.5) {
            principal.department.clone()
        } else {
            self.departments.choose(rng).cloned()
        };
        if let Some(d) = department {
            attributes.insert("department".into(), json!(d));
        }
        if rng.gen_bool(0.8) {
            // Mostly unclassified or low, now and then secret.
            let c = match rng.gen_range(0..100) {
                0..=29 => 0,
                30..=54 => 1,
                55..=74 => 2,
                75..=89 => 3,
                90..=96 => 4,
                _ => 5,
            };
            attributes.insert("classification".into(), json!(c));
        }
        match rng.gen_range(0..10) {
            0..=2 => {
                attributes.insert("owner".into(), json!(principal.id.to_string()));
            }
            3..=7 => {
                attributes.insert("owner".into(), json!(self.user(rng).1.id.to_string()));
            }
            _ => {}
        }
        if rng.gen_bool(0.7) {
            attributes.insert("confidential".into(), json!(rng.gen_bool(0.3)));
        }
        let kind = action.resource().to_owned();
        let mut spec = Spec {
            principal: principal.id,
            id: Some(format!("{}-{}", kind, rng.gen_range(1..1_000_000))),
            action,
            kind,
            attributes,
            offset: Utc.fix(),
            ip: None,
            risk_score: 0,
            mfa_level: 0,
            device_trusted: false,
        };
        self.context(rng, &mut spec, index);
        spec
    }
}

/// An address: with probability `internal` on the corporate network (10.0.0.0/8).
fn random_ip(rng: &mut SmallRng, internal: f64) -> IpAddr {
    let first = if rng.gen_bool(internal) {
        10
    } else {
        rng.gen_range(11..=223)
    };
    IpAddr::V4(Ipv4Addr::new(first, rng.gen(), rng.gen(), rng.gen()))
}

/// The in-process set-up shared by `authz-rbac` and `authz-cedar`: the store, an engine
/// whose cache holds the sample's principals, and the workload.
pub struct InProcess {
    engine: Engine,
    tenant: TenantId,
    workload: Workload,
    pub setup_note: String,
}

/// Opens the benchmark database as the server does: a `postgres://` URL, or a SQLite file
/// (`sqlite://path`, or a plain path; it must exist).
async fn open_store(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = store_postgres::PgStore::connect(url, 4)
            .await
            .map_err(|e| anyhow!("cannot connect to PostgreSQL: {e}"))?;
        return Ok(Arc::new(store));
    }
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    if !Path::new(path).is_file() {
        bail!("--database-url: no SQLite database at {path}");
    }
    let store = store_sqlite::SqliteStore::open(Path::new(path))
        .await
        .map_err(|e| anyhow!("cannot open {path}: {e}"))?;
    Ok(Arc::new(store))
}

impl InProcess {
    /// Opens the database, samples `sample` active users of the tenant `slug`, and warms the
    /// engine's cache with each of them (one check each, not measured).
    pub async fn new(url: &str, slug: &str, sample: usize) -> anyhow::Result<Self> {
        let started = Instant::now();
        let store = open_store(url).await?;
        let slug = TenantSlug::parse("tenant", slug).map_err(|e| anyhow!("--tenant: {e:?}"))?;
        let tenant = store
            .get_tenant_by_slug(&slug)
            .await
            .map_err(|e| anyhow!("tenant {slug}: {e}"))?
            .id;
        let users = sample_users(store.as_ref(), tenant, sample).await?;
        let app_actions: Vec<ActionKey> = store
            .list_custom_permissions(tenant)
            .await
            .map_err(|e| anyhow!("reading the tenant's permissions: {e}"))?
            .iter()
            .map(|p| p.permission.action_key())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let workload = Workload::new(users, app_actions)?;
        let engine = Engine::new(store);
        let read = started.elapsed();
        let now = Utc::now();
        let mut rng = SmallRng::seed_from_u64(0);
        for i in 0..workload.users().len() {
            let spec = workload.rbac_by(&mut rng, i)?;
            engine
                .check(tenant, &spec.check(now))
                .await
                .map_err(|e| anyhow!("warming the cache: {e}"))?;
        }
        let setup_note = format!(
            "{} principals sampled in {:.1}s and loaded into the cache in {:.1}s",
            workload.users().len(),
            read.as_secs_f64(),
            (started.elapsed() - read).as_secs_f64()
        );
        eprintln!("{setup_note}");
        Ok(Self {
            engine,
            tenant,
            workload,
            setup_note,
        })
    }

    /// Times `checks` single `engine.check` calls of one kind (RBAC or Cedar) on this
    /// thread, after `checks / 10` unmeasured ones. Latency is in nanoseconds.
    pub async fn run(&self, cedar: bool, checks: usize) -> anyhow::Result<(Measured, Extra)> {
        // Made up front (not timed); the pool is cycled through.
        let mut rng = SmallRng::seed_from_u64(if cedar { 2 } else { 1 });
        let now = Utc::now();
        let pool: Vec<Spec> = (0..checks.clamp(1, 50_000))
            .map(|_| {
                Ok(if cedar {
                    self.workload.cedar(&mut rng)
                } else {
                    self.workload.rbac(&mut rng)?
                })
            })
            .collect::<anyhow::Result<_>>()?;
        let warm = (checks / 10).max(1);
        for spec in pool.iter().cycle().take(warm) {
            self.engine
                .check(self.tenant, &spec.check(now))
                .await
                .map_err(|e| anyhow!("check failed: {e}"))?;
        }
        let mut hist = nanos_histogram()?;
        let mut tally = Tally::default();
        let start = Instant::now();
        let mut busy_ns = 0u64;
        for spec in pool.iter().cycle().take(checks) {
            // Made just before it is timed, as a server has just parsed its request (not
            // timed: the pool would otherwise be read from memory long evicted).
            let c = spec.check(now);
            let t0 = Instant::now();
            let d = self.engine.check(self.tenant, &c).await;
            let ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
            busy_ns = busy_ns.saturating_add(ns);
            hist.saturating_record(ns.max(1));
            match d {
                Ok(d) => tally.count(d.allowed, &d.reason),
                Err(e) => tally.fail(e.to_string()),
            }
        }
        let elapsed = start.elapsed();
        let mut extra = Extra::new();
        let us = |ns: u64| super::round(ns as f64 / 1000.0, 3);
        extra.insert("p50_us", json!(us(hist.value_at_quantile(0.5))));
        extra.insert("p99_us", json!(us(hist.value_at_quantile(0.99))));
        extra.insert("mean_us", json!(super::round(hist.mean() / 1000.0, 3)));
        extra.insert("max_us", json!(us(hist.max())));
        extra.insert(
            "checks_per_s_one_thread",
            json!(super::round(
                checks as f64 * 1e9 / (busy_ns as f64).max(1.0),
                0
            )),
        );
        extra.insert("principals", json!(self.workload.users().len()));
        extra.insert(
            "allowed_share",
            json!(super::round(
                tally.allowed as f64 / (checks as f64).max(1.0),
                3
            )),
        );
        extra.insert("reasons", json!(tally.reasons));
        extra.insert("setup", json!(self.setup_note));
        Ok((
            Measured {
                hist,
                elapsed,
                errors: tally.errors,
                first_error: tally.first_error,
            },
            extra,
        ))
    }
}

/// Decisions by reason, and failures.
#[derive(Default)]
struct Tally {
    allowed: u64,
    reasons: BTreeMap<&'static str, u64>,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn count(&mut self, allowed: bool, reason: &Reason) {
        self.allowed += u64::from(allowed);
        *self.reasons.entry(reason_kind(reason)).or_default() += 1;
    }

    fn fail(&mut self, e: String) {
        self.errors += 1;
        self.first_error.get_or_insert(e);
    }
}

fn reason_kind(r: &Reason) -> &'static str {
    match r {
        Reason::SuperAdmin => "super_admin",
        Reason::Permission { .. } => "permission",
        Reason::PolicyPermit { .. } => "policy_permit",
        Reason::PolicyForbid { .. } => "policy_forbid",
        Reason::OutOfScope { .. } => "out_of_scope",
        Reason::NoPermission => "no_permission",
        Reason::PrincipalInactive { .. } => "principal_inactive",
        Reason::PrincipalDeleted => "principal_deleted",
        Reason::PrincipalNotFound => "principal_not_found",
    }
}

/// Latencies in nanoseconds, 1 ns to 10 s, 3 significant digits.
fn nanos_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 10_000_000_000, 3)
        .map_err(|e| anyhow!("cannot create a histogram: {e:?}"))
}

/// The first `n` active users of the tenant (by creation time, which `dev seed` spreads
/// at random over three years).
async fn sample_users(
    store: &dyn Store,
    tenant: TenantId,
    n: usize,
) -> anyhow::Result<Vec<SampleUser>> {
    let mut q = UserListQuery {
        status: Some(UserStatus::Active),
        limit: PageSize::new(Some(MAX_PAGE_SIZE)).map_err(|e| anyhow!("{e:?}"))?,
        ..UserListQuery::default()
    };
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let page = store
            .list_users(tenant, &q)
            .await
            .map_err(|e| anyhow!("listing users: {e}"))?;
        let Some(last) = page.items.last() else {
            break;
        };
        q.after = Some(UserCursor::after(last, q.sort));
        let done = page.next_cursor.is_none();
        out.extend(page.items.into_iter().map(|u| SampleUser {
            id: u.id,
            department: u.department,
        }));
        if done {
            break;
        }
    }
    out.truncate(n);
    Ok(out)
}

/// What `authz-check` sends: the requests of the measurement (a `cedar_share` of Cedar
/// checks, the rest RBAC), and the warm-up requests (one RBAC check per sampled user, so
/// that the server's cache holds them all before timing starts).
pub struct HttpChecks {
    pub make: MakeRequest,
    /// `POST /api/v1/authz/check-batch` with `batch` checks of the same mix each.
    pub make_batch: MakeRequest,
    pub warm: MakeRequest,
    pub principals: usize,
    pub note: String,
}

/// Samples `sample` active users and the tenant's application actions through the API.
pub async fn http_checks(
    client: &Client,
    base: &Url,
    sample: usize,
    cedar_share: f64,
    batch: usize,
) -> anyhow::Result<HttpChecks> {
    let users_url = base
        .join("/api/v1/users")
        .context("cannot build the users URL")?;
    let mut users = Vec::with_capacity(sample);
    let mut cursor: Option<String> = None;
    while users.len() < sample {
        let mut url = users_url.clone();
        url.query_pairs_mut()
            .append_pair("status", "active")
            .append_pair("limit", &MAX_PAGE_SIZE.to_string());
        if let Some(c) = &cursor {
            url.query_pairs_mut().append_pair("cursor", c);
        }
        let page = get_json(client, url).await?;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        for u in &items {
            let id = u["id"]
                .as_str()
                .and_then(|s| s.parse::<UserId>().ok())
                .ok_or_else(|| anyhow!("a listed user has no id"))?;
            users.push(SampleUser {
                id,
                department: u["department"].as_str().map(str::to_owned),
            });
        }
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        if cursor.is_none() || items.is_empty() {
            break;
        }
    }
    users.truncate(sample);
    let permissions = get_json(
        client,
        base.join("/api/v1/permissions")
            .context("cannot build the permissions URL")?,
    )
    .await?;
    let app_actions: Vec<ActionKey> = permissions
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["built_in"] == json!(false))
        .filter_map(|p| {
            ActionKey::parse(
                "action",
                &format!("{}:{}", p["resource"].as_str()?, p["action"].as_str()?),
            )
            .ok()
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let n_actions = app_actions.len();
    let workload = Workload::new(users, app_actions)?;
    let principals = workload.users().len();

    let mut rng = SmallRng::seed_from_u64(3);
    let pool: Vec<Spec> = (0..50_000)
        .map(|_| {
            if rng.gen_bool(cedar_share.clamp(0.0, 1.0)) {
                Ok(workload.cedar(&mut rng))
            } else {
                workload.rbac(&mut rng)
            }
        })
        .collect::<anyhow::Result<_>>()?;
    let mut warm_pool = Vec::with_capacity(principals);
    for i in 0..principals {
        warm_pool.push(workload.rbac_by(&mut rng, i)?);
    }
    let url = base
        .join("/api/v1/authz/check")
        .context("cannot build the check URL")?;
    let requests = |specs: Vec<Spec>| -> MakeRequest {
        let (c, url) = (client.clone(), url.clone());
        let n = specs.len().max(1) as u64;
        Arc::new(move |i| {
            let spec = &specs[usize::try_from(i % n).unwrap_or(0)];
            c.post(url.clone()).json(&spec.body(Utc::now()))
        })
    };
    let batch_url = base
        .join("/api/v1/authz/check-batch")
        .context("cannot build the check-batch URL")?;
    let make_batch: MakeRequest = {
        let (c, specs) = (client.clone(), Arc::new(pool.clone()));
        let n = specs.len().max(1);
        let batch = batch.clamp(1, 100);
        Arc::new(move |i| {
            let now = Utc::now();
            let first = usize::try_from(i).unwrap_or(0).wrapping_mul(batch);
            let checks: Vec<Value> = (0..batch)
                .map(|k| specs[first.wrapping_add(k) % n].body(now))
                .collect();
            c.post(batch_url.clone()).json(&json!({ "checks": checks }))
        })
    };
    Ok(HttpChecks {
        make: requests(pool),
        make_batch,
        warm: requests(warm_pool),
        principals,
        note: format!(
            "{principals} principals, {:.0} % Cedar checks over {n_actions} application actions",
            cedar_share * 100.0
        ),
    })
}

/// The unmeasured warm-up of `authz-check`: one check per sampled principal, `concurrency`
/// at a time.
pub async fn warm_server(checks: &HttpChecks, concurrency: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let m = super::load(
        checks.warm.clone(),
        Arc::new(std::sync::atomic::AtomicU64::new(0)),
        concurrency,
        None,
        Some(checks.principals as u64),
    )
    .await?;
    if let Some(e) = m.first_error {
        bail!(
            "warming the server's cache: {} failures; first: {e}",
            m.errors
        );
    }
    Ok(started.elapsed())
}
