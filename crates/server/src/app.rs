//! Wiring: open the configured store, migrate it, make sure the `default` tenant exists,
//! build the HTTP application and serve it until a shutdown signal, letting in-flight
//! requests finish within the grace period.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use api::{AppState, HttpSettings};
use axum::Router;
use domain::tenants::{NewTenant, Plan, TenantSlug, DEFAULT_TENANT_SLUG};
use domain::values::{DisplayName, JsonObject};
use domain::{Error, Store};
use store_postgres::PgStore;
use store_sqlite::SqliteStore;
use tokio::net::TcpListener;

use chrono::TimeDelta;
use domain::auth::LockoutPolicy;
use portcullis_auth::config::AuthConfig;
use portcullis_auth::keys::{MasterKey, SigningAlgorithm};
use portcullis_auth::mailer::{DevMailer, Mailer, SmtpMailer, SmtpSettings, SmtpTls};
use portcullis_auth::passwords::Argon2Params;
use portcullis_services::{self as services, Actor, Services};
use secrecy::SecretString;

use crate::config::{Config, DatabaseTarget, MailTransport, SmtpTlsMode};

/// Opens (but does not migrate) the store the configuration names.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let target = config.database_target()?;
    let store: Arc<dyn Store> = match &target {
        DatabaseTarget::Sqlite(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create data directory {}", dir.display()))?;
            }
            Arc::new(
                SqliteStore::open(path)
                    .await
                    .with_context(|| format!("cannot open {target}"))?,
            )
        }
        DatabaseTarget::Postgres(url) => Arc::new(
            PgStore::connect(url, config.database.max_connections)
                .await
                .with_context(|| format!("cannot connect to {target}"))?,
        ),
    };
    Ok(store)
}

/// Applies migrations.
pub async fn prepare(store: &dyn Store) -> anyhow::Result<()> {
    store.migrate().await.context("migration failed")
}

/// The services over a migrated `store`, with the configured mailer (or `mailer`, which
/// replaces it: the test suite reads messages from memory); creates the `default` tenant
/// on first start.
pub async fn services(
    store: Arc<dyn Store>,
    config: &Config,
    mailer_override: Option<Arc<dyn Mailer>>,
) -> anyhow::Result<Arc<Services>> {
    let services = start_services(store, config, mailer_override).await?;
    ensure_default_tenant(&services).await?;
    Ok(services)
}

/// The services over `store` as `config` sets them up, without the default tenant.
pub async fn start_services(
    store: Arc<dyn Store>,
    config: &Config,
    mailer_override: Option<Arc<dyn Mailer>>,
) -> anyhow::Result<Arc<Services>> {
    let mailer = match mailer_override {
        Some(m) => m,
        None => mailer(config)?,
    };
    let services = Services::start(
        store,
        services::Config {
            auth: auth_config(config)?,
            master: master_key(config)?,
            mailer,
            api_key_cache_ttl: Duration::from_secs(config.http.api_key_cache_seconds),
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot start the services: {e}"))?;
    Ok(services)
}

async fn ensure_default_tenant(services: &Services) -> anyhow::Result<()> {
    let operator = Actor::operator();
    let slug = TenantSlug::parse("slug", DEFAULT_TENANT_SLUG)?;
    match services.tenant_by_slug(&operator, &slug).await {
        Ok(_) => return Ok(()),
        Err(Error::NotFound { .. }) => {}
        Err(e) => return Err(e).context("cannot read the default tenant"),
    }
    let new = NewTenant {
        slug,
        display_name: DisplayName::parse("display_name", "Default")?,
        plan: Plan::Enterprise,
        max_users: None,
        trial_ends_at: None,
        settings: JsonObject::default(),
    };
    match services.create_tenant(&operator, new).await {
        Ok(t) => {
            tracing::info!(tenant = %t.id, "created the default tenant");
            Ok(())
        }
        // Another replica created it at the same moment.
        Err(Error::Refused {
            code: domain::Code::SlugTaken,
            ..
        }) => Ok(()),
        Err(e) => Err(e).context("cannot create the default tenant"),
    }
}

/// The master key: from the configuration, else from (or generated into)
/// `<data_dir>/master.key`.
pub fn master_key(config: &Config) -> anyhow::Result<MasterKey> {
    match &config.auth.master_key {
        Some(key) => MasterKey::from_base64(key).context("auth.master_key is not valid"),
        None => {
            let path = config.data_dir.join("master.key");
            MasterKey::load_or_create(&path)
                .with_context(|| format!("cannot read or create {}", path.display()))
        }
    }
}

/// The settings of the authentication services.
pub fn auth_config(config: &Config) -> anyhow::Result<AuthConfig> {
    let a = &config.auth;
    let secs = |s: u64| TimeDelta::seconds(i64::try_from(s).unwrap_or(i64::MAX / 1000));
    Ok(AuthConfig {
        argon2: Argon2Params {
            m_cost_kib: a.argon2_memory_kib,
            t_cost: a.argon2_iterations,
            p_cost: a.argon2_parallelism,
        },
        hash_threads: a.hash_threads,
        hash_queue: a.hash_queue,
        public_url: a.public_url.trim_end_matches('/').to_owned(),
        signing_algorithm: a
            .signing_algorithm
            .parse::<SigningAlgorithm>()
            .map_err(|_| anyhow::anyhow!("auth.signing_algorithm must be EdDSA or ES256"))?,
        access_token_ttl: secs(a.access_token_ttl_seconds),
        session_ttl: secs(a.session_ttl_hours.saturating_mul(3600)),
        lockout: LockoutPolicy {
            threshold: a.lockout_threshold,
            window: secs(a.lockout_window_seconds),
            duration: secs(a.lockout_duration_seconds),
        },
        ip_requests_per_minute: a.ip_requests_per_minute,
        ip_failure_limit: a.ip_failure_limit,
        emails_per_address_per_hour: a.emails_per_address_per_hour,
        secure_cookies: a.secure_cookies,
        ..AuthConfig::default()
    })
}

/// The mailer the configuration names.
pub fn mailer(config: &Config) -> anyhow::Result<Arc<dyn Mailer>> {
    let m = &config.mail;
    Ok(match m.transport {
        MailTransport::Dev => {
            Arc::new(DevMailer::new(config.data_dir.join("mail"), m.from.clone()))
        }
        MailTransport::Smtp => Arc::new(
            SmtpMailer::new(SmtpSettings {
                host: m.smtp_host.clone(),
                port: m.smtp_port,
                tls: match m.smtp_tls {
                    SmtpTlsMode::Tls => SmtpTls::Required,
                    SmtpTlsMode::Starttls => SmtpTls::StartTls,
                    SmtpTlsMode::None => SmtpTls::None,
                },
                username: m.smtp_username.clone(),
                password: m.smtp_password.clone().map(SecretString::from),
                from: m.from.clone(),
                timeout: Duration::from_secs(15),
            })
            .context("invalid mail settings")?,
        ),
    })
}

/// The HTTP application over `services`, whose background work (reading the outbox,
/// housekeeping) starts here.
pub fn router(services: Arc<Services>, config: &Config) -> Router {
    let settings = HttpSettings {
        max_body_bytes: config.http.max_body_bytes,
    };
    services.run_background(OUTBOX_POLL);
    api::app(AppState::new(services), &settings)
}

/// How often a serving replica reads the outbox for the changes of other replicas and of
/// the CLI (its own reach its caches at once).
const OUTBOX_POLL: Duration = Duration::from_millis(500);

/// Serves `router` on `listener` until `shutdown` resolves, then waits up to `grace` for
/// in-flight requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> anyhow::Result<()> {
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down: finishing in-flight requests");
        let _ = stopping_tx.send(());
    });
    tokio::select! {
        result = server => result.context("server error")?,
        _ = async {
            if stopping_rx.await.is_ok() {
                tokio::time::sleep(grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => tracing::warn!(grace_seconds = grace.as_secs(), "grace period over; dropping remaining requests"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
