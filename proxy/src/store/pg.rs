//! The route state a fleet of proxies shares in PostgreSQL: `[state] store = "postgres://…"`.
//!
//! What it holds: each route's position (stage and percent) with a version, the audit log,
//! the shadow comparison totals and the rollout progress; its tables come with the proxy's
//! own migrations (`proxy/migrations`). The config file still defines the routes (paths,
//! upstreams, policies); their positions in it only seed the store the first time a route is
//! seen.
//!
//! How instances agree:
//! - **A version is the truth.** Every change takes the next value of one sequence as the
//!   route's version, so "everything above version N" is what an instance has not read yet.
//! - **Compare-and-set.** A change names the version it was decided on; if the route moved
//!   meanwhile the update matches no row and the change is refused ([`StoreError::Conflict`],
//!   409 at the admin API). Two conflicting changes: one succeeds, one is told. The audit
//!   record is written in the same transaction as the change.
//! - **LISTEN/NOTIFY is the wake-up**, not the data: a change notifies `ficus_state`; every
//!   instance then reads what is above its version. Notifications sent while an instance was
//!   disconnected are lost, so it also reads after every reconnect and every few seconds.
//!
//! The store runs on a small runtime of its own (`ficus-store`); its calls block the calling
//! thread (the admin API and the rollout controller call it from blocking tasks), never the
//! request path, which reads only memory.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};

use super::{RolloutRecord, ShadowTotals, StoreError, Stored, unavailable};
use crate::audit::{Entry, Position as AuditPosition};
use crate::policy::model::{Percent, Stage};
use crate::policy::stage::Position;

/// The notification channel.
const CHANNEL: &str = "ficus_state";
/// How often an instance reads the store even without a notification.
pub const POLL: Duration = Duration::from_secs(3);

/// The PostgreSQL store.
pub struct PgStore {
    /// Always `Some` until dropped (taken then, to shut it down without blocking).
    rt: Option<tokio::runtime::Runtime>,
    pool: PgPool,
    url: String,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

fn stage_of(text: &str) -> Result<Stage, StoreError> {
    Stage::parse(text).ok_or_else(|| unavailable(format!("the store holds an unknown stage `{text}`")))
}

fn percent_of(bp: i32) -> Percent {
    Percent::from_percent(f64::from(bp.clamp(0, 10_000)) / 100.0).unwrap_or_default()
}

fn stored_of(row: &sqlx::postgres::PgRow) -> Result<(String, Stored), StoreError> {
    let name: String = row.try_get("name").map_err(unavailable)?;
    let stage: String = row.try_get("stage").map_err(unavailable)?;
    let bp: i32 = row.try_get("percent_bp").map_err(unavailable)?;
    let version: i64 = row.try_get("version").map_err(unavailable)?;
    let position = Position { stage: stage_of(&stage)?, percent: percent_of(bp) };
    Ok((name, Stored { position, version: version.max(0) as u64 }))
}

impl PgStore {
    /// Connects and brings the tables up to date. An error says what failed and where.
    pub fn connect(url: &str) -> Result<PgStore, StoreError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ficus-store")
            .enable_all()
            .build()
            .map_err(|e| unavailable(format!("cannot start the store's runtime: {e}")))?;
        let pool = on_runtime(&rt, async {
            let pool = PgPoolOptions::new()
                .max_connections(4)
                .acquire_timeout(Duration::from_secs(2))
                .connect(url)
                .await
                .map_err(|e| unavailable(format!("{}: {e}", shown(url))))?;
            sqlx::migrate!("./migrations")
                .run(&pool)
                .await
                .map_err(|e| unavailable(format!("{}: migrating the state tables: {e}", shown(url))))?;
            Ok::<_, StoreError>(pool)
        })?;
        Ok(PgStore { rt: Some(rt), pool, url: url.to_owned() })
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().expect("the store's runtime lives as long as the store")
    }

    fn block_on<T: Send>(&self, f: impl std::future::Future<Output = T> + Send) -> T {
        on_runtime(self.runtime(), f)
    }

    /// Adds the routes the store does not know yet (at `seed`'s positions) and returns every
    /// route's stored position.
    pub fn seed_and_load(&self, seed: &[(String, Position)]) -> Result<HashMap<String, Stored>, StoreError> {
        self.block_on(async {
            for (name, p) in seed {
                sqlx::query(
                    "INSERT INTO ficus_routes (name, stage, percent_bp, version) \
                     VALUES ($1, $2, $3, nextval('ficus_version')) ON CONFLICT (name) DO NOTHING",
                )
                .bind(name)
                .bind(p.stage.as_str())
                .bind(i32::from(p.percent.basis_points()))
                .execute(&self.pool)
                .await
                .map_err(unavailable)?;
            }
            let rows = sqlx::query("SELECT name, stage, percent_bp, version FROM ficus_routes")
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?;
            rows.iter().map(stored_of).collect()
        })
    }

    /// The routes changed after `version`.
    pub fn changes_since(&self, version: u64) -> Result<HashMap<String, Stored>, StoreError> {
        self.block_on(async {
            let rows = sqlx::query("SELECT name, stage, percent_bp, version FROM ficus_routes WHERE version > $1")
                .bind(version as i64)
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?;
            rows.iter().map(stored_of).collect()
        })
    }

    /// Moves `route` to `to` if it is still at version `expected`, with its audit record, in
    /// one transaction, and wakes the other instances. Returns the new version.
    pub fn change(&self, route: &str, expected: u64, to: Position, entry: &Entry) -> Result<u64, StoreError> {
        self.block_on(async {
            let mut tx = self.pool.begin().await.map_err(unavailable)?;
            let row = sqlx::query(
                "UPDATE ficus_routes SET stage = $1, percent_bp = $2, version = nextval('ficus_version') \
                 WHERE name = $3 AND version = $4 RETURNING version",
            )
            .bind(to.stage.as_str())
            .bind(i32::from(to.percent.basis_points()))
            .bind(route)
            .bind(expected as i64)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?;
            let Some(row) = row else {
                let now: Option<i64> = sqlx::query_scalar("SELECT version FROM ficus_routes WHERE name = $1")
                    .bind(route)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                return Err(StoreError::Conflict { route: route.to_owned(), now: now.unwrap_or(0).max(0) as u64 });
            };
            let version: i64 = row.try_get("version").map_err(unavailable)?;
            sqlx::query(
                "INSERT INTO ficus_audit (time, route, from_stage, from_percent, to_stage, to_percent, why, by_whom) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&entry.time)
            .bind(&entry.route)
            .bind(&entry.from.stage)
            .bind(entry.from.percent)
            .bind(&entry.to.stage)
            .bind(entry.to.percent)
            .bind(&entry.why)
            .bind(&entry.by)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(version.to_string())
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
            tx.commit().await.map_err(unavailable)?;
            Ok(version.max(0) as u64)
        })
    }

    /// The last 1,000 audit entries, oldest first (one route's when `route` is given).
    pub fn audit(&self, route: Option<&str>) -> Result<Vec<Entry>, StoreError> {
        self.block_on(async {
            let rows = sqlx::query(
                "SELECT * FROM (SELECT id, time, route, from_stage, from_percent, to_stage, to_percent, why, by_whom \
                 FROM ficus_audit WHERE $1::TEXT IS NULL OR route = $1 ORDER BY id DESC LIMIT 1000) recent ORDER BY id",
            )
            .bind(route)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
            rows.iter()
                .map(|r| {
                    let text = |c: &str| r.try_get::<String, _>(c).map_err(unavailable);
                    let number = |c: &str| r.try_get::<f64, _>(c).map_err(unavailable);
                    Ok(Entry {
                        time: text("time")?,
                        route: text("route")?,
                        from: AuditPosition { stage: text("from_stage")?, percent: number("from_percent")? },
                        to: AuditPosition { stage: text("to_stage")?, percent: number("to_percent")? },
                        why: text("why")?,
                        by: text("by_whom")?,
                    })
                })
                .collect()
        })
    }

    /// Adds counts to the routes' shadow totals and returns every route's totals.
    pub fn add_shadow(&self, deltas: &[(String, ShadowTotals)]) -> Result<HashMap<String, ShadowTotals>, StoreError> {
        self.block_on(async {
            for (route, d) in deltas.iter().filter(|(_, d)| !d.is_zero()) {
                let n = |v: u64| v as i64;
                sqlx::query(
                    "INSERT INTO ficus_shadow (route, compared, matched, mismatched, dropped, failed, skipped, sampled_out) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (route) DO UPDATE SET \
                     compared = ficus_shadow.compared + EXCLUDED.compared, matched = ficus_shadow.matched + EXCLUDED.matched, \
                     mismatched = ficus_shadow.mismatched + EXCLUDED.mismatched, dropped = ficus_shadow.dropped + EXCLUDED.dropped, \
                     failed = ficus_shadow.failed + EXCLUDED.failed, skipped = ficus_shadow.skipped + EXCLUDED.skipped, \
                     sampled_out = ficus_shadow.sampled_out + EXCLUDED.sampled_out",
                )
                .bind(route)
                .bind(n(d.compared))
                .bind(n(d.matched))
                .bind(n(d.mismatched))
                .bind(n(d.dropped))
                .bind(n(d.failed))
                .bind(n(d.skipped))
                .bind(n(d.sampled_out))
                .execute(&self.pool)
                .await
                .map_err(unavailable)?;
            }
            let rows = sqlx::query("SELECT * FROM ficus_shadow").fetch_all(&self.pool).await.map_err(unavailable)?;
            rows.iter()
                .map(|r| {
                    let n = |c: &str| r.try_get::<i64, _>(c).map(|v| v.max(0) as u64).map_err(unavailable);
                    Ok((
                        r.try_get::<String, _>("route").map_err(unavailable)?,
                        ShadowTotals {
                            compared: n("compared")?,
                            matched: n("matched")?,
                            mismatched: n("mismatched")?,
                            dropped: n("dropped")?,
                            failed: n("failed")?,
                            skipped: n("skipped")?,
                            sampled_out: n("sampled_out")?,
                        },
                    ))
                })
                .collect()
        })
    }

    /// Keeps (or, with `None`, forgets) where a route's rollout is.
    pub fn save_rollout(&self, route: &str, record: Option<RolloutRecord>) -> Result<(), StoreError> {
        self.block_on(async {
            match record {
                Some(r) => sqlx::query(
                    "INSERT INTO ficus_rollouts (route, step, percent_bp, step_started_ms) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (route) DO UPDATE SET step = EXCLUDED.step, percent_bp = EXCLUDED.percent_bp, \
                     step_started_ms = EXCLUDED.step_started_ms",
                )
                .bind(route)
                .bind(r.step as i32)
                .bind(i32::from(r.percent.basis_points()))
                .bind(r.step_started_ms as i64),
                None => sqlx::query("DELETE FROM ficus_rollouts WHERE route = $1").bind(route),
            }
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(unavailable)
        })
    }

    /// Every kept rollout.
    pub fn rollouts(&self) -> Result<HashMap<String, RolloutRecord>, StoreError> {
        self.block_on(async {
            let rows = sqlx::query("SELECT route, step, percent_bp, step_started_ms FROM ficus_rollouts")
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?;
            rows.iter()
                .map(|r| {
                    Ok((
                        r.try_get::<String, _>("route").map_err(unavailable)?,
                        RolloutRecord {
                            step: r.try_get::<i32, _>("step").map_err(unavailable)?.max(0) as usize,
                            percent: percent_of(r.try_get("percent_bp").map_err(unavailable)?),
                            step_started_ms: r.try_get::<i64, _>("step_started_ms").map_err(unavailable)?.max(0) as u64,
                        },
                    ))
                })
                .collect()
        })
    }

    /// Listens for changes on the store's runtime until `stop` is set: calls `wake` (on a
    /// blocking thread) at every notification, every [`POLL`], and after every reconnect; `up`
    /// says whether the listening connection is alive.
    pub fn watch(&self, wake: Arc<dyn Fn() + Send + Sync>, up: Arc<AtomicBool>, stop: Arc<AtomicBool>) {
        let url = self.url.clone();
        self.runtime().spawn(async move {
            let mut backoff = Duration::from_millis(100);
            while !stop.load(Ordering::Relaxed) {
                let mut listener = match PgListener::connect(&url).await {
                    Ok(l) => l,
                    Err(e) => {
                        if up.swap(false, Ordering::Relaxed) {
                            tracing::error!("state store: cannot listen ({e}); serving the last state, retrying");
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                        continue;
                    }
                };
                if let Err(e) = listener.listen(CHANNEL).await {
                    tracing::error!("state store: cannot listen on {CHANNEL}: {e}");
                    tokio::time::sleep(backoff).await;
                    continue;
                }
                backoff = Duration::from_millis(100);
                // Notifications sent while disconnected are lost: read everything new now.
                let w = wake.clone();
                let _ = tokio::task::spawn_blocking(move || w()).await;
                loop {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    match tokio::time::timeout(POLL, listener.recv()).await {
                        Ok(Ok(_)) | Err(_) => {
                            let w = wake.clone();
                            let _ = tokio::task::spawn_blocking(move || w()).await;
                        }
                        Ok(Err(e)) => {
                            if up.swap(false, Ordering::Relaxed) {
                                tracing::error!(
                                    "state store: connection lost ({e}); serving the last state, reconnecting"
                                );
                            }
                            break;
                        }
                    }
                }
            }
        });
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // The last owner may be an async task: a runtime must not be dropped there.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Runs `f` on `rt` and waits for it. A thread that already drives a runtime (a test calling
/// the proxy's start from async code, say) may not block on another: the wait then happens on
/// a thread of its own.
fn on_runtime<T: Send>(rt: &tokio::runtime::Runtime, f: impl std::future::Future<Output = T> + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return rt.block_on(f);
    }
    std::thread::scope(|s| s.spawn(|| rt.block_on(f)).join().expect("the store's call does not panic"))
}

/// A URL without its password, for messages.
fn shown(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}@{}", &url[..s + 3], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_their_password() {
        assert_eq!(shown("postgres://ficus:s3cret@db:5432/ficus"), "postgres://ficus@db:5432/ficus");
        assert_eq!(shown("postgres://ficus@db/ficus"), "postgres://ficus@db/ficus");
        assert_eq!(shown("postgres://db/ficus"), "postgres://db/ficus");
    }

    #[test]
    fn shadow_totals_add_and_subtract_field_by_field() {
        let a = ShadowTotals { compared: 10, mismatched: 2, ..Default::default() };
        let b = ShadowTotals { compared: 4, matched: 4, ..Default::default() };
        assert_eq!(a.plus(&b).since(&b), a);
        assert_eq!(b.since(&a), ShadowTotals { matched: 4, ..Default::default() });
    }
}
