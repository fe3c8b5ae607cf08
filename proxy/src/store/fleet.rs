//! The store of a fleet: [`PgStore`] plus what this instance has read of it — each route's
//! position and version, the highest version seen, the shadow totals — so that the request
//! path and the admin API read memory, and only changes and catch-ups go to PostgreSQL.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::pg::PgStore;
use super::{Commit, RolloutRecord, Rules, ShadowTotals, Store, StoreError, Stored};
use crate::audit::Entry;
use crate::config::Config;
use crate::error::ProxyError;
use crate::policy::stage::Position;

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A shared PostgreSQL store and this instance's view of it.
pub struct FleetStore {
    store: PgStore,
    /// Each route's position and version, as last read or written.
    routes: Mutex<HashMap<String, Stored>>,
    /// The highest version read: everything above it is new.
    known: AtomicU64,
    /// Whether the store answered the last call.
    up: Arc<AtomicBool>,
    /// Per route, the local shadow counts already added to the store.
    shadow_flushed: Mutex<HashMap<String, ShadowTotals>>,
    /// Per route, the store's shadow totals as last read.
    shadow_totals: Mutex<HashMap<String, ShadowTotals>>,
    /// Ends the store's watcher.
    stop: Arc<AtomicBool>,
}

impl FleetStore {
    /// Connects to `url` (tables created or migrated).
    pub fn connect(url: &str) -> Result<FleetStore, StoreError> {
        Ok(FleetStore {
            store: PgStore::connect(url)?,
            routes: Mutex::default(),
            known: AtomicU64::new(0),
            up: Arc::new(AtomicBool::new(true)),
            shadow_flushed: Mutex::default(),
            shadow_totals: Mutex::default(),
            stop: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Takes in routes read from the store; whether any was new.
    fn take(&self, read: HashMap<String, Stored>) -> bool {
        let mut routes = locked(&self.routes);
        let mut changed = false;
        for (name, s) in read {
            self.known.fetch_max(s.version, Ordering::Relaxed);
            if routes.get(&name).is_none_or(|old| old.version < s.version) {
                routes.insert(name, s);
                changed = true;
            }
        }
        changed
    }

    fn error(&self, e: StoreError) -> ProxyError {
        match e {
            StoreError::Conflict { .. } => ProxyError::Conflict(e.to_string()),
            StoreError::Unavailable(_) => {
                self.up.store(false, Ordering::Relaxed);
                ProxyError::StoreUnavailable(format!(
                    "{e}: changes are refused until it answers again; this instance serves its last state"
                ))
            }
        }
    }
}

impl Drop for FleetStore {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Store for FleetStore {
    /// The store holds the positions; a file's only seed the routes it does not know yet.
    fn place(&self, config: &mut Config, _live: Option<&Config>, _rules: Rules<'_>) -> Result<(), ProxyError> {
        let missing: Vec<(String, Position)> = {
            let known = locked(&self.routes);
            config
                .routes
                .iter()
                .filter(|r| !known.contains_key(&r.name))
                .map(|r| (r.name.clone(), Position { stage: r.stage, percent: r.percent }))
                .collect()
        };
        if !missing.is_empty() {
            let all = self.store.seed_and_load(&missing).map_err(|e| self.error(e))?;
            self.take(all);
        }
        let known = locked(&self.routes);
        for r in &mut config.routes {
            if let Some(s) = known.get(&r.name) {
                (r.stage, r.percent) = (s.position.stage, s.position.percent);
            }
        }
        Ok(())
    }

    fn commit(&self, c: Commit<'_>) -> Result<Option<String>, ProxyError> {
        let expected = c.expected_version.unwrap_or_else(|| self.version(c.route).unwrap_or(0));
        let version = self.store.change(c.route, expected, c.to, &c.entry).map_err(|e| self.error(e))?;
        self.up.store(true, Ordering::Relaxed);
        self.take(HashMap::from([(c.route.to_owned(), Stored { position: c.to, version })]));
        Ok(None)
    }

    fn not_made(&self, entry: &Entry, why: &str) {
        // The change is in the store: the other instances have it; this one catches up at its
        // next read.
        tracing::error!(route = %entry.route, "the change is kept by the store but not live here yet: {why}");
    }

    fn file_moves_routes(&self) -> bool {
        false
    }

    fn record(&self, _entry: Entry) {}

    fn audit(&self, route: Option<&str>) -> Result<Vec<Entry>, ProxyError> {
        self.store.audit(route).map_err(|e| self.error(e))
    }

    fn sync(&self) -> Result<bool, ProxyError> {
        match self.store.changes_since(self.known.load(Ordering::Relaxed)) {
            Ok(read) => {
                if !self.up.swap(true, Ordering::Relaxed) {
                    tracing::info!("state store: reachable again, caught up");
                }
                Ok(self.take(read))
            }
            Err(e) => {
                if self.up.swap(false, Ordering::Relaxed) {
                    tracing::error!("{e}; serving the last state");
                }
                Err(self.error(e))
            }
        }
    }

    fn version(&self, route: &str) -> Option<u64> {
        Some(locked(&self.routes).get(route).map_or(0, |s| s.version))
    }

    fn up(&self) -> Option<bool> {
        Some(self.up.load(Ordering::Relaxed))
    }

    fn follow(&self, wake: Arc<dyn Fn() + Send + Sync>) {
        self.store.watch(wake, self.up.clone(), self.stop.clone());
    }

    /// The fleet's totals, plus what this instance counted and has not added to them yet.
    fn shadow_totals(&self, route: &str, local: Option<ShadowTotals>) -> Option<ShadowTotals> {
        let fleet = locked(&self.shadow_totals).get(route).copied();
        let flushed = locked(&self.shadow_flushed).get(route).copied().unwrap_or_default();
        match (fleet, local) {
            (None, None) => None,
            (fleet, local) => Some(fleet.unwrap_or_default().plus(&local.unwrap_or_default().since(&flushed))),
        }
    }

    fn flush_shadow(&self, local: &[(String, ShadowTotals)]) {
        let mut flushed = locked(&self.shadow_flushed);
        let deltas: Vec<(String, ShadowTotals)> = local
            .iter()
            .map(|(name, now)| (name.clone(), now.since(&flushed.get(name).copied().unwrap_or_default())))
            .collect();
        match self.store.add_shadow(&deltas) {
            Ok(totals) => {
                for (name, d) in &deltas {
                    let entry = flushed.entry(name.clone()).or_default();
                    *entry = entry.plus(d);
                }
                *locked(&self.shadow_totals) = totals;
            }
            Err(e) => {
                self.up.store(false, Ordering::Relaxed);
                tracing::debug!("shadow totals not flushed: {e}");
            }
        }
    }

    fn save_rollout(&self, route: &str, record: Option<RolloutRecord>) {
        if let Err(e) = self.store.save_rollout(route, record) {
            tracing::warn!(route, "rollout progress not saved: {e}");
        }
    }

    fn rollouts(&self) -> HashMap<String, RolloutRecord> {
        self.store.rollouts().unwrap_or_default()
    }
}
