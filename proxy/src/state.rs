//! The proxy's live state: the current route table, upstream pools and metric handles behind an
//! `ArcSwap` (requests load it lock-free), and the only ways to change it — reload the config file,
//! or change a route's stage, which writes the file first (comments and layout kept, written to a
//! temporary file then renamed) and only then swaps the new state in.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::audit::{Entry, Position};
use crate::config::Config;
use crate::error::{ConfigError, ProxyError};
use crate::metrics::{Metrics, REJECTED, RouteMetrics, TargetMetrics, UNMATCHED};
use crate::policy::model::{Percent, RouteSpec, Stage};
use crate::policy::route::RouteTable;
use crate::policy::stage::{self, Allowed, Move, Refused, ShadowRecord};
use crate::shadow::{DiffReport, Shadows};
use crate::store::file::FileStore;
use crate::store::fleet::FleetStore;
use crate::store::{Commit, RolloutRecord, ShadowTotals, Store};
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
    /// Where each rollout is, as the rollout controller last published it.
    rollouts: Mutex<std::collections::HashMap<String, RolloutStatus>>,
    env: Environment,
    /// Where the routes' live state is kept: this file, or a store shared by a fleet.
    store: Box<dyn Store>,
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
        let kept = Kept::default();
        let in_file = |e: String| ProxyError::StoreUnavailable(format!("{}: state.store: {e}", config_path.display()));
        let store: Box<dyn Store> = match &config.state.store {
            None => Box::new(FileStore::open(config.audit_path(&config_path))),
            Some(url) => Box::new(FleetStore::connect(url).map_err(|e| in_file(e.to_string()))?),
        };
        store.place(&mut config, None, &|_, _| Ok(())).map_err(|e| match e {
            ProxyError::StoreUnavailable(m) => in_file(m),
            other => other,
        })?;
        let runtime = Runtime::build(config, &metrics, &[], &env, &kept).map_err(|e| with_file(e, &config_path))?;
        metrics.reloads.with_label_values(&["ok"]).inc();
        Ok(Shared {
            state: ArcSwap::from_pointee(runtime),
            config_path,
            metrics,
            write_lock: Mutex::new(text),
            kept,
            rollouts: Mutex::default(),
            env,
            store,
        })
    }

    /// With a shared store: starts following it (LISTEN/NOTIFY, a read every few seconds and
    /// after every reconnect). Nothing to do without one.
    pub fn follow_store(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        self.store.follow(Arc::new(move || {
            if let Some(shared) = weak.upgrade() {
                shared.sync_from_store();
            }
        }));
    }

    /// Whether the state store answers; `None` when it cannot be away (the config file).
    pub fn store_up(&self) -> Option<bool> {
        self.store.up()
    }

    /// Reads what others changed in a shared store since this instance last looked, and makes
    /// it live.
    pub fn sync_from_store(&self) {
        let _writer = self.lock();
        if let Ok(true) = self.store.sync() {
            let mut config = self.current().config.clone();
            match self.store.place(&mut config, None, &|_, _| Ok(())) {
                Ok(()) => self.make_live(config),
                Err(e) => tracing::warn!("state store: {e}"),
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

    /// Adds this instance's new shadow counts to a shared store's totals and reads them back
    /// (every second, from the admin runtime).
    pub fn flush_shadow_totals(&self) {
        let rt = self.current();
        let local: Vec<(String, ShadowTotals)> = rt
            .config
            .routes
            .iter()
            .filter_map(|r| self.kept.shadows.report(&r.name).map(|report| (r.name.clone(), ShadowTotals::of(&report))))
            .collect();
        self.store.flush_shadow(&local);
    }

    /// The audit log's last entries (one route's when `route` is given).
    pub fn audit_entries(&self, route: Option<&str>) -> Result<Vec<Entry>, ProxyError> {
        self.store.audit(route)
    }

    /// Keeps where a route's rollout is, so that a restarted instance resumes it (with a shared
    /// store; with the config file, progress lives in memory).
    pub fn save_rollout(&self, route: &str, record: Option<RolloutRecord>) {
        self.store.save_rollout(route, record);
    }

    /// The rollouts the store kept.
    pub fn saved_rollouts(&self) -> HashMap<String, RolloutRecord> {
        self.store.rollouts()
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
        if !self.store.file_moves_routes() {
            return;
        }
        for o in old.routes.iter().filter(|o| !new.routes.iter().any(|r| r.name == o.name)) {
            self.store.record(Entry {
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
            self.store.record(Entry {
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
        self.store.shadow_totals(name, local)
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
            let rules = |r: &RouteSpec, from: stage::Position| {
                let m = Move { stage: r.stage, percent: Some(r.percent), force: false, expect: None };
                stage::decide(r, from, &m, &self.shadow_record(&r.name))
                    .map(|_| ())
                    .map_err(|refused| refused.to_string())
            };
            let live = (gate == Gate::Hold).then_some(&old.config);
            self.store.place(&mut config, live, &rules)?;
            let runtime = Runtime::build(config, &self.metrics, &old.pools, &self.env, &self.kept)
                .map_err(|e| ProxyError::from(with_file(e, &self.config_path)))?;
            log_shadow_routes(&runtime.config);
            self.state.store(Arc::new(runtime));
            Ok(())
        });
        self.metrics.reloads.with_label_values(&[if outcome.is_ok() { "ok" } else { "error" }]).inc();
        outcome
    }

    /// Changes a route's stage (and percent): the stage rules decide (`policy::stage`: the
    /// shadow gate, the expected position), the store keeps it with its audit record (the config
    /// file, written back keeping its comments; or the shared store, compare-and-set on the
    /// route's version), then it goes live. Returns the route. A change to where the route
    /// already is does nothing.
    ///
    /// An edit of the file not yet reloaded is reloaded first, so the change is made on what
    /// the file says and writing it back makes nothing live unseen. When that edit is invalid,
    /// a rollback must not wait for someone to fix the file, and nothing may be live that the
    /// store does not hold: the edit is set aside beside the file (nothing of it is lost) and the
    /// change is made on the last good config.
    pub fn set_stage(&self, name: &str, change: Change) -> Result<RouteView, ProxyError> {
        let Change { stage, percent, force, by, mut why, expect, expect_version } = change;
        let mut last = self.lock();
        let disk = std::fs::read_to_string(&self.config_path)
            .map_err(|source| ProxyError::Io { path: self.config_path.clone(), source })?;
        let mut set_aside = None;
        if disk != *last {
            let old = self.current();
            match self.apply_text(&disk, Gate::Hold) {
                Ok(()) => {
                    self.audit_reload(&old.config, &self.current().config, "the file changed, seen at a stage change");
                    *last = disk;
                }
                Err(e) => {
                    let aside = set_aside_path(&self.config_path);
                    write_atomically(&aside, &disk)?;
                    tracing::error!(
                        "the config file holds an invalid edit ({e}); it is kept as {} and the stage change of `{name}` \
                         is made on the last good config",
                        aside.display()
                    );
                    set_aside = Some(aside);
                }
            }
        }
        let current = self.current();
        let Some(route) = current.config.routes.iter().find(|r| r.name == name) else {
            return Err(ProxyError::UnknownRoute(name.to_owned()));
        };
        let from = stage::Position { stage: route.stage, percent: route.percent };
        let m =
            Move { stage, percent, force, expect: expect.map(|(stage, percent)| stage::Position { stage, percent }) };
        let to = match stage::decide(route, from, &m, &self.shadow_record(name)) {
            Ok(Allowed::Unchanged) => {
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
        if let Some(aside) = &set_aside {
            why = format!("{why}; the file's invalid edit was set aside as {}", aside.display());
        }
        let entry = Entry {
            time: crate::audit::now(),
            route: name.to_owned(),
            from: position(from.stage, from.percent),
            to: position(to.stage, to.percent),
            why: if why.is_empty() { "no reason given".to_owned() } else { why.trim_start_matches("; ").to_owned() },
            by,
        };
        let kept = self.store.commit(Commit {
            route: name,
            to,
            percent_given: percent.is_some(),
            entry: entry.clone(),
            expected_version: expect_version,
            file_text: &last,
            config_path: &self.config_path,
        })?;
        let made = match kept {
            // The store is the file: the new text is the live config.
            Some(text) => self.apply_text(&text, Gate::Decided).map(|()| *last = text),
            // A shared store: the live config moves to where the store now has the route.
            None => {
                let mut config = current.config.clone();
                self.store.place(&mut config, None, &|_, _| Ok(())).map(|()| self.make_live(config))
            }
        };
        if let Err(e) = made {
            self.store.not_made(&entry, &e.to_string());
            return Err(e);
        }
        drop(last);
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
        if self.store.up().is_some()
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
        v.version = self.store.version(&r.name);
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
