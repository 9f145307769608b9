-- The transactional outbox: one row per change, written in the change's transaction with
-- its audit record (events.rs in the domain crate says what a row means). SQLite has one
-- writer, so `seq` order is commit order; a reader's position is (seq, 0).
CREATE TABLE outbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          BLOB    NOT NULL,
    tenant_id   BLOB    NOT NULL,
    event_type  TEXT    NOT NULL,
    entity_type TEXT    NOT NULL,
    entity_id   BLOB,
    actor_type  TEXT    NOT NULL,
    actor_id    BLOB,
    data        TEXT    NOT NULL,
    occurred_at INTEGER NOT NULL,
    request_id  TEXT
);

CREATE INDEX outbox_by_time ON outbox (occurred_at);

-- Positions of the consumers that persist theirs (webhooks, feeds, NATS): pruning keeps
-- what one of them has not read yet.
CREATE TABLE outbox_cursors (
    consumer   TEXT    NOT NULL PRIMARY KEY,
    major      INTEGER NOT NULL,
    minor      INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
