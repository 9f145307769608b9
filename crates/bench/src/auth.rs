//! The authentication scenarios: the raw argon2id rate of this machine, password sign-in
//! (closed loop at maximum throughput, and open loop at a fixed rate) and refresh-token
//! rotation. See the crate documentation for what each measures.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use portcullis_auth::passwords::{hash_password, verify_password, Argon2Params};
use rand::distributions::{Alphanumeric, DistString as _};
use reqwest::header::RETRY_AFTER;
use reqwest::{Client, StatusCode, Url};
use serde_json::{json, Value};
use tokio::task::JoinSet;

use super::{new_histogram, truncate, Measured};

/// A user the login scenarios sign in as.
pub struct LoginUser {
    pub email: String,
    pub password: String,
}

/// What the login and refresh scenarios need of the server.
pub struct Target {
    /// A client without credentials, as a signing-in user's.
    pub client: Client,
    pub login_url: Url,
    pub refresh_url: Url,
    pub tenant: String,
    pub users: Arc<Vec<LoginUser>>,
}

/// Creates `n` users with random passphrases through `POST /api/v1/users` (the server
/// hashes each password: this is set-up, not measured), `concurrency` at a time.
pub async fn create_users(
    admin: &Client,
    users_url: &Url,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<LoginUser>> {
    let run = Alphanumeric
        .sample_string(&mut rand::thread_rng(), 8)
        .to_lowercase();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency.clamp(1, n.max(1)) {
        let (admin, url, run, next) = (admin.clone(), users_url.clone(), run.clone(), next.clone());
        tasks.spawn(async move {
            let mut made = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n as u64 {
                    break;
                }
                let user = LoginUser {
                    email: format!("bench.login.{run}.{i}@example.com"),
                    // zxcvbn rates 16 random alphanumerics as very strong.
                    password: format!(
                        "correct-horse-{}",
                        Alphanumeric.sample_string(&mut rand::thread_rng(), 16)
                    ),
                };
                let body = json!({
                    "email": user.email,
                    "full_name": format!("Bench Login {run} {i}"),
                    "password": user.password,
                });
                post_json(&admin, &url, &body)
                    .await
                    .with_context(|| format!("creating the login user {}", user.email))?;
                made.push(user);
            }
            anyhow::Ok(made)
        });
    }
    let mut users = Vec::with_capacity(n);
    while let Some(done) = tasks.join_next().await {
        users.extend(done.context("a set-up task stopped")??);
    }
    Ok(users)
}

/// POSTs `body` and returns the JSON answer; any non-2xx status is an error.
async fn post_json(client: &Client, url: &Url, body: &Value) -> anyhow::Result<Value> {
    let resp = client
        .post(url.clone())
        .json(body)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .with_context(|| format!("POST {url}: reading the body"))?;
    if !status.is_success() {
        bail!("POST {url}: {status}: {}", truncate(&text, 500));
    }
    serde_json::from_str(&text).with_context(|| format!("POST {url}: the body is not JSON"))
}

impl Target {
    fn login_body(&self, i: u64) -> Value {
        let n = self.users.len().max(1) as u64;
        let user = &self.users[usize::try_from(i % n).unwrap_or(0)];
        json!({"tenant": self.tenant, "login": user.email, "password": user.password})
    }

    /// Signs in as the `i`th user (round-robin) and returns the refresh token.
    async fn sign_in(&self, i: u64) -> anyhow::Result<String> {
        let answer = post_json(&self.client, &self.login_url, &self.login_body(i)).await?;
        answer["refresh_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| {
                anyhow!(
                    "the sign-in answer has no refresh_token (MFA or a password change required?)"
                )
            })
    }
}

/// The answer to one request, as the scenarios count it.
enum Answer {
    Ok(Value),
    /// 503: the hashing queue is full; retry after this long.
    Busy(Duration),
    Failed(String),
}

async fn send(client: &Client, url: &Url, body: &Value, parse: bool) -> Answer {
    let resp = match client.post(url.clone()).json(body).send().await {
        Ok(r) => r,
        Err(e) => return Answer::Failed(format!("request failed: {e}")),
    };
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(1), Duration::from_secs);
    let bytes = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => return Answer::Failed(format!("{status}, reading the body: {e}")),
    };
    if status == StatusCode::SERVICE_UNAVAILABLE {
        return Answer::Busy(retry_after);
    }
    if !status.is_success() {
        return Answer::Failed(format!(
            "{status}: {}",
            truncate(&String::from_utf8_lossy(&bytes), 500)
        ));
    }
    if !parse {
        return Answer::Ok(Value::Null);
    }
    match serde_json::from_slice(&bytes) {
        Ok(v) => Answer::Ok(v),
        Err(e) => Answer::Failed(format!("{status}, the body is not JSON: {e}")),
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// Extra fields of a scenario's result (JSON, and the table's notes).
pub type Extra = BTreeMap<&'static str, Value>;

/// `hash-rate`: `threads` OS threads each verify the right password against an argon2id
/// hash made with `params`, back to back, for `warmup` and then `duration`. Latency is one
/// verification.
pub fn hash_rate(
    params: Argon2Params,
    threads: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<(Measured, Extra)> {
    let password = format!(
        "correct-horse-{}",
        Alphanumeric.sample_string(&mut rand::thread_rng(), 16)
    );
    let hash = hash_password(&params, &password).context("cannot hash with these parameters")?;
    let check = verify_password(&params, &password, &hash)?;
    if !check.matched || check.needs_rehash {
        bail!("the reference hash does not verify as current: {check:?}");
    }
    let start = Instant::now();
    let measure_from = start + warmup;
    let until = measure_from + duration;
    let results = thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (password, hash) = (&password, &hash);
                s.spawn(move || -> anyhow::Result<_> {
                    let mut hist = new_histogram()?;
                    loop {
                        let started = Instant::now();
                        if started >= until {
                            break;
                        }
                        let v = verify_password(&params, password, hash)?;
                        if !v.matched {
                            bail!("the right password did not verify");
                        }
                        if started >= measure_from {
                            hist.saturating_record(micros(started.elapsed()));
                        }
                    }
                    Ok(hist)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .map_err(|_| anyhow!("a hashing thread panicked"))
                    .and_then(|r| r)
            })
            .collect::<Vec<_>>()
    });
    let elapsed = measure_from.elapsed();
    let mut total = new_histogram()?;
    for hist in results {
        total
            .add(&hist?)
            .map_err(|e| anyhow!("cannot merge histograms: {e:?}"))?;
    }
    let mut extra = Extra::new();
    extra.insert("threads", json!(threads));
    extra.insert(
        "argon2",
        json!(format!(
            "m={},t={},p={}",
            params.m_cost_kib, params.t_cost, params.p_cost
        )),
    );
    Ok((
        Measured {
            hist: total,
            elapsed,
            errors: 0,
            first_error: None,
        },
        extra,
    ))
}

/// Per-worker tallies.
struct Tally {
    hist: hdrhistogram::Histogram<u64>,
    errors: u64,
    busy: u64,
    first_error: Option<String>,
}

impl Tally {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            hist: new_histogram()?,
            errors: 0,
            busy: 0,
            first_error: None,
        })
    }

    fn fail(&mut self, e: String) {
        self.errors += 1;
        self.first_error.get_or_insert(e);
    }

    fn merge(&mut self, other: Tally) -> anyhow::Result<()> {
        self.hist
            .add(&other.hist)
            .map_err(|e| anyhow!("cannot merge histograms: {e:?}"))?;
        self.errors += other.errors;
        self.busy += other.busy;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        Ok(())
    }

    fn finish(self, elapsed: Duration, mut extra: Extra) -> (Measured, Extra) {
        extra.insert("busy_503", json!(self.busy));
        (
            Measured {
                hist: self.hist,
                elapsed,
                errors: self.errors,
                first_error: self.first_error,
            },
            extra,
        )
    }
}

/// `login`: `concurrency` closed-loop workers sign in round-robin as the users, for `warmup`
/// (not counted) and then `duration`. A 503 (hashing queue full) is counted apart, and its
/// worker waits the Retry-After (at most a second) before going on.
pub async fn login_closed(
    target: Arc<Target>,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<(Measured, Extra)> {
    let numbering = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let measure_from = start + warmup;
    let until = measure_from + duration;
    let mut workers = JoinSet::new();
    for _ in 0..concurrency {
        let (target, numbering) = (target.clone(), numbering.clone());
        workers.spawn(async move {
            let mut tally = Tally::new()?;
            loop {
                let sent = Instant::now();
                if sent >= until {
                    break;
                }
                let i = numbering.fetch_add(1, Ordering::Relaxed);
                let answer = send(
                    &target.client,
                    &target.login_url,
                    &target.login_body(i),
                    false,
                )
                .await;
                let counted = sent >= measure_from;
                match answer {
                    Answer::Ok(_) if counted => {
                        tally.hist.saturating_record(micros(sent.elapsed()))
                    }
                    Answer::Ok(_) => {}
                    Answer::Busy(wait) => {
                        if counted {
                            tally.busy += 1;
                        }
                        tokio::time::sleep(wait.min(Duration::from_secs(1))).await;
                    }
                    Answer::Failed(e) => tally.fail(e),
                }
            }
            anyhow::Ok(tally)
        });
    }
    let mut total = Tally::new()?;
    while let Some(done) = workers.join_next().await {
        total.merge(done.context("a worker stopped")??)?;
    }
    let mut extra = Extra::new();
    extra.insert("users", json!(target.users.len()));
    Ok(total.finish(measure_from.elapsed(), extra))
}

/// `login-rate`: sign-ins started at fixed intervals (`rate` per second) whatever the
/// answers, for `warmup` (not counted) and then `duration`; the latency of each is measured
/// from the time it was scheduled, so that a server falling behind shows in the latency
/// (no coordinated omission). The rate achieved counts the answered sign-ins scheduled in
/// the measured window over the time from its start to the last answer.
pub async fn login_open(
    target: Arc<Target>,
    rate: f64,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<(Measured, Extra)> {
    if !(rate.is_finite() && rate > 0.0) {
        bail!("--rate must be a positive number of sign-ins per second");
    }
    let interval = Duration::from_secs_f64(1.0 / rate);
    // A moment to get the schedule going before the first request.
    let start = tokio::time::Instant::now() + Duration::from_millis(10);
    let measure_from = start + warmup;
    let until = measure_from + duration;
    let mut in_flight: JoinSet<Timed> = JoinSet::new();
    let mut total = Tally::new()?;
    let mut last_answer = measure_from;
    let mut scheduled_count = 0u64;
    let mut late = Duration::ZERO;
    for i in 0u64.. {
        let Some(offset) = u32::try_from(i).ok().and_then(|i| interval.checked_mul(i)) else {
            bail!("too many requests scheduled");
        };
        let scheduled = start + offset;
        if scheduled >= until {
            break;
        }
        tokio::time::sleep_until(scheduled).await;
        late = late.max(tokio::time::Instant::now().saturating_duration_since(scheduled));
        let counted = scheduled >= measure_from;
        scheduled_count += u64::from(counted);
        let target = target.clone();
        in_flight.spawn(async move {
            let answer = send(
                &target.client,
                &target.login_url,
                &target.login_body(i),
                false,
            )
            .await;
            Timed {
                counted,
                scheduled,
                answered: tokio::time::Instant::now(),
                answer,
            }
        });
        while let Some(done) = in_flight.try_join_next() {
            collect_answer(done, &mut total, &mut last_answer)?;
        }
    }
    while let Some(done) = in_flight.join_next().await {
        collect_answer(done, &mut total, &mut last_answer)?;
    }
    let elapsed = last_answer.saturating_duration_since(measure_from);
    let mut extra = Extra::new();
    extra.insert("target_rate", json!(super::round(rate, 1)));
    extra.insert("scheduled", json!(scheduled_count));
    extra.insert("users", json!(target.users.len()));
    extra.insert(
        "max_schedule_lag_ms",
        json!(super::round(late.as_secs_f64() * 1000.0, 1)),
    );
    Ok(total.finish(elapsed, extra))
}

/// A finished request of `login-rate`.
struct Timed {
    /// Scheduled in the measured window.
    counted: bool,
    scheduled: tokio::time::Instant,
    answered: tokio::time::Instant,
    answer: Answer,
}

/// Counts a finished request of `login-rate`.
fn collect_answer(
    done: Result<Timed, tokio::task::JoinError>,
    total: &mut Tally,
    last_answer: &mut tokio::time::Instant,
) -> anyhow::Result<()> {
    let t = done.context("a request task stopped")?;
    if !t.counted {
        return Ok(());
    }
    *last_answer = (*last_answer).max(t.answered);
    match t.answer {
        Answer::Ok(_) => total
            .hist
            .saturating_record(micros(t.answered.saturating_duration_since(t.scheduled))),
        Answer::Busy(_) => total.busy += 1,
        Answer::Failed(e) => total.fail(e),
    }
    Ok(())
}

/// `refresh`: each of `concurrency` workers signs in once (its own session: refresh tokens
/// work once, and a reused one revokes the session), then exchanges its refresh token for
/// the next, back to back, for `warmup` (not counted) and then `duration`. A failed exchange
/// is an error, after which the worker signs in again to go on.
pub async fn refresh(
    target: Arc<Target>,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
    cores: usize,
) -> anyhow::Result<(Measured, Extra)> {
    let mut sessions = JoinSet::new();
    for w in 0..concurrency as u64 {
        let target = target.clone();
        sessions.spawn(async move { target.sign_in(w).await.map(|t| (w, t)) });
    }
    let mut tokens = Vec::with_capacity(concurrency);
    while let Some(done) = sessions.join_next().await {
        tokens.push(
            done.context("a sign-in task stopped")?
                .context("signing in before refreshing")?,
        );
    }

    let start = Instant::now();
    let measure_from = start + warmup;
    let until = measure_from + duration;
    let mut workers = JoinSet::new();
    for (w, token) in tokens {
        let target = target.clone();
        workers.spawn(async move {
            let mut tally = Tally::new()?;
            let mut token = token;
            loop {
                let sent = Instant::now();
                if sent >= until {
                    break;
                }
                let body = json!({ "refresh_token": token });
                match send(&target.client, &target.refresh_url, &body, true).await {
                    Answer::Ok(v) => match v["refresh_token"].as_str() {
                        Some(next) => {
                            token = next.to_owned();
                            if sent >= measure_from {
                                tally.hist.saturating_record(micros(sent.elapsed()));
                            }
                        }
                        None => {
                            tally.fail("the refresh answer has no refresh_token".to_owned());
                            token = target.sign_in(w).await?;
                        }
                    },
                    Answer::Busy(_) => {
                        tally.fail("503 from the refresh endpoint".to_owned());
                        token = target.sign_in(w).await?;
                    }
                    Answer::Failed(e) => {
                        tally.fail(e);
                        token = target.sign_in(w).await?;
                    }
                }
            }
            anyhow::Ok(tally)
        });
    }
    let mut total = Tally::new()?;
    while let Some(done) = workers.join_next().await {
        total.merge(done.context("a worker stopped")??)?;
    }
    let elapsed = measure_from.elapsed();
    let per_second = total.hist.len() as f64 / elapsed.as_secs_f64().max(1e-9);
    let mut extra = Extra::new();
    extra.insert("sessions", json!(concurrency));
    extra.insert("cores", json!(cores));
    extra.insert(
        "per_core",
        json!(super::round(per_second / cores.max(1) as f64, 1)),
    );
    // A 503 of the refresh endpoint is an error, counted as such.
    let (m, mut extra) = total.finish(elapsed, extra);
    extra.remove("busy_503");
    Ok((m, extra))
}
