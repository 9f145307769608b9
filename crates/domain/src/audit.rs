//! The audit trail: who changed what, when, from where. Every mutation writes one event in
//! the same transaction as the change; events are never updated or deleted.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::ids::{ApiKeyId, AuditEventId, TenantId, UserId};
use crate::page::PageSize;
use crate::tenants::string_enum;

string_enum!(
    /// The kind of actor behind a change.
    ActorType {
        ApiKey => "api_key",
        User => "user",
        System => "system",
        Anonymous => "anonymous",
    }
);

/// Who acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    ApiKey(ApiKeyId),
    User(UserId),
    /// The operator through the CLI, or the server itself (e.g. first-start set-up).
    System,
    /// Someone not signed in, such as the sender of a failed sign-in (the account it
    /// names is the event's entity, not its actor).
    Anonymous,
}

impl Actor {
    pub fn actor_type(self) -> ActorType {
        match self {
            Actor::ApiKey(_) => ActorType::ApiKey,
            Actor::User(_) => ActorType::User,
            Actor::System => ActorType::System,
            Actor::Anonymous => ActorType::Anonymous,
        }
    }

    pub fn id(self) -> Option<Uuid> {
        match self {
            Actor::ApiKey(id) => Some(id.into_uuid()),
            Actor::User(id) => Some(id.into_uuid()),
            Actor::System | Actor::Anonymous => None,
        }
    }
}

/// The circumstances of a change, recorded with it.
#[derive(Debug, Clone)]
pub struct AuditContext {
    pub actor: Actor,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
}

impl AuditContext {
    /// A change made by the operator through the CLI or by the server itself.
    pub fn system() -> Self {
        Self {
            actor: Actor::System,
            ip: None,
            user_agent: None,
            request_id: None,
        }
    }
}

/// Actions recorded in the trail. Stable strings: clients filter on them.
pub mod actions {
    pub const TENANT_CREATE: &str = "tenant.create";
    pub const TENANT_UPDATE: &str = "tenant.update";
    pub const TENANT_DEACTIVATE: &str = "tenant.deactivate";
    pub const API_KEY_CREATE: &str = "api_key.create";
    pub const API_KEY_REVOKE: &str = "api_key.revoke";
    pub const USER_CREATE: &str = "user.create";
    pub const USER_UPDATE: &str = "user.update";
    pub const USER_DELETE: &str = "user.delete";
    pub const USER_RESTORE: &str = "user.restore";
    pub const USER_SEED: &str = "user.seed";
    pub const USER_REGISTER: &str = "user.register";
    pub const USER_LOCK: &str = "user.lock";
    pub const USER_UNLOCK: &str = "user.unlock";
    pub const USER_EMAIL_VERIFY: &str = "user.email_verify";
    pub const TENANT_AUTH_SETTINGS_UPDATE: &str = "tenant.auth_settings.update";
    pub const AUTH_LOGIN: &str = "auth.login";
    pub const AUTH_LOGIN_FAILURE: &str = "auth.login_failure";
    pub const AUTH_MAGIC_LINK_REQUEST: &str = "auth.magic_link.request";
    pub const AUTH_PASSWORD_RESET_REQUEST: &str = "auth.password_reset.request";
    pub const AUTH_INVITATION_CREATE: &str = "auth.invitation.create";
    pub const AUTH_EMAIL_VERIFICATION_REQUEST: &str = "auth.email_verification.request";
    pub const PASSWORD_SET: &str = "password.set";
    pub const PASSWORD_CHANGE: &str = "password.change";
    pub const PASSWORD_RESET: &str = "password.reset";
    pub const SESSION_REVOKE: &str = "session.revoke";
    pub const MFA_TOTP_ENROL: &str = "mfa.totp.enrol";
    pub const MFA_TOTP_CONFIRM: &str = "mfa.totp.confirm";
    pub const MFA_TOTP_REMOVE: &str = "mfa.totp.remove";
    pub const MFA_RECOVERY_CODE_USE: &str = "mfa.recovery_code.use";
    pub const MFA_RECOVERY_CODES_REGENERATE: &str = "mfa.recovery_codes.regenerate";
    pub const PERMISSION_CREATE: &str = "permission.create";
    pub const ROLE_CREATE: &str = "role.create";
    pub const ROLE_UPDATE: &str = "role.update";
    pub const ROLE_DELETE: &str = "role.delete";
    pub const ROLE_PERMISSIONS_UPDATE: &str = "role.permissions.update";
    pub const ROLE_ASSIGN: &str = "role.assign";
    pub const ROLE_UNASSIGN: &str = "role.unassign";
    pub const GROUP_CREATE: &str = "group.create";
    pub const GROUP_UPDATE: &str = "group.update";
    pub const GROUP_DELETE: &str = "group.delete";
    pub const GROUP_MEMBER_ADD: &str = "group.member.add";
    pub const GROUP_MEMBER_UPDATE: &str = "group.member.update";
    pub const GROUP_MEMBER_REMOVE: &str = "group.member.remove";
    pub const GROUP_ROLE_GRANT: &str = "group.role.grant";
    pub const GROUP_ROLE_REVOKE: &str = "group.role.revoke";
    pub const POLICY_CREATE: &str = "policy.create";
    pub const POLICY_UPDATE: &str = "policy.update";
    pub const POLICY_DELETE: &str = "policy.delete";
    pub const SIGNING_KEY_ROTATE: &str = "signing_key.rotate";

    /// Every action above.
    pub const ALL: &[&str] = &[
        TENANT_CREATE,
        TENANT_UPDATE,
        TENANT_DEACTIVATE,
        API_KEY_CREATE,
        API_KEY_REVOKE,
        USER_CREATE,
        USER_UPDATE,
        USER_DELETE,
        USER_RESTORE,
        USER_SEED,
        USER_REGISTER,
        USER_LOCK,
        USER_UNLOCK,
        USER_EMAIL_VERIFY,
        TENANT_AUTH_SETTINGS_UPDATE,
        AUTH_LOGIN,
        AUTH_LOGIN_FAILURE,
        AUTH_MAGIC_LINK_REQUEST,
        AUTH_PASSWORD_RESET_REQUEST,
        AUTH_INVITATION_CREATE,
        AUTH_EMAIL_VERIFICATION_REQUEST,
        PASSWORD_SET,
        PASSWORD_CHANGE,
        PASSWORD_RESET,
        SESSION_REVOKE,
        MFA_TOTP_ENROL,
        MFA_TOTP_CONFIRM,
        MFA_TOTP_REMOVE,
        MFA_RECOVERY_CODE_USE,
        MFA_RECOVERY_CODES_REGENERATE,
        PERMISSION_CREATE,
        ROLE_CREATE,
        ROLE_UPDATE,
        ROLE_DELETE,
        ROLE_PERMISSIONS_UPDATE,
        ROLE_ASSIGN,
        ROLE_UNASSIGN,
        GROUP_CREATE,
        GROUP_UPDATE,
        GROUP_DELETE,
        GROUP_MEMBER_ADD,
        GROUP_MEMBER_UPDATE,
        GROUP_MEMBER_REMOVE,
        GROUP_ROLE_GRANT,
        GROUP_ROLE_REVOKE,
        POLICY_CREATE,
        POLICY_UPDATE,
        POLICY_DELETE,
        SIGNING_KEY_ROTATE,
    ];
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditEvent {
    pub id: AuditEventId,
    pub tenant_id: TenantId,
    pub occurred_at: DateTime<Utc>,
    pub actor_type: ActorType,
    pub actor_id: Option<Uuid>,
    pub action: String,
    pub entity_type: String,
    pub entity_id: Option<Uuid>,
    #[schema(value_type = Option<Object>)]
    pub before: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub after: Option<Value>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
}

impl AuditEvent {
    /// The event recording `action` on an entity by the actor of `ctx`.
    pub fn record(
        ctx: &AuditContext,
        tenant_id: TenantId,
        action: &str,
        entity: EntityRef,
        (before, after): (Option<Value>, Option<Value>),
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id: AuditEventId::new(),
            tenant_id,
            occurred_at: now,
            actor_type: ctx.actor.actor_type(),
            actor_id: ctx.actor.id(),
            action: action.to_owned(),
            entity_type: entity.kind.to_owned(),
            entity_id: entity.id,
            before,
            after,
            ip: ctx.ip.clone(),
            user_agent: ctx.user_agent.clone(),
            request_id: ctx.request_id.clone(),
        }
    }
}

impl AuditEvent {
    /// The event recording `action` on a user, from `before` (none for a creation) to
    /// `after`.
    pub fn user_change(
        ctx: &AuditContext,
        action: &str,
        before: Option<&crate::users::User>,
        after: &crate::users::User,
        now: DateTime<Utc>,
    ) -> Self {
        Self::record(
            ctx,
            after.tenant_id,
            action,
            EntityRef::user(after.id),
            (
                before.map(crate::users::User::to_audit_json),
                Some(after.to_audit_json()),
            ),
            now,
        )
    }
}

/// The entity an event is about.
#[derive(Debug, Clone, Copy)]
pub struct EntityRef {
    pub kind: &'static str,
    pub id: Option<Uuid>,
}

impl EntityRef {
    pub fn tenant(id: TenantId) -> Self {
        Self {
            kind: "tenant",
            id: Some(id.into_uuid()),
        }
    }
    pub fn user(id: UserId) -> Self {
        Self {
            kind: "user",
            id: Some(id.into_uuid()),
        }
    }
    pub fn api_key(id: ApiKeyId) -> Self {
        Self {
            kind: "api_key",
            id: Some(id.into_uuid()),
        }
    }
    pub fn session(id: crate::ids::SessionId) -> Self {
        Self {
            kind: "session",
            id: Some(id.into_uuid()),
        }
    }
    pub fn role(id: crate::ids::RoleId) -> Self {
        Self {
            kind: "role",
            id: Some(id.into_uuid()),
        }
    }
    pub fn group(id: crate::ids::GroupId) -> Self {
        Self {
            kind: "group",
            id: Some(id.into_uuid()),
        }
    }
    pub fn policy(id: crate::ids::PolicyId) -> Self {
        Self {
            kind: "policy",
            id: Some(id.into_uuid()),
        }
    }
    /// An event about no stored entity (e.g. a failed sign-in by an unknown login).
    pub fn none(kind: &'static str) -> Self {
        Self { kind, id: None }
    }
}

/// Filters for reading the trail; newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub actor_id: Option<Uuid>,
    pub actor_type: Option<ActorType>,
    pub action: Option<String>,
    pub entity_type: Option<String>,
    pub entity_id: Option<Uuid>,
    /// Events at or after this time (inclusive).
    pub since: Option<DateTime<Utc>>,
    /// Events before this time (exclusive).
    pub until: Option<DateTime<Utc>>,
    pub limit: PageSize,
    /// Continue with events older than this one (from a previous page's cursor).
    pub before_id: Option<AuditEventId>,
}
