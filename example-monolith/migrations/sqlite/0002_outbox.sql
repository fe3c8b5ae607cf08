-- The transactional outbox: domain events written in the same transaction as the change
-- they describe, and published afterwards by the relay (at least once; consumers dedupe
-- on event_id). Keep migrations/postgres in step.
CREATE TABLE outbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id     TEXT    NOT NULL UNIQUE,
    topic        TEXT    NOT NULL,
    aggregate_id INTEGER NOT NULL,
    payload      TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    published_at INTEGER
);
CREATE INDEX outbox_unpublished ON outbox (published_at, id);

-- Orders not settled with the payments service yet: the charge's idempotency key.
ALTER TABLE orders ADD COLUMN payment_key TEXT;
-- When the order last changed status, for the few transitions that are timed (a
-- cancellation waiting for its refund).
ALTER TABLE orders ADD COLUMN status_at INTEGER;
