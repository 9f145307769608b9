//! `/api/v1/groups`: nested groups of users, their members (added in bulk with a result per
//! user), and the roles a group confers on its members and on the members of every group
//! below it. Every change invalidates the tenant's decision cache before answering.
//!
//! Granting is bounded by holding here too: whoever adds a member, moves a group under a new
//! parent or re-activates it hands the members every role of the group and of the groups
//! above it, so a user may do so only if they could give each of those roles directly.

use std::collections::{HashMap, HashSet};

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use domain::authz::{
    group_tree, AvailableUsersQuery, Group, GroupMember, GroupMemberRole, GroupPatch, GroupSummary,
    GroupTreeNode, GroupType, MemberAddFailure, MemberAddResult, NewGroup, Role,
    SUPER_ADMIN_ROLE_ID,
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
use crate::guard::Target;
use crate::parse::{self, optional, patch, required_patch};
use crate::problem::{ApiError, ApiResult, Problem};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_groups, create_group))
        // A static segment: axum matches it before `{id}`, so `tree` is never read as an id.
        .routes(routes!(get_group_tree))
        .routes(routes!(get_group, update_group, delete_group))
        .routes(routes!(list_members, add_members))
        .routes(routes!(update_member, remove_member))
        .routes(routes!(available_users))
        .routes(routes!(list_group_roles, grant_group_role))
        .routes(routes!(revoke_group_role))
}

/// Most users one request may add to a group.
const MAX_BULK_MEMBERS: usize = 1000;
/// Largest accepted `max_members`.
const MAX_GROUP_MEMBERS: i64 = 100_000;
/// Default and largest page of `available-users`.
const DEFAULT_AVAILABLE_LIMIT: u32 = 20;
const MAX_AVAILABLE_LIMIT: u32 = 100;

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

/// What may hand the members of a group roles they did not hold through it.
enum Conferral {
    /// New members get every role of the group and of the groups above it.
    NewMembers,
    /// Moving the group under another parent hands its members the roles above the new
    /// parent; re-activating it hands them every role of the group and above.
    Change {
        parent: Patch<GroupId>,
        active: Option<bool>,
    },
}

/// Refuses to let the members of `group` gain roles the caller could not give directly.
/// API keys and super administrators may give any role, so nothing is read for them.
async fn may_confer(
    state: &AppState,
    caller: &Caller,
    group: GroupId,
    conferral: Conferral,
) -> Result<(), ApiError> {
    match caller.effective(state).await? {
        None => return Ok(()),
        Some(e) if e.super_admin => return Ok(()),
        Some(_) => {}
    }
    let groups = state.store.list_groups(caller.tenant_id).await?;
    let parent_of: HashMap<GroupId, Option<GroupId>> = groups
        .iter()
        .map(|g| (g.group.id, g.group.parent_id))
        .collect();
    let current = groups
        .iter()
        .find(|g| g.group.id == group)
        .ok_or(domain::Error::NotFound { entity: "group" })?;
    let (new_parent, start) = match conferral {
        Conferral::NewMembers => (current.group.parent_id, Some(group)),
        Conferral::Change { parent, active } => {
            let new_parent = parent.apply(current.group.parent_id);
            let start = if active == Some(true) && !current.group.active {
                Some(group)
            } else if new_parent != current.group.parent_id {
                new_parent
            } else {
                None
            };
            (new_parent, start)
        }
    };
    // Walk up from `start` with the group's new parent. An unknown parent ends the walk (the
    // store refuses it), and so does a cycle (the store refuses that too).
    let mut chain = Vec::new();
    let mut seen: HashSet<GroupId> = HashSet::new();
    let mut at = start;
    while let Some(g) = at.filter(|g| parent_of.contains_key(g)) {
        if !seen.insert(g) {
            break;
        }
        chain.push(g);
        at = if g == group {
            new_parent
        } else {
            parent_of.get(&g).copied().flatten()
        };
    }
    for g in chain {
        for role in state.store.list_group_roles(caller.tenant_id, g).await? {
            caller.may_grant_role(state, &role).await?;
        }
    }
    Ok(())
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
    caller
        .authorize(&state, "groups", "read", Target::Collection)
        .await?;
    Ok(Json(state.store.list_groups(caller.tenant_id).await?))
}

/// A new group.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    /// Unique in the tenant: a lower-case identifier.
    #[schema(example = "engineering")]
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
    caller
        .authorize(&state, "groups", "create", Target::Collection)
        .await?;
    // A new group has no member yet: nesting it confers nothing until members are added.
    let group = state
        .store
        .create_group(caller.tenant_id, new, &caller.audit())
        .await?;
    state.authz.invalidate(caller.tenant_id);
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
    caller
        .authorize(&state, "groups", "read", Target::Collection)
        .await?;
    Ok(Json(group_tree(
        state.store.list_groups(caller.tenant_id).await?,
    )))
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
    caller
        .authorize(&state, "groups", "read", Target::Collection)
        .await?;
    Ok(Json(state.store.get_group(caller.tenant_id, id).await?))
}

/// A partial update: absent fields are kept, `null` clears an optional field.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateGroup {
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = Option<String>)]
    pub name: Option<Option<String>>,
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = Option<String>)]
    pub display_name: Option<Option<String>>,
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = Option<String>, nullable)]
    pub description: Option<Option<String>>,
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = Option<GroupType>)]
    pub group_type: Option<Option<String>>,
    /// `null` makes the group a root.
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = Option<uuid::Uuid>, nullable)]
    pub parent_id: Option<Option<String>>,
    /// `null` removes the limit.
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = Option<i64>, nullable)]
    pub max_members: Option<Option<i64>>,
    pub active: Option<bool>,
    /// Replaces the whole object.
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = Option<Object>)]
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
                errs.push(FieldError::new("settings", "required", "must not be null"));
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
    caller
        .authorize(&state, "groups", "update", Target::Collection)
        .await?;
    if matches!(patch.parent_id, Patch::Set(_)) || patch.active == Some(true) {
        let conferral = Conferral::Change {
            parent: patch.parent_id.clone(),
            active: patch.active,
        };
        may_confer(&state, &caller, id, conferral).await?;
    }
    let group = state
        .store
        .update_group(caller.tenant_id, id, patch, &caller.audit())
        .await?;
    state.authz.invalidate(caller.tenant_id);
    Ok(Json(group))
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
    caller
        .authorize(&state, "groups", "delete", Target::Collection)
        .await?;
    let group = state
        .store
        .delete_group(caller.tenant_id, id, &caller.audit())
        .await?;
    state.authz.invalidate(caller.tenant_id);
    Ok(Json(group))
}

/// The direct members of a group, by join time.
#[utoipa::path(get, path = "/api/v1/groups/{id}/members", tag = "groups",
    params(("id" = uuid::Uuid, Path, description = "Group id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Members", body = [GroupMember]),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid credential", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such group in this tenant", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_members(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<GroupId>,
) -> ApiResult<Json<Vec<GroupMember>>> {
    caller
        .authorize(&state, "groups", "read", Target::Collection)
        .await?;
    Ok(Json(
        state.store.list_group_members(caller.tenant_id, id).await?,
    ))
}

/// Users to add to a group.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMembers {
    /// 1–1,000 user ids. Each is added on its own: one that cannot be added is reported in
    /// `failed` and does not stop the others.
    #[schema(value_type = Vec<uuid::Uuid>)]
    pub user_ids: Vec<String>,
    /// Default `member`.
    #[schema(value_type = Option<GroupMemberRole>)]
    pub role_in_group: Option<String>,
}

/// Why a user of a bulk add was not added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AddMemberFailure {
    /// The id is not a UUID.
    InvalidId,
    /// The id appears earlier in the same request.
    Duplicate,
    /// No such user in the tenant (or the user is deleted).
    UserNotFound,
    AlreadyMember,
    /// The group has reached `max_members`.
    GroupFull,
}

impl AddMemberFailure {
    fn message(self) -> &'static str {
        match self {
            AddMemberFailure::InvalidId => "not a user id (a UUID)",
            AddMemberFailure::Duplicate => "the user id appears earlier in this request",
            AddMemberFailure::UserNotFound => MemberAddFailure::UserNotFound.message(),
            AddMemberFailure::AlreadyMember => MemberAddFailure::AlreadyMember.message(),
            AddMemberFailure::GroupFull => MemberAddFailure::GroupFull.message(),
        }
    }
}

impl From<MemberAddFailure> for AddMemberFailure {
    fn from(f: MemberAddFailure) -> Self {
        match f {
            MemberAddFailure::UserNotFound => AddMemberFailure::UserNotFound,
            MemberAddFailure::AlreadyMember => AddMemberFailure::AlreadyMember,
            MemberAddFailure::GroupFull => AddMemberFailure::GroupFull,
        }
    }
}

/// A user who was added.
#[derive(Debug, Serialize, ToSchema)]
pub struct AddedMember {
    pub user_id: UserId,
    pub message: String,
    pub member: GroupMember,
}

/// A user who was not added, and why.
#[derive(Debug, Serialize, ToSchema)]
pub struct FailedMember {
    /// The id as sent.
    pub user_id: String,
    pub code: AddMemberFailure,
    pub error: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AddMembersSummary {
    /// Ids in the request.
    pub total: usize,
    pub successful_count: usize,
    pub failed_count: usize,
}

/// The outcome of a bulk add, each list in request order.
#[derive(Debug, Serialize, ToSchema)]
pub struct AddMembersResult {
    pub successful: Vec<AddedMember>,
    pub failed: Vec<FailedMember>,
    pub summary: AddMembersSummary,
}

/// Add users to a group, each on its own. 200 when every user was added, 207 when some
/// were not (`failed` says why).
#[utoipa::path(post, path = "/api/v1/groups/{id}/members", tag = "groups", request_body = AddMembers,
    params(("id" = uuid::Uuid, Path, description = "Group id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every user was added", body = AddMembersResult),
        (status = 207, description = "Some users were not added; see `failed`", body = AddMembersResult),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid credential", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed, or the group confers roles the caller cannot give", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such group in this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No ids, more than 1,000, or an invalid role in the group", body = Problem, content_type = "application/problem+json"),
    ))]
async fn add_members(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<GroupId>,
    ApiJson(body): ApiJson<AddMembers>,
) -> ApiResult<(StatusCode, Json<AddMembersResult>)> {
    let mut errs = ValidationErrors::new();
    if body.user_ids.is_empty() || body.user_ids.len() > MAX_BULK_MEMBERS {
        errs.push(FieldError::new(
            "user_ids",
            "invalid_length",
            format!("must hold 1 to {MAX_BULK_MEMBERS} user ids"),
        ));
    }
    let role_in_group = optional(
        &mut errs,
        "role_in_group",
        body.role_in_group,
        parse::enum_value,
    )
    .unwrap_or(GroupMemberRole::Member);
    errs.finish()?;
    caller
        .authorize(&state, "groups", "assign", Target::Collection)
        .await?;
    may_confer(&state, &caller, id, Conferral::NewMembers).await?;

    let mut bulk = BulkAdd::parse(body.user_ids);
    if bulk.to_add.is_empty() {
        // Nothing reaches the store; the group must still exist.
        state.store.get_group(caller.tenant_id, id).await?;
    } else {
        let results = state
            .store
            .add_group_members(
                caller.tenant_id,
                id,
                bulk.to_add.iter().map(|(_, u)| *u).collect(),
                role_in_group,
                &caller.audit(),
            )
            .await?;
        bulk.record(results)?;
        if !bulk.successful.is_empty() {
            state.authz.invalidate(caller.tenant_id);
        }
    }
    let result = bulk.finish();
    let status = if result.failed.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::MULTI_STATUS
    };
    Ok((status, Json(result)))
}

/// A bulk add on its way: the ids as sent, those to add, and the outcomes so far, each with
/// its position in the request.
struct BulkAdd {
    raw: Vec<String>,
    to_add: Vec<(usize, UserId)>,
    successful: Vec<(usize, AddedMember)>,
    failed: Vec<(usize, FailedMember)>,
}

impl BulkAdd {
    /// Sorts out the ids that are not UUIDs and the repeats (the first occurrence proceeds).
    fn parse(raw: Vec<String>) -> Self {
        let mut seen: HashSet<UserId> = HashSet::new();
        let mut bulk = BulkAdd {
            raw: Vec::with_capacity(raw.len()),
            to_add: Vec::new(),
            successful: Vec::new(),
            failed: Vec::new(),
        };
        for (i, id) in raw.into_iter().enumerate() {
            match id.trim().parse::<UserId>() {
                Err(_) => bulk.fail(i, id.clone(), AddMemberFailure::InvalidId),
                Ok(user) if !seen.insert(user) => {
                    bulk.fail(i, id.clone(), AddMemberFailure::Duplicate);
                }
                Ok(user) => bulk.to_add.push((i, user)),
            }
            bulk.raw.push(id);
        }
        bulk
    }

    fn fail(&mut self, i: usize, raw: String, code: AddMemberFailure) {
        self.failed.push((
            i,
            FailedMember {
                user_id: raw,
                code,
                error: code.message().to_owned(),
            },
        ));
    }

    /// Takes the store's outcomes, one per id of `to_add`, in the same order.
    fn record(&mut self, results: Vec<MemberAddResult>) -> domain::Result<()> {
        if results.len() != self.to_add.len() {
            return Err(domain::Error::internal(
                "the store answered for a different number of users",
            ));
        }
        for ((i, user), result) in std::mem::take(&mut self.to_add).into_iter().zip(results) {
            if result.user_id != user {
                return Err(domain::Error::internal("the store answered out of order"));
            }
            match result.outcome {
                Ok(member) => self.successful.push((
                    i,
                    AddedMember {
                        user_id: user,
                        message: "added to the group".to_owned(),
                        member,
                    },
                )),
                Err(why) => {
                    let raw = self.raw.get(i).cloned().unwrap_or_else(|| user.to_string());
                    self.fail(i, raw, why.into());
                }
            }
        }
        Ok(())
    }

    /// The answer, each list in request order.
    fn finish(mut self) -> AddMembersResult {
        self.successful.sort_by_key(|(i, _)| *i);
        self.failed.sort_by_key(|(i, _)| *i);
        let successful: Vec<AddedMember> = self.successful.into_iter().map(|(_, m)| m).collect();
        let failed: Vec<FailedMember> = self.failed.into_iter().map(|(_, f)| f).collect();
        AddMembersResult {
            summary: AddMembersSummary {
                total: self.raw.len(),
                successful_count: successful.len(),
                failed_count: failed.len(),
            },
            successful,
            failed,
        }
    }
}

/// A member's new standing in the group.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMember {
    #[schema(value_type = GroupMemberRole)]
    pub role_in_group: String,
}

/// Change a member's role in the group (owner, manager or member).
#[utoipa::path(put, path = "/api/v1/groups/{id}/members/{user_id}", tag = "groups", request_body = UpdateMember,
    params(("id" = uuid::Uuid, Path, description = "Group id"),
           ("user_id" = uuid::Uuid, Path, description = "User id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The member", body = GroupMember),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid credential", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such group, or the user is not a member", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid role in the group", body = Problem, content_type = "application/problem+json"),
    ))]
async fn update_member(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath2(id, user_id): ApiPath2<GroupId, UserId>,
    ApiJson(body): ApiJson<UpdateMember>,
) -> ApiResult<Json<GroupMember>> {
    let role_in_group: GroupMemberRole =
        parse::enum_value("role_in_group", &body.role_in_group).map_err(domain::Error::from)?;
    caller
        .authorize(&state, "groups", "assign", Target::Collection)
        .await?;
    let member = state
        .store
        .update_group_member(
            caller.tenant_id,
            id,
            user_id,
            role_in_group,
            &caller.audit(),
        )
        .await?;
    state.authz.invalidate(caller.tenant_id);
    Ok(Json(member))
}

/// Remove a member from the group; they lose the roles it conferred.
#[utoipa::path(delete, path = "/api/v1/groups/{id}/members/{user_id}", tag = "groups",
    params(("id" = uuid::Uuid, Path, description = "Group id"),
           ("user_id" = uuid::Uuid, Path, description = "User id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The removed member", body = GroupMember),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid credential", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such group, or the user is not a member", body = Problem, content_type = "application/problem+json"),
    ))]
async fn remove_member(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath2(id, user_id): ApiPath2<GroupId, UserId>,
) -> ApiResult<Json<GroupMember>> {
    caller
        .authorize(&state, "groups", "assign", Target::Collection)
        .await?;
    let member = state
        .store
        .remove_group_member(caller.tenant_id, id, user_id, &caller.audit())
        .await?;
    state.authz.invalidate(caller.tenant_id);
    Ok(Json(member))
}

/// Filters of the search for users to add.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AvailableUsersParams {
    /// Every word must prefix a word of the user's name, username or email.
    search: Option<String>,
    /// Exact department.
    department: Option<String>,
    /// 1–100 (default 20).
    limit: Option<String>,
}

fn available_limit(field: &str, raw: &str) -> Result<u32, FieldError> {
    raw.trim()
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=MAX_AVAILABLE_LIMIT).contains(n))
        .ok_or_else(|| {
            FieldError::new(
                field,
                "invalid_number",
                format!("must be an integer from 1 to {MAX_AVAILABLE_LIMIT}"),
            )
        })
}

impl TryFrom<AvailableUsersParams> for AvailableUsersQuery {
    type Error = domain::Error;

    fn try_from(p: AvailableUsersParams) -> Result<Self, Self::Error> {
        let mut errs = ValidationErrors::new();
        let search = optional(&mut errs, "search", p.search, SearchQuery::parse);
        let limit = optional(&mut errs, "limit", p.limit, available_limit)
            .unwrap_or(DEFAULT_AVAILABLE_LIMIT);
        errs.finish()?;
        Ok(AvailableUsersQuery {
            search,
            department: p
                .department
                .map(|d| d.trim().to_owned())
                .filter(|d| !d.is_empty()),
            limit,
        })
    }
}

/// A user who could be added to a group.
#[derive(Debug, Serialize, ToSchema)]
pub struct AvailableUser {
    pub id: UserId,
    pub email: String,
    pub full_name: String,
    pub department: Option<String>,
    pub job_title: Option<String>,
    pub status: UserStatus,
}

impl From<User> for AvailableUser {
    fn from(u: User) -> Self {
        Self {
            id: u.id,
            email: u.email,
            full_name: u.full_name,
            department: u.department,
            job_title: u.job_title,
            status: u.status,
        }
    }
}

/// Users of the tenant who are not members of the group (and not deleted), by name.
#[utoipa::path(get, path = "/api/v1/groups/{id}/available-users", tag = "groups",
    params(("id" = uuid::Uuid, Path, description = "Group id"), AvailableUsersParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Users who can be added", body = [AvailableUser]),
        (status = 400, description = "Malformed id or invalid parameters", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid credential", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such group in this tenant", body = Problem, content_type = "application/problem+json"),
    ))]
async fn available_users(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<GroupId>,
    ApiQuery(params): ApiQuery<AvailableUsersParams>,
) -> ApiResult<Json<Vec<AvailableUser>>> {
    let query = AvailableUsersQuery::try_from(params).map_err(ApiError::from_query_error)?;
    caller
        .authorize(&state, "groups", "assign", Target::Collection)
        .await?;
    let users = state
        .store
        .available_users(caller.tenant_id, id, &query)
        .await?;
    Ok(Json(users.into_iter().map(AvailableUser::from).collect()))
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
    caller
        .authorize(&state, "groups", "read", Target::Collection)
        .await?;
    Ok(Json(
        state.store.list_group_roles(caller.tenant_id, id).await?,
    ))
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
    if role_id == SUPER_ADMIN_ROLE_ID {
        return Err(ApiError::validation(vec![FieldError::new(
            "role_id",
            "super_admin_not_for_groups",
            "the super administrator role is given to users, not to groups",
        )]));
    }
    caller
        .authorize(&state, "groups", "assign", Target::Collection)
        .await?;
    caller
        .authorize(&state, "roles", "assign", Target::Collection)
        .await?;
    let role = state
        .store
        .get_role(caller.tenant_id, role_id)
        .await
        .map_err(|e| match e {
            domain::Error::NotFound { .. } => {
                FieldError::new("role_id", "unknown_role", "no such role in this tenant").into()
            }
            other => other,
        })?;
    caller.may_grant_role(&state, &role).await?;
    let role = state
        .store
        .grant_group_role(caller.tenant_id, id, role_id, &caller.audit())
        .await?;
    state.authz.invalidate(caller.tenant_id);
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
    caller
        .authorize(&state, "groups", "assign", Target::Collection)
        .await?;
    caller
        .authorize(&state, "roles", "assign", Target::Collection)
        .await?;
    let role = state
        .store
        .revoke_group_role(caller.tenant_id, id, role_id, &caller.audit())
        .await?;
    state.authz.invalidate(caller.tenant_id);
    Ok(Json(role))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn member(user_id: UserId) -> GroupMember {
        GroupMember {
            group_id: GroupId::new(),
            user_id,
            email: "a@example.com".into(),
            full_name: "A".into(),
            department: None,
            job_title: None,
            status: UserStatus::Active,
            role_in_group: GroupMemberRole::Member,
            joined_at: chrono::Utc::now(),
            added_by_type: domain::audit::ActorType::System,
            added_by: None,
        }
    }

    #[test]
    fn bulk_add_reports_every_id_in_request_order() {
        let (a, b, c) = (UserId::new(), UserId::new(), UserId::new());
        let mut bulk = BulkAdd::parse(vec![
            a.to_string(),
            "nope".into(),
            a.to_string().to_uppercase(),
            b.to_string(),
            c.to_string(),
        ]);
        assert_eq!(
            bulk.to_add.iter().map(|(_, u)| *u).collect::<Vec<_>>(),
            vec![a, b, c]
        );
        bulk.record(vec![
            MemberAddResult {
                user_id: a,
                outcome: Ok(member(a)),
            },
            MemberAddResult {
                user_id: b,
                outcome: Err(MemberAddFailure::AlreadyMember),
            },
            MemberAddResult {
                user_id: c,
                outcome: Err(MemberAddFailure::GroupFull),
            },
        ])
        .unwrap();
        let result = bulk.finish();
        assert_eq!(result.successful.len(), 1);
        assert_eq!(result.successful[0].user_id, a);
        let failed: Vec<(&str, AddMemberFailure)> = result
            .failed
            .iter()
            .map(|f| (f.user_id.as_str(), f.code))
            .collect();
        let upper_a = a.to_string().to_uppercase();
        let b_raw = b.to_string();
        let c_raw = c.to_string();
        assert_eq!(
            failed,
            vec![
                ("nope", AddMemberFailure::InvalidId),
                (upper_a.as_str(), AddMemberFailure::Duplicate),
                (b_raw.as_str(), AddMemberFailure::AlreadyMember),
                (c_raw.as_str(), AddMemberFailure::GroupFull),
            ]
        );
        assert_eq!(
            serde_json::to_value(&result.summary).unwrap(),
            serde_json::json!({"total": 5, "successful_count": 1, "failed_count": 4})
        );
        assert_eq!(
            serde_json::to_value(&result.failed[2]).unwrap()["code"],
            "already_member"
        );
    }

    #[test]
    fn a_store_answer_that_does_not_match_is_an_error() {
        let a = UserId::new();
        let mut bulk = BulkAdd::parse(vec![a.to_string()]);
        assert!(bulk.record(Vec::new()).is_err());
    }
}
