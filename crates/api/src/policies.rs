//! `/api/v1/policies`: the tenant's ABAC policies, one Cedar `permit` or `forbid` statement
//! each, validated against the tenant's schema when saved (a policy that does not validate is
//! a 422 naming Cedar's error), versioned (`ETag` = version, `If-Match` on update, the
//! history under `…/versions`). Every change invalidates the tenant's decision cache before
//! answering.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use domain::authz::{NewPolicy, Policy, PolicyEffect, PolicyVersion};
use domain::values::{Description, Identifier};
use domain::{FieldError, Patch, PolicyId, ValidationErrors};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::extract::{etag, ApiJson, ApiPath, IfMatch};
use crate::parse::{optional, patch, required_patch};
use crate::problem::{ApiResult, Problem};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_policies, create_policy))
        // A static segment: axum matches it before `{id}`, so `schema` is never read as an id.
        .routes(routes!(get_schema))
        .routes(routes!(get_policy, update_policy, delete_policy))
        .routes(routes!(list_versions))
}

/// Longest accepted policy source, in bytes.
const MAX_SOURCE_BYTES: usize = 64 * 1024;

/// The Cedar source as sent, within size; Cedar itself judges it afterwards.
fn policy_source(field: &str, raw: &str) -> Result<String, FieldError> {
    if raw.trim().is_empty() {
        return Err(FieldError::new(
            field,
            "required",
            "must hold one Cedar permit or forbid statement",
        ));
    }
    if raw.len() > MAX_SOURCE_BYTES {
        return Err(FieldError::new(
            field,
            "too_long",
            format!("must be at most {MAX_SOURCE_BYTES} bytes"),
        ));
    }
    Ok(raw.to_owned())
}

fn with_etag(policy: Policy) -> (HeaderMap, Json<Policy>) {
    let mut headers = HeaderMap::new();
    headers.insert(header::ETAG, etag(policy.version));
    (headers, Json(policy))
}

/// Every policy of the tenant, active or not, by name.
#[utoipa::path(get, path = "/api/v1/policies", tag = "policies",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Policies", body = [Policy]),
        (status = 401, description = "No valid credential", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_policies(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<Policy>>> {
    Ok(Json(state.services.list_policies(&caller).await?))
}

/// A new policy.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePolicy {
    /// Unique in the tenant: a lower-case identifier.
    #[schema(example = "working_hours", pattern = "^[a-z][a-z0-9_-]{0,63}$")]
    pub name: String,
    pub description: Option<String>,
    /// One Cedar `permit` or `forbid` statement (at most 64 KiB), valid against the schema
    /// of `GET /api/v1/policies/schema`.
    #[schema(
        example = "forbid (principal, action == Action::\"users:delete\", resource)\nunless { context.now.hour >= 9 && context.now.hour < 18 };"
    )]
    pub source: String,
    /// Default true; an inactive policy is kept but not evaluated.
    pub active: Option<bool>,
}

/// A policy whose fields are valid, before Cedar has judged its source.
struct PolicyDraft {
    name: Identifier,
    description: Option<Description>,
    source: String,
    active: bool,
}

impl PolicyDraft {
    fn into_new(self, effect: PolicyEffect) -> NewPolicy {
        NewPolicy {
            name: self.name,
            description: self.description,
            effect,
            source: self.source,
            active: self.active,
        }
    }
}

impl TryFrom<CreatePolicy> for PolicyDraft {
    type Error = domain::Error;

    fn try_from(r: CreatePolicy) -> Result<Self, Self::Error> {
        let mut errs = ValidationErrors::new();
        let name = errs.check(Identifier::parse("name", &r.name));
        let description = optional(&mut errs, "description", r.description, Description::parse);
        let source = errs.check(policy_source("source", &r.source));
        errs.finish()?;
        match (name, source) {
            (Some(name), Some(source)) => Ok(PolicyDraft {
                name,
                description,
                source,
                active: r.active.unwrap_or(true),
            }),
            _ => Err(domain::Error::internal("validated fields missing")),
        }
    }
}

/// Create a policy. Its source must parse and validate against the tenant's schema.
#[utoipa::path(post, path = "/api/v1/policies", tag = "policies", request_body = CreatePolicy,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created; `Location` and `ETag` headers set", body = Policy),
        (status = 401, description = "No valid credential", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Name taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, or a source Cedar refuses (`invalid_policy`, naming the error)", body = Problem, content_type = "application/problem+json"),
    ))]
async fn create_policy(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreatePolicy>,
) -> ApiResult<(StatusCode, HeaderMap, Json<Policy>)> {
    let draft = PolicyDraft::try_from(body)?;
    let policy = state
        .services
        .create_policy(&caller, draft.into_new(PolicyEffect::Permit))
        .await?;
    let location = format!("/api/v1/policies/{}", policy.id);
    let (mut headers, body) = with_etag(policy);
    if let Ok(v) = header::HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, v);
    }
    Ok((StatusCode::CREATED, headers, body))
}

/// The schema policies are validated against.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicySchema {
    /// The tenant's Cedar schema in Cedar's human-readable schema syntax: the entity types
    /// (`User`, `Group`, `Role`, `Resource`), one action per `resource:action` of the
    /// permission catalogue, and the request context.
    pub schema: String,
}

/// The Cedar schema of the tenant, for policy authors.
#[utoipa::path(get, path = "/api/v1/policies/schema", tag = "policies",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The schema", body = PolicySchema),
        (status = 401, description = "No valid credential", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_schema(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<PolicySchema>> {
    Ok(Json(PolicySchema {
        schema: state.services.policy_schema(&caller).await?,
    }))
}

/// A policy.
#[utoipa::path(get, path = "/api/v1/policies/{id}", tag = "policies",
    params(("id" = uuid::Uuid, Path, description = "Policy id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The policy; `ETag` is its version", body = Policy),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid credential", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such policy in this tenant", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_policy(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<PolicyId>,
) -> ApiResult<(HeaderMap, Json<Policy>)> {
    Ok(with_etag(state.services.get_policy(&caller, id).await?))
}

/// A partial update: absent fields are kept, `null` clears the description.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePolicy {
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = String, pattern = "^[a-z][a-z0-9_-]{0,63}$", required = false)]
    pub name: Option<Option<String>>,
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = Option<String>, nullable)]
    pub description: Option<Option<String>>,
    /// A new Cedar statement, validated like a new policy's; its effect may change.
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = String, required = false)]
    pub source: Option<Option<String>>,
    pub active: Option<bool>,
}

/// A valid policy update, before Cedar has judged a new source.
struct PolicyChange {
    name: Option<Identifier>,
    description: Patch<Description>,
    source: Option<String>,
    active: Option<bool>,
}

impl PolicyChange {
    fn into_change(self) -> portcullis_services::policies::PolicyChange {
        portcullis_services::policies::PolicyChange {
            name: self.name,
            description: self.description,
            source: self.source,
            active: self.active,
        }
    }
}

impl TryFrom<UpdatePolicy> for PolicyChange {
    type Error = domain::Error;

    fn try_from(r: UpdatePolicy) -> Result<Self, Self::Error> {
        let mut errs = ValidationErrors::new();
        let out = PolicyChange {
            name: required_patch(&mut errs, "name", r.name, Identifier::parse),
            description: patch(&mut errs, "description", r.description, Description::parse),
            source: required_patch(&mut errs, "source", r.source, policy_source),
            active: r.active,
        };
        errs.finish()?;
        Ok(out)
    }
}

/// Update a policy; a new source is validated like a new policy's. With `If-Match`, only if
/// the policy is still at that version. The replaced version stays in the history.
#[utoipa::path(patch, path = "/api/v1/policies/{id}", tag = "policies", request_body = UpdatePolicy,
    params(("id" = uuid::Uuid, Path, description = "Policy id"),
           ("If-Match" = Option<String>, Header, description = "ETag from a previous read")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The updated policy; `ETag` is its new version", body = Policy),
        (status = 400, description = "Malformed id or If-Match", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid credential", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such policy in this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Name taken", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "The policy changed since the ETag", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, or a source Cedar refuses", body = Problem, content_type = "application/problem+json"),
    ))]
async fn update_policy(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<PolicyId>,
    IfMatch(version): IfMatch,
    ApiJson(body): ApiJson<UpdatePolicy>,
) -> ApiResult<(HeaderMap, Json<Policy>)> {
    let change = PolicyChange::try_from(body)?;
    Ok(with_etag(
        state
            .services
            .update_policy(&caller, id, change.into_change(), version)
            .await?,
    ))
}

/// Delete a policy: it no longer takes part in decisions.
#[utoipa::path(delete, path = "/api/v1/policies/{id}", tag = "policies",
    params(("id" = uuid::Uuid, Path, description = "Policy id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The deleted policy", body = Policy),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid credential", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such policy in this tenant", body = Problem, content_type = "application/problem+json"),
    ))]
async fn delete_policy(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<PolicyId>,
) -> ApiResult<Json<Policy>> {
    Ok(Json(state.services.delete_policy(&caller, id).await?))
}

/// Every version of a policy, newest first (the current one included).
#[utoipa::path(get, path = "/api/v1/policies/{id}/versions", tag = "policies",
    params(("id" = uuid::Uuid, Path, description = "Policy id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Versions, newest first", body = [PolicyVersion]),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid credential", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such policy in this tenant", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_versions(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<PolicyId>,
) -> ApiResult<Json<Vec<PolicyVersion>>> {
    Ok(Json(
        state.services.list_policy_versions(&caller, id).await?,
    ))
}
