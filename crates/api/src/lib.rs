//! The HTTP interface of Portcullis: routing, request authentication, request/response
//! types with their OpenAPI description, and RFC 9457 errors. Handlers are thin: extract,
//! authorise, one storage/service call, map the result.

pub mod audit;
pub mod auth;
pub mod authz;
mod contract;
pub mod credentials;
pub mod extract;
pub mod groups;

pub mod me;
pub mod metrics;
pub mod middleware;
pub mod ops;
mod parse;
pub mod policies;
pub mod problem;
pub mod roles;
pub mod signin;
pub mod state;
pub mod tenants;
pub mod users;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use state::AppState;

use problem::ApiError;

/// Settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Portcullis",
        description = "Multi-tenant identity and user management. Administrative endpoints take `Authorization: Bearer <API key>` (every permission in the key's tenant) or a signed-in user's access token or browser-session cookie (what the user's roles and the tenant's policies allow; 403 otherwise); `/api/v1/me` endpoints take the user's token or cookie; errors are RFC 9457 `application/problem+json`.",
        license(name = "Apache-2.0")
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "authentication", description = "Sign-in, tokens, emailed links and the signing keys"),
        (name = "me", description = "The signed-in user's own account"),
        (name = "tenants", description = "Tenant management (platform-admin keys) and tenant settings"),
        (name = "users", description = "Users of the caller's tenant"),
        (name = "authorization", description = "Permissions, roles, who holds them, and authorization checks"),
        (name = "groups", description = "Groups (nested), their members and the roles they confer"),
        (name = "policies", description = "ABAC policies in Cedar"),
        (name = "audit", description = "The tenant's audit trail"),
        (name = "operations", description = "Health and readiness"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
            );
        }
    }
}

fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(tenants::router())
        .merge(users::router())
        .merge(credentials::router())
        .merge(signin::router())
        .merge(me::router())
        .merge(audit::router())
        .merge(roles::router())
        .merge(groups::router())
        .merge(policies::router())
        .merge(authz::router())
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
}

/// The OpenAPI 3.1 document of the API.
pub fn openapi() -> OpenApiDoc {
    let mut doc = api_router().into_openapi();
    contract::complete(&mut doc);
    doc
}

/// The complete application: API routes, operations endpoints and middleware.
pub fn app(state: AppState, settings: &HttpSettings) -> Router {
    let (router, mut doc) = api_router().split_for_parts();
    contract::complete(&mut doc);
    let doc = std::sync::Arc::new(doc);
    router
        .route("/metrics", get(ops::metrics))
        .route(
            "/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { Json(doc.as_ref().clone()) }
            }),
        )
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
            )
            .detail("this endpoint does not support the request method")
            .into_response()
        })
        .route_layer(axum::middleware::from_fn(middleware::stamp_route))
        .layer(DefaultBodyLimit::max(settings.max_body_bytes))
        .layer(CatchPanicLayer::custom(middleware::panic_response))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::track,
        ))
        .layer(axum::middleware::from_fn(middleware::request_id))
        .with_state(state)
}
