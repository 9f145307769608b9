//! The members of a group: listed, added in bulk (a result per user), changed, removed,
//! and the search for users to add.

use super::*;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_members, add_members))
        .routes(routes!(update_member, remove_member))
        .routes(routes!(available_users))
}

/// Most users one request may add to a group.
const MAX_BULK_MEMBERS: usize = 1000;
/// Default and largest page of `available-users`.
const DEFAULT_AVAILABLE_LIMIT: u32 = 20;
const MAX_AVAILABLE_LIMIT: u32 = 100;

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
    Ok(Json(state.services.list_members(&caller, id).await?))
}

/// Users to add to a group.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMembers {
    /// 1–1,000 user ids. Each is added on its own: one that cannot be added is reported in
    /// `failed` and does not stop the others.
    /// An entry that is not a UUID is reported in `failed` (`invalid_id`) like any other
    /// user that cannot be added.
    #[schema(min_items = 1, max_items = 1000)]
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
    let mut bulk = BulkAdd::parse(body.user_ids);
    let users = bulk.to_add.iter().map(|(_, u)| *u).collect();
    let results = state
        .services
        .add_members(&caller, id, users, role_in_group)
        .await?;
    bulk.record(results)?;
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
    Ok(Json(
        state
            .services
            .update_member(&caller, id, user_id, role_in_group)
            .await?,
    ))
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
    Ok(Json(
        state.services.remove_member(&caller, id, user_id).await?,
    ))
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
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
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
    let users = state.services.available_users(&caller, id, &query).await?;
    Ok(Json(users.into_iter().map(AvailableUser::from).collect()))
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
