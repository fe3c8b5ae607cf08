//! Where the routes' live state is kept, behind one trait, [`Store`]: their positions (stage
//! and percent), the audit log, the shadow comparison totals and the rollout progress.
//!
//! - [`file::FileStore`] (the default, one instance): positions in the config file itself
//!   (written back keeping its comments), the audit log in a JSON-lines file beside it; shadow
//!   totals and rollout progress live in memory.
//! - [`fleet::FleetStore`] (`[state] store = "postgres://…"`, several instances): all of it in
//!   PostgreSQL ([`pg::PgStore`]), changes compare-and-set on a version, every instance
//!   following the others.
//!
//! The rules (which changes are allowed) are `policy`'s; the live state is `state::Shared`'s;
//! a store only keeps what they decided, durably, before it goes live.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::audit::Entry;
use crate::config::Config;
use crate::error::ProxyError;
use crate::policy::model::{Percent, RouteSpec};
use crate::policy::stage::Position;

pub mod file;
pub mod fleet;
pub mod pg;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached (or answered with an error).
    #[error("the state store is unreachable: {0}")]
    Unavailable(String),
    /// The route moved since the version the change was decided on.
    #[error("route `{route}` was changed meanwhile (now version {now}); read it again and retry")]
    Conflict {
        /// The route.
        route: String,
        /// Its version now.
        now: u64,
    },
}

pub(crate) fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// A route's position as the store has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// Stage and percent.
    pub position: Position,
    /// The version of its last change.
    pub version: u64,
}

/// Shadow comparison counts of a route, fleet-wide.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShadowTotals {
    /// Comparisons made.
    pub compared: u64,
    /// Without a real difference.
    pub matched: u64,
    /// With a real difference.
    pub mismatched: u64,
    /// Copies dropped (queue full).
    pub dropped: u64,
    /// Shadow calls that failed.
    pub failed: u64,
    /// Not compared: a body over the limit.
    pub skipped: u64,
    /// Not mirrored: over the route's rate cap.
    pub sampled_out: u64,
}

impl ShadowTotals {
    /// The counts of a report.
    pub fn of(r: &crate::shadow::DiffReport) -> ShadowTotals {
        ShadowTotals {
            compared: r.compared,
            matched: r.matched,
            mismatched: r.mismatched,
            dropped: r.dropped,
            failed: r.failed,
            skipped: r.skipped,
            sampled_out: r.sampled_out,
        }
    }

    /// Field by field, `self - earlier` (never below 0).
    pub fn since(&self, earlier: &ShadowTotals) -> ShadowTotals {
        ShadowTotals {
            compared: self.compared.saturating_sub(earlier.compared),
            matched: self.matched.saturating_sub(earlier.matched),
            mismatched: self.mismatched.saturating_sub(earlier.mismatched),
            dropped: self.dropped.saturating_sub(earlier.dropped),
            failed: self.failed.saturating_sub(earlier.failed),
            skipped: self.skipped.saturating_sub(earlier.skipped),
            sampled_out: self.sampled_out.saturating_sub(earlier.sampled_out),
        }
    }

    /// Field by field, `self + other`.
    pub fn plus(&self, other: &ShadowTotals) -> ShadowTotals {
        ShadowTotals {
            compared: self.compared + other.compared,
            matched: self.matched + other.matched,
            mismatched: self.mismatched + other.mismatched,
            dropped: self.dropped + other.dropped,
            failed: self.failed + other.failed,
            skipped: self.skipped + other.skipped,
            sampled_out: self.sampled_out + other.sampled_out,
        }
    }

    /// Writes the counts into a report (its samples and noise stay as they are).
    pub fn into_report(self, r: &mut crate::shadow::DiffReport) {
        (r.compared, r.matched, r.mismatched, r.dropped, r.failed, r.skipped, r.sampled_out) =
            (self.compared, self.matched, self.mismatched, self.dropped, self.failed, self.skipped, self.sampled_out);
    }

    fn is_zero(&self) -> bool {
        *self == ShadowTotals::default()
    }
}

/// Where a route's rollout is, kept so that a restarted instance resumes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RolloutRecord {
    /// The step, from 0.
    pub step: usize,
    /// The percent of that step.
    pub percent: Percent,
    /// When the step began, milliseconds since the Unix epoch.
    pub step_started_ms: u64,
}

/// A change the rules allowed, for a store to keep.
#[derive(Debug, Clone)]
pub struct Commit<'a> {
    /// The route.
    pub route: &'a str,
    /// Where it goes.
    pub to: Position,
    /// Whether the change named a percent (a file then gets the percent written, else only the
    /// stage).
    pub percent_given: bool,
    /// Its audit record.
    pub entry: Entry,
    /// With a shared store: the version the change was decided on (`None`: the one last read).
    pub expected_version: Option<u64>,
    /// The config file's text the change is made on.
    pub file_text: &'a str,
    /// The config file.
    pub config_path: &'a Path,
}

/// Whether a route may move from where it is live (`from`) to where a reloaded file puts it.
pub type Rules<'a> = &'a dyn Fn(&RouteSpec, Position) -> Result<(), String>;

/// Where the routes' live state is kept.
pub trait Store: Send + Sync {
    /// Moves the routes of a config just read from the file to where this store keeps them.
    /// `live` is the config live now when this is a reload (`None` at start); `rules` says
    /// whether a route may move from where it is live to where the file puts it.
    fn place(&self, config: &mut Config, live: Option<&Config>, rules: Rules<'_>) -> Result<(), ProxyError>;

    /// Keeps a change the rules allowed, its audit record first, before it goes live. Returns
    /// the config file's new text when the change is written into it.
    fn commit(&self, commit: Commit<'_>) -> Result<Option<String>, ProxyError>;

    /// A committed change could not be made live: say so after its record.
    fn not_made(&self, entry: &Entry, why: &str);

    /// Whether a reloaded file's stage changes are changes of the live state (and audited):
    /// yes when the file is the store; with a shared store its stages only seed new routes.
    fn file_moves_routes(&self) -> bool;

    /// Records a change a reloaded file brought.
    fn record(&self, entry: Entry);

    /// The last audit entries (one route's when given), oldest first.
    fn audit(&self, route: Option<&str>) -> Result<Vec<Entry>, ProxyError>;

    /// Reads what others changed since this instance last looked; whether anything did.
    fn sync(&self) -> Result<bool, ProxyError> {
        Ok(false)
    }

    /// The version of a route's last change, where the store versions them.
    fn version(&self, _route: &str) -> Option<u64> {
        None
    }

    /// Whether the store answers; `None` when it cannot be away (a local file).
    fn up(&self) -> Option<bool> {
        None
    }

    /// Starts following the store, calling `wake` when others may have changed it.
    fn follow(&self, _wake: Arc<dyn Fn() + Send + Sync>) {}

    /// A route's shadow totals, given this instance's own counts (`None`: never shadowed).
    fn shadow_totals(&self, _route: &str, local: Option<ShadowTotals>) -> Option<ShadowTotals> {
        local
    }

    /// Adds this instance's counts so far to the shared totals.
    fn flush_shadow(&self, _local: &[(String, ShadowTotals)]) {}

    /// Keeps (or forgets) where a route's rollout is.
    fn save_rollout(&self, _route: &str, _record: Option<RolloutRecord>) {}

    /// The rollouts kept.
    fn rollouts(&self) -> HashMap<String, RolloutRecord> {
        HashMap::new()
    }
}
