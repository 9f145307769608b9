//! `portcullis dev seed`: fills a tenant with realistic synthetic users, fast (large
//! batched inserts through `Store::seed_users`), for development and benchmarks.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::TimeDelta;

use domain::tenants::TenantSlug;
use domain::users::{User, UserStatus};
use domain::{TenantId, UserId};
use indicatif::{ProgressBar, ProgressStyle};
use portcullis_services::{Actor, Services};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::Map;

const FIRST: &[&str] = &[
    "Ada",
    "Alan",
    "Grace",
    "Linus",
    "Margaret",
    "Dennis",
    "Barbara",
    "Ken",
    "Radia",
    "Tim",
    "Frances",
    "John",
    "Hedy",
    "Donald",
    "Katherine",
    "Edsger",
    "Sophie",
    "Guido",
    "Annie",
    "Bjarne",
    "Mary",
    "James",
    "Lucia",
    "Omar",
    "Priya",
    "Chen",
    "Fatima",
    "Lars",
    "Amara",
    "Diego",
    "Yuki",
    "Ines",
    "Kwame",
    "Elena",
    "Noah",
    "Aisha",
    "Mateo",
    "Freya",
    "Ravi",
    "Zara",
];
const LAST: &[&str] = &[
    "Lovelace",
    "Turing",
    "Hopper",
    "Torvalds",
    "Hamilton",
    "Ritchie",
    "Liskov",
    "Thompson",
    "Perlman",
    "Berners",
    "Allen",
    "Backus",
    "Lamarr",
    "Knuth",
    "Johnson",
    "Dijkstra",
    "Wilson",
    "Rossum",
    "Easley",
    "Stroustrup",
    "Keller",
    "Gosling",
    "Garcia",
    "Haddad",
    "Sharma",
    "Wang",
    "Okafor",
    "Nilsson",
    "Mensah",
    "Santos",
    "Tanaka",
    "Moreau",
    "Boateng",
    "Petrova",
    "Cohen",
    "Ali",
    "Fernandez",
    "Larsen",
    "Iyer",
    "Khan",
];
const DEPARTMENTS: &[&str] = &[
    "Engineering",
    "Sales",
    "Marketing",
    "Finance",
    "Legal",
    "Support",
    "Operations",
    "Research",
    "Design",
    "People",
    "Security",
    "Data",
    "Product",
    "Procurement",
    "Facilities",
    "Quality",
    "Logistics",
    "Training",
    "Compliance",
    "Communications",
];
const TITLES: &[&str] = &[
    "Engineer",
    "Analyst",
    "Manager",
    "Director",
    "Specialist",
    "Lead",
    "Associate",
];
const LANGUAGES: &[&str] = &[
    "en", "en-GB", "de", "fr", "es", "pt-BR", "ja", "nl", "sv", "it",
];

/// Builds one synthetic user; `run` keeps emails unique across seed runs.
fn synthetic_user(
    rng: &mut SmallRng,
    tenant: TenantId,
    run: &str,
    i: u64,
    now: domain::Timestamp,
) -> User {
    let first = FIRST[rng.gen_range(0..FIRST.len())];
    let last = LAST[rng.gen_range(0..LAST.len())];
    let created_at = now - TimeDelta::seconds(rng.gen_range(0..3 * 365 * 86_400));
    let last_login_at = rng
        .gen_bool(0.7)
        .then(|| now - TimeDelta::seconds(rng.gen_range(0..90 * 86_400)));
    let status = match rng.gen_range(0..100) {
        0..=79 => UserStatus::Active,
        80..=87 => UserStatus::Pending,
        88..=92 => UserStatus::Inactive,
        93..=96 => UserStatus::Suspended,
        _ => UserStatus::Blocked,
    };
    User {
        id: UserId::new(),
        tenant_id: tenant,
        email: format!(
            "{}.{}.{run}{i}@example.com",
            first.to_lowercase(),
            last.to_lowercase()
        ),
        username: Some(format!(
            "{}{}{run}{i}",
            first.to_lowercase(),
            last.to_lowercase()
        )),
        full_name: format!("{first} {last}"),
        phone: Some(format!("+1 555 {:07}", rng.gen_range(0..10_000_000))),
        department: Some(DEPARTMENTS[rng.gen_range(0..DEPARTMENTS.len())].to_owned()),
        job_title: Some(TITLES[rng.gen_range(0..TITLES.len())].to_owned()),
        employee_id: Some(format!("E{run}{i}")),
        manager_id: None,
        cost_center: Some(format!("CC-{}", rng.gen_range(100..140))),
        clearance_level: Some(rng.gen_range(0..=5)),
        language: Some(LANGUAGES[rng.gen_range(0..LANGUAGES.len())].to_owned()),
        avatar_url: None,
        custom_attributes: Map::new(),
        status,
        last_login_at: last_login_at.map(domain::time::truncate),
        created_at: domain::time::truncate(created_at),
        updated_at: now,
        deleted_at: None,
        version: 1,
    }
}

/// Inserts `count` users into the tenant `slug` in batches of `batch`; returns the rate.
pub async fn seed(
    services: &Services,
    slug: &str,
    count: u64,
    batch: usize,
    progress: bool,
) -> anyhow::Result<SeedReport> {
    let slug = TenantSlug::parse("tenant", slug)?;
    let tenant = services
        .tenant_by_slug(&Actor::operator(), &slug)
        .await
        .with_context(|| format!("tenant {slug}"))?;
    let operator = Actor::system(tenant.id);
    let mut rng = SmallRng::from_entropy();
    let run: String = (0..4)
        .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz"[rng.gen_range(0..26)]))
        .collect();
    let bar = if progress {
        ProgressBar::new(count)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} users  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let start = Instant::now();
    let now = domain::time::now();
    let mut done = 0u64;
    while done < count {
        let n = (count - done).min(batch.max(1) as u64);
        let users: Vec<User> = (done..done + n)
            .map(|i| synthetic_user(&mut rng, tenant.id, &run, i, now))
            .collect();
        services
            .seed_users(&operator, users)
            .await
            .context("batch insert failed")?;
        done += n;
        bar.set_position(done);
    }
    bar.finish_and_clear();
    Ok(SeedReport {
        inserted: done,
        elapsed: start.elapsed(),
    })
}

pub struct SeedReport {
    pub inserted: u64,
    pub elapsed: Duration,
}

impl SeedReport {
    pub fn rate(&self) -> f64 {
        self.inserted as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}
