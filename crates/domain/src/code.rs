//! The error catalogue: every stable machine-readable code Portcullis answers with, its
//! kind (which the interface layer turns into a status) and its one message. Both stores,
//! the services and the interface layer name conditions by these codes, so that one
//! condition reads the same whichever backend or entry point met it.
//!
//! Codes are part of the API: clients match on them. Add codes; never rename one.

use serde::Serialize;

/// How a refusal is answered, independent of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The request is malformed, or a single-use token or code in it is not valid (400).
    BadRequest,
    /// No valid credential (401).
    Unauthenticated,
    /// The credential is valid but the operation is not allowed (403).
    Forbidden,
    NotFound,
    MethodNotAllowed,
    /// The request conflicts with the current state (409).
    Conflict,
    PreconditionFailed,
    PayloadTooLarge,
    UnsupportedMediaType,
    /// Well-formed but invalid content (422).
    Unprocessable,
    TooManyRequests,
    Internal,
    Unavailable,
}

macro_rules! codes {
    ($( $(#[$doc:meta])* $variant:ident = $text:literal, $kind:ident, $message:literal; )+) => {
        /// A stable error code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Code { $( $(#[$doc])* $variant, )+ }

        impl Code {
            /// Every code, for documentation and tests.
            pub const ALL: &'static [Code] = &[$(Code::$variant),+];

            /// The code as clients see it, e.g. `last_super_admin`.
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $text,)+ }
            }

            pub fn kind(self) -> Kind {
                match self { $(Code::$variant => Kind::$kind,)+ }
            }

            /// The one human-readable explanation of the code.
            pub fn message(self) -> &'static str {
                match self { $(Code::$variant => $message,)+ }
            }
        }
    };
}

codes! {
    // --- 400: requests that cannot be understood, and single-use tokens that do not work
    MalformedJson = "malformed_json", BadRequest, "the request body is not valid JSON";
    UnreadableBody = "unreadable_body", BadRequest, "the request body could not be read";
    InvalidRequest = "invalid_request", BadRequest, "one or more parameters are invalid; see `errors`";
    InvalidIfMatch = "invalid_if_match", BadRequest, "If-Match must name one version, such as \"3\" or W/\"3\", or be *";
    InvalidMfaToken = "invalid_mfa_token", BadRequest, "the MFA token is not valid or has expired; sign in again";
    InvalidMfaCode = "invalid_mfa_code", BadRequest, "the code is wrong or was already used";
    InvalidMagicLink = "invalid_magic_link", BadRequest, "the link is not valid, was already used or has expired";
    InvalidResetToken = "invalid_reset_token", BadRequest, "the link is not valid, was already used or has expired";
    InvalidVerificationToken = "invalid_verification_token", BadRequest, "the link is not valid, was already used or has expired";
    InvalidInvitation = "invalid_invitation", BadRequest, "the invitation is not valid, was already used or has expired";
    InvalidPasswordChangeToken = "invalid_password_change_token", BadRequest, "the token is not valid or has expired; sign in again";

    // --- 401
    Unauthorized = "unauthorized", Unauthenticated, "send a valid API key or access token as 'Authorization: Bearer <credential>'";
    InvalidCredentials = "invalid_credentials", Unauthenticated, "the login or password is wrong, or the account is temporarily locked";
    InvalidApiKey = "invalid_api_key", Unauthenticated, "the API key is not valid or was revoked";
    InvalidToken = "invalid_token", Unauthenticated, "the access token is not valid";
    TokenExpired = "token_expired", Unauthenticated, "the access token has expired; refresh it";
    SessionRevoked = "session_revoked", Unauthenticated, "the session of this token has ended";
    InvalidSession = "invalid_session", Unauthenticated, "the session cookie is not valid or the session has ended";
    InvalidRefreshToken = "invalid_refresh_token", Unauthenticated, "the refresh token is not valid, was revoked or has expired";
    RefreshTokenReused = "refresh_token_reused", Unauthenticated, "this refresh token was already used; the session has been revoked for safety";

    // --- 403
    Forbidden = "forbidden", Forbidden, "you are not allowed to do this; see `reason`";
    PlatformAdminRequired = "platform_admin_required", Forbidden, "this operation needs a platform-admin API key or a super administrator";
    SuperAdminRequired = "super_admin_required", Forbidden, "only a super administrator or a platform-admin API key can do this to a super administrator or with the super administrator role";
    SuperAdminImmutable = "super_admin_immutable", Forbidden, "the super administrator role cannot be changed or deleted";
    SystemRole = "system_role", Forbidden, "system roles cannot be deleted or renamed";
    CannotGrantUnheld = "cannot_grant_unheld", Forbidden, "you can only grant permissions you hold yourself; `reason.missing` lists those you lack";
    GrantOutlivesGranter = "grant_outlives_granter", Forbidden, "you hold these permissions only until `reason.until`: what you grant must expire by then";
    TargetOutranksCaller = "target_outranks_caller", Forbidden, "this user holds, or would hold when active, permissions you do not hold; ask someone who holds them";
    OwnAssignment = "own_assignment", Forbidden, "nobody changes their own roles or group memberships; ask another administrator";
    SecurityField = "security_field", Forbidden, "department, job title, manager, clearance level, email, custom attributes and status feed authorization decisions: setting them needs users:update at scope all; see `errors`";
    PasswordHashForbidden = "password_hash_forbidden", Forbidden, "only API keys and holders of users:create at scope all may store a password hash";
    UseMePassword = "use_me_password", Forbidden, "change your own password with POST /api/v1/me/password and your current password";
    PolicyReferenced = "policy_referenced", Forbidden, "a policy names this group or role: renaming it or changing who holds it needs policies:update";
    TenantSuspended = "tenant_suspended", Forbidden, "the tenant is suspended";
    UserSessionRequired = "user_session_required", Forbidden, "this endpoint acts on the signed-in user; an API key has none";
    AccountPending = "account_pending", Forbidden, "the account is waiting for approval";
    AccountDisabled = "account_disabled", Forbidden, "the account is disabled; contact an administrator";
    UserNotActive = "user_not_active", Forbidden, "the user is not active and cannot sign in";
    EmailNotVerified = "email_not_verified", Forbidden, "verify your email address first; the link was sent at registration";
    RegistrationClosed = "registration_closed", Forbidden, "this tenant does not accept registrations";
    InvitationRequired = "invitation_required", Forbidden, "this tenant accepts registrations by invitation only";
    CsrfFailed = "csrf_failed", Forbidden, "send the session's CSRF token in the X-CSRF-Token header";
    MfaSessionRequired = "mfa_session_required", Forbidden, "sign in with your second factor to change it";
    FieldNotSelfService = "field_not_self_service", Forbidden, "some fields are set by administrators, or only filled once; see `errors`";

    // --- 404, 405
    NotFound = "not_found", NotFound, "no such resource in this tenant";
    MethodNotAllowed = "method_not_allowed", MethodNotAllowed, "this endpoint does not support the request method";

    // --- 409
    EmailTaken = "email_taken", Conflict, "a user of this tenant already has this email address";
    UsernameTaken = "username_taken", Conflict, "a user of this tenant already has this username";
    SlugTaken = "slug_taken", Conflict, "a tenant with this slug already exists";
    IdTaken = "id_taken", Conflict, "an entity with this id already exists";
    QuotaExceeded = "quota_exceeded", Conflict, "the tenant has as many users as its plan allows (`max_users`)";
    NotDeleted = "not_deleted", Conflict, "the user is not deleted";
    OwnTenant = "own_tenant", Conflict, "a platform admin cannot suspend the tenant its own credential belongs to";
    TotpAlreadyEnrolled = "totp_already_enrolled", Conflict, "TOTP is already enrolled; remove it first";
    TotpNotPending = "totp_not_pending", Conflict, "start an enrolment with POST /api/v1/me/mfa/totp first";
    TotpNotEnrolled = "totp_not_enrolled", Conflict, "TOTP is not enrolled";
    RoleNameTaken = "role_name_taken", Conflict, "a role of this tenant already has this name";
    GroupNameTaken = "group_name_taken", Conflict, "a group of this tenant already has this name";
    PolicyNameTaken = "policy_name_taken", Conflict, "a policy of this tenant already has this name";
    PermissionExists = "permission_exists", Conflict, "this permission already exists";
    AlreadyGranted = "already_granted", Conflict, "the group already has this role";
    GroupHasChildren = "group_has_children", Conflict, "the group has child groups: move or delete them first";
    LastSuperAdmin = "last_super_admin", Conflict, "this is the platform's last active super administrator: give the role to another active user first";

    // --- 412, 413, 415
    PreconditionFailed = "precondition_failed", PreconditionFailed, "the resource changed since the ETag sent in If-Match; read it again";
    UnknownEtag = "etag_mismatch", PreconditionFailed, "the ETag sent in If-Match is not the current version of the resource; read it again";
    PayloadTooLarge = "payload_too_large", PayloadTooLarge, "the request body exceeds the configured limit";
    UnsupportedMediaType = "unsupported_media_type", UnsupportedMediaType, "send the body as JSON with Content-Type: application/json";

    // --- 422: the request and the rules that judge single fields
    ValidationFailed = "validation_failed", Unprocessable, "one or more fields are invalid; see `errors`";
    ManagerCycle = "manager_cycle", Unprocessable, "the user is already above this manager in the management chain";
    UnknownManager = "unknown_manager", Unprocessable, "no such user in this tenant";
    GroupCycle = "cycle", Unprocessable, "the group would descend from itself";
    UnknownGroup = "unknown_group", Unprocessable, "no such group in this tenant";
    UnknownRole = "unknown_role", Unprocessable, "no such role in this tenant";
    UnknownPermission = "unknown_permission", Unprocessable, "neither built in nor defined by the tenant";
    UnknownAction = "unknown_action", Unprocessable, "neither a built-in action nor one this tenant defined";
    SuperAdminNotForGroups = "super_admin_not_for_groups", Unprocessable, "the super administrator role is given to users, not to groups";
    SuperAdminNoExpiry = "super_admin_no_expiry", Unprocessable, "the platform's last permanent super administrator cannot be given an expiry";
    SecurityProfileField = "security_profile_field", Unprocessable, "department and job title feed authorization decisions: administrators set them, users cannot be asked to fill them";
    PlatformPermission = "platform_permission", Unprocessable, "tenant management is reserved to super administrators: no tenant role can carry it";
    BuiltInResource = "built_in_resource", Unprocessable, "this is a Portcullis resource; its permissions are built in";
    ScopeNotApplicable = "scope_not_applicable", Unprocessable, "records of this resource have no owner or department: only scope `all` can be granted";
    UnsupportedHash = "unsupported_hash", Unprocessable, "the hash is not in a supported format";
    HashTooCostly = "hash_too_costly", Unprocessable, "the hash's cost exceeds what this server verifies (argon2 ≤ 64 MiB and t ≤ 4, PBKDF2 ≤ 1,200,000 iterations, bcrypt ≤ 13)";
    PasswordReused = "password_reused", Unprocessable, "choose a password different from your recent ones";
    WrongPassword = "wrong_password", Unprocessable, "the current password is wrong";
    InvalidCode = "invalid_code", Unprocessable, "the code does not match; check the device clock";

    // --- 429, 500, 503
    RateLimited = "rate_limited", TooManyRequests, "too many attempts; retry after the Retry-After delay";
    InternalError = "internal_error", Internal, "an unexpected error occurred; quote the X-Request-Id header when reporting it";
    ServiceUnavailable = "service_unavailable", Unavailable, "the database is unavailable; retry later";
    NotReady = "not_ready", Unavailable, "the server is not ready to serve requests";
    Busy = "busy", Unavailable, "the server is handling too many sign-ins; retry after the Retry-After delay";
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn codes_are_unique_snake_case_and_explained() {
        let mut seen = HashSet::new();
        for c in Code::ALL {
            assert!(seen.insert(c.as_str()), "{} twice", c.as_str());
            assert!(
                c.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{}",
                c.as_str()
            );
            assert!(!c.message().is_empty());
        }
    }
}
