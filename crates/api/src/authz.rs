//! `POST /api/v1/authz/check`, `POST /api/v1/authz/check-batch` and
//! `GET /api/v1/me/permissions`: applications ask "may this user do this to that?" and get
//! the answer with the reason; users read what they may do.

use std::net::IpAddr;

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, FixedOffset, Utc};
use domain::authz::{ActionKey, Scope};
use domain::values::Identifier;
use domain::{FieldError, UserId, ValidationErrors};
use portcullis_authz::{Check, Context, Decision, Grant, Reason, Resource};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Caller, UserCaller};
use crate::extract::ApiJson;
use crate::problem::{ApiError, ApiResult, Problem};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(check))
        .routes(routes!(check_batch))
        .routes(routes!(my_permissions))
}

/// Most checks in one batch.
pub const MAX_BATCH: usize = 100;

/// What the check is about.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckResource {
    /// The kind of resource, e.g. `document` or `users`.
    #[serde(rename = "type")]
    #[schema(example = "document")]
    pub kind: String,
    /// The resource's id; absent for a collection.
    pub id: Option<String>,
    /// `owner` (user id), `department`, `classification` (integer) are understood by roles'
    /// scopes and policies; other string, integer or boolean attributes reach policies as
    /// tags.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
}

/// The circumstances of the request being decided. Everything is optional.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckContext {
    /// The time of the request (RFC 3339, with the offset to judge working hours in);
    /// default now, UTC.
    pub time: Option<String>,
    pub ip: Option<String>,
    /// 0–100 (default 0).
    pub risk_score: Option<i64>,
    /// 0 none, 1 one factor, 2 two factors (default 0).
    pub mfa_level: Option<i64>,
    /// Default false.
    pub device_trusted: Option<bool>,
}

/// One question: may `principal` perform `action` on `resource`?
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    /// A user id of the caller's tenant.
    #[schema(value_type = uuid::Uuid)]
    pub principal: String,
    /// `resource:action`, built in or defined with `POST /api/v1/permissions`.
    #[schema(example = "document:read")]
    pub action: String,
    pub resource: CheckResource,
    #[serde(default)]
    pub context: CheckContext,
}

/// The decision.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckResult {
    pub allowed: bool,
    /// Why, in one sentence.
    pub reason: String,
    /// What decided: `kind` is `super_admin`, `permission` (with the role, and the group it
    /// came through), `policy_permit` / `policy_forbid` (with the policy), `out_of_scope`,
    /// `no_permission`, `principal_inactive`, `principal_deleted` or `principal_not_found`.
    #[schema(value_type = Object)]
    pub decision: Reason,
    /// When a role allowed: the scope of the permission that did.
    pub scope: Option<Scope>,
}

fn parse_check(errs: &mut ValidationErrors, prefix: &str, req: CheckRequest) -> Option<Check> {
    let field = |name: &str| format!("{prefix}{name}");
    let principal = errs.check(
        req.principal
            .trim()
            .parse::<UserId>()
            .map_err(|_| FieldError::new(field("principal"), "invalid_id", "must be a user id")),
    );
    let action = errs.check(ActionKey::parse(&field("action"), &req.action));
    if req.resource.kind.is_empty() || req.resource.kind.len() > Identifier::MAX_LEN {
        errs.push(FieldError::new(
            field("resource.type"),
            "invalid_value",
            "must be 1 to 64 characters",
        ));
    }
    if req.resource.id.as_ref().is_some_and(|id| id.len() > 256) {
        errs.push(FieldError::new(
            field("resource.id"),
            "too_long",
            "must be at most 256 characters",
        ));
    }
    if req.resource.attributes.len() > 64 {
        errs.push(FieldError::new(
            field("resource.attributes"),
            "too_many_keys",
            "at most 64 attributes",
        ));
    }
    let c = req.context;
    let now = match c.time {
        None => Some(Utc::now().fixed_offset()),
        Some(t) => errs.check(
            DateTime::<FixedOffset>::parse_from_rfc3339(t.trim()).map_err(|_| {
                FieldError::new(
                    field("context.time"),
                    "invalid_timestamp",
                    "must be an RFC 3339 timestamp such as 2026-01-31T09:00:00+01:00",
                )
            }),
        ),
    };
    let ip = match c.ip {
        None => None,
        Some(raw) => errs.check(raw.trim().parse::<IpAddr>().map_err(|_| {
            FieldError::new(
                field("context.ip"),
                "invalid_ip",
                "must be an IPv4 or IPv6 address",
            )
        })),
    };
    let mut range = |name: &str, v: Option<i64>, max: i64| -> i64 {
        let v = v.unwrap_or(0);
        if !(0..=max).contains(&v) {
            errs.push(FieldError::new(
                field(name),
                "out_of_range",
                format!("must be between 0 and {max}"),
            ));
        }
        v
    };
    let risk_score = range("context.risk_score", c.risk_score, 100);
    let mfa_level = range("context.mfa_level", c.mfa_level, 3);
    let (principal, action, now) = (principal?, action?, now?);
    let mut context = Context::at(now);
    context.ip = ip;
    context.risk_score = risk_score;
    context.mfa_level = mfa_level;
    context.device_trusted = c.device_trusted.unwrap_or(false);
    Some(Check {
        principal,
        action,
        resource: Resource {
            kind: req.resource.kind,
            id: req.resource.id,
            attributes: req.resource.attributes,
        },
        context,
    })
}

fn result(decision: Decision, check: &Check) -> CheckResult {
    CheckResult {
        allowed: decision.allowed,
        reason: decision.reason.message(&check.action),
        decision: decision.reason,
        scope: decision.scope,
    }
}

/// Decide one authorization question, with the reason. The principal is a user of the
/// caller's tenant; roles (direct and through groups, unexpired, active) and the tenant's
/// Cedar policies decide, a `forbid` over any role.
#[utoipa::path(post, path = "/api/v1/authz/check", tag = "authorization", request_body = CheckRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The decision", body = CheckResult),
        (status = 403, description = "The caller may not ask", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid question, e.g. an unknown action", body = Problem, content_type = "application/problem+json"),
    ))]
async fn check(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CheckRequest>,
) -> ApiResult<Json<CheckResult>> {
    let mut errs = ValidationErrors::new();
    let parsed = parse_check(&mut errs, "", body);
    errs.finish()?;
    let check = parsed.ok_or_else(|| domain::Error::internal("validated check missing"))?;
    let decision = state.services.check(&caller, &check).await?;
    Ok(Json(result(decision, &check)))
}

/// Up to 100 questions.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckBatchRequest {
    pub checks: Vec<CheckRequest>,
}

/// The decisions, in the order of the questions.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckBatchResult {
    pub results: Vec<CheckResult>,
}

/// Decide up to 100 questions in one call. An invalid question fails the whole batch with
/// 422 naming it (`checks[3].action`).
#[utoipa::path(post, path = "/api/v1/authz/check-batch", tag = "authorization", request_body = CheckBatchRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The decisions, in order", body = CheckBatchResult),
        (status = 403, description = "The caller may not ask", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid question, or more than 100", body = Problem, content_type = "application/problem+json"),
    ))]
async fn check_batch(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CheckBatchRequest>,
) -> ApiResult<Json<CheckBatchResult>> {
    if body.checks.is_empty() || body.checks.len() > MAX_BATCH {
        return Err(ApiError::validation(vec![FieldError::new(
            "checks",
            "invalid_length",
            format!("must hold 1 to {MAX_BATCH} checks"),
        )]));
    }
    let mut errs = ValidationErrors::new();
    let checks: Vec<Option<Check>> = body
        .checks
        .into_iter()
        .enumerate()
        .map(|(i, c)| parse_check(&mut errs, &format!("checks[{i}]."), c))
        .collect();
    errs.finish()?;
    let checks: Vec<Check> = checks.into_iter().flatten().collect();
    let decisions = state.services.check_batch(&caller, &checks).await?;
    let results = decisions
        .into_iter()
        .zip(&checks)
        .map(|(d, c)| result(d, c))
        .collect();
    Ok(Json(CheckBatchResult { results }))
}

/// The signed-in user's effective permissions.
#[derive(Serialize, ToSchema)]
pub struct MyPermissions {
    /// A super administrator may do everything in the tenant and manage tenants.
    pub super_admin: bool,
    /// `resource:action:scope` strings, each once, sorted.
    pub permissions: Vec<String>,
    /// Where each permission comes from: the role, the group it is inherited through, and
    /// when a time-bound assignment ends.
    #[schema(value_type = Vec<Object>)]
    pub grants: Vec<Grant>,
}

/// What the signed-in user may do: the union of their unexpired direct roles and the roles
/// of their groups and the groups above them (policies can still forbid an action in a given
/// situation; ask `POST /api/v1/authz/check`).
#[utoipa::path(get, path = "/api/v1/me/permissions", tag = "me",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Effective permissions", body = MyPermissions),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
    ))]
async fn my_permissions(
    State(state): State<AppState>,
    caller: UserCaller,
) -> ApiResult<Json<MyPermissions>> {
    let effective = state.services.my_permissions(&caller).await?;
    let mut permissions: Vec<String> = effective
        .grants
        .iter()
        .map(|g| g.permission.to_string())
        .collect();
    permissions.dedup();
    Ok(Json(MyPermissions {
        super_admin: effective.super_admin,
        permissions,
        grants: effective.grants,
    }))
}
