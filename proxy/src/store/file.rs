//! The default store, for one instance: routes' positions live in the config file itself
//! (a change is written back keeping the file's comments and layout, through a temporary file
//! and a rename), the audit log in a JSON-lines file beside it (synced before the change is
//! written or live). Shadow totals and rollout progress live in memory.

use std::path::PathBuf;

use super::{Commit, Rules, Store};
use crate::audit::{AuditLog, Entry};
use crate::config::Config;
use crate::error::{ConfigError, ProxyError};
use crate::policy::stage::Position;
use crate::state::{edit_route, write_atomically};

/// Positions in the config file, the audit log beside it.
pub struct FileStore {
    audit: AuditLog,
}

impl FileStore {
    /// The store of a config file whose audit log is `audit_path`.
    pub fn open(audit_path: PathBuf) -> FileStore {
        FileStore { audit: AuditLog::open(audit_path) }
    }
}

impl Store for FileStore {
    fn place(&self, config: &mut Config, live: Option<&Config>, rules: Rules<'_>) -> Result<(), ProxyError> {
        let Some(live) = live else { return Ok(()) };
        // A reloaded file moves routes, but not past the stage rules: a route it would take
        // past the shadow gate stays where it is, and the log says why.
        for r in &mut config.routes {
            let Some(now) = live.routes.iter().find(|o| o.name == r.name) else { continue };
            let from = Position { stage: now.stage, percent: now.percent };
            if let Err(refused) = rules(r, from) {
                tracing::warn!(
                    route = %r.name,
                    "the config file moves it to {}, but it stays at {from}: {refused}",
                    Position { stage: r.stage, percent: r.percent }
                );
                (r.stage, r.percent) = (from.stage, from.percent);
            }
        }
        Ok(())
    }

    fn commit(&self, c: Commit<'_>) -> Result<Option<String>, ProxyError> {
        let file_err =
            |reason: String| ProxyError::from(ConfigError { file: c.config_path.to_owned(), line: 1, reason });
        let percent = c.percent_given.then_some(c.to.percent);
        let text = edit_route(c.file_text, c.route, c.to.stage, percent).map_err(file_err)?;
        // What will be written is checked before anything is written.
        Config::parse(&text, c.config_path)?;
        // The audit record is durable before the change is saved or live: a crash in between
        // leaves a record of a change that did not happen (and `not_made` says so when it
        // fails), never a change without its record.
        self.audit
            .record_durably(c.entry)
            .map_err(|source| ProxyError::Io { path: self.audit.path().to_owned(), source })?;
        write_atomically(c.config_path, &text)?;
        Ok(Some(text))
    }

    fn not_made(&self, entry: &Entry, why: &str) {
        self.audit.record(Entry {
            time: crate::audit::now(),
            from: entry.to.clone(),
            to: entry.from.clone(),
            why: format!("the change above was not made: {why}"),
            ..entry.clone()
        });
    }

    fn file_moves_routes(&self) -> bool {
        true
    }

    fn record(&self, entry: Entry) {
        self.audit.record(entry);
    }

    fn audit(&self, route: Option<&str>) -> Result<Vec<Entry>, ProxyError> {
        Ok(self.audit.recent(route))
    }
}
