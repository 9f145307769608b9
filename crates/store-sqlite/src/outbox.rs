//! Reading the outbox in commit order. With one writer, every committed row is final and
//! `seq` order is commit order: a position is `(seq, 0)`.

use domain::audit::ActorType;
use domain::events::{Event, Position};
use domain::ids::TenantId;
use domain::time::{to_micros, Timestamp};
use serde_json::Value;
use sqlx::sqlite::{SqlitePool, SqliteRow};

use crate::error::{corrupt, db_err, Result};
use crate::rows::{get, parse_enum, ts};

pub(crate) async fn head(reader: &SqlitePool) -> Result<Position> {
    let seq: Option<i64> = sqlx::query_scalar("SELECT max(seq) FROM outbox")
        .fetch_one(reader)
        .await
        .map_err(db_err)?;
    Ok(Position::new(seq.unwrap_or(0), 0))
}

pub(crate) async fn read(reader: &SqlitePool, after: Position, limit: u32) -> Result<Vec<Event>> {
    let rows = sqlx::query(
        "SELECT seq, id, tenant_id, event_type, entity_type, entity_id, actor_type, actor_id, \
         data, occurred_at, request_id FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
    )
    .bind(after.major)
    .bind(i64::from(limit))
    .fetch_all(reader)
    .await
    .map_err(db_err)?;
    rows.iter().map(event_from_row).collect()
}

pub(crate) async fn prune(writer: &SqlitePool, before: Timestamp) -> Result<u64> {
    let done = sqlx::query(
        "DELETE FROM outbox WHERE occurred_at < ?1 \
         AND seq <= COALESCE((SELECT min(major) FROM outbox_cursors), \
                             (SELECT max(seq) FROM outbox))",
    )
    .bind(to_micros(before))
    .execute(writer)
    .await
    .map_err(db_err)?;
    Ok(done.rows_affected())
}

pub(crate) async fn cursor(reader: &SqlitePool, consumer: &str) -> Result<Option<Position>> {
    let row: Option<(i64, i64)> =
        sqlx::query_as("SELECT major, minor FROM outbox_cursors WHERE consumer = ?")
            .bind(consumer)
            .fetch_optional(reader)
            .await
            .map_err(db_err)?;
    Ok(row.map(|(major, minor)| Position::new(major, minor)))
}

pub(crate) async fn save_cursor(writer: &SqlitePool, consumer: &str, at: Position) -> Result<()> {
    sqlx::query(
        "INSERT INTO outbox_cursors (consumer, major, minor, updated_at) VALUES (?, ?, ?, ?) \
         ON CONFLICT (consumer) DO UPDATE SET major = excluded.major, minor = excluded.minor, \
         updated_at = excluded.updated_at",
    )
    .bind(consumer)
    .bind(at.major)
    .bind(at.minor)
    .bind(to_micros(domain::time::now()))
    .execute(writer)
    .await
    .map_err(db_err)?;
    Ok(())
}

fn event_from_row(row: &SqliteRow) -> Result<Event> {
    let data: String = get(row, "data")?;
    Ok(Event {
        id: get(row, "id")?,
        position: Some(Position::new(get(row, "seq")?, 0)),
        tenant_id: TenantId::from_uuid(get(row, "tenant_id")?),
        event_type: get(row, "event_type")?,
        entity_type: get(row, "entity_type")?,
        entity_id: get(row, "entity_id")?,
        actor_type: parse_enum::<ActorType>(&get::<String>(row, "actor_type")?)?,
        actor_id: get(row, "actor_id")?,
        data: serde_json::from_str::<Value>(&data)
            .map_err(|e| corrupt(format_args!("event data: {e}")))?,
        occurred_at: ts(get(row, "occurred_at")?)?,
        request_id: get(row, "request_id")?,
    })
}
