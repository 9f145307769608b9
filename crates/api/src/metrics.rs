//! Prometheus metrics, one registry per application instance (no globals, so tests can run
//! many servers in one process): request count and latency per route, method and status,
//! and database pool gauges read at scrape time. Every label takes a bounded set of values:
//! methods (unknown ones are `OTHER`), route templates (unmatched requests are
//! `unmatched`) and status codes.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    route: String,
    status: u16,
}

/// The method as a label: the standard methods by name, anything else `OTHER`, so that a
/// client cannot grow the label set (and the process's memory) by inventing methods.
pub fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        "TRACE" => "TRACE",
        "CONNECT" => "CONNECT",
        _ => "OTHER",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    state: &'static str,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<HttpLabels, Counter>,
    durations: Family<HttpLabels, Histogram>,
    pool: Family<PoolLabels, Gauge>,
    hash_queue: Gauge,
    hash_workers: Gauge,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms … ~8 s
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("portcullis");
        let requests = Family::<HttpLabels, Counter>::default();
        let durations = Family::<HttpLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let pool = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "http_requests",
            "HTTP requests handled, by method, route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency, by method, route and status",
            durations.clone(),
        );
        registry.register(
            "db_pool_connections",
            "Database pool connections, by state (idle, in_use, max)",
            pool.clone(),
        );
        let hash_queue = Gauge::default();
        let hash_workers = Gauge::default();
        registry.register(
            "password_hash_queue",
            "Password-hashing jobs waiting for a worker (sign-ins beyond the queue get 503)",
            hash_queue.clone(),
        );
        registry.register(
            "password_hash_workers",
            "Password-hashing worker threads",
            hash_workers.clone(),
        );
        Self {
            registry,
            requests,
            durations,
            pool,
            hash_queue,
            hash_workers,
        }
    }

    pub fn observe(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let labels = HttpLabels {
            method: method_label(method),
            route: route.to_owned(),
            status,
        };
        self.requests.get_or_create(&labels).inc();
        self.durations
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Renders the OpenMetrics text exposition, with the pool figures given.
    pub fn render(
        &self,
        pool: domain::store::PoolStats,
        hasher: &portcullis_auth::passwords::PasswordHasher,
    ) -> String {
        self.hash_queue
            .set(i64::try_from(hasher.queue_len()).unwrap_or(i64::MAX));
        self.hash_workers
            .set(i64::try_from(hasher.workers()).unwrap_or(i64::MAX));
        let idle = i64::from(pool.idle);
        let in_use = i64::from(pool.size.saturating_sub(pool.idle));
        self.pool
            .get_or_create(&PoolLabels { state: "idle" })
            .set(idle);
        self.pool
            .get_or_create(&PoolLabels { state: "in_use" })
            .set(in_use);
        self.pool
            .get_or_create(&PoolLabels { state: "max" })
            .set(i64::from(pool.max));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
