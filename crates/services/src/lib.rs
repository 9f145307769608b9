//! Portcullis services: the one place where the rules live. Every operation takes the
//! acting principal ([`Actor`]: an API key, a signed-in user or the system), authorises it
//! ([`access`]), applies the rules of the capability, runs one store transaction
//! ([`domain::store::Tx`]) that writes the change, its audit record and its event, and
//! hands the committed events to the in-process subscribers ([`events`]), which keep the
//! caches right. No HTTP and no SQL here: the `api` crate parses and renders, the stores
//! hold queries. Every entry point (REST, CLI, jobs, and later SCIM and pages) calls these
//! operations, so that a rule is written once.
//!
//! One module per capability: `tenants`, `api_keys`, `users`, `credentials`, `sessions`,
//! `settings`, `roles` (permissions, roles, assignments), `groups`, `policies`, `checks`
//! (the authorization check API and one's own permissions), `audit`, `keys` (signing
//! keys), and `signin` (every sign-in flow, the tokens and sessions it hands out).

pub mod access;
pub mod actor;
pub mod api_keys;
pub mod audit;
mod background;
pub mod checks;
pub mod credentials;
pub mod events;
pub mod groups;
pub mod keys;
pub mod policies;
pub mod roles;
pub mod sessions;
pub mod settings;
pub mod signin;
pub mod tenants;
pub mod users;

use std::sync::Arc;
use std::time::Duration;

use domain::events::Event;
use domain::store::Tx;
use domain::{Result, Store};
use portcullis_auth::config::AuthConfig;
use portcullis_auth::keys::MasterKey;
use portcullis_auth::mailer::Mailer;
use portcullis_authz::Engine;

pub use access::{Reach, Target};
pub use actor::{Actor, ActorKind, RequestMeta, SessionPrincipal};

use crate::api_keys::ApiKeyCache;
use crate::events::Dispatcher;
use crate::signin::SignIn;

/// What every capability shares: the store, the decision engine, and the dispatcher that
/// hands committed events to the subscribers.
pub(crate) struct Core {
    pub store: Arc<dyn Store>,
    pub authz: Arc<Engine>,
    pub events: Arc<Dispatcher>,
}

impl Core {
    pub async fn begin(&self) -> Result<Box<dyn Tx>> {
        self.store.begin().await
    }

    /// Commits and hands the change's events to this replica's subscribers before the
    /// caller answers, so that the very next request sees caches that know of it.
    pub async fn commit(&self, tx: Box<dyn Tx>) -> Result<Vec<Event>> {
        let events = tx.commit().await?;
        self.events.committed(&events);
        Ok(events)
    }
}

/// How the services are set up.
pub struct Config {
    pub auth: AuthConfig,
    pub master: MasterKey,
    pub mailer: Arc<dyn Mailer>,
    /// How long an authenticated API key is trusted before the database is asked again
    /// (a revocation on this replica empties the cache at once; see `api_keys`).
    pub api_key_cache_ttl: Duration,
}

/// Every operation of Portcullis.
pub struct Services {
    core: Arc<Core>,
    signin: Arc<SignIn>,
    api_keys: Arc<ApiKeyCache>,
}

impl Services {
    /// Builds the services over a migrated store: the decision engine, the signing keys
    /// (the first one is created on first start), the hashing pool, and the dispatcher
    /// with its subscribers (the decision cache and the API-key cache). The dispatcher's
    /// position is taken now, so that nothing committed from here on is missed.
    pub async fn start(store: Arc<dyn Store>, config: Config) -> Result<Arc<Services>> {
        let authz = Arc::new(Engine::new(store.clone()));
        let events = Arc::new(Dispatcher::new(store.clone()));
        events.start_position().await?;
        let api_keys = Arc::new(ApiKeyCache::new(config.api_key_cache_ttl));
        events.subscribe(Arc::new(events::DecisionCache(authz.clone())));
        events.subscribe(api_keys.clone());
        let core = Arc::new(Core {
            store,
            authz,
            events,
        });
        let signin = SignIn::start(core.clone(), config.master, config.mailer, config.auth).await?;
        Ok(Arc::new(Services {
            core,
            signin,
            api_keys,
        }))
    }

    /// The sign-in flows.
    pub fn signin(&self) -> &Arc<SignIn> {
        &self.signin
    }

    /// The decision engine (for benchmarks and tools that decide in-process).
    pub fn engine(&self) -> &Arc<Engine> {
        &self.core.authz
    }

    /// The backend's name, for logs and metrics.
    pub fn backend(&self) -> &'static str {
        self.core.store.backend()
    }

    /// Whether the database answers (readiness).
    pub async fn ready(&self) -> Result<()> {
        self.core.store.ping().await
    }

    /// Connection-pool figures (metrics).
    pub fn pool_stats(&self) -> domain::store::PoolStats {
        self.core.store.pool_stats()
    }

    /// Starts the background work of a serving replica, which ends when the services are
    /// dropped: every `poll` the outbox is read for the changes of other replicas and of
    /// the CLI (their events reach the subscribers); every minute the signing keys are
    /// re-read and idle rate-limit state forgotten; every hour ended sessions, expired
    /// single-use tokens and delivered events older than a week are deleted.
    pub fn run_background(self: &Arc<Self>, poll: Duration) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(poll);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(this) = weak.upgrade() else { break };
                if let Err(e) = this.poll_events().await {
                    tracing::warn!(error = %e, "could not read the outbox");
                }
            }
        });
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            tick.tick().await;
            let mut minutes: u64 = 0;
            loop {
                tick.tick().await;
                let Some(this) = weak.upgrade() else { break };
                this.housekeeping(minutes).await;
                minutes += 1;
            }
        });
    }

    /// Waits until the work started after answering (emails, re-hashed passwords) is
    /// done: a stopping server calls it so that no mail is cut off.
    pub async fn settle(&self) {
        self.signin.settle().await;
    }

    /// Reads the outbox for what other replicas and the CLI committed since the last
    /// read and hands it to this replica's subscribers; how many events were read.
    pub async fn poll_events(&self) -> Result<usize> {
        self.core.events.poll().await
    }

    async fn housekeeping(&self, minutes: u64) {
        if let Err(e) = self.signin.reload_keys().await {
            tracing::warn!(error = %e, "could not reload signing keys");
        }
        self.signin.prune_rate_limits();
        if !minutes.is_multiple_of(60) {
            return;
        }
        match self.signin.prune().await {
            Ok(n) => tracing::info!(deleted = n, "pruned ended sessions and expired tokens"),
            Err(e) => tracing::warn!(error = %e, "could not prune sessions and tokens"),
        }
        let week_ago = domain::time::now() - chrono::TimeDelta::days(7);
        match self.core.store.prune_outbox(week_ago).await {
            Ok(n) => tracing::info!(deleted = n, "pruned delivered events"),
            Err(e) => tracing::warn!(error = %e, "could not prune the outbox"),
        }
    }
}
