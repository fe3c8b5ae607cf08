-- The payments service's own database (SQLite). Keep migrations/postgres in step.
-- One row per idempotency key: a key charges at most once, whatever the retries.
CREATE TABLE charges (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    charge_key   TEXT    NOT NULL UNIQUE,
    order_id     INTEGER NOT NULL,
    amount_cents INTEGER NOT NULL,
    status       TEXT    NOT NULL,
    card_last4   TEXT    NOT NULL,
    reference    TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX charges_order ON charges (order_id);
