//! What every handler can reach.

use std::sync::Arc;

use domain::Store;

use crate::metrics::Metrics;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
}

impl AppState {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            metrics: Arc::new(Metrics::new()),
        }
    }
}
