-- The transactional outbox: one row per change, written in the change's transaction with
-- its audit record (events.rs in the domain crate says what a row means).
--
-- Commit order: a sequence value is taken at insert, not at commit, so `seq` alone is not
-- the order in which rows become visible. Each row also records its transaction
-- (`txid`); a reader reads only rows of transactions older than its snapshot's xmin (all
-- of them have ended: nothing can still appear before such a row) in (txid, seq) order,
-- and resumes after the last (txid, seq) it read. Changes that must be ordered lock the
-- same row first, so their transactions' ids follow their commit order.
CREATE TABLE outbox (
    txid        xid8        NOT NULL DEFAULT pg_current_xact_id(),
    seq         bigserial   NOT NULL,
    id          uuid        NOT NULL,
    tenant_id   uuid        NOT NULL,
    event_type  text        NOT NULL,
    entity_type text        NOT NULL,
    entity_id   uuid        NULL,
    actor_type  text        NOT NULL,
    actor_id    uuid        NULL,
    data        jsonb       NOT NULL,
    occurred_at timestamptz NOT NULL,
    request_id  text        NULL,
    PRIMARY KEY (txid, seq)
);

CREATE INDEX outbox_occurred_at_idx ON outbox (occurred_at);

-- Positions of the consumers that persist theirs (webhooks, feeds, NATS): pruning keeps
-- what one of them has not read yet.
CREATE TABLE outbox_cursors (
    consumer   text        PRIMARY KEY,
    major      bigint      NOT NULL,
    minor      bigint      NOT NULL,
    updated_at timestamptz NOT NULL
);
