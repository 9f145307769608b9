//! The command line: `serve`, `migrate`, `config check`, `tenant`, `api-key`, `dev seed`,
//! `dev seed-authz`.
//! Every command accepts `--json` for machine-readable output on stdout.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use domain::api_keys::ApiKey;
use domain::tenants::{MaxUsers, NewTenant, Plan, Tenant, TenantListQuery, TenantSlug};
use domain::values::{DisplayName, JsonObject};
use domain::ApiKeyId;
use portcullis_services::{Actor, Services};
use serde_json::json;

use crate::config::Config;
use crate::{app, keys, seed, seed_authz, telemetry};

#[derive(Debug, Parser)]
#[command(
    name = "portcullis",
    version,
    about = "Multi-tenant identity and user management server"
)]
pub struct Cli {
    /// TOML configuration file (PORTCULLIS_* environment variables override it).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (migrates the database and creates the `default` tenant first).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Manage API keys.
    #[command(subcommand, name = "api-key")]
    ApiKey(ApiKeyCommand),
    /// Token-signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Development tools.
    #[command(subcommand)]
    Dev(DevCommand),
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Generate a new signing key that replaces the current one. The old key stays in the
    /// JWKS until the tokens it signed have expired; running servers switch within a minute.
    Rotate {
        /// `EdDSA` or `ES256`; default: the configured algorithm.
        #[arg(long)]
        algorithm: Option<String>,
    },
    /// List the signing keys.
    List,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file (or `--config`) and print the effective configuration,
    /// secrets redacted.
    Check {
        /// The file to check; defaults to `--config`.
        file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant.
    Create(TenantCreate),
    /// List tenants.
    List,
}

#[derive(Debug, Args)]
pub struct TenantCreate {
    /// URL-safe name: 2–63 of a-z, 0-9, '-'.
    #[arg(long)]
    pub slug: String,
    /// Display name (defaults to the slug).
    #[arg(long)]
    pub name: Option<String>,
    /// free, pro or enterprise.
    #[arg(long, default_value = "free")]
    pub plan: String,
    /// User quota (defaults to the plan's).
    #[arg(long)]
    pub max_users: Option<i64>,
}

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create a key; it is printed once and only its hash is stored.
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
        /// May manage tenants.
        #[arg(long)]
        platform_admin: bool,
    },
    /// List a tenant's keys (never the secrets).
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Revoke a key; requests with it fail from then on.
    Revoke {
        #[arg(long)]
        tenant: String,
        /// The key's id.
        #[arg(long)]
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Insert synthetic users into a tenant, fast (for development and benchmarks).
    Seed {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        users: u64,
        /// Users per insert batch.
        #[arg(long, default_value_t = 5000)]
        batch: usize,
    },
    /// Give a tenant seeded with `dev seed` application permissions, custom roles, nested
    /// groups with role grants, memberships for every user, direct (some time-bound) role
    /// assignments and active Cedar policies (for development and benchmarks).
    SeedAuthz {
        #[arg(long)]
        tenant: String,
        /// Groups: one root per department, teams up to four levels deep, some projects.
        #[arg(long, default_value_t = 1000)]
        groups: usize,
        /// Custom roles.
        #[arg(long, default_value_t = 200)]
        roles: usize,
        /// Active Cedar policies over the application actions.
        #[arg(long, default_value_t = 100)]
        policies: usize,
        /// Random seed: the same seed over the same users gives the same set-up.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Config(ConfigCommand::Check { file }) = &cli.command {
        return config_check(file.as_ref().or(cli.config.as_ref()), cli.json);
    }
    let config = Config::load(cli.config.as_deref())?;
    telemetry::init(&config, !matches!(cli.command, Command::Serve));
    match cli.command {
        Command::Serve => serve(config).await,
        Command::Config(_) => Ok(()),
        Command::Migrate => {
            let store = app::open_store(&config).await?;
            app::prepare(store.as_ref()).await?;
            print(cli.json, &json!({"migrated": true}), "migrations applied");
            Ok(())
        }
        command => {
            let store = app::open_store(&config).await?;
            app::prepare(store.as_ref()).await?;
            let services = app::services(store, &config, None).await?;
            match command {
                Command::Tenant(c) => tenant(&services, c, cli.json).await,
                Command::ApiKey(c) => api_key(&services, c, cli.json).await,
                Command::Keys(c) => keys_command(&services, &config, c, cli.json).await,
                Command::Dev(DevCommand::Seed {
                    tenant,
                    users,
                    batch,
                }) => {
                    let report = seed::seed(&services, &tenant, users, batch, !cli.json).await?;
                    print(
                        cli.json,
                        &json!({"inserted": report.inserted, "seconds": report.elapsed.as_secs_f64(), "per_second": report.rate()}),
                        &format!(
                            "inserted {} users in {:.1}s ({:.0}/s)",
                            report.inserted,
                            report.elapsed.as_secs_f64(),
                            report.rate()
                        ),
                    );
                    Ok(())
                }
                Command::Dev(DevCommand::SeedAuthz {
                    tenant,
                    groups,
                    roles,
                    policies,
                    seed,
                }) => {
                    let opts = seed_authz::SeedAuthzOptions {
                        tenant,
                        groups,
                        roles,
                        policies,
                        seed,
                    };
                    let report = seed_authz::seed_authz(&services, &opts, !cli.json).await?;
                    print(cli.json, &report.to_json(), &report.summary());
                    Ok(())
                }
                Command::Serve | Command::Config(_) | Command::Migrate => Ok(()),
            }
        }
    }
}

fn print(json: bool, value: &serde_json::Value, text: &str) {
    if json {
        println!("{value}");
    } else {
        println!("{text}");
    }
}

fn config_check(file: Option<&PathBuf>, json: bool) -> anyhow::Result<()> {
    let config = Config::load(file.map(PathBuf::as_path))?;
    let shown = config.redacted_toml()?;
    if json {
        let value: toml::Value = toml::from_str(&shown)?;
        println!("{}", serde_json::to_string(&value)?);
    } else {
        println!("# configuration is valid; effective values (secrets redacted):\n{shown}");
    }
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let target = config.database_target()?;
    let store = app::open_store(&config).await?;
    app::prepare(store.as_ref()).await?;
    // Everything that can take a while (keys, caches) is ready before the port accepts
    // connections: a client, or a SIGTERM, arriving early finds a server that can answer
    // or shut down cleanly.
    let services = app::services(store, &config, None).await?;
    let router = app::router(services.clone(), &config);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, database = %target, "portcullis listening on http://{addr}");
    let grace = Duration::from_secs(config.http.shutdown_grace_seconds);
    app::serve(listener, router, app::shutdown_signal(), grace).await?;
    // Emails the last requests started are sent before the process ends.
    if tokio::time::timeout(grace, services.settle())
        .await
        .is_err()
    {
        tracing::warn!("grace period over; unsent emails are dropped");
    }
    Ok(())
}

async fn keys_command(
    services: &Services,
    config: &Config,
    c: KeysCommand,
    json: bool,
) -> anyhow::Result<()> {
    match c {
        KeysCommand::Rotate { algorithm } => {
            let algorithm = algorithm
                .as_deref()
                .unwrap_or(&config.auth.signing_algorithm)
                .parse::<portcullis_auth::keys::SigningAlgorithm>()
                .map_err(|_| anyhow::anyhow!("--algorithm must be EdDSA or ES256"))?;
            let key = services
                .rotate_signing_key(&Actor::operator(), algorithm)
                .await
                .map_err(|e| anyhow::anyhow!("cannot rotate: {e}"))?;
            print(
                json,
                &json!({"kid": key.kid, "algorithm": key.algorithm, "created_at": key.created_at}),
                &format!("new signing key {} ({})", key.kid, key.algorithm),
            );
        }
        KeysCommand::List => {
            let keys = services.list_signing_keys(&Actor::operator()).await?;
            let rows: Vec<serde_json::Value> = keys
                .iter()
                .map(|k| json!({"kid": k.kid, "algorithm": k.algorithm, "created_at": k.created_at, "retired_at": k.retired_at}))
                .collect();
            if json {
                println!("{}", serde_json::Value::Array(rows));
            } else {
                for k in &keys {
                    let state = match k.retired_at {
                        None => "current".to_owned(),
                        Some(at) => format!("retired {at}"),
                    };
                    println!(
                        "{}  {}  created {}  {state}",
                        k.kid, k.algorithm, k.created_at
                    );
                }
            }
        }
    }
    Ok(())
}

fn tenant_json(t: &Tenant) -> serde_json::Value {
    serde_json::to_value(t).unwrap_or_default()
}

async fn tenant(services: &Services, c: TenantCommand, json: bool) -> anyhow::Result<()> {
    let operator = Actor::operator();
    match c {
        TenantCommand::Create(a) => {
            let plan: Plan = a.plan.parse().map_err(|m| anyhow::anyhow!("--plan {m}"))?;
            let new = NewTenant {
                slug: TenantSlug::parse("--slug", &a.slug)?,
                display_name: DisplayName::parse("--name", a.name.as_deref().unwrap_or(&a.slug))?,
                plan,
                max_users: a
                    .max_users
                    .map(|n| MaxUsers::parse("--max-users", n))
                    .transpose()?,
                trial_ends_at: None,
                settings: JsonObject::default(),
            };
            let t = services
                .create_tenant(&operator, new)
                .await
                .with_context(|| format!("cannot create tenant {}", a.slug))?;
            print(
                json,
                &tenant_json(&t),
                &format!("created tenant {} ({})", t.slug, t.id),
            );
        }
        TenantCommand::List => {
            let mut all = Vec::new();
            let mut after = None;
            loop {
                let page = services
                    .list_tenants(
                        &operator,
                        &TenantListQuery {
                            after,
                            limit: domain::page::PageSize::new(Some(200))?,
                            ..TenantListQuery::default()
                        },
                    )
                    .await?;
                all.extend(page.items);
                match page.next_cursor {
                    Some(c) => after = Some(domain::page::decode_cursor(&c)?),
                    None => break,
                }
            }
            if json {
                println!(
                    "{}",
                    serde_json::Value::Array(all.iter().map(tenant_json).collect())
                );
            } else {
                println!(
                    "{:<38} {:<24} {:<10} {:<10} MAX_USERS",
                    "ID", "SLUG", "STATUS", "PLAN"
                );
                for t in &all {
                    let max = t
                        .max_users
                        .map_or("unlimited".to_owned(), |n| n.to_string());
                    println!(
                        "{:<38} {:<24} {:<10} {:<10} {max}",
                        t.id.to_string(),
                        t.slug,
                        t.status,
                        t.plan
                    );
                }
            }
        }
    }
    Ok(())
}

fn key_json(k: &ApiKey) -> serde_json::Value {
    serde_json::to_value(k).unwrap_or_default()
}

async fn api_key(services: &Services, c: ApiKeyCommand, json: bool) -> anyhow::Result<()> {
    let operator = Actor::operator();
    match c {
        ApiKeyCommand::Create {
            tenant,
            name,
            platform_admin,
        } => {
            let (key, generated) =
                keys::create_api_key(services, &tenant, &name, platform_admin).await?;
            if json {
                let mut v = key_json(&key);
                if let Some(obj) = v.as_object_mut() {
                    obj.insert("key".into(), generated.expose().into());
                }
                println!("{v}");
            } else {
                println!(
                    "created API key {} ({}) for tenant {tenant}{}\n\n    {}\n\nStore it now: it is shown only once.",
                    key.id,
                    key.name,
                    if key.platform_admin { ", platform admin" } else { "" },
                    generated.expose()
                );
            }
        }
        ApiKeyCommand::List { tenant } => {
            let t = services
                .tenant_by_slug(&operator, &TenantSlug::parse("--tenant", &tenant)?)
                .await?;
            let list = services.list_api_keys(&operator, t.id).await?;
            if json {
                println!(
                    "{}",
                    serde_json::Value::Array(list.iter().map(key_json).collect())
                );
            } else {
                println!(
                    "{:<38} {:<12} {:<24} {:<8} REVOKED",
                    "ID", "PREFIX", "NAME", "ADMIN"
                );
                for k in &list {
                    let revoked = k.revoked_at.map_or("-".to_owned(), |t| t.to_rfc3339());
                    println!(
                        "{:<38} {:<12} {:<24} {:<8} {revoked}",
                        k.id.to_string(),
                        k.prefix,
                        k.name,
                        k.platform_admin
                    );
                }
            }
        }
        ApiKeyCommand::Revoke { tenant, id } => {
            let t = services
                .tenant_by_slug(&operator, &TenantSlug::parse("--tenant", &tenant)?)
                .await?;
            let id: ApiKeyId = id
                .parse()
                .map_err(|_| anyhow::anyhow!("--id must be a UUID"))?;
            let key = services.revoke_api_key(&operator, t.id, id).await?;
            print(
                json,
                &key_json(&key),
                &format!("revoked API key {}", key.id),
            );
        }
    }
    Ok(())
}
