//! The audit trail: reading it. Below `audit_logs:read:all`, a user reads the events they
//! caused.

use domain::audit::{AuditEvent, AuditQuery};
use domain::page::Page;
use domain::Result;

use crate::access::{Reach, Target};
use crate::{Actor, Services};

impl Services {
    pub async fn list_audit_events(
        &self,
        actor: &Actor,
        query: AuditQuery,
    ) -> Result<Page<AuditEvent>> {
        let reach = self
            .authorize(actor, "audit_logs", "read", Target::Collection)
            .await?;
        let query = match (reach, actor.user_id()) {
            (Reach::All, _) | (_, None) => query,
            (_, Some(me)) => AuditQuery {
                actor_id: Some(me.into_uuid()),
                ..query
            },
        };
        self.core
            .store
            .list_audit_events(actor.tenant, &query)
            .await
    }
}
