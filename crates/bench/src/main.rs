//! `portcullis-bench`: a load generator for a running Portcullis (and, for authorization,
//! for its decision engine in-process).
//!
//! Against the tenant of the given API key it runs, one after the other, the scenarios
//! named by `--scenarios`. User management (the default set):
//!
//! * `list-first`: `GET /api/v1/users?limit=50` (default sort, first page);
//! * `list-deep`: the same page size, continuing from a cursor in the middle of the list
//!   (found before timing: the first user created after the midpoint between the oldest and
//!   the newest user);
//! * `list-filtered`: `GET /api/v1/users?status=active&department=Engineering&limit=50`;
//! * `search`: `GET /api/v1/users?q=<term>&limit=50`, cycling through prefixes of the names
//!   `portcullis dev seed` uses;
//! * `create`: `POST /api/v1/users` with unique emails.
//!
//! Authentication:
//!
//! * `hash-rate`: no HTTP; the raw argon2id rate of this machine: `--threads` OS threads
//!   (default: one per core) each verify a password against a hash made with the
//!   `--argon2-*` parameters (the server's, from the same environment variables), back to
//!   back. Latency is one verification; req/s is verifications per second.
//! * `login`: `POST /api/v1/auth/login` at maximum throughput (closed loop), signing in
//!   round-robin as `--users` users that the set-up creates with random passphrases through
//!   `POST /api/v1/users` (once per run, shared by the login scenarios; not measured).
//!   A 503 (hashing queue full) is counted apart (`busy_503`) and is not a failure; its
//!   worker waits the Retry-After (at most 1 s).
//! * `login-rate`: the same sign-ins, open loop: started every 1/`--rate` seconds whatever
//!   the answers, latency measured from the scheduled time (no coordinated omission).
//! * `refresh`: each worker signs in once (its own session: a refresh token works once and
//!   reusing one revokes the session), then `POST /api/v1/auth/refresh` with the token the
//!   previous answer gave, back to back. `per_core` divides the rate by the machine's cores,
//!   which the server, its database and this client share.
//!
//! The login scenarios need `--tenant` (the slug of the API key's tenant) and a tenant
//! password policy that accepts `correct-horse-<16 random alphanumerics>`.
//!
//! Authorization, on a tenant filled by `portcullis dev seed` and `portcullis dev seed-authz`:
//!
//! * `authz-rbac` and `authz-cedar`: no HTTP; the decision engine in-process, over the
//!   database the server uses (`--database-url`: a `postgres://` URL or a SQLite file;
//!   `--tenant`: the slug). The set-up (once, shared, not measured) samples
//!   `--sample-users` active users of the tenant and loads each into the engine's cache
//!   with one check. Then each scenario times `--checks` single `Engine::check` calls on
//!   one thread (after a tenth as many unmeasured ones), principals at random in the
//!   sample: `authz-rbac` asks about built-in actions (`users:read`, `users:update`,
//!   `sessions:read` on users of the sample) to which no policy of the tenant applies, so
//!   the roles alone decide; `authz-cedar` asks about the tenant's application actions, to
//!   which its policies apply, with resource attributes (department, classification, owner,
//!   a `confidential` tag) and contexts (UTC offset; IP address, mostly the user's usual
//!   one; risk score; MFA level; device trust) that make their conditions go either way. Latency is one call, in nanoseconds
//!   (`p50_us`, `p99_us`, `mean_us`; each check is built from a pre-made pool just before
//!   its call, outside the timing, as a server has just parsed its request);
//!   `checks_per_s_one_thread` is one over the mean call time; the decisions are counted by
//!   reason (`reasons`).
//! * `authz-check`: `POST /api/v1/authz/check` with the API key, closed loop like the
//!   user-management scenarios, principals at random among `--sample-users` active users
//!   (listed through the API), a `--cedar-share` of Cedar checks and RBAC checks otherwise,
//!   made as above. Before the warm-up, one check per sampled user (not measured) fills
//!   the server's cache.
//! * `authz-check-batch`: the same checks, `--batch` per `POST /api/v1/authz/check-batch`
//!   request (latency and req/s are per request; checks/s = req/s × batch).
//!
//! Each closed-loop scenario runs `--concurrency` workers (tokio tasks sharing one HTTP
//! client), each sending its next request as soon as the previous one is answered, for
//! `--duration-secs` (after `--warmup-secs` whose requests are not counted). Latency is
//! measured from sending the request to having read the whole body. A scenario fails if any
//! response is not 2xx (503 of the login scenarios aside).
//!
//! Output: a markdown table, or with `--json` a JSON object on stdout (the table then goes
//! to stderr). The exit status is non-zero if any scenario failed.

mod auth;
mod authz;

use std::fmt::Write as _;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use portcullis_auth::passwords::Argon2Params;
use rand::Rng;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::{Client, RequestBuilder, Url};
use serde_json::{json, Value};

#[derive(Debug, Parser)]
#[command(
    name = "portcullis-bench",
    version,
    about = "Load generator for a running Portcullis: user creation, listing and search; \
             password sign-in, refresh tokens and the raw argon2id rate; authorization \
             decisions in-process and over HTTP"
)]
struct Args {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// An API key (tenant or platform admin); the scenarios run against its tenant. Needed
    /// by every scenario but `hash-rate`.
    #[arg(long, env = "PORTCULLIS_BENCH_KEY", hide_env_values = true)]
    key: Option<String>,
    /// The slug of the API key's tenant, where the login scenarios sign in; the tenant
    /// `authz-rbac` and `authz-cedar` read from `--database-url`.
    #[arg(long, env = "PORTCULLIS_BENCH_TENANT")]
    tenant: Option<String>,
    /// Users with passwords that the login scenarios create and sign in as, round-robin.
    #[arg(long, default_value_t = 50)]
    users: usize,
    /// Sign-ins per second that `login-rate` starts.
    #[arg(long)]
    rate: Option<f64>,
    /// Argon2id memory (KiB) of `hash-rate`: set it as the server's.
    #[arg(long, env = "PORTCULLIS_AUTH_ARGON2_MEMORY_KIB", default_value_t = Argon2Params::default().m_cost_kib)]
    argon2_memory_kib: u32,
    /// Argon2id iterations of `hash-rate`.
    #[arg(long, env = "PORTCULLIS_AUTH_ARGON2_ITERATIONS", default_value_t = Argon2Params::default().t_cost)]
    argon2_iterations: u32,
    /// Argon2id lanes of `hash-rate`.
    #[arg(long, env = "PORTCULLIS_AUTH_ARGON2_PARALLELISM", default_value_t = Argon2Params::default().p_cost)]
    argon2_parallelism: u32,
    /// Concurrent workers (requests in flight) per scenario.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Measured seconds per scenario.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Unmeasured seconds of the same load before each scenario (warms connections and
    /// caches). Not applied to `create` when `--creates` is given.
    #[arg(long, default_value_t = 1)]
    warmup_secs: u64,
    /// Create exactly this many users instead of creating for `--duration-secs`.
    #[arg(long)]
    creates: Option<u64>,
    /// Scenarios to run, in this order (comma-separated).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "list-first,list-deep,list-filtered,search,create"
    )]
    scenarios: Vec<Scenario>,
    /// Page size of the list scenarios.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Worker threads of the client's runtime, and hashing threads of `hash-rate`
    /// (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// The database of `authz-rbac` and `authz-cedar`: a `postgres://` URL or the path of a
    /// SQLite file (`sqlite://` optional).
    #[arg(long, env = "PORTCULLIS_BENCH_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Active users of the tenant the authorization scenarios ask about (their principals
    /// and resource owners), loaded into the cache before timing.
    #[arg(long, default_value_t = 10_000)]
    sample_users: usize,
    /// Timed checks of each in-process authorization scenario.
    #[arg(long, default_value_t = 200_000)]
    checks: usize,
    /// Share of Cedar checks (application actions) among `authz-check`'s requests; the
    /// others are RBAC checks of built-in actions.
    #[arg(long, default_value_t = 0.5)]
    cedar_share: f64,
    /// Checks per request of `authz-check-batch` (1 to 100).
    #[arg(long, default_value_t = 20)]
    batch: usize,
    /// Print a JSON object on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Create,
    ListFirst,
    ListDeep,
    ListFiltered,
    Search,
    HashRate,
    Login,
    LoginRate,
    Refresh,
    AuthzRbac,
    AuthzCedar,
    AuthzCheck,
    AuthzCheckBatch,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Create => "create",
            Scenario::ListFirst => "list-first",
            Scenario::ListDeep => "list-deep",
            Scenario::ListFiltered => "list-filtered",
            Scenario::Search => "search",
            Scenario::HashRate => "hash-rate",
            Scenario::Login => "login",
            Scenario::LoginRate => "login-rate",
            Scenario::Refresh => "refresh",
            Scenario::AuthzRbac => "authz-rbac",
            Scenario::AuthzCedar => "authz-cedar",
            Scenario::AuthzCheck => "authz-check",
            Scenario::AuthzCheckBatch => "authz-check-batch",
        }
    }

    /// Runs in this process, without the server.
    fn in_process(self) -> bool {
        matches!(
            self,
            Scenario::HashRate | Scenario::AuthzRbac | Scenario::AuthzCedar
        )
    }

    /// Uses the decision engine in-process (needs the database).
    fn uses_engine(self) -> bool {
        matches!(self, Scenario::AuthzRbac | Scenario::AuthzCedar)
    }

    /// Signs in as users (needs them created first).
    fn signs_in(self) -> bool {
        matches!(
            self,
            Scenario::Login | Scenario::LoginRate | Scenario::Refresh
        )
    }
}

/// Cores of this machine (shared by the server, its database and this client when they run
/// on the same host).
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// Searches a user of a directory would type: prefixes of the first and last names that
/// `portcullis dev seed` draws from, alone and combined; the last one matches nobody.
const SEARCH_TERMS: &[&str] = &[
    "lov",
    "tur",
    "hop",
    "marg",
    "knu",
    "dij",
    "tana",
    "okaf",
    "pri",
    "ada lov",
    "grace hop",
    "lin tor",
    "kwame men",
    "ada smi",
];

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if args.duration_secs == 0 && args.creates.is_none() {
        bail!("--duration-secs must be at least 1");
    }
    if args.scenarios.iter().any(|s| s.signs_in()) {
        if args.tenant.is_none() {
            bail!("the login scenarios need --tenant (the slug of the API key's tenant)");
        }
        if args.users == 0 {
            bail!("--users must be at least 1");
        }
    }
    if args.scenarios.contains(&Scenario::LoginRate) && args.rate.is_none() {
        bail!("login-rate needs --rate (sign-ins per second)");
    }
    if args.key.is_none() && args.scenarios.iter().any(|s| !s.in_process()) {
        bail!(
            "--key (or PORTCULLIS_BENCH_KEY) is needed by every scenario but hash-rate, \
             authz-rbac and authz-cedar"
        );
    }
    if args.scenarios.iter().any(|s| s.uses_engine()) {
        if args.database_url.is_none() || args.tenant.is_none() {
            bail!("authz-rbac and authz-cedar need --database-url and --tenant");
        }
        if args.checks == 0 || args.sample_users == 0 {
            bail!("--checks and --sample-users must be at least 1");
        }
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = args.threads {
        rt.worker_threads(n.max(1));
    }
    rt.build()
        .context("cannot start the runtime")?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let base =
        Url::parse(&args.url).with_context(|| format!("--url {:?} is not a URL", args.url))?;
    let client = client(&args, args.key.as_deref())?;
    if args.key.is_some() {
        check_key(&client, &base).await?;
    }
    // Created by the first login scenario, shared by the next.
    let mut target: Option<Arc<auth::Target>> = None;
    // Opened and warmed by the first in-process authorization scenario, shared by the next.
    let mut engine: Option<authz::InProcess> = None;

    let mut results = Vec::new();
    for &scenario in &args.scenarios {
        eprintln!("running {} ...", scenario.name());
        let result = if scenario == Scenario::HashRate || scenario.signs_in() {
            run_auth_scenario(&args, &client, &base, &mut target, scenario).await
        } else if scenario.uses_engine() {
            run_engine_scenario(&args, &mut engine, scenario).await
        } else {
            run_scenario(&args, &client, &base, scenario).await
        };
        let result = match result {
            Ok(r) => r,
            Err(e) => Outcome::setup_failed(scenario, &e),
        };
        if let Some(err) = &result.first_error {
            eprintln!(
                "{} FAILED: {} failed request(s); first: {err}",
                scenario.name(),
                result.errors
            );
        }
        results.push(result);
    }

    let table = table(&results);
    if args.json {
        let scenarios: serde_json::Map<String, Value> = results
            .iter()
            .map(|r| (r.scenario.name().to_owned(), r.to_json()))
            .collect();
        let out = json!({
            "url": args.url,
            "concurrency": args.concurrency,
            "duration_secs": args.duration_secs,
            "cores": cores(),
            "ok": results.iter().all(Outcome::ok),
            "scenarios": scenarios,
        });
        eprint!("{table}");
        println!("{out}");
    } else {
        print!("{table}");
    }
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| !r.ok())
        .map(|r| r.scenario.name())
        .collect();
    if !failed.is_empty() {
        bail!("failed scenario(s): {}", failed.join(", "));
    }
    Ok(())
}

/// The HTTP client; with `key`, every request carries it.
fn client(args: &Args, key: Option<&str>) -> anyhow::Result<Client> {
    let mut headers = HeaderMap::new();
    if let Some(key) = key {
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", key.trim()))
            .context("--key contains characters not allowed in a header")?;
        auth.set_sensitive(true);
        headers.insert(AUTHORIZATION, auth);
    }
    Client::builder()
        .default_headers(headers)
        .user_agent("portcullis-bench")
        .pool_max_idle_per_host(args.concurrency.saturating_mul(2))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .build()
        .context("cannot build the HTTP client")
}

/// Fails early, with the server's explanation, when the key is not accepted.
async fn check_key(client: &Client, base: &Url) -> anyhow::Result<()> {
    get_json(client, users_url(base, &[("limit", "1")])?).await?;
    Ok(())
}

/// `{base}/api/v1/users?{params}`, encoded.
fn users_url(base: &Url, params: &[(&str, &str)]) -> anyhow::Result<Url> {
    let mut url = base
        .join("/api/v1/users")
        .context("cannot build the users URL")?;
    if !params.is_empty() {
        url.query_pairs_mut().extend_pairs(params);
    }
    Ok(url)
}

async fn get_json(client: &Client, url: Url) -> anyhow::Result<Value> {
    let resp = client
        .get(url.clone())
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    let body = resp
        .text()
        .await
        .with_context(|| format!("GET {url}: reading the body"))?;
    if !status.is_success() {
        bail!("GET {url}: {status}: {}", truncate(&body, 500));
    }
    serde_json::from_str(&body).with_context(|| format!("GET {url}: the body is not JSON"))
}

/// Makes the `i`th request of a scenario.
type MakeRequest = Arc<dyn Fn(u64) -> RequestBuilder + Send + Sync>;

async fn run_scenario(
    args: &Args,
    client: &Client,
    base: &Url,
    scenario: Scenario,
) -> anyhow::Result<Outcome> {
    let limit = args.limit.to_string();
    let c = client.clone();
    let (make, note): (MakeRequest, Option<String>) = match scenario {
        Scenario::HashRate
        | Scenario::Login
        | Scenario::LoginRate
        | Scenario::Refresh
        | Scenario::AuthzRbac
        | Scenario::AuthzCedar => {
            bail!("{} is not a closed-loop HTTP scenario", scenario.name())
        }
        Scenario::AuthzCheck | Scenario::AuthzCheckBatch => {
            let checks = authz::http_checks(
                client,
                base,
                args.sample_users,
                args.cedar_share,
                args.batch,
            )
            .await?;
            let warmed = authz::warm_server(&checks, args.concurrency).await?;
            eprintln!(
                "warmed the server's cache with {} principals in {:.1}s",
                checks.principals,
                warmed.as_secs_f64()
            );
            if scenario == Scenario::AuthzCheck {
                (checks.make, Some(checks.note))
            } else {
                let batch = args.batch.clamp(1, 100);
                (
                    checks.make_batch,
                    Some(format!("{}; {batch} checks per request", checks.note)),
                )
            }
        }
        Scenario::ListFirst => {
            let url = users_url(base, &[("limit", &limit)])?;
            (Arc::new(move |_| c.get(url.clone())), None)
        }
        Scenario::ListDeep => {
            let (cursor, at) = middle_cursor(client, base).await?;
            let url = users_url(base, &[("limit", &limit), ("cursor", &cursor)])?;
            // The page must be full: a deep page that came back empty would measure nothing.
            let page = get_json(client, url.clone()).await?;
            let n = page["items"].as_array().map_or(0, Vec::len);
            if n == 0 {
                bail!("the page after the middle cursor is empty");
            }
            (
                Arc::new(move |_| c.get(url.clone())),
                Some(format!("cursor at created_at {at}")),
            )
        }
        Scenario::ListFiltered => {
            let url = users_url(
                base,
                &[
                    ("status", "active"),
                    ("department", "Engineering"),
                    ("limit", &limit),
                ],
            )?;
            (Arc::new(move |_| c.get(url.clone())), None)
        }
        Scenario::Search => {
            let urls = SEARCH_TERMS
                .iter()
                .map(|t| users_url(base, &[("q", t), ("limit", &limit)]))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let n = urls.len() as u64;
            (
                Arc::new(move |i| {
                    let url = &urls[usize::try_from(i % n).unwrap_or(0)];
                    c.get(url.clone())
                }),
                None,
            )
        }
        Scenario::Create => {
            let url = users_url(base, &[])?;
            let run: String = {
                let mut rng = rand::thread_rng();
                (0..8)
                    .map(|_| char::from(rng.gen_range(b'a'..=b'z')))
                    .collect()
            };
            (
                Arc::new(move |i| {
                    c.post(url.clone()).json(&json!({
                        "email": format!("bench.{run}.{i}@example.com"),
                        "full_name": format!("Bench User {run} {i}"),
                        "department": "Engineering",
                        "job_title": "Engineer",
                    }))
                }),
                None,
            )
        }
    };
    let count = if scenario == Scenario::Create {
        args.creates
    } else {
        None
    };
    // Requests are numbered across warm-up and measurement so that created emails stay unique.
    let numbering = Arc::new(AtomicU64::new(0));
    if args.warmup_secs > 0 && count.is_none() {
        let warm = Duration::from_secs(args.warmup_secs);
        load(
            make.clone(),
            numbering.clone(),
            args.concurrency,
            Some(warm),
            None,
        )
        .await?;
    }
    let duration = Duration::from_secs(args.duration_secs);
    let first = numbering.load(Ordering::Relaxed);
    let m = load(
        make,
        numbering,
        args.concurrency,
        count.is_none().then_some(duration),
        count.map(|n| first + n),
    )
    .await?;
    Ok(Outcome::from_measured(scenario, m, note))
}

/// Runs one of the authentication scenarios; the first that signs in creates the users.
async fn run_auth_scenario(
    args: &Args,
    admin: &Client,
    base: &Url,
    target: &mut Option<Arc<auth::Target>>,
    scenario: Scenario,
) -> anyhow::Result<Outcome> {
    let warmup = Duration::from_secs(args.warmup_secs);
    let duration = Duration::from_secs(args.duration_secs);
    if scenario == Scenario::HashRate {
        let params = Argon2Params {
            m_cost_kib: args.argon2_memory_kib,
            t_cost: args.argon2_iterations,
            p_cost: args.argon2_parallelism,
        };
        let threads = args.threads.unwrap_or_else(cores).max(1);
        let (m, extra) =
            tokio::task::spawn_blocking(move || auth::hash_rate(params, threads, warmup, duration))
                .await
                .context("the hashing threads stopped")??;
        return Ok(Outcome::from_measured(scenario, m, None).with_extra(extra));
    }

    let target = match target {
        Some(t) => t.clone(),
        None => {
            let started = Instant::now();
            let users =
                auth::create_users(admin, &users_url(base, &[])?, args.users, args.concurrency)
                    .await
                    .context("creating the users to sign in as")?;
            eprintln!(
                "created {} users with passwords in {:.1}s",
                users.len(),
                started.elapsed().as_secs_f64()
            );
            let t = Arc::new(auth::Target {
                client: client(args, None)?,
                login_url: base
                    .join("/api/v1/auth/login")
                    .context("cannot build the login URL")?,
                refresh_url: base
                    .join("/api/v1/auth/refresh")
                    .context("cannot build the refresh URL")?,
                tenant: args.tenant.clone().unwrap_or_default(),
                users: Arc::new(users),
            });
            *target = Some(t.clone());
            t
        }
    };
    let (m, extra) = match scenario {
        Scenario::Login => auth::login_closed(target, args.concurrency, warmup, duration).await?,
        Scenario::LoginRate => {
            let rate = args
                .rate
                .ok_or_else(|| anyhow!("login-rate needs --rate"))?;
            auth::login_open(target, rate, warmup, duration).await?
        }
        Scenario::Refresh => {
            auth::refresh(target, args.concurrency, warmup, duration, cores()).await?
        }
        _ => bail!("{} is not an authentication scenario", scenario.name()),
    };
    Ok(Outcome::from_measured(scenario, m, None).with_extra(extra))
}

/// Runs `authz-rbac` or `authz-cedar`; the first opens the database and warms the engine.
async fn run_engine_scenario(
    args: &Args,
    engine: &mut Option<authz::InProcess>,
    scenario: Scenario,
) -> anyhow::Result<Outcome> {
    let e = match engine {
        Some(e) => e,
        None => {
            let url = args
                .database_url
                .as_deref()
                .ok_or_else(|| anyhow!("--database-url is needed"))?;
            let tenant = args
                .tenant
                .as_deref()
                .ok_or_else(|| anyhow!("--tenant is needed"))?;
            engine.insert(authz::InProcess::new(url, tenant, args.sample_users).await?)
        }
    };
    let (m, extra) = e.run(scenario == Scenario::AuthzCedar, args.checks).await?;
    Ok(Outcome::from_nanos(scenario, m).with_extra(extra))
}

/// A cursor of the default sort (created, ascending) about half-way through the list: just
/// after the first user created at or after the midpoint of the oldest and newest users'
/// creation times. Cursors carry no filters, so it pages on through the unfiltered list.
async fn middle_cursor(client: &Client, base: &Url) -> anyhow::Result<(String, String)> {
    let created_at = |page: &Value| -> anyhow::Result<DateTime<Utc>> {
        let raw = page["items"][0]["created_at"]
            .as_str()
            .ok_or_else(|| anyhow!("the tenant has no users to list"))?;
        Ok(DateTime::parse_from_rfc3339(raw)
            .with_context(|| format!("created_at {raw:?} is not RFC 3339"))?
            .with_timezone(&Utc))
    };
    let oldest = created_at(&get_json(client, users_url(base, &[("limit", "1")])?).await?)?;
    let newest = created_at(
        &get_json(
            client,
            users_url(base, &[("limit", "1"), ("sort", "-created")])?,
        )
        .await?,
    )?;
    let middle = oldest + (newest - oldest) / 2;
    let middle = middle.to_rfc3339_opts(SecondsFormat::Micros, true);
    let page = get_json(
        client,
        users_url(base, &[("limit", "1"), ("created_after", &middle)])?,
    )
    .await?;
    let cursor = page["next_cursor"]
        .as_str()
        .ok_or_else(|| anyhow!("no next_cursor after {middle}: too few users for a deep page"))?;
    Ok((cursor.to_owned(), middle))
}

/// What a run of workers measured.
struct Measured {
    hist: Histogram<u64>,
    elapsed: Duration,
    errors: u64,
    first_error: Option<String>,
}

/// Runs `concurrency` closed-loop workers until `duration` has passed (requests in flight
/// then are finished and counted) or the request numbered `until` would be sent.
async fn load(
    make: MakeRequest,
    numbering: Arc<AtomicU64>,
    concurrency: usize,
    duration: Option<Duration>,
    until: Option<u64>,
) -> anyhow::Result<Measured> {
    let start = Instant::now();
    let deadline = duration.map(|d| start + d);
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let make = make.clone();
        let numbering = numbering.clone();
        workers.push(tokio::spawn(async move {
            let mut hist = new_histogram()?;
            let mut errors = 0u64;
            let mut first_error = None;
            loop {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let i = numbering.fetch_add(1, Ordering::Relaxed);
                if until.is_some_and(|n| i >= n) {
                    break;
                }
                let sent = Instant::now();
                let failure = match make(i).send().await {
                    Ok(resp) => {
                        let status = resp.status();
                        match resp.bytes().await {
                            Ok(_) if status.is_success() => None,
                            Ok(body) => Some(format!(
                                "{status}: {}",
                                truncate(&String::from_utf8_lossy(&body), 500)
                            )),
                            Err(e) => Some(format!("{status}, reading the body: {e}")),
                        }
                    }
                    Err(e) => Some(format!("request failed: {e}")),
                };
                let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                hist.saturating_record(micros.max(1));
                if let Some(f) = failure {
                    errors += 1;
                    first_error.get_or_insert(f);
                }
            }
            anyhow::Ok((hist, errors, first_error))
        }));
    }
    let mut total = new_histogram()?;
    let mut errors = 0;
    let mut first_error = None;
    for w in workers {
        let (hist, e, f) = w.await.context("a worker stopped")??;
        total
            .add(&hist)
            .map_err(|e| anyhow!("cannot merge histograms: {e:?}"))?;
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
    }
    Ok(Measured {
        hist: total,
        elapsed: start.elapsed(),
        errors,
        first_error,
    })
}

/// Latencies in microseconds, 1 µs to 10 minutes, 3 significant digits.
fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 600_000_000, 3)
        .map_err(|e| anyhow!("cannot create a histogram: {e:?}"))
}

/// One scenario's result.
struct Outcome {
    scenario: Scenario,
    requests: u64,
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    mean_ms: f64,
    errors: u64,
    first_error: Option<String>,
    note: Option<String>,
    /// Scenario-specific figures (503s, target rate, per-core rate…).
    extra: auth::Extra,
}

impl Outcome {
    fn from_measured(scenario: Scenario, m: Measured, note: Option<String>) -> Self {
        let ms = |micros: u64| micros as f64 / 1000.0;
        Self {
            scenario,
            requests: m.hist.len(),
            seconds: m.elapsed.as_secs_f64(),
            p50_ms: ms(m.hist.value_at_quantile(0.50)),
            p99_ms: ms(m.hist.value_at_quantile(0.99)),
            max_ms: ms(m.hist.max()),
            mean_ms: m.hist.mean() / 1000.0,
            errors: m.errors,
            first_error: m.first_error,
            note,
            extra: auth::Extra::new(),
        }
    }

    /// Like `from_measured` for a histogram of nanoseconds.
    fn from_nanos(scenario: Scenario, m: Measured) -> Self {
        let ms = |nanos: u64| nanos as f64 / 1e6;
        Self {
            scenario,
            requests: m.hist.len(),
            seconds: m.elapsed.as_secs_f64(),
            p50_ms: ms(m.hist.value_at_quantile(0.50)),
            p99_ms: ms(m.hist.value_at_quantile(0.99)),
            max_ms: ms(m.hist.max()),
            mean_ms: m.hist.mean() / 1e6,
            errors: m.errors,
            first_error: m.first_error,
            note: None,
            extra: auth::Extra::new(),
        }
    }

    fn with_extra(mut self, extra: auth::Extra) -> Self {
        self.extra = extra;
        self
    }

    /// The note and the extra figures, for the table.
    fn notes(&self) -> String {
        let mut parts: Vec<String> = self.note.iter().cloned().collect();
        parts.extend(self.extra.iter().map(|(k, v)| match v {
            Value::String(s) => format!("{k} {s}"),
            v => format!("{k} {v}"),
        }));
        parts.join("; ")
    }

    fn setup_failed(scenario: Scenario, e: &anyhow::Error) -> Self {
        Self {
            scenario,
            requests: 0,
            seconds: 0.0,
            p50_ms: 0.0,
            p99_ms: 0.0,
            max_ms: 0.0,
            mean_ms: 0.0,
            errors: 1,
            first_error: Some(format!("set-up failed: {e:#}")),
            note: None,
            extra: auth::Extra::new(),
        }
    }

    fn ok(&self) -> bool {
        self.errors == 0
    }

    fn rps(&self) -> f64 {
        if self.seconds > 0.0 {
            self.requests as f64 / self.seconds
        } else {
            0.0
        }
    }

    fn to_json(&self) -> Value {
        let mut out = json!({
            "ok": self.ok(),
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "rps": round(self.rps(), 1),
            "p50_ms": round(self.p50_ms, 6),
            "p99_ms": round(self.p99_ms, 6),
            "max_ms": round(self.max_ms, 6),
            "mean_ms": round(self.mean_ms, 6),
            "errors": self.errors,
            "first_error": self.first_error,
            "note": self.note,
        });
        if let Value::Object(map) = &mut out {
            for (k, v) in &self.extra {
                map.insert((*k).to_owned(), v.clone());
            }
        }
        out
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

fn table(results: &[Outcome]) -> String {
    let mut out = String::from(
        "| scenario | requests | req/s | p50 ms | p99 ms | max ms | errors | notes |\n|---|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for r in results {
        let name = if r.ok() {
            r.scenario.name().to_owned()
        } else {
            format!("{} (FAILED)", r.scenario.name())
        };
        let _ = writeln!(
            out,
            "| {name} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} |",
            r.requests,
            r.rps(),
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            r.errors,
            r.notes()
        );
    }
    out
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        s.chars().take(max).collect::<String>() + "…"
    }
}
