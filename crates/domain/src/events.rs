//! Domain events: what changed, for other parts of the system to hear. Every change that
//! the audit trail records is also an event, written to the outbox in the same transaction
//! (the stores derive it from the audit record with [`Event::of`]), so that no event is lost
//! and none is invented by a change that rolled back.
//!
//! Events are read back from the outbox in commit order ([`Position`]); a consumer keeps
//! its position and resumes from it, so delivery is at least once and consumers
//! de-duplicate by the event's id (the id of its audit record).

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::audit::{ActorType, AuditEvent};
use crate::ids::TenantId;

/// Where an event stands in the outbox: events are read in increasing position, which is
/// their commit order. Opaque to consumers; written as `major.minor` (e.g. in
/// `Last-Event-ID`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    pub major: i64,
    pub minor: i64,
}

impl Position {
    pub const START: Position = Position { major: 0, minor: 0 };

    pub fn new(major: i64, minor: i64) -> Self {
        Self { major, minor }
    }

    /// Parses `major.minor`.
    pub fn parse(raw: &str) -> Option<Self> {
        let (a, b) = raw.trim().split_once('.')?;
        Some(Self {
            major: a.parse().ok()?,
            minor: b.parse().ok()?,
        })
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// A domain event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// The id of the audit record of the change: unique, and the de-duplication key.
    pub id: Uuid,
    /// Set when read back from the outbox; `None` for an event just committed.
    #[serde(skip)]
    pub position: Option<Position>,
    pub tenant_id: TenantId,
    /// E.g. `user.created`, `role.assigned`, `group.member_added`.
    #[serde(rename = "type")]
    pub event_type: String,
    pub entity_type: String,
    pub entity_id: Option<Uuid>,
    pub actor_type: ActorType,
    pub actor_id: Option<Uuid>,
    /// The entity after the change (before it, for a removal).
    pub data: Value,
    pub occurred_at: DateTime<Utc>,
    pub request_id: Option<String>,
}

impl Event {
    /// The event of the change an audit record records.
    pub fn of(a: &AuditEvent) -> Self {
        Self {
            id: a.id.into_uuid(),
            position: None,
            tenant_id: a.tenant_id,
            event_type: event_type(&a.action).to_owned(),
            entity_type: a.entity_type.clone(),
            entity_id: a.entity_id,
            actor_type: a.actor_type,
            actor_id: a.actor_id,
            data: a
                .after
                .clone()
                .or_else(|| a.before.clone())
                .unwrap_or(Value::Null),
            occurred_at: a.occurred_at,
            request_id: a.request_id.clone(),
        }
    }

    /// Whether the event can change an authorization decision of its tenant: a user's
    /// status, department, manager or attributes, roles, groups, memberships, policies or
    /// permissions.
    pub fn affects_authorization(&self) -> bool {
        let t = self.event_type.as_str();
        matches!(
            t.split('.').next(),
            Some("role" | "group" | "policy" | "permission")
        ) || matches!(t, "user.updated" | "user.deleted" | "user.restored")
    }

    /// Whether the event can change how an API key authenticates: a key revoked, or its
    /// tenant's status.
    pub fn affects_api_keys(&self) -> bool {
        matches!(
            self.event_type.as_str(),
            "api_key.revoked" | "tenant.updated" | "tenant.suspended"
        )
    }
}

/// The event type of an audit action: the same subject, the verb in the past tense.
/// Unknown actions keep their name (a test checks every action has its type).
pub fn event_type(action: &str) -> &str {
    match action {
        "tenant.create" => "tenant.created",
        "tenant.update" => "tenant.updated",
        "tenant.deactivate" => "tenant.suspended",
        "tenant.auth_settings.update" => "settings.updated",
        "api_key.create" => "api_key.created",
        "api_key.revoke" => "api_key.revoked",
        "user.create" => "user.created",
        "user.register" => "user.registered",
        "user.update" => "user.updated",
        "user.delete" => "user.deleted",
        "user.restore" => "user.restored",
        "user.seed" => "user.seeded",
        "user.lock" => "user.locked",
        "user.unlock" => "user.unlocked",
        "user.email_verify" => "user.email_verified",
        "auth.login" => "session.created",
        "auth.login_failure" => "auth.login_failed",
        "auth.magic_link.request" => "auth.magic_link_requested",
        "auth.password_reset.request" => "auth.password_reset_requested",
        "auth.email_verification.request" => "auth.email_verification_requested",
        "auth.invitation.create" => "invitation.created",
        "password.set" => "user.password_set",
        "password.change" => "user.password_changed",
        "password.reset" => "user.password_reset",
        "session.revoke" => "session.revoked",
        "mfa.totp.enrol" => "mfa.totp_enrolment_started",
        "mfa.totp.confirm" => "mfa.totp_enrolled",
        "mfa.totp.remove" => "mfa.totp_removed",
        "mfa.recovery_code.use" => "mfa.recovery_code_used",
        "mfa.recovery_codes.regenerate" => "mfa.recovery_codes_regenerated",
        "permission.create" => "permission.created",
        "role.create" => "role.created",
        "role.update" => "role.updated",
        "role.delete" => "role.deleted",
        "role.permissions.update" => "role.permissions_updated",
        "role.assign" => "role.assigned",
        "role.unassign" => "role.unassigned",
        "group.create" => "group.created",
        "group.update" => "group.updated",
        "group.delete" => "group.deleted",
        "group.member.add" => "group.member_added",
        "group.member.update" => "group.member_updated",
        "group.member.remove" => "group.member_removed",
        "group.role.grant" => "group.role_granted",
        "group.role.revoke" => "group.role_revoked",
        "policy.create" => "policy.created",
        "policy.update" => "policy.updated",
        "policy.delete" => "policy.deleted",
        "signing_key.rotate" => "signing_key.rotated",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::actions;

    #[test]
    fn every_audit_action_has_an_event_type() {
        for a in actions::ALL {
            let t = event_type(a);
            assert_ne!(t, *a, "{a} has no event type");
            assert_eq!(t.split('.').count(), 2, "{t}");
        }
    }

    #[test]
    fn positions_order_and_round_trip() {
        let a = Position::new(5, 9);
        let b = Position::new(6, 1);
        assert!(a < b);
        assert_eq!(Position::parse(&a.to_string()), Some(a));
        assert_eq!(Position::parse("x.1"), None);
    }
}
