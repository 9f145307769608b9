//! What every handler can reach.

use std::sync::Arc;

use domain::Store;
use portcullis_auth::service::AuthService;
use portcullis_authz::Engine;

use crate::metrics::Metrics;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub auth: Arc<AuthService>,
    /// The authorization decision engine and its cache.
    pub authz: Arc<Engine>,
    /// API keys authenticated in the last few seconds.
    pub api_keys: Arc<crate::auth::ApiKeyCache>,
    pub metrics: Arc<Metrics>,
}

impl AppState {
    /// Trust authenticated API keys for `ttl` before asking the database again.
    pub fn with_api_key_cache(mut self, ttl: std::time::Duration) -> Self {
        self.api_keys = Arc::new(crate::auth::ApiKeyCache::new(ttl));
        self
    }

    pub fn new(store: Arc<dyn Store>, auth: Arc<AuthService>, authz: Arc<Engine>) -> Self {
        Self {
            store,
            auth,
            authz,
            api_keys: Arc::new(crate::auth::ApiKeyCache::new(
                std::time::Duration::from_secs(5),
            )),
            metrics: Arc::new(Metrics::new()),
        }
    }
}
