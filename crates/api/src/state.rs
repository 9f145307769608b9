//! What every handler can reach: the services (never a store) and the metrics registry.

use std::sync::Arc;

use portcullis_services::Services;

use crate::metrics::Metrics;

#[derive(Clone)]
pub struct AppState {
    pub services: Arc<Services>,
    pub metrics: Arc<Metrics>,
}

impl AppState {
    pub fn new(services: Arc<Services>) -> Self {
        Self {
            services,
            metrics: Arc::new(Metrics::new()),
        }
    }
}
