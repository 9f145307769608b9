//! What every handler can reach.

use std::sync::Arc;

use domain::Store;
use portcullis_auth::service::AuthService;

use crate::metrics::Metrics;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub auth: Arc<AuthService>,
    pub metrics: Arc<Metrics>,
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, auth: Arc<AuthService>) -> Self {
        Self {
            store,
            auth,
            metrics: Arc::new(Metrics::new()),
        }
    }
}
