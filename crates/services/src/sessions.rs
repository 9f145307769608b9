//! Sessions as their owner and administrators see them: listing and revoking. An
//! administrator revokes the sessions only of users they may manage.

use domain::auth::{RevokeScope, Session};
use domain::time::now;
use domain::{Error, Result, SessionId, UserId};

use crate::access::Target;
use crate::users::signed_in;
use crate::{Actor, Services};

impl Services {
    /// A user's active sessions, newest first.
    pub async fn list_sessions(&self, actor: &Actor, id: UserId) -> Result<Vec<Session>> {
        let user = self.core.store.get_user(actor.tenant, id).await?;
        self.authorize(actor, "sessions", "read", Target::User(&user))
            .await?;
        self.core.store.list_sessions(actor.tenant, id, now()).await
    }

    /// Revokes a user's sessions: all of them, or one (`NotFound` for a session that is not
    /// an active one of the user).
    pub async fn revoke_sessions(
        &self,
        actor: &Actor,
        id: UserId,
        session: Option<SessionId>,
    ) -> Result<u64> {
        let user = self.core.store.get_user(actor.tenant, id).await?;
        self.authorize(actor, "sessions", "delete", Target::User(&user))
            .await?;
        self.core.may_manage(actor, &user).await?;
        let scope = session.map_or(RevokeScope::All, RevokeScope::One);
        self.core
            .store
            .revoke_sessions(actor.tenant, id, scope, "revoked_by_admin", &actor.audit())
            .await
    }

    /// The actor's own active sessions, newest first.
    pub async fn my_sessions(&self, actor: &Actor) -> Result<Vec<Session>> {
        let me = signed_in(actor)?;
        self.core.store.list_sessions(actor.tenant, me, now()).await
    }

    /// Signs out the actor's other sessions (`None`) or one of them (the current one too).
    pub async fn revoke_my_sessions(&self, actor: &Actor, one: Option<SessionId>) -> Result<u64> {
        let me = signed_in(actor)?;
        let current = actor
            .session()
            .map(|s| s.session_id)
            .ok_or(Error::NotFound { entity: "session" })?;
        let scope = one.map_or(RevokeScope::AllExcept(current), RevokeScope::One);
        self.core
            .store
            .revoke_sessions(actor.tenant, me, scope, "revoked_by_user", &actor.audit())
            .await
    }
}
