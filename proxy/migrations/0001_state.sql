-- The live state of a fleet of ficus proxies: routes' positions (with a version each, taken from
-- one sequence, so the highest version seen says how far an instance has read), the audit log,
-- shadow comparison totals and rollout progress.
CREATE SEQUENCE IF NOT EXISTS ficus_version;

CREATE TABLE IF NOT EXISTS ficus_routes (
    name TEXT PRIMARY KEY,
    stage TEXT NOT NULL,
    percent_bp INTEGER NOT NULL,
    version BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS ficus_audit (
    id BIGSERIAL PRIMARY KEY,
    time TEXT NOT NULL,
    route TEXT NOT NULL,
    from_stage TEXT NOT NULL,
    from_percent DOUBLE PRECISION NOT NULL,
    to_stage TEXT NOT NULL,
    to_percent DOUBLE PRECISION NOT NULL,
    why TEXT NOT NULL,
    by_whom TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ficus_audit_route ON ficus_audit (route, id);

CREATE TABLE IF NOT EXISTS ficus_shadow (
    route TEXT PRIMARY KEY,
    compared BIGINT NOT NULL DEFAULT 0,
    matched BIGINT NOT NULL DEFAULT 0,
    mismatched BIGINT NOT NULL DEFAULT 0,
    dropped BIGINT NOT NULL DEFAULT 0,
    failed BIGINT NOT NULL DEFAULT 0,
    skipped BIGINT NOT NULL DEFAULT 0,
    sampled_out BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS ficus_rollouts (
    route TEXT PRIMARY KEY,
    step INTEGER NOT NULL,
    percent_bp INTEGER NOT NULL,
    step_started_ms BIGINT NOT NULL
);
