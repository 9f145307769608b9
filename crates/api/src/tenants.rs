//! `/api/v1/tenants`: platform administrators create, list, read, update and deactivate
//! tenants. Deactivation suspends the tenant (its keys stop working); data is kept.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use chrono::{DateTime, Utc};
use domain::tenants::{
    MaxUsers, NewTenant, Plan, Tenant, TenantListQuery, TenantPatch, TenantSlug, TenantStatus,
};
use domain::values::{DisplayName, JsonObject};
use domain::{Error, Patch, TenantId, ValidationErrors};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::parse::{self, optional};
use crate::problem::{ApiError, ApiResult, Problem};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_tenants, create_tenant))
        .routes(routes!(get_tenant, update_tenant, deactivate_tenant))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// 2–63 of `a-z`, `0-9`, `-`; immutable.
    #[schema(example = "acme")]
    pub slug: String,
    #[schema(example = "Acme Corp")]
    pub display_name: String,
    /// Defaults to `free`.
    pub plan: Option<Plan>,
    /// Defaults to the plan's quota (free 100, pro 10,000, enterprise unlimited).
    #[schema(minimum = 1, maximum = 100000000)]
    pub max_users: Option<i64>,
    pub trial_ends_at: Option<DateTime<Utc>>,
    #[schema(value_type = Option<Object>)]
    pub settings: Option<Map<String, Value>>,
}

impl TryFrom<CreateTenant> for NewTenant {
    type Error = Error;

    fn try_from(r: CreateTenant) -> Result<Self, Error> {
        let mut errs = ValidationErrors::new();
        let slug = errs.check(TenantSlug::parse("slug", &r.slug));
        let display_name = errs.check(DisplayName::parse("display_name", &r.display_name));
        let max_users = r
            .max_users
            .and_then(|n| errs.check(MaxUsers::parse("max_users", n)));
        let settings = errs.check(JsonObject::parse(
            "settings",
            r.settings.unwrap_or_default(),
        ));
        errs.finish()?;
        match (slug, display_name, settings) {
            (Some(slug), Some(display_name), Some(settings)) => Ok(NewTenant {
                slug,
                display_name,
                plan: r.plan.unwrap_or(Plan::Free),
                max_users,
                trial_ends_at: r.trial_ends_at.map(domain::time::truncate),
                settings,
            }),
            _ => Err(Error::internal("validated fields missing")),
        }
    }
}

/// A partial update; `null` clears `max_users` (unlimited) or `trial_ends_at`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenant {
    pub display_name: Option<String>,
    pub status: Option<TenantStatus>,
    /// Changing the plan without `max_users` moves the quota to the plan's default.
    pub plan: Option<Plan>,
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = Option<i64>, nullable, minimum = 1, maximum = 100000000)]
    pub max_users: Option<Option<i64>>,
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = Option<DateTime<Utc>>, nullable)]
    pub trial_ends_at: Option<Option<DateTime<Utc>>>,
    #[schema(value_type = Option<Object>)]
    pub settings: Option<Map<String, Value>>,
}

impl TryFrom<UpdateTenant> for TenantPatch {
    type Error = Error;

    fn try_from(r: UpdateTenant) -> Result<Self, Error> {
        let mut errs = ValidationErrors::new();
        let display_name = optional(
            &mut errs,
            "display_name",
            r.display_name,
            DisplayName::parse,
        );
        let max_users = match Patch::from(r.max_users).try_map(|n| MaxUsers::parse("max_users", n))
        {
            Ok(p) => p,
            Err(e) => {
                errs.push(e);
                Patch::Keep
            }
        };
        let settings = r
            .settings
            .and_then(|s| errs.check(JsonObject::parse("settings", s)));
        errs.finish()?;
        Ok(TenantPatch {
            display_name,
            status: r.status,
            plan: r.plan,
            max_users,
            trial_ends_at: Patch::from(r.trial_ends_at.map(|t| t.map(domain::time::truncate))),
            settings,
        })
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListTenantsParams {
    /// `active` or `suspended`.
    #[param(value_type = Option<domain::tenants::TenantStatus>)]
    status: Option<String>,
    /// Page size, 1–200 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// One page of tenants, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantPage {
    pub items: Vec<Tenant>,
    pub next_cursor: Option<String>,
}

/// List tenants (platform admin).
#[utoipa::path(get, path = "/api/v1/tenants", tag = "tenants", params(ListTenantsParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of tenants", body = TenantPage),
        (status = 403, description = "Not a platform-admin key", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_tenants(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(p): ApiQuery<ListTenantsParams>,
) -> ApiResult<Json<TenantPage>> {
    let mut errs = ValidationErrors::new();
    let status = optional(&mut errs, "status", p.status, parse::enum_value);
    let limit = optional(&mut errs, "limit", p.limit, parse::limit).unwrap_or_default();
    errs.finish().map_err(ApiError::from_query_error)?;
    let after = p
        .cursor
        .map(|c| domain::page::decode_cursor::<TenantId>(&c))
        .transpose()
        .map_err(ApiError::from_query_error)?;
    let page = state
        .services
        .list_tenants(
            &caller,
            &TenantListQuery {
                status,
                limit,
                after,
            },
        )
        .await?;
    Ok(Json(TenantPage {
        items: page.items,
        next_cursor: page.next_cursor,
    }))
}

/// Create a tenant (platform admin).
#[utoipa::path(post, path = "/api/v1/tenants", tag = "tenants", request_body = CreateTenant,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = Tenant),
        (status = 403, description = "Not a platform-admin key", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Slug taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    ))]
async fn create_tenant(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateTenant>,
) -> ApiResult<(StatusCode, HeaderMap, Json<Tenant>)> {
    let new = NewTenant::try_from(body)?;
    let tenant = state.services.create_tenant(&caller, new).await?;
    let mut headers = HeaderMap::new();
    if let Ok(v) = header::HeaderValue::from_str(&format!("/api/v1/tenants/{}", tenant.id)) {
        headers.insert(header::LOCATION, v);
    }
    Ok((StatusCode::CREATED, headers, Json(tenant)))
}

/// Get a tenant (platform admin).
#[utoipa::path(get, path = "/api/v1/tenants/{id}", tag = "tenants",
    params(("id" = uuid::Uuid, Path, description = "Tenant id")),
    security(("bearer" = [])),
    responses(
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 200, description = "The tenant", body = Tenant),
        (status = 404, description = "No such tenant", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_tenant(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<TenantId>,
) -> ApiResult<Json<Tenant>> {
    Ok(Json(state.services.get_tenant(&caller, id).await?))
}

/// Update a tenant (platform admin).
#[utoipa::path(patch, path = "/api/v1/tenants/{id}", tag = "tenants", request_body = UpdateTenant,
    params(("id" = uuid::Uuid, Path, description = "Tenant id")),
    security(("bearer" = [])),
    responses(
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 200, description = "The updated tenant", body = Tenant),
        (status = 404, description = "No such tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The caller's own tenant cannot be suspended by its own credential (`own_tenant`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    ))]
async fn update_tenant(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<TenantId>,
    ApiJson(body): ApiJson<UpdateTenant>,
) -> ApiResult<Json<Tenant>> {
    let patch = TenantPatch::try_from(body)?;
    Ok(Json(
        state.services.update_tenant(&caller, id, patch).await?,
    ))
}

/// Deactivate (suspend) a tenant (platform admin). Its credentials stop working; its data
/// is kept and `PATCH {"status": "active"}` reactivates it.
#[utoipa::path(delete, path = "/api/v1/tenants/{id}", tag = "tenants",
    params(("id" = uuid::Uuid, Path, description = "Tenant id")),
    security(("bearer" = [])),
    responses(
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 200, description = "The suspended tenant", body = Tenant),
        (status = 404, description = "No such tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The caller's own tenant", body = Problem, content_type = "application/problem+json"),
    ))]
async fn deactivate_tenant(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<TenantId>,
) -> ApiResult<Json<Tenant>> {
    Ok(Json(state.services.deactivate_tenant(&caller, id).await?))
}
