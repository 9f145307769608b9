//! `/api/v1/permissions`, `/api/v1/roles` and `/api/v1/users/{id}/roles`: the permission
//! catalogue, the tenant's roles and their permissions, and who holds them (optionally until
//! an expiry time). Every change invalidates the tenant's decision cache before answering,
//! so that the very next check sees it.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use domain::authz::{
    NewPermission, NewRole, Permission, PermissionKey, Role, RoleAssignment, RolePatch,
};
use domain::values::{Description, DisplayName, Identifier};
use domain::{FieldError, RoleId, UserId, ValidationErrors};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::extract::{ApiJson, ApiPath, ApiPath2};
use crate::parse::{self, optional, patch, required_patch};
use crate::problem::{ApiResult, Problem};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_permissions, create_permission))
        .routes(routes!(list_roles, create_role))
        .routes(routes!(get_role, update_role, delete_role))
        .routes(routes!(get_role_permissions, update_role_permissions))
        .routes(routes!(list_user_roles, assign_user_role))
        .routes(routes!(unassign_user_role))
}

/// Parses a list of permission strings, naming each offending item.
pub(crate) fn permission_list(
    errs: &mut ValidationErrors,
    field: &str,
    raw: Vec<String>,
) -> Vec<PermissionKey> {
    if raw.len() > 500 {
        errs.push(FieldError::new(
            field,
            "too_many",
            "at most 500 permissions per request",
        ));
        return Vec::new();
    }
    raw.iter()
        .enumerate()
        .filter_map(|(i, p)| errs.check(PermissionKey::parse(&format!("{field}[{i}]"), p)))
        .collect()
}

/// The permission catalogue: built-in permissions, then the tenant's own.
#[utoipa::path(get, path = "/api/v1/permissions", tag = "authorization",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every permission a role can carry", body = [Permission]),
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_permissions(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<Permission>>> {
    Ok(Json(state.services.list_permissions(&caller).await?))
}

/// A permission of the tenant's own application.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePermission {
    /// `resource:action:scope`; the resource must not be one of Portcullis's own.
    #[schema(
        example = "invoices:approve:department",
        pattern = "^[a-z][a-z0-9_-]{0,63}:[a-z][a-z0-9_-]{0,63}:(own|department|all)$"
    )]
    pub permission: String,
    pub description: Option<String>,
}

/// Define a permission for the tenant's applications; roles can then carry it and checks
/// can ask about its `resource:action`.
#[utoipa::path(post, path = "/api/v1/permissions", tag = "authorization", request_body = CreatePermission,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Defined", body = Permission),
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already defined", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid, or a built-in resource", body = Problem, content_type = "application/problem+json"),
    ))]
async fn create_permission(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreatePermission>,
) -> ApiResult<(StatusCode, Json<Permission>)> {
    let mut errs = ValidationErrors::new();
    let key = errs.check(PermissionKey::parse("permission", &body.permission));
    let description = optional(
        &mut errs,
        "description",
        body.description,
        Description::parse,
    );
    errs.finish()?;
    let key = key.ok_or_else(|| domain::Error::internal("validated permission missing"))?;
    let created = state
        .services
        .create_permission(&caller, NewPermission { key, description })
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// The tenant's roles and the platform's super administrator role, highest priority first.
#[utoipa::path(get, path = "/api/v1/roles", tag = "authorization",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Roles", body = [Role]),
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_roles(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<Role>>> {
    Ok(Json(state.services.list_roles(&caller).await?))
}

/// A new custom role.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRole {
    /// Unique in the tenant: a lower-case identifier.
    #[schema(example = "auditor", pattern = "^[a-z][a-z0-9_-]{0,63}$")]
    pub name: String,
    #[schema(example = "Auditor")]
    pub display_name: String,
    pub description: Option<String>,
    /// Higher first in lists and explanations (default 0).
    pub priority: Option<i32>,
    /// Default true; an inactive role grants nothing.
    pub active: Option<bool>,
    /// `resource:action:scope` strings.
    #[serde(default)]
    pub permissions: Vec<String>,
}

impl TryFrom<CreateRole> for NewRole {
    type Error = domain::Error;

    fn try_from(r: CreateRole) -> Result<Self, Self::Error> {
        let mut errs = ValidationErrors::new();
        let name = errs.check(Identifier::parse("name", &r.name));
        let display_name = errs.check(DisplayName::parse("display_name", &r.display_name));
        let description = optional(&mut errs, "description", r.description, Description::parse);
        let permissions = permission_list(&mut errs, "permissions", r.permissions);
        errs.finish()?;
        match (name, display_name) {
            (Some(name), Some(display_name)) => Ok(NewRole {
                name,
                display_name,
                description,
                priority: r.priority.unwrap_or(0),
                active: r.active.unwrap_or(true),
                permissions,
            }),
            _ => Err(domain::Error::internal("validated fields missing")),
        }
    }
}

/// Create a custom role. Users may only put in it permissions they hold themselves.
#[utoipa::path(post, path = "/api/v1/roles", tag = "authorization", request_body = CreateRole,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = Role),
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Name taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields or unknown permissions", body = Problem, content_type = "application/problem+json"),
    ))]
async fn create_role(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateRole>,
) -> ApiResult<(StatusCode, Json<Role>)> {
    let new = NewRole::try_from(body)?;
    let role = state.services.create_role(&caller, new).await?;
    Ok((StatusCode::CREATED, Json(role)))
}

/// A role of the tenant (or the super administrator role).
#[utoipa::path(get, path = "/api/v1/roles/{id}", tag = "authorization",
    params(("id" = uuid::Uuid, Path, description = "Role id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The role", body = Role),
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such role in this tenant", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_role(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<RoleId>,
) -> ApiResult<Json<Role>> {
    Ok(Json(state.services.get_role(&caller, id).await?))
}

/// A partial update of a role.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRole {
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = String, pattern = "^[a-z][a-z0-9_-]{0,63}$", required = false)]
    pub name: Option<Option<String>>,
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = String, required = false)]
    pub display_name: Option<Option<String>>,
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = Option<String>, nullable)]
    pub description: Option<Option<String>>,
    pub priority: Option<i32>,
    pub active: Option<bool>,
}

impl TryFrom<UpdateRole> for RolePatch {
    type Error = domain::Error;

    fn try_from(r: UpdateRole) -> Result<Self, Self::Error> {
        let mut errs = ValidationErrors::new();
        let out = RolePatch {
            name: required_patch(&mut errs, "name", r.name, Identifier::parse),
            display_name: required_patch(
                &mut errs,
                "display_name",
                r.display_name,
                DisplayName::parse,
            ),
            description: patch(&mut errs, "description", r.description, Description::parse),
            priority: r.priority,
            active: r.active,
        };
        errs.finish()?;
        Ok(out)
    }
}

/// Update a role. System roles keep their name; the super administrator role cannot change.
#[utoipa::path(patch, path = "/api/v1/roles/{id}", tag = "authorization", request_body = UpdateRole,
    params(("id" = uuid::Uuid, Path, description = "Role id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The updated role", body = Role),
        (status = 403, description = "Not allowed, or an immutable role", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such role in this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Name taken", body = Problem, content_type = "application/problem+json"),
    ))]
async fn update_role(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<RoleId>,
    ApiJson(body): ApiJson<UpdateRole>,
) -> ApiResult<Json<Role>> {
    let patch = RolePatch::try_from(body)?;
    Ok(Json(state.services.update_role(&caller, id, patch).await?))
}

/// Delete a custom role; its holders lose it.
#[utoipa::path(delete, path = "/api/v1/roles/{id}", tag = "authorization",
    params(("id" = uuid::Uuid, Path, description = "Role id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The deleted role", body = Role),
        (status = 403, description = "Not allowed, or a system role", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such role in this tenant", body = Problem, content_type = "application/problem+json"),
    ))]
async fn delete_role(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<RoleId>,
) -> ApiResult<Json<Role>> {
    Ok(Json(state.services.delete_role(&caller, id).await?))
}

/// The permissions a role carries.
#[utoipa::path(get, path = "/api/v1/roles/{id}/permissions", tag = "authorization",
    params(("id" = uuid::Uuid, Path, description = "Role id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "`resource:action:scope` strings", body = [PermissionKey]),
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such role in this tenant", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_role_permissions(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<RoleId>,
) -> ApiResult<Json<Vec<PermissionKey>>> {
    Ok(Json(
        state.services.get_role(&caller, id).await?.permissions,
    ))
}

/// Permissions to add to and remove from a role.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRolePermissions {
    /// `resource:action:scope` strings to add.
    #[serde(default)]
    #[schema(example = json!(["users:read:department"]))]
    pub add: Vec<String>,
    /// `resource:action:scope` strings to remove (absent ones are ignored).
    #[serde(default)]
    pub remove: Vec<String>,
}

/// Add and remove permissions of a role, in one change. Users may only add permissions
/// they hold themselves.
#[utoipa::path(put, path = "/api/v1/roles/{id}/permissions", tag = "authorization", request_body = UpdateRolePermissions,
    params(("id" = uuid::Uuid, Path, description = "Role id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The role with its new permissions", body = Role),
        (status = 403, description = "Not allowed, or the super administrator role", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such role in this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Malformed or unknown permissions", body = Problem, content_type = "application/problem+json"),
    ))]
async fn update_role_permissions(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<RoleId>,
    ApiJson(body): ApiJson<UpdateRolePermissions>,
) -> ApiResult<Json<Role>> {
    let mut errs = ValidationErrors::new();
    let add = permission_list(&mut errs, "add", body.add);
    let remove = permission_list(&mut errs, "remove", body.remove);
    errs.finish()?;
    Ok(Json(
        state
            .services
            .update_role_permissions(&caller, id, add, remove)
            .await?,
    ))
}

/// The roles a user holds directly (expired assignments included, with `expires_at`).
#[utoipa::path(get, path = "/api/v1/users/{id}/roles", tag = "authorization",
    params(("id" = uuid::Uuid, Path, description = "User id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Direct assignments", body = [RoleAssignment]),
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user in this tenant", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_user_roles(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<UserId>,
) -> ApiResult<Json<Vec<RoleAssignment>>> {
    Ok(Json(state.services.list_user_roles(&caller, id).await?))
}

/// A role to give a user.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignRole {
    #[schema(value_type = uuid::Uuid)]
    pub role_id: String,
    /// The assignment stops counting at this time (RFC 3339, in the future, at most ten
    /// years away). Absent: permanent. Giving a role the user holds changes its expiry.
    pub expires_at: Option<String>,
}

/// Give a user a role, optionally until a time. Users may only give roles whose permissions
/// they hold; only super administrators give the super administrator role.
#[utoipa::path(post, path = "/api/v1/users/{id}/roles", tag = "authorization", request_body = AssignRole,
    params(("id" = uuid::Uuid, Path, description = "User id")),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Assigned", body = RoleAssignment),
        (status = 200, description = "The user held the role; its expiry changed", body = RoleAssignment),
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user in this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown role or invalid expiry", body = Problem, content_type = "application/problem+json"),
    ))]
async fn assign_user_role(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<UserId>,
    ApiJson(body): ApiJson<AssignRole>,
) -> ApiResult<(StatusCode, Json<RoleAssignment>)> {
    let mut errs = ValidationErrors::new();
    let role_id = errs.check(parse::id::<RoleId>("role_id", &body.role_id));
    let expires_at = optional(&mut errs, "expires_at", body.expires_at, parse::timestamp);
    errs.finish()?;
    let role_id = role_id.ok_or_else(|| domain::Error::internal("validated role missing"))?;
    let (assignment, created) = state
        .services
        .assign_role(&caller, id, role_id, expires_at)
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(assignment)))
}

/// Take a role away from a user. The last super administrator keeps theirs.
#[utoipa::path(delete, path = "/api/v1/users/{id}/roles/{role_id}", tag = "authorization",
    params(("id" = uuid::Uuid, Path, description = "User id"),
           ("role_id" = uuid::Uuid, Path, description = "Role id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The removed assignment", body = RoleAssignment),
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The user does not hold the role directly", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The last super administrator", body = Problem, content_type = "application/problem+json"),
    ))]
async fn unassign_user_role(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath2(id, role_id): ApiPath2<UserId, RoleId>,
) -> ApiResult<Json<RoleAssignment>> {
    Ok(Json(
        state.services.unassign_role(&caller, id, role_id).await?,
    ))
}
