//! Reading the outbox in commit order: only rows of transactions older than the reader's
//! snapshot xmin (every such transaction has ended), ordered by (transaction, row); a
//! position is `(txid, seq)`. See the migration `0004_outbox.sql`.

use domain::audit::ActorType;
use domain::events::{Event, Position};
use domain::{Result, TenantId, Timestamp};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgPool, Row};

use crate::error::{corrupt, db};

/// Nothing older than the oldest running transaction can still appear: a reader that
/// starts just before it misses nothing.
pub(crate) async fn head(pool: &PgPool) -> Result<Position> {
    let xmin: i64 =
        sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
            .fetch_one(pool)
            .await
            .map_err(db)?;
    Ok(Position::new(xmin - 1, i64::MAX))
}

pub(crate) async fn read(pool: &PgPool, after: Position, limit: u32) -> Result<Vec<Event>> {
    let rows = sqlx::query(
        "SELECT txid::text::bigint AS major, seq, id, tenant_id, event_type, entity_type, \
         entity_id, actor_type, actor_id, data, occurred_at, request_id FROM outbox \
         WHERE (txid, seq) > ($1::text::xid8, $2) \
         AND txid < pg_snapshot_xmin(pg_current_snapshot()) \
         ORDER BY txid, seq LIMIT $3",
    )
    .bind(after.major.to_string())
    .bind(after.minor)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(db)?;
    rows.iter().map(event_from_row).collect()
}

pub(crate) async fn prune(pool: &PgPool, before: Timestamp) -> Result<u64> {
    let done = sqlx::query(
        "DELETE FROM outbox WHERE occurred_at < $1 AND NOT EXISTS ( \
         SELECT 1 FROM outbox_cursors c WHERE (c.major::text::xid8, c.minor) < (outbox.txid, outbox.seq))",
    )
    .bind(before)
    .execute(pool)
    .await
    .map_err(db)?;
    Ok(done.rows_affected())
}

pub(crate) async fn cursor(pool: &PgPool, consumer: &str) -> Result<Option<Position>> {
    let row: Option<(i64, i64)> =
        sqlx::query_as("SELECT major, minor FROM outbox_cursors WHERE consumer = $1")
            .bind(consumer)
            .fetch_optional(pool)
            .await
            .map_err(db)?;
    Ok(row.map(|(major, minor)| Position::new(major, minor)))
}

pub(crate) async fn save_cursor(pool: &PgPool, consumer: &str, at: Position) -> Result<()> {
    sqlx::query(
        "INSERT INTO outbox_cursors (consumer, major, minor, updated_at) VALUES ($1, $2, $3, now()) \
         ON CONFLICT (consumer) DO UPDATE SET major = excluded.major, minor = excluded.minor, \
         updated_at = excluded.updated_at",
    )
    .bind(consumer)
    .bind(at.major)
    .bind(at.minor)
    .execute(pool)
    .await
    .map_err(db)?;
    Ok(())
}

fn event_from_row(row: &PgRow) -> Result<Event> {
    let get_err = |e| db(e);
    let actor_type: String = row.try_get("actor_type").map_err(get_err)?;
    let data: Json<serde_json::Value> = row.try_get("data").map_err(get_err)?;
    Ok(Event {
        id: row.try_get("id").map_err(get_err)?,
        position: Some(Position::new(
            row.try_get("major").map_err(get_err)?,
            row.try_get("seq").map_err(get_err)?,
        )),
        tenant_id: TenantId::from_uuid(row.try_get("tenant_id").map_err(get_err)?),
        event_type: row.try_get("event_type").map_err(get_err)?,
        entity_type: row.try_get("entity_type").map_err(get_err)?,
        entity_id: row.try_get("entity_id").map_err(get_err)?,
        actor_type: actor_type
            .parse::<ActorType>()
            .map_err(|_| corrupt("actor type", &actor_type))?,
        actor_id: row.try_get("actor_id").map_err(get_err)?,
        data: data.0,
        occurred_at: row.try_get("occurred_at").map_err(get_err)?,
        request_id: row.try_get("request_id").map_err(get_err)?,
    })
}
