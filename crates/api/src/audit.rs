//! `/api/v1/audit-events`: read the caller's tenant's audit trail. There is no way to
//! change or delete an event through the API (and the database refuses it too).

use axum::extract::State;
use axum::Json;
use domain::audit::{AuditEvent, AuditQuery};
use domain::{AuditEventId, ValidationErrors};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::extract::ApiQuery;
use crate::parse::{self, optional};
use crate::problem::{ApiError, ApiResult, Problem};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_audit_events))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListAuditParams {
    /// The acting API key's or user's id.
    #[param(value_type = Option<uuid::Uuid>)]
    actor_id: Option<String>,
    /// `api_key`, `user`, `system` or `anonymous`.
    #[param(value_type = Option<domain::audit::ActorType>)]
    actor_type: Option<String>,
    /// e.g. `user.update`.
    action: Option<String>,
    /// e.g. `user`.
    entity_type: Option<String>,
    #[param(value_type = Option<uuid::Uuid>)]
    entity_id: Option<String>,
    /// At or after (RFC 3339).
    #[param(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    since: Option<String>,
    /// Before (RFC 3339).
    #[param(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    until: Option<String>,
    /// Page size, 1–200 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// One page of audit events, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventPage {
    pub items: Vec<AuditEvent>,
    pub next_cursor: Option<String>,
}

/// List the audit trail of the caller's tenant, newest first.
#[utoipa::path(get, path = "/api/v1/audit-events", tag = "audit", params(ListAuditParams),
    security(("bearer" = [])),
    responses(
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 200, description = "A page of events", body = AuditEventPage),
        (status = 400, description = "Invalid parameters", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_audit_events(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(p): ApiQuery<ListAuditParams>,
) -> ApiResult<Json<AuditEventPage>> {
    let mut errs = ValidationErrors::new();
    let query = AuditQuery {
        actor_id: optional(&mut errs, "actor_id", p.actor_id, parse::id),
        actor_type: optional(&mut errs, "actor_type", p.actor_type, parse::enum_value),
        action: p.action,
        entity_type: p.entity_type,
        entity_id: optional(&mut errs, "entity_id", p.entity_id, parse::id),
        since: optional(&mut errs, "since", p.since, parse::timestamp),
        until: optional(&mut errs, "until", p.until, parse::timestamp),
        limit: optional(&mut errs, "limit", p.limit, parse::limit).unwrap_or_default(),
        before_id: None,
    };
    errs.finish().map_err(ApiError::from_query_error)?;
    let before_id = p
        .cursor
        .map(|c| domain::page::decode_cursor::<AuditEventId>(&c))
        .transpose()
        .map_err(ApiError::from_query_error)?;
    let page = state
        .services
        .list_audit_events(&caller, AuditQuery { before_id, ..query })
        .await?;
    Ok(Json(AuditEventPage {
        items: page.items,
        next_cursor: page.next_cursor,
    }))
}
