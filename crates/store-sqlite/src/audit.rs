//! The audit trail and the outbox rows that go with it: [`insert`] writes a change's audit
//! record and its event together, in the caller's transaction; and reading the trail back.

use domain::audit::{AuditEvent, AuditQuery};
use domain::events::Event;
use domain::ids::{AuditEventId, TenantId};
use domain::page::{encode_cursor, Page};
use domain::time::to_micros;
use sqlx::sqlite::{SqliteConnection, SqlitePool};
use sqlx::{QueryBuilder, Sqlite};

use crate::error::{db_err, Result};
use crate::rows::{audit_from_row, AUDIT_COLS};
use crate::split_page;

/// Appends the audit record of a change and its outbox event, in the caller's transaction.
pub(crate) async fn insert(conn: &mut SqliteConnection, ev: &AuditEvent) -> Result<Event> {
    sqlx::query(
        "INSERT INTO audit_events (id, tenant_id, occurred_at, actor_type, actor_id, action, \
         entity_type, entity_id, \"before\", \"after\", ip, user_agent, request_id) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(ev.id.into_uuid())
    .bind(ev.tenant_id.into_uuid())
    .bind(to_micros(ev.occurred_at))
    .bind(ev.actor_type.as_str())
    .bind(ev.actor_id)
    .bind(&ev.action)
    .bind(&ev.entity_type)
    .bind(ev.entity_id)
    .bind(ev.before.as_ref().map(|v| v.to_string()))
    .bind(ev.after.as_ref().map(|v| v.to_string()))
    .bind(&ev.ip)
    .bind(&ev.user_agent)
    .bind(&ev.request_id)
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    let event = Event::of(ev);
    sqlx::query(
        "INSERT INTO outbox (id, tenant_id, event_type, entity_type, entity_id, actor_type, \
         actor_id, data, occurred_at, request_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(event.id)
    .bind(event.tenant_id.into_uuid())
    .bind(&event.event_type)
    .bind(&event.entity_type)
    .bind(event.entity_id)
    .bind(event.actor_type.as_str())
    .bind(event.actor_id)
    .bind(event.data.to_string())
    .bind(to_micros(event.occurred_at))
    .bind(&event.request_id)
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    Ok(event)
}

/// Rows per statement of [`insert_all`]: 13 parameters each, well under SQLite's limit of
/// 32,766 per statement.
const INSERT_BATCH: usize = 500;

/// Appends the audit records of several changes and their outbox events, in order, in the
/// caller's transaction: a statement per table per batch, since every statement costs a
/// round trip to the connection's thread.
pub(crate) async fn insert_all(
    conn: &mut SqliteConnection,
    events: &[AuditEvent],
) -> Result<Vec<Event>> {
    let mut out = Vec::with_capacity(events.len());
    for batch in events.chunks(INSERT_BATCH) {
        let mut qb = QueryBuilder::<Sqlite>::new(
            "INSERT INTO audit_events (id, tenant_id, occurred_at, actor_type, actor_id, action, \
             entity_type, entity_id, \"before\", \"after\", ip, user_agent, request_id) ",
        );
        qb.push_values(batch, |mut b, ev| {
            b.push_bind(ev.id.into_uuid())
                .push_bind(ev.tenant_id.into_uuid())
                .push_bind(to_micros(ev.occurred_at))
                .push_bind(ev.actor_type.as_str())
                .push_bind(ev.actor_id)
                .push_bind(ev.action.clone())
                .push_bind(ev.entity_type.clone())
                .push_bind(ev.entity_id)
                .push_bind(ev.before.as_ref().map(|v| v.to_string()))
                .push_bind(ev.after.as_ref().map(|v| v.to_string()))
                .push_bind(ev.ip.clone())
                .push_bind(ev.user_agent.clone())
                .push_bind(ev.request_id.clone());
        });
        qb.build().execute(&mut *conn).await.map_err(db_err)?;
        let outbox: Vec<Event> = batch.iter().map(Event::of).collect();
        let mut qb = QueryBuilder::<Sqlite>::new(
            "INSERT INTO outbox (id, tenant_id, event_type, entity_type, entity_id, actor_type, \
             actor_id, data, occurred_at, request_id) ",
        );
        qb.push_values(&outbox, |mut b, e| {
            b.push_bind(e.id)
                .push_bind(e.tenant_id.into_uuid())
                .push_bind(e.event_type.clone())
                .push_bind(e.entity_type.clone())
                .push_bind(e.entity_id)
                .push_bind(e.actor_type.as_str())
                .push_bind(e.actor_id)
                .push_bind(e.data.to_string())
                .push_bind(to_micros(e.occurred_at))
                .push_bind(e.request_id.clone());
        });
        qb.build().execute(&mut *conn).await.map_err(db_err)?;
        out.extend(outbox);
    }
    Ok(out)
}

/// A page of the tenant's trail, newest first.
pub(crate) async fn list(
    reader: &SqlitePool,
    tenant: TenantId,
    q: &AuditQuery,
) -> Result<Page<AuditEvent>> {
    let mut qb: QueryBuilder<'_, Sqlite> = QueryBuilder::new(format!(
        "SELECT {AUDIT_COLS} FROM audit_events WHERE tenant_id = "
    ));
    qb.push_bind(tenant.into_uuid());
    if let Some(a) = q.actor_id {
        qb.push(" AND actor_id = ").push_bind(a);
    }
    if let Some(a) = q.actor_type {
        qb.push(" AND actor_type = ").push_bind(a.as_str());
    }
    if let Some(a) = &q.action {
        qb.push(" AND action = ").push_bind(a.as_str());
    }
    if let Some(e) = &q.entity_type {
        qb.push(" AND entity_type = ").push_bind(e.as_str());
    }
    if let Some(e) = q.entity_id {
        qb.push(" AND entity_id = ").push_bind(e);
    }
    if let Some(t) = q.since {
        qb.push(" AND occurred_at >= ").push_bind(to_micros(t));
    }
    if let Some(t) = q.until {
        qb.push(" AND occurred_at < ").push_bind(to_micros(t));
    }
    if let Some(b) = q.before_id {
        qb.push(" AND id < ").push_bind(b.into_uuid());
    }
    qb.push(" ORDER BY id DESC LIMIT ")
        .push_bind(i64::from(q.limit.get()) + 1);
    let rows = qb.build().fetch_all(reader).await.map_err(db_err)?;
    let items = rows
        .iter()
        .map(audit_from_row)
        .collect::<Result<Vec<_>>>()?;
    let (items, more) = split_page(items, q.limit.get());
    let next_cursor = match items.last() {
        Some(last) if more => Some(encode_cursor::<AuditEventId>(&last.id)),
        _ => None,
    };
    Ok(Page { items, next_cursor })
}
