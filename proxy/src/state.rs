//! The proxy's live state: the current route table, upstream pools and metric handles behind an
//! `ArcSwap` (requests load it lock-free), and the only ways to change it — reload the config file,
//! or change a route's stage, which writes the file first (comments and layout kept, written to a
//! temporary file then renamed) and only then swaps the new state in.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::audit::{AuditLog, Entry, Position};
use crate::config::Config;
use crate::error::{ConfigError, ProxyError};
use crate::metrics::{Metrics, REJECTED, RouteMetrics, TargetMetrics, UNMATCHED};
use crate::policy::model::{Percent, RouteSpec, Stage};
use crate::policy::route::RouteTable;
use crate::policy::stage::{self, Allowed, Move, Refused, ShadowRecord};
use crate::shadow::{DiffReport, Shadows};
use crate::store::{PgStore, RolloutRecord, ShadowTotals, StoreError, Stored};
use crate::upstream::{Resolve, SystemResolver, UpstreamPool, build_pools};

/// One generation of the proxy's state: everything a request reads, swapped as a whole.
pub struct Runtime {
    /// The validated config it was built from.
    pub config: Config,
    /// The compiled routes.
    pub table: RouteTable,
    /// Upstream pools, indexed like `config.upstreams`.
    pub pools: Vec<Arc<UpstreamPool>>,
    /// Metric handles per route, indexed like `config.routes`.
    pub route_metrics: Vec<RouteMetrics>,
    /// Metric handles of unmatched requests.
    pub unmatched_metrics: TargetMetrics,
    /// Metric handles of requests refused before routing (bad path, oversized head).
    pub rejected_metrics: TargetMetrics,
    /// Per route, its shadow when the route is in stage shadow: resolved here, so a shadowed
    /// request takes no lock to find it.
    pub shadows: Vec<Option<Arc<crate::shadow::RouteShadow>>>,
    /// Per route, its rate limiter when it has a `rate_limit`.
    pub limiters: Vec<Option<Arc<crate::limit::RouteLimiter>>>,
}

/// What runtimes share across reloads: the shadows' queues and stats, the rate limiters'
/// counts.
#[derive(Default)]
pub struct Kept {
    /// The shadow stage's queues and comparison stats, by route name.
    pub shadows: Shadows,
    /// The rate limiters, by route name.
    pub limiters: crate::limit::Limiters,
}

impl Runtime {
    fn build(
        config: Config,
        metrics: &Metrics,
        previous: &[Arc<UpstreamPool>],
        env: &Environment,
        kept: &Kept,
    ) -> Result<Runtime, ConfigError> {
        let secrets = &env.secrets;
        let force_token = config.security.force_token_env.as_ref().map(|r| secrets.resolve(r)).transpose()?;
        let table = RouteTable::build(&config, force_token);
        let pools = build_pools(&config.upstreams, &config.proxy, previous, env.resolver.0.as_ref())?;
        let monolith = &config.upstreams[config.default_upstream].name;
        let route_metrics = config
            .routes
            .iter()
            .map(|r| metrics.route(&r.name, &config.upstreams[r.upstream].name, monolith))
            .collect();
        let unmatched_metrics = metrics.target(UNMATCHED, monolith);
        let rejected_metrics = metrics.target(REJECTED, "none");
        let shadows = config
            .routes
            .iter()
            .map(|r| {
                (r.stage == Stage::Shadow)
                    .then(|| kept.shadows.get_or_start(&r.name, || metrics.shadow(&r.name)))
                    .flatten()
            })
            .collect();
        let limiters =
            config.routes.iter().map(|r| r.rate_limit.as_ref().map(|l| kept.limiters.get(&r.name, l))).collect();
        Ok(Runtime { config, table, pools, route_metrics, unmatched_metrics, rejected_metrics, shadows, limiters })
    }
}

/// What a proxy takes from its surroundings: secrets, and how names resolve.
#[derive(Clone, Default, Debug)]
pub struct Environment {
    /// Where secrets named by environment variable come from.
    pub secrets: Secrets,
    /// How upstream names become addresses.
    pub resolver: Resolver,
}

/// The resolver of upstream names (default: the system's).
#[derive(Clone)]
pub struct Resolver(pub Arc<dyn Resolve>);

impl Default for Resolver {
    fn default() -> Resolver {
        Resolver(Arc::new(SystemResolver))
    }
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver(..)")
    }
}

/// Where the secrets a config names by environment variable come from: the process's
/// environment, or a fixed map (tests and embedders, which cannot change the environment).
#[derive(Clone, Default)]
pub struct Secrets {
    fixed: Option<std::collections::BTreeMap<String, String>>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&String> = self.fixed.iter().flat_map(|m| m.keys()).collect();
        f.debug_struct("Secrets").field("fixed", &names).finish()
    }
}

impl Secrets {
    /// Secrets from this map instead of the environment.
    pub fn fixed(pairs: impl IntoIterator<Item = (String, String)>) -> Secrets {
        Secrets { fixed: Some(pairs.into_iter().collect()) }
    }

    /// The shortest secret accepted: a guessable token is no protection.
    pub const MIN_LEN: usize = 16;

    fn get(&self, name: &str) -> Option<String> {
        match &self.fixed {
            Some(map) => map.get(name).cloned(),
            None => std::env::var(name).ok(),
        }
    }

    /// The secret `r` names; an error at its config line when unset or too short.
    fn resolve(&self, r: &crate::config::SecretRef) -> Result<crate::config::Secret, ConfigError> {
        let err = |reason: String| ConfigError { file: PathBuf::new(), line: r.line, reason };
        let name = &r.env;
        match self.get(name).map(|v| v.trim().to_owned()) {
            Some(v) if v.len() >= Self::MIN_LEN => Ok(crate::config::Secret::new(v.as_bytes())),
            Some(v) if !v.is_empty() => Err(err(format!(
                "security.force_token_env: ${name} is shorter than {} characters; use a longer secret",
                Self::MIN_LEN
            ))),
            _ => Err(err(format!(
                "security.force_token_env names ${name}, which is not set (or empty): set it to a secret, or \
                 remove force_token_env to turn forcing off"
            ))),
        }
    }
}

/// Where a route's rollout is, for the admin API and `ficus routes`.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct RolloutStatus {
    /// The policy's steps.
    pub steps: Vec<f64>,
    /// The current step, from 1.
    pub step: usize,
    /// What the controller last decided.
    pub status: String,
    /// How long the rollout has been at this step (carried over a restart with a shared
    /// store).
    #[serde(default)]
    pub at_step_seconds: f64,
}

/// A route as the admin API shows it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct RouteView {
    /// Name.
    pub name: String,
    /// Path template.
    pub path: String,
    /// Methods (empty = all).
    pub methods: Vec<String>,
    /// Header match, if any.
    pub header: Option<String>,
    /// The new service.
    pub upstream: String,
    /// Stage.
    pub stage: String,
    /// Percent for canary.
    pub percent: f64,
    /// Cohort key.
    pub cohort: String,
    /// Fallback to the monolith.
    pub fallback: bool,
    /// Requests served by the service since start.
    pub requests_service: u64,
    /// Requests served by the monolith since start.
    pub requests_monolith: u64,
    /// Fallbacks since start.
    pub fallbacks: u64,
    /// In stage shadow, non-idempotent methods are mirrored too.
    #[serde(default)]
    pub shadow_writes: bool,
    /// The progressive rollout in progress, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
    /// With a shared store: the version of the route's last change (for compare-and-set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// How far the migration is: what `GET /routes` shows beside the routes, and the
/// `ficus_migration_*` metrics.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct Progress {
    /// Routes in the config.
    pub routes: usize,
    /// Routes per stage.
    pub monolith: usize,
    /// In shadow (still served by the monolith).
    pub shadow: usize,
    /// In canary.
    pub canary: usize,
    /// Served by their service.
    pub service: usize,
    /// Share (0..=1) of the routes served by the new services: a route in `service` counts 1, a
    /// route in canary at 25 % counts 0.25.
    pub endpoint_share: f64,
    /// Requests proxied since the proxy started (matched or not).
    pub requests_total: u64,
    /// Of which answered by a new service.
    pub requests_service: u64,
    /// `requests_service / requests_total` (0 before any request).
    pub traffic_share: f64,
}

/// A requested change of a route's stage, with who asks and why (for the audit log).
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The new stage.
    pub stage: Stage,
    /// The new canary percent; unchanged when `None`.
    pub percent: Option<Percent>,
    /// Leave shadow even when its comparisons do not allow it yet.
    pub force: bool,
    /// Who asks.
    pub by: String,
    /// Why.
    pub why: String,
    /// Apply only if the route is still at this stage and percent (the rollout controller's
    /// changes, so that an operator's change in between wins).
    pub expect: Option<(Stage, Percent)>,
    /// With a shared store: apply only if the route's version is still this one (the
    /// client's compare-and-set); `None`: the version this instance last read.
    pub expect_version: Option<u64>,
}

impl Change {
    /// A change to `stage` (and `percent`), by the admin API unless said otherwise.
    pub fn new(stage: Stage, percent: Option<Percent>) -> Change {
        Change {
            stage,
            percent,
            force: false,
            by: "admin API".to_owned(),
            why: String::new(),
            expect: None,
            expect_version: None,
        }
    }

    /// Parses the admin API's strings.
    pub fn parse(stage: &str, percent: Option<f64>) -> Result<Change, ProxyError> {
        let parsed = Stage::parse(stage).ok_or_else(|| {
            ProxyError::InvalidChange(format!("stage `{stage}` is not one of monolith, shadow, canary, service"))
        })?;
        let percent = percent
            .map(|p| {
                Percent::from_percent(p)
                    .ok_or_else(|| ProxyError::InvalidChange(format!("percent {p} is not between 0 and 100")))
            })
            .transpose()?;
        Ok(Change::new(parsed, percent))
    }

    /// Sets who asks.
    pub fn by(mut self, by: impl Into<String>) -> Change {
        self.by = by.into();
        self
    }

    /// Sets why.
    pub fn why(mut self, why: impl Into<String>) -> Change {
        self.why = why.into();
        self
    }

    /// Sets `force`.
    pub fn force(mut self, force: bool) -> Change {
        self.force = force;
        self
    }

    /// With a shared store, applies only if the route is still at `version`.
    pub fn at_version(mut self, version: Option<u64>) -> Change {
        self.expect_version = version;
        self
    }

    /// Applies only if the route is still at `stage` and `percent`.
    pub fn expecting(mut self, stage: Stage, percent: Percent) -> Change {
        self.expect = Some((stage, percent));
        self
    }
}

fn position(stage: Stage, percent: Percent) -> Position {
    Position { stage: stage.as_str().to_owned(), percent: percent.as_percent() }
}

/// Whether a new config's stages are checked against the stage rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// A reload: a route the file moves past the shadow gate stays where it is.
    Hold,
    /// A stage change already decided by the rules (forced ones included).
    Decided,
}

/// The result of a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reloaded {
    /// The file changed and the new config is live.
    Applied,
    /// The file holds what is already live.
    Unchanged,
}

/// Shared by the request path, the admin API and the file watcher.
pub struct Shared {
    state: ArcSwap<Runtime>,
    config_path: PathBuf,
    /// The metric families.
    pub metrics: Metrics,
    /// Serialises writers (reloads and stage changes); readers never take it.
    write_lock: Mutex<String>,
    /// What runtimes share across reloads (shadows, rate limiters).
    pub kept: Kept,
    /// Every stage change.
    pub audit: AuditLog,
    /// Where each rollout is, as the rollout controller last published it.
    rollouts: Mutex<std::collections::HashMap<String, RolloutStatus>>,
    env: Environment,
    /// The store shared by a fleet of instances (`[state] store`); `None`: this file.
    fleet: Option<Fleet>,
}

/// A fleet's shared store, and what this instance has read of it.
struct Fleet {
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

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Fleet {
    /// Moves the config's routes to the positions the store holds, seeding the store with the
    /// routes it does not know yet (at the file's positions).
    fn position(&self, config: &mut Config) -> Result<(), StoreError> {
        let missing: Vec<(String, stage::Position)> = {
            let known = locked(&self.routes);
            config
                .routes
                .iter()
                .filter(|r| !known.contains_key(&r.name))
                .map(|r| (r.name.clone(), stage::Position { stage: r.stage, percent: r.percent }))
                .collect()
        };
        if !missing.is_empty() {
            let all = self.store.seed_and_load(&missing)?;
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

    fn version(&self, route: &str) -> u64 {
        locked(&self.routes).get(route).map_or(0, |s| s.version)
    }

    fn store_error(&self, e: StoreError) -> ProxyError {
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

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Shared {
    /// Loads the config file and builds the first state, with secrets from the environment.
    pub fn load(config_path: &Path) -> Result<Shared, ProxyError> {
        Shared::load_with(config_path, Secrets::default())
    }

    /// Loads the config file and builds the first state, with secrets from `secrets`.
    pub fn load_with(config_path: &Path, secrets: Secrets) -> Result<Shared, ProxyError> {
        Shared::load_in(config_path, Environment { secrets, resolver: Resolver::default() })
    }

    /// Loads the config file and builds the first state in `env` (where secrets and names come
    /// from).
    pub fn load_in(config_path: &Path, env: Environment) -> Result<Shared, ProxyError> {
        let config_path = crate::config::absolute(config_path);
        remove_stale_temporaries(&config_path);
        let (mut config, text) = Config::load(&config_path)?;
        let metrics = Metrics::new();
        let audit = AuditLog::open(config.audit_path(&config_path));
        let kept = Kept::default();
        let fleet = match &config.state.store {
            None => None,
            Some(url) => {
                let store = PgStore::connect(url).map_err(|e| {
                    ProxyError::StoreUnavailable(format!("{}: state.store: {e}", config_path.display()))
                })?;
                let fleet = Fleet {
                    store,
                    routes: Mutex::default(),
                    known: AtomicU64::new(0),
                    up: Arc::new(AtomicBool::new(true)),
                    shadow_flushed: Mutex::default(),
                    shadow_totals: Mutex::default(),
                    stop: Arc::new(AtomicBool::new(false)),
                };
                fleet.position(&mut config).map_err(|e| {
                    ProxyError::StoreUnavailable(format!("{}: state.store: {e}", config_path.display()))
                })?;
                Some(fleet)
            }
        };
        let runtime = Runtime::build(config, &metrics, &[], &env, &kept).map_err(|e| with_file(e, &config_path))?;
        metrics.reloads.with_label_values(&["ok"]).inc();
        Ok(Shared {
            state: ArcSwap::from_pointee(runtime),
            config_path,
            metrics,
            write_lock: Mutex::new(text),
            kept,
            audit,
            rollouts: Mutex::default(),
            env,
            fleet,
        })
    }

    /// With a shared store: starts following it (LISTEN/NOTIFY, a read every few seconds and
    /// after every reconnect). Nothing to do without one.
    pub fn follow_store(self: &Arc<Self>) {
        let Some(f) = &self.fleet else { return };
        let weak = Arc::downgrade(self);
        let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            if let Some(shared) = weak.upgrade() {
                shared.sync_from_store();
            }
        });
        f.store.watch(wake, f.up.clone(), f.stop.clone());
    }

    /// Whether the shared store answers; `None` without one.
    pub fn store_up(&self) -> Option<bool> {
        self.fleet.as_ref().map(|f| f.up.load(Ordering::Relaxed))
    }

    /// Reads what changed in the shared store since this instance last looked, and makes it
    /// live.
    pub fn sync_from_store(&self) {
        let Some(f) = &self.fleet else { return };
        let _writer = self.lock();
        match f.store.changes_since(f.known.load(Ordering::Relaxed)) {
            Ok(read) => {
                if !f.up.swap(true, Ordering::Relaxed) {
                    tracing::info!("state store: reachable again, caught up");
                }
                if f.take(read) {
                    let mut config = self.current().config.clone();
                    if let Err(e) = f.position(&mut config) {
                        tracing::warn!("state store: {e}");
                        return;
                    }
                    self.make_live(config);
                }
            }
            Err(e) => {
                if f.up.swap(false, Ordering::Relaxed) {
                    tracing::error!("{e}; serving the last state");
                }
            }
        }
    }

    /// Swaps in a runtime built from `config` (a writer holds the lock).
    fn make_live(&self, config: Config) {
        let old = self.state.load();
        match Runtime::build(config, &self.metrics, &old.pools, &self.env, &self.kept) {
            Ok(rt) => self.state.store(Arc::new(rt)),
            Err(e) => tracing::error!("{}", with_file(e, &self.config_path)),
        }
    }

    /// Resolves again the names of the upstreams whose `resolve_every` has passed; an upstream
    /// whose addresses changed gets a new pool, swapped in without a reload. A name that does
    /// not resolve keeps the addresses it had (and says so).
    pub fn refresh_dns(&self) {
        let rt = self.current();
        let due: Vec<usize> = (0..rt.pools.len())
            .filter(|&i| {
                let p = &rt.pools[i];
                p.spec.addrs.iter().any(|a| a.ip().is_none()) && p.since_resolved() >= p.spec.resolve_every
            })
            .collect();
        if due.is_empty() {
            return;
        }
        let _writer = self.lock();
        let rt = self.current();
        let mut pools = rt.pools.clone();
        let mut changed = false;
        for i in due {
            let old = &rt.pools[i];
            match crate::upstream::resolve(&old.spec.addrs, self.env.resolver.0.as_ref()) {
                Ok(found) => {
                    let before: Vec<std::net::SocketAddr> = old.endpoints.iter().map(|e| e.addr).collect();
                    let now: Vec<std::net::SocketAddr> = found.iter().map(|(a, _)| *a).collect();
                    old.mark_resolved();
                    if before == now {
                        continue;
                    }
                    match UpstreamPool::with_addresses(&old.spec, &rt.config.proxy, found) {
                        Ok(pool) => {
                            tracing::info!(upstream = %old.spec.name, ?before, ?now, "upstream addresses changed (DNS)");
                            pools[i] = Arc::new(pool);
                            changed = true;
                        }
                        Err(e) => tracing::warn!(upstream = %old.spec.name, "keeping its addresses: {e}"),
                    }
                }
                Err(e) => {
                    tracing::warn!(upstream = %old.spec.name, "keeping its addresses: {e}");
                    old.mark_resolved();
                }
            }
        }
        if !changed {
            return;
        }
        match Runtime::build(rt.config.clone(), &self.metrics, &pools, &self.env, &self.kept) {
            Ok(new) => self.state.store(Arc::new(new)),
            Err(e) => tracing::error!("{}", with_file(e, &self.config_path)),
        }
    }

    /// Adds this instance's new shadow counts to the store's totals and reads them back (every
    /// second, from the admin runtime). Nothing to do without a shared store.
    pub fn flush_shadow_totals(&self) {
        let Some(f) = &self.fleet else { return };
        let rt = self.current();
        let mut deltas = Vec::new();
        let mut flushed = locked(&f.shadow_flushed);
        for r in &rt.config.routes {
            let Some(report) = self.kept.shadows.report(&r.name) else { continue };
            let now = ShadowTotals::of(&report);
            let before = flushed.get(&r.name).copied().unwrap_or_default();
            deltas.push((r.name.clone(), now.since(&before)));
        }
        match f.store.add_shadow(&deltas) {
            Ok(totals) => {
                for (name, d) in &deltas {
                    let entry = flushed.entry(name.clone()).or_default();
                    *entry = entry.plus(d);
                }
                *locked(&f.shadow_totals) = totals;
            }
            Err(e) => {
                f.up.store(false, Ordering::Relaxed);
                tracing::debug!("shadow totals not flushed: {e}");
            }
        }
    }

    /// The audit log's last entries (one route's when `route` is given): the shared store's
    /// with one, else this instance's file.
    pub fn audit_entries(&self, route: Option<&str>) -> Result<Vec<Entry>, ProxyError> {
        match &self.fleet {
            Some(f) => f.store.audit(route).map_err(|e| f.store_error(e)),
            None => Ok(self.audit.recent(route)),
        }
    }

    /// Keeps where a route's rollout is, so that a restarted instance resumes it (with a shared
    /// store; without one, progress lives in memory).
    pub fn save_rollout(&self, route: &str, record: Option<RolloutRecord>) {
        if let Some(f) = &self.fleet
            && let Err(e) = f.store.save_rollout(route, record)
        {
            tracing::warn!(route, "rollout progress not saved: {e}");
        }
    }

    /// The rollouts kept in the shared store.
    pub fn saved_rollouts(&self) -> HashMap<String, RolloutRecord> {
        match &self.fleet {
            Some(f) => f.store.rollouts().unwrap_or_default(),
            None => HashMap::new(),
        }
    }

    /// The current state (lock-free).
    pub fn current(&self) -> Arc<Runtime> {
        self.state.load_full()
    }

    /// A cheap guard on the current state for the request path.
    pub fn guard(&self) -> arc_swap::Guard<Arc<Runtime>> {
        self.state.load()
    }

    /// The config file.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, String> {
        self.write_lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-reads the config file; on any error the live state is kept. `trigger` (file change,
    /// SIGHUP, POST /reload) is what the audit log gives as the reason of the stage changes the
    /// file brings.
    pub fn reload(&self, trigger: &str) -> Result<Reloaded, ProxyError> {
        let mut last = self.lock();
        let text = std::fs::read_to_string(&self.config_path)
            .map_err(|source| ProxyError::Io { path: self.config_path.clone(), source })?;
        if *last == text {
            return Ok(Reloaded::Unchanged);
        }
        let old = self.current();
        let result = self.apply_text(&text, Gate::Hold);
        // Remember the text either way, so a watcher does not report the same bad file forever.
        *last = text;
        if result.is_ok() {
            self.audit_reload(&old.config, &self.current().config, trigger);
        }
        result.map(|()| Reloaded::Applied)
    }

    /// Reloads only when the file's text differs from the last text seen (for the file watcher).
    pub fn reload_if_changed(&self) -> Option<Result<Reloaded, ProxyError>> {
        let text = std::fs::read_to_string(&self.config_path).ok()?;
        if *self.lock() == text {
            return None;
        }
        Some(self.reload("the config file changed"))
    }

    /// Audits the stage changes a reloaded file brought, routes added and removed included.
    fn audit_reload(&self, old: &Config, new: &Config, trigger: &str) {
        for o in old.routes.iter().filter(|o| !new.routes.iter().any(|r| r.name == o.name)) {
            self.audit.record(Entry {
                time: crate::audit::now(),
                route: o.name.clone(),
                from: position(o.stage, o.percent),
                to: Position { stage: "(route removed)".to_owned(), percent: 0.0 },
                why: format!("reload: {trigger}"),
                by: format!("config file {}", self.config_path.display()),
            });
        }
        for r in &new.routes {
            let before = old.routes.iter().find(|o| o.name == r.name);
            let from = before.map_or_else(
                || Position { stage: "(new route)".to_owned(), percent: 0.0 },
                |o| position(o.stage, o.percent),
            );
            if before.is_some_and(|o| o.stage == r.stage && o.percent == r.percent) {
                continue;
            }
            self.audit.record(Entry {
                time: crate::audit::now(),
                route: r.name.clone(),
                from,
                to: position(r.stage, r.percent),
                why: format!("reload: {trigger}"),
                by: format!("config file {}", self.config_path.display()),
            });
        }
    }

    /// The shadow gate's input for a route: what its shadow has shown so far.
    pub fn shadow_record(&self, name: &str) -> ShadowRecord {
        match self.shadow_counts(name) {
            Some(t) => ShadowRecord { shadowed: true, compared: t.compared, mismatched: t.mismatched },
            None => ShadowRecord::default(),
        }
    }

    /// A route's shadow counts: this instance's, plus (with a shared store) the fleet's totals
    /// less what this instance already added to them. `None` when never shadowed.
    fn shadow_counts(&self, name: &str) -> Option<ShadowTotals> {
        let local = self.kept.shadows.report(name).map(|r| ShadowTotals::of(&r));
        let Some(f) = &self.fleet else { return local };
        let fleet = locked(&f.shadow_totals).get(name).copied();
        let flushed = locked(&f.shadow_flushed).get(name).copied().unwrap_or_default();
        match (fleet, local) {
            (None, None) => None,
            (fleet, local) => Some(fleet.unwrap_or_default().plus(&local.unwrap_or_default().since(&flushed))),
        }
    }

    /// Makes `text` the live config. With [`Gate::Hold`] (a reload), a route the file moves
    /// somewhere the stage rules refuse (past the shadow gate) stays where it is, and the log
    /// says why; the file's other changes are made.
    fn apply_text(&self, text: &str, gate: Gate) -> Result<(), ProxyError> {
        let outcome = Config::parse(text, &self.config_path).map_err(ProxyError::from).and_then(|mut config| {
            let old = self.state.load();
            if config.listen != old.config.listen
                || config.server != old.config.server
                || config.proxy.audit_log != old.config.proxy.audit_log
            {
                tracing::warn!(
                    "{}: [listen], [server] and proxy.audit_log changes take effect at the next restart",
                    self.config_path.display()
                );
            }
            if let Some(f) = &self.fleet {
                // The store holds the positions; the file's only seed new routes.
                f.position(&mut config).map_err(|e| f.store_error(e))?;
            } else if gate == Gate::Hold {
                for r in &mut config.routes {
                    let Some(live) = old.config.routes.iter().find(|o| o.name == r.name) else { continue };
                    let from = stage::Position { stage: live.stage, percent: live.percent };
                    let m = Move { stage: r.stage, percent: Some(r.percent), force: false, expect: None };
                    if let Err(refused) = stage::decide(r, from, &m, &self.shadow_record(&r.name)) {
                        tracing::warn!(
                            route = %r.name,
                            "the config file moves it to {}, but it stays at {from}: {refused}",
                            stage::Position { stage: r.stage, percent: r.percent }
                        );
                        (r.stage, r.percent) = (from.stage, from.percent);
                    }
                }
            }
            let runtime = Runtime::build(config, &self.metrics, &old.pools, &self.env, &self.kept)
                .map_err(|e| ProxyError::from(with_file(e, &self.config_path)))?;
            log_shadow_routes(&runtime.config);
            self.state.store(Arc::new(runtime));
            Ok(())
        });
        self.metrics.reloads.with_label_values(&[if outcome.is_ok() { "ok" } else { "error" }]).inc();
        outcome
    }

    /// Changes a route's stage (and percent): validates, writes the config file (keeping its
    /// comments and layout), swaps the new state in, and records the change in the audit log.
    /// Returns the route. A change to where the route already is does nothing. An edit of the
    /// file not yet reloaded is reloaded first; if it is invalid, the change is made live without
    /// writing the file (and the audit entry says so).
    ///
    /// Leaving `shadow` for `canary` or `service` is refused ([`ProxyError::Gate`]) unless the
    /// route's shadow has made at least `shadow_min_compared` comparisons with a mismatch rate
    /// under `shadow_max_mismatch`; so is going from `monolith` to them once the route has been
    /// shadowed since the proxy started. `force` overrides (and is logged and audited).
    pub fn set_stage(&self, name: &str, change: Change) -> Result<RouteView, ProxyError> {
        if let Some(f) = &self.fleet {
            return self.set_stage_in_store(f, name, change);
        }
        let Change { stage, percent, force, by, mut why, expect, expect_version: _ } = change;
        let mut last = self.lock();
        let disk = std::fs::read_to_string(&self.config_path)
            .map_err(|source| ProxyError::Io { path: self.config_path.clone(), source })?;
        // An edit saved but not reloaded yet is taken first (and audited), so the change is made
        // on what the file says and writing the file back makes nothing live unseen. When that
        // edit is invalid, a rollback must not wait for someone to fix the file, and nothing may
        // be live that the file does not hold: the edit is set aside beside the file (nothing of
        // it is lost) and the change is written on the last good config.
        let mut base = last.clone();
        let mut set_aside = None;
        if disk != *last {
            let old = self.current();
            match self.apply_text(&disk, Gate::Hold) {
                Ok(()) => {
                    self.audit_reload(&old.config, &self.current().config, "the file changed, seen at a stage change");
                    base = disk.clone();
                    *last = disk;
                }
                Err(e) => {
                    let aside = set_aside_path(&self.config_path);
                    write_atomically(&aside, &disk)?;
                    tracing::error!(
                        "the config file holds an invalid edit ({e}); it is kept as {} and the stage change of `{name}` \
                         is written on the last good config",
                        aside.display()
                    );
                    set_aside = Some(aside);
                }
            }
        }
        let current = self.state.load();
        let Some(route) = current.config.routes.iter().find(|r| r.name == name) else {
            return Err(ProxyError::UnknownRoute(name.to_owned()));
        };
        let from = stage::Position { stage: route.stage, percent: route.percent };
        let m =
            Move { stage, percent, force, expect: expect.map(|(stage, percent)| stage::Position { stage, percent }) };
        let to = match stage::decide(route, from, &m, &self.shadow_record(name)) {
            Ok(Allowed::Unchanged) => {
                drop(current);
                drop(last);
                return self.route(name).ok_or_else(|| ProxyError::UnknownRoute(name.to_owned()));
            }
            Ok(Allowed::To { position, forced }) => {
                if let Some(reason) = forced {
                    tracing::warn!(route = name, to = stage.as_str(), "shadow gate overridden by force: {reason}");
                    why = format!("{why}; forced past the shadow gate ({reason})");
                }
                position
            }
            Err(Refused::Moved { now }) => {
                return Err(ProxyError::InvalidChange(format!("route `{name}` moved to {now} meanwhile")));
            }
            Err(refused @ Refused::Gate(_)) => {
                return Err(ProxyError::Gate(format!(
                    "route `{name}` may not go to {} yet: {refused}",
                    stage.as_str()
                )));
            }
        };
        let (from, to) = ((from.stage, from.percent), (to.stage, to.percent));
        drop(current);
        let new_text = edit_route(&base, name, stage, percent)
            .map_err(|reason| ProxyError::from(ConfigError { file: self.config_path.clone(), line: 1, reason }))?;
        // Validate what will be written before writing it.
        Config::parse(&new_text, &self.config_path)?;
        if let Some(aside) = &set_aside {
            why = format!("{why}; the file's invalid edit was set aside as {}", aside.display());
        }
        // The audit record is durable before the change is saved or live: a crash in between
        // leaves a record of a change that did not happen (and says so below when it fails),
        // never a change without its record.
        let entry = Entry {
            time: crate::audit::now(),
            route: name.to_owned(),
            from: position(from.0, from.1),
            to: position(to.0, to.1),
            why: if why.is_empty() { "no reason given".to_owned() } else { why.trim_start_matches("; ").to_owned() },
            by,
        };
        self.audit
            .record_durably(entry.clone())
            .map_err(|source| ProxyError::Io { path: self.audit.path().to_owned(), source })?;
        let made = (|| {
            write_atomically(&self.config_path, &new_text)?;
            self.apply_text(&new_text, Gate::Decided)
        })();
        if let Err(e) = made {
            self.audit.record(Entry {
                time: crate::audit::now(),
                from: entry.to.clone(),
                to: entry.from.clone(),
                why: format!("the change above was not made: {e}"),
                ..entry
            });
            return Err(e);
        }
        *last = new_text;
        drop(last);
        self.route(name).ok_or_else(|| ProxyError::UnknownRoute(name.to_owned()))
    }

    /// A stage change with a shared store: decided by the same rules, written to the store with
    /// its audit record as a compare-and-set on the route's version, then made live here; the
    /// other instances follow within a second.
    fn set_stage_in_store(&self, f: &Fleet, name: &str, change: Change) -> Result<RouteView, ProxyError> {
        let _writer = self.lock();
        let current = self.current();
        let Some(route) = current.config.routes.iter().find(|r| r.name == name) else {
            return Err(ProxyError::UnknownRoute(name.to_owned()));
        };
        let from = stage::Position { stage: route.stage, percent: route.percent };
        let m = Move {
            stage: change.stage,
            percent: change.percent,
            force: change.force,
            expect: change.expect.map(|(stage, percent)| stage::Position { stage, percent }),
        };
        let mut why = change.why;
        let to = match stage::decide(route, from, &m, &self.shadow_record(name)) {
            Ok(Allowed::Unchanged) => {
                drop(current);
                return self.route(name).ok_or_else(|| ProxyError::UnknownRoute(name.to_owned()));
            }
            Ok(Allowed::To { position, forced }) => {
                if let Some(reason) = forced {
                    tracing::warn!(
                        route = name,
                        to = change.stage.as_str(),
                        "shadow gate overridden by force: {reason}"
                    );
                    why = format!("{why}; forced past the shadow gate ({reason})");
                }
                position
            }
            Err(Refused::Moved { now }) => {
                return Err(ProxyError::InvalidChange(format!("route `{name}` moved to {now} meanwhile")));
            }
            Err(refused @ Refused::Gate(_)) => {
                return Err(ProxyError::Gate(format!(
                    "route `{name}` may not go to {} yet: {refused}",
                    change.stage.as_str()
                )));
            }
        };
        let entry = Entry {
            time: crate::audit::now(),
            route: name.to_owned(),
            from: position(from.stage, from.percent),
            to: position(to.stage, to.percent),
            why: if why.is_empty() { "no reason given".to_owned() } else { why.trim_start_matches("; ").to_owned() },
            by: change.by,
        };
        let expected = change.expect_version.unwrap_or_else(|| f.version(name));
        let version = f.store.change(name, expected, to, &entry).map_err(|e| f.store_error(e))?;
        f.up.store(true, Ordering::Relaxed);
        f.take(HashMap::from([(name.to_owned(), Stored { position: to, version })]));
        let mut config = current.config.clone();
        drop(current);
        f.position(&mut config).map_err(|e| f.store_error(e))?;
        self.make_live(config);
        self.route(name).ok_or_else(|| ProxyError::UnknownRoute(name.to_owned()))
    }

    /// Replaces the rollouts shown by the admin API (the rollout controller's progress).
    pub fn publish_rollouts(&self, board: std::collections::HashMap<String, RolloutStatus>) {
        *self.rollouts.lock().unwrap_or_else(|p| p.into_inner()) = board;
    }

    /// Every route with its live counters.
    pub fn routes(&self) -> Vec<RouteView> {
        let rt = self.current();
        (0..rt.config.routes.len()).map(|i| self.view(&rt, i)).collect()
    }

    /// How far the migration is.
    pub fn progress(&self) -> Progress {
        progress(&self.current())
    }

    /// The Prometheus text, with the migration gauges brought up to date first.
    pub fn render_metrics(&self) -> String {
        let rt = self.current();
        let p = progress(&rt);
        let m = &self.metrics;
        for (stage, n) in [("monolith", p.monolith), ("shadow", p.shadow), ("canary", p.canary), ("service", p.service)]
        {
            m.migration_routes.with_label_values(&[stage]).set(n as i64);
        }
        m.migration_endpoint_share.set(p.endpoint_share);
        m.state_store_up.set(i64::from(self.store_up().unwrap_or(true)));
        m.migration_traffic_share.set(p.traffic_share);
        m.route_service_share.reset();
        for r in &rt.config.routes {
            m.route_service_share.with_label_values(&[&r.name]).set(service_share(r));
        }
        m.render()
    }

    /// The shadow comparison report of a route; `None` when the config has no such route.
    pub fn diffs(&self, name: &str) -> Option<DiffReport> {
        let rt = self.current();
        rt.config.routes.iter().find(|r| r.name == name)?;
        let mut report = self.kept.shadows.report(name).unwrap_or_else(|| DiffReport::empty(name));
        if self.fleet.is_some()
            && let Some(counts) = self.shadow_counts(name)
        {
            counts.into_report(&mut report);
        }
        Some(report)
    }

    /// One route.
    pub fn route(&self, name: &str) -> Option<RouteView> {
        let rt = self.current();
        rt.config.routes.iter().position(|r| r.name == name).map(|i| self.view(&rt, i))
    }

    fn view(&self, rt: &Runtime, i: usize) -> RouteView {
        let r = &rt.config.routes[i];
        let mut v = view(rt, i);
        v.rollout = self.rollouts.lock().unwrap_or_else(|p| p.into_inner()).get(&r.name).cloned();
        v.version = self.fleet.as_ref().map(|f| f.version(&r.name));
        v
    }
}

/// The share of a route's traffic its stage gives the service: 1 in `service`, the percent in
/// `canary`, 0 otherwise.
fn service_share(r: &RouteSpec) -> f64 {
    match r.stage {
        Stage::Service => 1.0,
        Stage::Canary => r.percent.as_percent() / 100.0,
        Stage::Monolith | Stage::Shadow => 0.0,
    }
}

fn progress(rt: &Runtime) -> Progress {
    let mut p = Progress { routes: rt.config.routes.len(), ..Progress::default() };
    let mut shares = 0.0;
    for r in &rt.config.routes {
        *match r.stage {
            Stage::Monolith => &mut p.monolith,
            Stage::Shadow => &mut p.shadow,
            Stage::Canary => &mut p.canary,
            Stage::Service => &mut p.service,
        } += 1;
        shares += service_share(r);
    }
    if p.routes > 0 {
        p.endpoint_share = shares / p.routes as f64;
    }
    for (r, m) in rt.config.routes.iter().zip(&rt.route_metrics) {
        let service = m.service.total();
        p.requests_total += service + m.monolith.total();
        if r.upstream != rt.config.default_upstream {
            p.requests_service += service;
        }
    }
    p.requests_total += rt.unmatched_metrics.total();
    if p.requests_total > 0 {
        p.traffic_share = p.requests_service as f64 / p.requests_total as f64;
    }
    p
}

fn view(rt: &Runtime, i: usize) -> RouteView {
    let r = &rt.config.routes[i];
    let m = &rt.route_metrics[i];
    RouteView {
        name: r.name.clone(),
        path: r.path.as_str().to_owned(),
        methods: r.methods.iter().flatten().map(|m| m.to_string()).collect(),
        header: r.header.as_ref().map(|h| h.to_string()),
        upstream: rt.config.upstreams[r.upstream].name.clone(),
        stage: r.stage.as_str().to_owned(),
        percent: r.percent.as_percent(),
        cohort: r.cohort.to_string(),
        fallback: r.fallback,
        requests_service: m.service.total(),
        requests_monolith: m.monolith.total(),
        fallbacks: m.fallbacks.get(),
        shadow_writes: r.shadow_writes,
        rollout: None,
        version: None,
    }
}

fn with_file(mut e: ConfigError, file: &Path) -> ConfigError {
    e.file = file.to_owned();
    e
}

/// Where an invalid edit of the config file is set aside: `ficus.toml.invalid-<unix seconds>`.
fn set_aside_path(config: &Path) -> PathBuf {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut name = config.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".invalid-{secs}"));
    config.with_file_name(name)
}

/// Says in the log which routes are shadowed (served by the monolith, mirrored to the service).
pub fn log_shadow_routes(config: &Config) {
    for r in config.routes.iter().filter(|r| r.stage == Stage::Shadow) {
        tracing::info!(route = %r.name, writes = r.shadow_writes, "stage shadow: served by the monolith, mirrored to the service and compared");
    }
}

/// Sets `stage` (and `percent`) of the `[[routes]]` entry named `name`, keeping every comment and
/// the layout of the rest of the file.
pub fn edit_route(text: &str, name: &str, stage: Stage, percent: Option<Percent>) -> Result<String, String> {
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| e.to_string())?;
    let routes = doc
        .get_mut("routes")
        .and_then(|r| r.as_array_of_tables_mut())
        .ok_or_else(|| "the file has no [[routes]]".to_owned())?;
    let route = routes
        .iter_mut()
        .find(|t| t.get("name").and_then(|n| n.as_str()) == Some(name))
        .ok_or_else(|| format!("the file has no route named `{name}`"))?;
    set_keeping_decor(route, "stage", toml_edit::Value::from(stage.as_str()));
    if let Some(p) = percent {
        let bp = p.basis_points();
        let value = if bp % 100 == 0 {
            toml_edit::Value::from(i64::from(bp / 100))
        } else {
            toml_edit::Value::from(p.as_percent())
        };
        set_keeping_decor(route, "percent", value);
    }
    Ok(doc.to_string())
}

fn set_keeping_decor(table: &mut toml_edit::Table, key: &str, mut value: toml_edit::Value) {
    match table.get_mut(key).and_then(|i| i.as_value_mut()) {
        Some(old) => {
            *value.decor_mut() = old.decor().clone();
            *old = value;
        }
        None => {
            table.insert(key, toml_edit::Item::Value(value));
        }
    }
}

/// Writes a file by writing a temporary file beside it and renaming it over the original, so a
/// crash never leaves half a config.
/// Removes the temporary files of [`write_atomically`] that a process killed mid-write
/// left beside the config (those of a process still running are kept: it may be writing).
fn remove_stale_temporaries(config_path: &Path) {
    let dir = config_path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let file_name = config_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let prefix = format!(".{file_name}.ficus-");
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(&prefix).and_then(|r| r.strip_suffix(".tmp")) else { continue };
        let alive =
            pid.parse::<u32>().is_ok_and(|p| p == std::process::id() || Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            match std::fs::remove_file(e.path()) {
                Ok(()) => tracing::warn!("removed {}, left by a process that stopped mid-write", e.path().display()),
                Err(err) => tracing::warn!("cannot remove {}: {err}", e.path().display()),
            }
        }
    }
}

pub fn write_atomically(path: &Path, text: &str) -> Result<(), ProxyError> {
    let io = |source| ProxyError::Io { path: path.to_owned(), source };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.ficus-{}.tmp", std::process::id()));
    let result = (|| {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        if let Ok(meta) = std::fs::metadata(path) {
            let _ = std::fs::set_permissions(&tmp, meta.permissions());
        }
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_route_keeps_comments_and_layout() {
        let text = "version = 1 # the version\n\n# routes below\n[[routes]]\nname = \"a\"\nstage   = \"monolith\"  # was monolith\n\n[[routes]]\nname = \"b\"\nstage = \"monolith\"\n";
        let out = edit_route(text, "a", Stage::Canary, Percent::from_percent(30.0)).unwrap();
        assert_eq!(
            out,
            "version = 1 # the version\n\n# routes below\n[[routes]]\nname = \"a\"\nstage   = \"canary\"  # was monolith\npercent = 30\n\n[[routes]]\nname = \"b\"\nstage = \"monolith\"\n"
        );
        let out = edit_route(&out, "a", Stage::Canary, Percent::from_percent(12.5)).unwrap();
        assert!(out.contains("percent = 12.5\n"), "{out}");
        assert!(edit_route(text, "zzz", Stage::Service, None).is_err());
    }
}
