-- The notifications service's own database (SQLite). Keep migrations/postgres in step.
CREATE TABLE notifications (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    INTEGER NOT NULL,
    order_id   INTEGER,
    kind       TEXT    NOT NULL,
    subject    TEXT    NOT NULL,
    body       TEXT    NOT NULL,
    status     TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    event_id   TEXT    NOT NULL UNIQUE,
    event_seq  INTEGER NOT NULL
);
CREATE INDEX notifications_user ON notifications (user_id);

-- The idempotent consumer's memory: an event id seen once is never acted on again.
CREATE TABLE processed_events (
    event_id     TEXT    PRIMARY KEY,
    topic        TEXT    NOT NULL,
    seq          INTEGER NOT NULL,
    processed_at INTEGER NOT NULL
);
