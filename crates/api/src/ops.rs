//! Operations endpoints: liveness, readiness, Prometheus metrics and the OpenAPI document.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::problem::{ApiError, Problem};
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Up", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The database answers within two seconds.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "The database is unreachable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    match tokio::time::timeout(Duration::from_secs(2), state.services.ready()).await {
        Ok(Ok(())) => Json(Health { status: "ready" }).into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check failed");
            not_ready()
        }
        Err(_) => {
            tracing::warn!("readiness check timed out");
            not_ready()
        }
    }
}

fn not_ready() -> Response {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "Not ready")
        .detail("the database is not reachable")
        .into_response()
}

/// Prometheus metrics in the OpenMetrics text format.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let body = state.metrics.render(
        state.services.pool_stats(),
        state.services.signin().hasher(),
    );
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
