//! Who acts, and the circumstances of the request: what every service operation is given
//! first. The interface layer builds an [`Actor`] from a credential (an API key, an access
//! token or a session cookie); the CLI and the server's own jobs act as [`ActorKind::System`].

use std::net::IpAddr;

use domain::audit::{Actor as AuditActor, AuditContext};
use domain::auth::SessionKind;
use domain::{ApiKeyId, SessionId, TenantId, UserId};

/// Where a request comes from, for audit records and rate limits.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
}

impl RequestMeta {
    pub fn audit(&self, actor: AuditActor) -> AuditContext {
        AuditContext {
            actor,
            ip: self.ip.map(|ip| ip.to_string()),
            user_agent: self.user_agent.clone(),
            request_id: self.request_id.clone(),
        }
    }
}

/// The session behind a request authenticated by a user credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPrincipal {
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub session_id: SessionId,
    pub kind: SessionKind,
    pub amr: Vec<String>,
    pub mfa_level: u8,
}

/// How the actor proved who they are.
#[derive(Debug, Clone)]
pub enum ActorKind {
    /// An API key: the tenant's administrator credential, with every permission in its
    /// tenant; a platform-admin key also manages tenants and super administrators.
    /// Policies do not apply to keys.
    ApiKey { id: ApiKeyId, platform_admin: bool },
    /// A signed-in user: what their roles and the tenant's policies allow.
    User(SessionPrincipal),
    /// The operator (CLI) or the server itself: platform powers.
    System,
}

/// The acting principal of an operation, in its tenant.
#[derive(Debug, Clone)]
pub struct Actor {
    pub tenant: TenantId,
    pub kind: ActorKind,
    pub meta: RequestMeta,
}

impl Actor {
    /// The operator or the server acting in `tenant`.
    pub fn system(tenant: TenantId) -> Self {
        Self {
            tenant,
            kind: ActorKind::System,
            meta: RequestMeta::default(),
        }
    }

    /// The operator (CLI) acting for the platform, in no tenant of its own.
    pub fn operator() -> Self {
        Self::system(TenantId::from_uuid(uuid::Uuid::nil()))
    }

    /// The signed-in user acting.
    pub fn user(session: SessionPrincipal, meta: RequestMeta) -> Self {
        Self {
            tenant: session.tenant_id,
            kind: ActorKind::User(session),
            meta,
        }
    }

    /// Who the audit trail names.
    pub fn audit_actor(&self) -> AuditActor {
        match &self.kind {
            ActorKind::ApiKey { id, .. } => AuditActor::ApiKey(*id),
            ActorKind::User(s) => AuditActor::User(s.user_id),
            ActorKind::System => AuditActor::System,
        }
    }

    /// The audit context of changes this actor makes.
    pub fn audit(&self) -> AuditContext {
        self.meta.audit(self.audit_actor())
    }

    /// The signed-in user, if the actor is one.
    pub fn user_id(&self) -> Option<UserId> {
        match &self.kind {
            ActorKind::User(s) => Some(s.user_id),
            _ => None,
        }
    }

    /// The signed-in user's session, if the actor is one.
    pub fn session(&self) -> Option<&SessionPrincipal> {
        match &self.kind {
            ActorKind::User(s) => Some(s),
            _ => None,
        }
    }
}
