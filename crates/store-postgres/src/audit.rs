//! The audit trail: appending events inside mutations, and reading them back.

use domain::audit::{AuditEvent, AuditQuery};
use domain::events::Event;
use domain::page::encode_cursor;
use domain::{Page, Result, TenantId};
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{PgConnection, Postgres, QueryBuilder};

use crate::error::db;
use crate::rows::{self, AUDIT_COLUMNS};
use crate::PgStore;

/// Binds the 13 values of `ev` in column order: id, tenant_id, occurred_at, actor_type,
/// actor_id, action, entity_type, entity_id, before, after, ip, user_agent, request_id.
pub(crate) fn bind_event<'q>(
    q: Query<'q, Postgres, PgArguments>,
    ev: &'q AuditEvent,
) -> Query<'q, Postgres, PgArguments> {
    q.bind(ev.id.into_uuid())
        .bind(ev.tenant_id.into_uuid())
        .bind(ev.occurred_at)
        .bind(ev.actor_type.as_str())
        .bind(ev.actor_id)
        .bind(&ev.action)
        .bind(&ev.entity_type)
        .bind(ev.entity_id)
        .bind(ev.before.as_ref())
        .bind(ev.after.as_ref())
        .bind(ev.ip.as_deref())
        .bind(ev.user_agent.as_deref())
        .bind(ev.request_id.as_deref())
}

/// Appends the audit record of a change and its outbox event, in the caller's
/// transaction, in one statement.
pub(crate) async fn insert(conn: &mut PgConnection, ev: &AuditEvent) -> Result<Event> {
    let event = Event::of(ev);
    let q = sqlx::query(
        "WITH a AS (INSERT INTO audit_events (id, tenant_id, occurred_at, actor_type, actor_id, \
         action, entity_type, entity_id, before, after, ip, user_agent, request_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)) \
         INSERT INTO outbox (id, tenant_id, event_type, entity_type, entity_id, actor_type, \
         actor_id, data, occurred_at, request_id) \
         VALUES ($1, $2, $14, $7, $8, $4, $5, $15, $3, $13)",
    );
    bind_event(q, ev)
        .bind(&event.event_type)
        .bind(&event.data)
        .execute(conn)
        .await
        .map_err(db)?;
    Ok(event)
}

/// Events per statement of [`insert_all`] (13 parameters each, under the protocol's limit
/// of 65,535).
const INSERT_BATCH: usize = 1_000;

/// Appends `events` (and their outbox rows) in the caller's transaction, in as few
/// statements as possible.
pub(crate) async fn insert_all(conn: &mut PgConnection, events: &[AuditEvent]) -> Result<()> {
    if let [ev] = events {
        insert(conn, ev).await?;
        return Ok(());
    }
    for batch in events.chunks(INSERT_BATCH) {
        let mut qb = QueryBuilder::<Postgres>::new(
            "INSERT INTO audit_events (id, tenant_id, occurred_at, actor_type, actor_id, action, \
             entity_type, entity_id, before, after, ip, user_agent, request_id) ",
        );
        qb.push_values(batch, |mut b, ev| {
            b.push_bind(ev.id.into_uuid())
                .push_bind(ev.tenant_id.into_uuid())
                .push_bind(ev.occurred_at)
                .push_bind(ev.actor_type.as_str())
                .push_bind(ev.actor_id)
                .push_bind(ev.action.as_str())
                .push_bind(ev.entity_type.as_str())
                .push_bind(ev.entity_id)
                .push_bind(ev.before.as_ref())
                .push_bind(ev.after.as_ref())
                .push_bind(ev.ip.as_deref())
                .push_bind(ev.user_agent.as_deref())
                .push_bind(ev.request_id.as_deref());
        });
        qb.build()
            .persistent(false)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
        let outbox: Vec<Event> = batch.iter().map(Event::of).collect();
        let mut qb = QueryBuilder::<Postgres>::new(
            "INSERT INTO outbox (id, tenant_id, event_type, entity_type, entity_id, actor_type, \
             actor_id, data, occurred_at, request_id) ",
        );
        qb.push_values(&outbox, |mut b, e| {
            b.push_bind(e.id)
                .push_bind(e.tenant_id.into_uuid())
                .push_bind(e.event_type.as_str())
                .push_bind(e.entity_type.as_str())
                .push_bind(e.entity_id)
                .push_bind(e.actor_type.as_str())
                .push_bind(e.actor_id)
                .push_bind(&e.data)
                .push_bind(e.occurred_at)
                .push_bind(e.request_id.as_deref());
        });
        qb.build()
            .persistent(false)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
    }
    Ok(())
}

impl PgStore {
    pub(crate) async fn list_audit_events_impl(
        &self,
        tenant: TenantId,
        q: &AuditQuery,
    ) -> Result<Page<AuditEvent>> {
        let limit = q.limit.get() as usize;
        let mut qb = QueryBuilder::<Postgres>::new("SELECT ");
        qb.push(AUDIT_COLUMNS)
            .push(" FROM audit_events WHERE tenant_id = ")
            .push_bind(tenant.into_uuid());
        if let Some(v) = q.actor_id {
            qb.push(" AND actor_id = ").push_bind(v);
        }
        if let Some(v) = q.actor_type {
            qb.push(" AND actor_type = ").push_bind(v.as_str());
        }
        if let Some(v) = &q.action {
            qb.push(" AND action = ").push_bind(v.as_str());
        }
        if let Some(v) = &q.entity_type {
            qb.push(" AND entity_type = ").push_bind(v.as_str());
        }
        if let Some(v) = q.entity_id {
            qb.push(" AND entity_id = ").push_bind(v);
        }
        if let Some(v) = q.since {
            qb.push(" AND occurred_at >= ").push_bind(v);
        }
        if let Some(v) = q.until {
            qb.push(" AND occurred_at < ").push_bind(v);
        }
        if let Some(v) = q.before_id {
            qb.push(" AND id < ").push_bind(v.into_uuid());
        }
        qb.push(" ORDER BY id DESC LIMIT ")
            .push_bind(limit as i64 + 1);
        let fetched = qb
            .build()
            .persistent(false)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        let mut items = fetched
            .iter()
            .map(rows::audit_event)
            .collect::<Result<Vec<_>>>()?;
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|e| encode_cursor(&e.id))
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }
}
