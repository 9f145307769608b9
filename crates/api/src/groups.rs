//! `/api/v1/groups`: nested groups of users, their members (added in bulk with a result per
//! user), and the roles a group confers on its members and on the members of every group
//! below it. The rules are `portcullis_services::groups`'.

use std::collections::HashSet;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use domain::authz::{
    group_tree, AvailableUsersQuery, Group, GroupMember, GroupMemberRole, GroupPatch, GroupSummary,
    GroupTreeNode, GroupType, MemberAddFailure, MemberAddResult, NewGroup, Role,
};
use domain::users::{User, UserStatus};
use domain::values::{Description, DisplayName, Identifier, JsonObject, SearchQuery};
use domain::{FieldError, GroupId, Patch, RoleId, UserId, ValidationErrors};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::extract::{ApiJson, ApiPath, ApiPath2, ApiQuery};
use crate::parse::{self, optional, patch, required_patch};
use crate::problem::{ApiError, ApiResult, Problem};
use crate::state::AppState;

mod members;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_groups, create_group))
        // A static segment: axum matches it before `{id}`, so `tree` is never read as an id.
        .routes(routes!(get_group_tree))
        .routes(routes!(get_group, update_group, delete_group))
        .merge(members::router())
        .routes(routes!(list_group_roles, grant_group_role))
        .routes(routes!(revoke_group_role))
}

/// Largest accepted `max_members`.
const MAX_GROUP_MEMBERS: i64 = 100_000;

fn max_members(field: &str, n: i64) -> Result<i32, FieldError> {
    if (1..=MAX_GROUP_MEMBERS).contains(&n) {
        i32::try_from(n).map_err(|_| out_of_range(field))
    } else {
        Err(out_of_range(field))
    }
}

fn out_of_range(field: &str) -> FieldError {
    FieldError::new(
        field,
        "out_of_range",
        format!("must be between 1 and {MAX_GROUP_MEMBERS}"),
    )
}

fn settings(field: &str, map: Map<String, Value>) -> Result<JsonObject, FieldError> {
    JsonObject::parse(field, map)
}

/// The tenant's groups with their member counts, by name.
#[utoipa::path(get, path = "/api/v1/groups", tag = "groups",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Groups", body = [GroupSummary]),
        (status = 401, description = "No valid credential", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_groups(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<GroupSummary>>> {
    Ok(Json(state.services.list_groups(&caller).await?))
}

/// A new group.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    /// Unique in the tenant: a lower-case identifier.
    #[schema(example = "engineering", pattern = "^[a-z][a-z0-9_-]{0,63}$")]
    pub name: String,
    #[schema(example = "Engineering")]
    pub display_name: String,
    pub description: Option<String>,
    /// Default `custom`.
    #[schema(value_type = Option<GroupType>)]
    pub group_type: Option<String>,
    /// The group this one is nested in: its roles apply to this group's members too.
    #[schema(value_type = Option<uuid::Uuid>)]
    pub parent_id: Option<String>,
    /// 1–100,000; absent: no limit.
    #[schema(minimum = 1, maximum = 100000)]
    pub max_members: Option<i64>,
    /// Default true; an inactive group confers no role.
    pub active: Option<bool>,
    /// At most 100 keys, 16 KiB.
    #[schema(value_type = Option<Object>)]
    pub settings: Option<Map<String, Value>>,
}

impl TryFrom<CreateGroup> for NewGroup {
    type Error = domain::Error;

    fn try_from(r: CreateGroup) -> Result<Self, Self::Error> {
        let mut errs = ValidationErrors::new();
        let name = errs.check(Identifier::parse("name", &r.name));
        let display_name = errs.check(DisplayName::parse("display_name", &r.display_name));
        let description = optional(&mut errs, "description", r.description, Description::parse);
        let group_type = optional(&mut errs, "group_type", r.group_type, parse::enum_value);
        let parent_id = optional(&mut errs, "parent_id", r.parent_id, parse::id::<GroupId>);
        let max_members = r
            .max_members
            .and_then(|n| errs.check(max_members("max_members", n)));
        let settings = errs.check(settings("settings", r.settings.unwrap_or_default()));
        errs.finish()?;
        match (name, display_name, settings) {
            (Some(name), Some(display_name), Some(settings)) => Ok(NewGroup {
                name,
                display_name,
                description,
                group_type: group_type.unwrap_or(GroupType::Custom),
                parent_id,
                max_members,
                active: r.active.unwrap_or(true),
                settings,
            }),
            _ => Err(domain::Error::internal("validated fields missing")),
        }
    }
}

/// Create a group, optionally nested in another.
#[utoipa::path(post, path = "/api/v1/groups", tag = "groups", request_body = CreateGroup,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = Group),
        (status = 401, description = "No valid credential", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Name taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields or unknown parent", body = Problem, content_type = "application/problem+json"),
    ))]
async fn create_group(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateGroup>,
) -> ApiResult<(StatusCode, Json<Group>)> {
    let new = NewGroup::try_from(body)?;
    let group = state.services.create_group(&caller, new).await?;
    Ok((StatusCode::CREATED, Json(group)))
}

/// Every group of the tenant arranged as a forest, each level by name.
#[utoipa::path(get, path = "/api/v1/groups/tree", tag = "groups",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The root groups, each with its descendants", body = [GroupTreeNode]),
        (status = 401, description = "No valid credential", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_group_tree(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<GroupTreeNode>>> {
    Ok(Json(group_tree(state.services.list_groups(&caller).await?)))
}

/// A group with its member counts.
#[utoipa::path(get, path = "/api/v1/groups/{id}", tag = "groups",
    params(("id" = uuid::Uuid, Path, description = "Group id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The group", body = GroupSummary),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid credential", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such group in this tenant", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_group(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<GroupId>,
) -> ApiResult<Json<GroupSummary>> {
    Ok(Json(state.services.get_group(&caller, id).await?))
}

/// A partial update: absent fields are kept, `null` clears an optional field.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateGroup {
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = String, pattern = "^[a-z][a-z0-9_-]{0,63}$", required = false)]
    pub name: Option<Option<String>>,
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = String, required = false)]
    pub display_name: Option<Option<String>>,
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = Option<String>, nullable)]
    pub description: Option<Option<String>>,
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = GroupType, required = false)]
    pub group_type: Option<Option<String>>,
    /// `null` makes the group a root.
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = Option<uuid::Uuid>, nullable)]
    pub parent_id: Option<Option<String>>,
    /// `null` removes the limit.
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = Option<i64>, nullable, minimum = 1, maximum = 100000)]
    pub max_members: Option<Option<i64>>,
    pub active: Option<bool>,
    /// Replaces the whole object.
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = Object, required = false)]
    pub settings: Option<Option<Map<String, Value>>>,
}

impl TryFrom<UpdateGroup> for GroupPatch {
    type Error = domain::Error;

    fn try_from(r: UpdateGroup) -> Result<Self, Self::Error> {
        let mut errs = ValidationErrors::new();
        let max_members =
            match Patch::from(r.max_members).try_map(|n| max_members("max_members", n)) {
                Ok(p) => p,
                Err(e) => {
                    errs.push(e);
                    Patch::Keep
                }
            };
        let settings = match r.settings {
            None => None,
            Some(None) => {
                errs.push(FieldError::new(
                    "settings",
                    "not_nullable",
                    "must not be null",
                ));
                None
            }
            Some(Some(map)) => errs.check(settings("settings", map)),
        };
        let out = GroupPatch {
            name: required_patch(&mut errs, "name", r.name, Identifier::parse),
            display_name: required_patch(
                &mut errs,
                "display_name",
                r.display_name,
                DisplayName::parse,
            ),
            description: patch(&mut errs, "description", r.description, Description::parse),
            group_type: required_patch(&mut errs, "group_type", r.group_type, parse::enum_value),
            parent_id: patch(&mut errs, "parent_id", r.parent_id, parse::id::<GroupId>),
            max_members,
            active: r.active,
            settings,
        };
        errs.finish()?;
        Ok(out)
    }
}

/// Update a group. Moving it under another group or re-activating it hands its members the
/// roles above it: only a caller who could give those roles may do so.
#[utoipa::path(patch, path = "/api/v1/groups/{id}", tag = "groups", request_body = UpdateGroup,
    params(("id" = uuid::Uuid, Path, description = "Group id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The updated group", body = Group),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid credential", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed, or the members would gain roles the caller cannot give", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such group in this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Name taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, an unknown parent or a cycle", body = Problem, content_type = "application/problem+json"),
    ))]
async fn update_group(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<GroupId>,
    ApiJson(body): ApiJson<UpdateGroup>,
) -> ApiResult<Json<Group>> {
    let patch = GroupPatch::try_from(body)?;
    Ok(Json(state.services.update_group(&caller, id, patch).await?))
}

/// Delete a group without child groups; its members lose the roles it conferred.
#[utoipa::path(delete, path = "/api/v1/groups/{id}", tag = "groups",
    params(("id" = uuid::Uuid, Path, description = "Group id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The deleted group", body = Group),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid credential", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such group in this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The group has child groups", body = Problem, content_type = "application/problem+json"),
    ))]
async fn delete_group(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<GroupId>,
) -> ApiResult<Json<Group>> {
    Ok(Json(state.services.delete_group(&caller, id).await?))
}

/// The roles granted to the group itself (members also hold those of the groups above).
#[utoipa::path(get, path = "/api/v1/groups/{id}/roles", tag = "groups",
    params(("id" = uuid::Uuid, Path, description = "Group id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Roles, highest priority first", body = [Role]),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid credential", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such group in this tenant", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_group_roles(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<GroupId>,
) -> ApiResult<Json<Vec<Role>>> {
    Ok(Json(state.services.list_group_roles(&caller, id).await?))
}

/// A role to grant to a group.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantGroupRole {
    #[schema(value_type = uuid::Uuid)]
    pub role_id: String,
}

/// Grant a role to a group: its members and the members of every group below it hold it.
/// Users may only grant roles whose permissions they hold; the super administrator role is
/// given to users only.
#[utoipa::path(post, path = "/api/v1/groups/{id}/roles", tag = "groups", request_body = GrantGroupRole,
    params(("id" = uuid::Uuid, Path, description = "Group id")),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Granted", body = Role),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid credential", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such group in this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The group already has the role", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown role, or the super administrator role", body = Problem, content_type = "application/problem+json"),
    ))]
async fn grant_group_role(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<GroupId>,
    ApiJson(body): ApiJson<GrantGroupRole>,
) -> ApiResult<(StatusCode, Json<Role>)> {
    let role_id = parse::id::<RoleId>("role_id", &body.role_id).map_err(domain::Error::from)?;
    let role = state
        .services
        .grant_group_role(&caller, id, role_id)
        .await?;
    Ok((StatusCode::CREATED, Json(role)))
}

/// Take a role away from a group.
#[utoipa::path(delete, path = "/api/v1/groups/{id}/roles/{role_id}", tag = "groups",
    params(("id" = uuid::Uuid, Path, description = "Group id"),
           ("role_id" = uuid::Uuid, Path, description = "Role id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The role the group no longer has", body = Role),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid credential", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such group, or the group does not have the role", body = Problem, content_type = "application/problem+json"),
    ))]
async fn revoke_group_role(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath2(id, role_id): ApiPath2<GroupId, RoleId>,
) -> ApiResult<Json<Role>> {
    Ok(Json(
        state
            .services
            .revoke_group_role(&caller, id, role_id)
            .await?,
    ))
}
