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
use domain::audit::AuditContext;
use domain::tenants::{NewTenant, Plan, TenantSlug, DEFAULT_TENANT_SLUG};
use domain::values::{DisplayName, JsonObject};
use domain::{Error, Store};
use store_postgres::PgStore;
use store_sqlite::SqliteStore;
use tokio::net::TcpListener;

use crate::config::{Config, DatabaseTarget};

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

/// Applies migrations and creates the `default` tenant on first start.
pub async fn prepare(store: &dyn Store) -> anyhow::Result<()> {
    store.migrate().await.context("migration failed")?;
    ensure_default_tenant(store).await
}

async fn ensure_default_tenant(store: &dyn Store) -> anyhow::Result<()> {
    let slug = TenantSlug::parse("slug", DEFAULT_TENANT_SLUG)?;
    match store.get_tenant_by_slug(&slug).await {
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
    match store.create_tenant(new, &AuditContext::system()).await {
        Ok(t) => {
            tracing::info!(tenant = %t.id, "created the default tenant");
            Ok(())
        }
        // Another replica created it at the same moment.
        Err(Error::Conflict { .. }) => Ok(()),
        Err(e) => Err(e).context("cannot create the default tenant"),
    }
}

/// The HTTP application over `store`.
pub fn router(store: Arc<dyn Store>, config: &Config) -> Router {
    let settings = HttpSettings {
        max_body_bytes: config.http.max_body_bytes,
    };
    api::app(AppState::new(store), &settings)
}

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
