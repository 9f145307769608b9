//! `/api/v1/users`: create, read, update (PATCH, partial, `If-Match`), soft delete, restore
//! and list (filters, sort, keyset pagination, prefix search) the users of the caller's
//! tenant.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use domain::users::{NewUser, User, UserCursor, UserListQuery, UserPatch, UserSort};
use domain::values::{
    AvatarUrl, ClearanceLevel, DisplayName, Email, JsonObject, Label, Language, Phone, SearchQuery,
    Username,
};
use domain::{FieldError, Patch, UserId, ValidationErrors};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::credentials::password_input;
use crate::extract::{etag, ApiJson, ApiPath, ApiQuery, IfMatch};
use crate::parse::{self, optional, patch, required_patch};
use crate::problem::{ApiError, ApiResult, Problem};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, update_user, delete_user))
        .routes(routes!(restore_user))
}

/// A new user. Only `email` and `full_name` are required.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    #[schema(example = "ada@example.com")]
    pub email: String,
    /// 3–64 letters, digits, `.`, `_`, `-`; unique per tenant, case-insensitively.
    pub username: Option<String>,
    #[schema(example = "Ada Lovelace")]
    pub full_name: String,
    pub phone: Option<String>,
    pub department: Option<String>,
    pub job_title: Option<String>,
    pub employee_id: Option<String>,
    /// A user of the same tenant.
    #[schema(value_type = Option<uuid::Uuid>)]
    pub manager_id: Option<String>,
    pub cost_center: Option<String>,
    /// 0–10.
    #[schema(minimum = 0, maximum = 10)]
    pub clearance_level: Option<i64>,
    /// BCP 47 tag, e.g. `en-GB`.
    pub language: Option<String>,
    pub avatar_url: Option<String>,
    /// At most 100 keys, 16 KiB.
    #[schema(value_type = Option<Object>)]
    pub custom_attributes: Option<Map<String, Value>>,
    /// Defaults to `active`.
    pub status: Option<domain::users::UserStatus>,
    /// An initial password, checked against the tenant's policy.
    #[schema(value_type = Option<String>)]
    pub password: Option<secrecy::SecretString>,
    /// Instead of `password`: a hash imported from another system (see
    /// `PUT /api/v1/users/{id}/password` for the formats).
    #[schema(value_type = Option<Object>)]
    pub password_hash: Option<Value>,
    /// Require a new password at the first sign-in.
    pub must_change_password: Option<bool>,
}

impl TryFrom<CreateUser> for NewUser {
    type Error = domain::Error;

    fn try_from(r: CreateUser) -> Result<Self, Self::Error> {
        let mut errs = ValidationErrors::new();
        let email = errs.check(Email::parse("email", &r.email));
        let full_name = errs.check(DisplayName::parse("full_name", &r.full_name));
        let username = optional(&mut errs, "username", r.username, Username::parse);
        let phone = optional(&mut errs, "phone", r.phone, Phone::parse);
        let department = optional(&mut errs, "department", r.department, Label::parse);
        let job_title = optional(&mut errs, "job_title", r.job_title, Label::parse);
        let employee_id = optional(&mut errs, "employee_id", r.employee_id, Label::parse);
        let manager_id = optional(&mut errs, "manager_id", r.manager_id, parse::id::<UserId>);
        let cost_center = optional(&mut errs, "cost_center", r.cost_center, Label::parse);
        let clearance_level = r
            .clearance_level
            .and_then(|n| errs.check(ClearanceLevel::parse("clearance_level", n)));
        let language = optional(&mut errs, "language", r.language, Language::parse);
        let avatar_url = optional(&mut errs, "avatar_url", r.avatar_url, AvatarUrl::parse);
        let custom_attributes = errs.check(JsonObject::parse(
            "custom_attributes",
            r.custom_attributes.unwrap_or_default(),
        ));
        errs.finish()?;
        match (email, full_name, custom_attributes) {
            (Some(email), Some(full_name), Some(custom_attributes)) => Ok(NewUser {
                email,
                username,
                full_name,
                phone,
                department,
                job_title,
                employee_id,
                manager_id,
                cost_center,
                clearance_level,
                language,
                avatar_url,
                custom_attributes,
                status: r.status.unwrap_or(domain::users::UserStatus::Active),
            }),
            _ => Err(domain::Error::internal("validated fields missing")),
        }
    }
}

/// A partial update: absent fields are kept, `null` clears an optional field.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = String, required = false)]
    pub email: Option<Option<String>>,
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = Option<String>, nullable)]
    pub username: Option<Option<String>>,
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = String, required = false)]
    pub full_name: Option<Option<String>>,
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = Option<String>, nullable)]
    pub phone: Option<Option<String>>,
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = Option<String>, nullable)]
    pub department: Option<Option<String>>,
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = Option<String>, nullable)]
    pub job_title: Option<Option<String>>,
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = Option<String>, nullable)]
    pub employee_id: Option<Option<String>>,
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = Option<uuid::Uuid>, nullable)]
    pub manager_id: Option<Option<String>>,
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = Option<String>, nullable)]
    pub cost_center: Option<Option<String>>,
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = Option<i64>, nullable, minimum = 0, maximum = 10)]
    pub clearance_level: Option<Option<i64>>,
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = Option<String>, nullable)]
    pub language: Option<Option<String>>,
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = Option<String>, nullable)]
    pub avatar_url: Option<Option<String>>,
    /// Replaces the whole object.
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = Object, required = false)]
    pub custom_attributes: Option<Option<Map<String, Value>>>,
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[schema(value_type = domain::users::UserStatus, required = false)]
    pub status: Option<Option<domain::users::UserStatus>>,
}

impl TryFrom<UpdateUser> for UserPatch {
    type Error = domain::Error;

    fn try_from(r: UpdateUser) -> Result<Self, Self::Error> {
        let mut errs = ValidationErrors::new();
        let not_null = |errs: &mut ValidationErrors, field: &str| {
            errs.push(FieldError::new(field, "not_nullable", "must not be null"));
        };
        let clearance_level = match Patch::from(r.clearance_level)
            .try_map(|n| ClearanceLevel::parse("clearance_level", n))
        {
            Ok(p) => p,
            Err(e) => {
                errs.push(e);
                Patch::Keep
            }
        };
        let custom_attributes = match r.custom_attributes {
            None => None,
            Some(None) => {
                not_null(&mut errs, "custom_attributes");
                None
            }
            Some(Some(map)) => errs.check(JsonObject::parse("custom_attributes", map)),
        };
        let status = match r.status {
            None => None,
            Some(None) => {
                not_null(&mut errs, "status");
                None
            }
            Some(Some(s)) => Some(s),
        };
        let out = UserPatch {
            email: required_patch(&mut errs, "email", r.email, Email::parse),
            username: patch(&mut errs, "username", r.username, Username::parse),
            full_name: required_patch(&mut errs, "full_name", r.full_name, DisplayName::parse),
            phone: patch(&mut errs, "phone", r.phone, Phone::parse),
            department: patch(&mut errs, "department", r.department, Label::parse),
            job_title: patch(&mut errs, "job_title", r.job_title, Label::parse),
            employee_id: patch(&mut errs, "employee_id", r.employee_id, Label::parse),
            manager_id: patch(&mut errs, "manager_id", r.manager_id, parse::id::<UserId>),
            cost_center: patch(&mut errs, "cost_center", r.cost_center, Label::parse),
            clearance_level,
            language: patch(&mut errs, "language", r.language, Language::parse),
            avatar_url: patch(&mut errs, "avatar_url", r.avatar_url, AvatarUrl::parse),
            custom_attributes,
            status,
        };
        errs.finish()?;
        Ok(out)
    }
}

/// Filters, sort and paging of the user list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListUsersParams {
    /// `pending`, `active`, `blocked`, `suspended` or `inactive`.
    #[param(value_type = Option<domain::users::UserStatus>)]
    status: Option<String>,
    /// Exact department.
    department: Option<String>,
    /// Users reporting to this manager.
    #[param(value_type = Option<uuid::Uuid>)]
    manager_id: Option<String>,
    /// Created at or after (RFC 3339).
    #[param(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    created_after: Option<String>,
    /// Created before (RFC 3339).
    #[param(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    created_before: Option<String>,
    /// Search: every word must prefix a word of the name, username or email.
    q: Option<String>,
    /// `name`, `email`, `created` (default) or `last_login`; prefix `-` for descending.
    #[param(pattern = "^-?(name|email|created|last_login)$")]
    sort: Option<String>,
    /// Page size, 1–200 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// `exclude` (default), `include` or `only`.
    #[param(pattern = "^(exclude|include|only)$")]
    deleted: Option<String>,
}

impl TryFrom<ListUsersParams> for UserListQuery {
    type Error = domain::Error;

    fn try_from(p: ListUsersParams) -> Result<Self, Self::Error> {
        let mut errs = ValidationErrors::new();
        let sort = optional(&mut errs, "sort", p.sort, UserSort::parse).unwrap_or_default();
        let query = UserListQuery {
            id: None,
            status: optional(&mut errs, "status", p.status, parse::enum_value),
            department: p.department,
            manager_id: optional(&mut errs, "manager_id", p.manager_id, parse::id::<UserId>),
            created_after: optional(
                &mut errs,
                "created_after",
                p.created_after,
                parse::timestamp,
            ),
            created_before: optional(
                &mut errs,
                "created_before",
                p.created_before,
                parse::timestamp,
            ),
            q: optional(&mut errs, "q", p.q, SearchQuery::parse),
            deleted: optional(&mut errs, "deleted", p.deleted, parse::enum_value)
                .unwrap_or_default(),
            sort,
            limit: optional(&mut errs, "limit", p.limit, parse::limit).unwrap_or_default(),
            after: None,
        };
        errs.finish()?;
        let after = p.cursor.map(|c| UserCursor::decode(&c, sort)).transpose()?;
        Ok(UserListQuery { after, ..query })
    }
}

/// One page of users.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserPage {
    pub items: Vec<User>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

fn with_etag(user: User) -> (HeaderMap, Json<User>) {
    let mut headers = HeaderMap::new();
    headers.insert(header::ETAG, etag(user.version));
    (headers, Json(user))
}

/// List users of the caller's tenant.
#[utoipa::path(get, path = "/api/v1/users", tag = "users", params(ListUsersParams),
    security(("bearer" = [])),
    responses(
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 200, description = "A page of users", body = UserPage),
        (status = 400, description = "Invalid parameters", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid credential", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<ListUsersParams>,
) -> ApiResult<Json<UserPage>> {
    let query = UserListQuery::try_from(params).map_err(ApiError::from_query_error)?;
    let page = state.services.list_users(&caller, query).await?;
    Ok(Json(UserPage {
        items: page.items,
        next_cursor: page.next_cursor,
    }))
}

/// Create a user in the caller's tenant.
#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = CreateUser,
    security(("bearer" = [])),
    responses(
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 201, description = "Created; `Location` and `ETag` headers set", body = User),
        (status = 409, description = "Email or username taken, or the plan's user quota reached", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, or a password the policy refuses", body = Problem, content_type = "application/problem+json"),
    ))]
async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(mut body): ApiJson<CreateUser>,
) -> ApiResult<(StatusCode, HeaderMap, Json<User>)> {
    let password = password_input(body.password.take(), body.password_hash.take())?;
    let must_change = body.must_change_password.take().unwrap_or(false);
    let status_given = body.status.is_some();
    let new = NewUser::try_from(body)?;
    let user = state
        .services
        .create_user(
            &caller,
            new,
            status_given,
            password.map(|p| (p, must_change)),
        )
        .await?;
    let location = format!("/api/v1/users/{}", user.id);
    let (mut headers, body) = with_etag(user);
    if let Ok(v) = header::HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, v);
    }
    Ok((StatusCode::CREATED, headers, body))
}

/// Get a user (deleted users too, with `deleted_at` set).
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users",
    params(("id" = uuid::Uuid, Path, description = "User id")),
    security(("bearer" = [])),
    responses(
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 200, description = "The user; `ETag` is its version", body = User),
        (status = 404, description = "No such user in this tenant", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<UserId>,
) -> ApiResult<(HeaderMap, Json<User>)> {
    Ok(with_etag(state.services.get_user(&caller, id).await?))
}

/// Update a user partially. With `If-Match`, only if the user is still at that version.
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "users", request_body = UpdateUser,
    params(("id" = uuid::Uuid, Path, description = "User id"),
           ("If-Match" = Option<String>, Header, description = "ETag from a previous read")),
    security(("bearer" = [])),
    responses(
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 200, description = "The updated user", body = User),
        (status = 404, description = "No such user in this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Email or username taken", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "The user changed since the ETag", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    ))]
async fn update_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<UserId>,
    IfMatch(version): IfMatch,
    ApiJson(body): ApiJson<UpdateUser>,
) -> ApiResult<(HeaderMap, Json<User>)> {
    let patch = UserPatch::try_from(body)?;
    Ok(with_etag(
        state
            .services
            .update_user(&caller, id, patch, version)
            .await?,
    ))
}

/// Soft-delete a user; `POST …/restore` undoes it.
#[utoipa::path(delete, path = "/api/v1/users/{id}", tag = "users",
    params(("id" = uuid::Uuid, Path, description = "User id"),
           ("If-Match" = Option<String>, Header, description = "ETag from a previous read")),
    security(("bearer" = [])),
    responses(
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 200, description = "The deleted user", body = User),
        (status = 409, description = "The platform's last active super administrator", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such (non-deleted) user in this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "The user changed since the ETag", body = Problem, content_type = "application/problem+json"),
    ))]
async fn delete_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<UserId>,
    IfMatch(version): IfMatch,
) -> ApiResult<(HeaderMap, Json<User>)> {
    Ok(with_etag(
        state.services.delete_user(&caller, id, version).await?,
    ))
}

/// Restore a soft-deleted user.
#[utoipa::path(post, path = "/api/v1/users/{id}/restore", tag = "users",
    params(("id" = uuid::Uuid, Path, description = "User id")),
    security(("bearer" = [])),
    responses(
        (status = 403, description = "Not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 200, description = "The restored user", body = User),
        (status = 404, description = "No such user in this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The user is not deleted, or the quota is reached", body = Problem, content_type = "application/problem+json"),
    ))]
async fn restore_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<UserId>,
) -> ApiResult<(HeaderMap, Json<User>)> {
    Ok(with_etag(state.services.restore_user(&caller, id).await?))
}
