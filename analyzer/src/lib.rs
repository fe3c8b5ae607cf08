//! ficus-analyzer: reads a Rust monolith's source and proposes service boundaries.
//!
//! The pipeline: `discover` finds the crates and files under PATH; `facts` parses every
//! `.rs` file with syn (in parallel, one file at a time) into syntax facts; `index`
//! places files in the module tree and resolves paths, SQL and routes into unit-level
//! facts (calls, type uses, table reads and writes, endpoints); `services` weighs them
//! into a graph of units, clusters it (`cluster`, deterministic Louvain) and describes
//! each proposed service, its dependencies and the `metrics`. The result is a
//! [`Report`] (the JSON contract of DESIGN.md), always returned together with its
//! diagnostics: one bad file never fails the analysis.
//!
//! Invariants: no network and no database I/O (`--history` only runs `git log`); the
//! same input gives the same report, byte for byte, except `stats.elapsed_ms`.

pub mod cluster;
mod discover;
mod facts;
pub mod guard;
pub mod history;
mod index;
pub mod metrics;
pub mod partition;
pub mod plan;
pub mod render;
pub mod report;
mod routes;
mod services;
pub mod sql;
mod syntax;
mod unitfacts;
mod usecases;

use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

pub use report::*;
pub use unitfacts::{Analysis, UnitAccess, UnitCalls, UnitFacts};

/// Something the analysis could not fully read: a file that does not parse, SQL the
/// parser does not understand, an unreadable manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    /// File, relative to PATH.
    pub file: String,
    /// Line (0 when not known).
    pub line: usize,
    /// What went wrong.
    pub message: String,
}

impl Diagnostic {
    /// A diagnostic for a file and line.
    pub fn new(file: impl Into<String>, line: usize, message: impl Into<String>) -> Self {
        Diagnostic { file: file.into(), line, message: message.into() }
    }
}

/// Why an analysis could not start at all. Problems with single files are
/// [`Diagnostic`]s in the report instead.
#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    /// PATH does not exist or is not a directory.
    #[error("{0} is not a directory: point PATH at a crate or workspace directory")]
    NotADirectory(PathBuf),
    /// PATH has no Cargo.toml.
    #[error("{0} has no Cargo.toml: point PATH at a crate or workspace directory")]
    NoManifest(PathBuf),
    /// No `.rs` file under PATH.
    #[error("{0} has no .rs files to analyse")]
    NoRustFiles(PathBuf),
    /// The worker threads could not be started.
    #[error("starting worker threads: {0}")]
    Threads(String),
    /// The partition file does not fit the code.
    #[error("the partition does not fit the code: {0}")]
    Partition(String),
}

/// How to analyse.
#[derive(Debug, Clone)]
pub struct Options {
    /// Louvain resolution γ: above 1 gives more, smaller services; below 1 fewer.
    pub resolution: f64,
    /// Aim for this many services.
    pub services: Option<usize>,
    /// Weigh change coupling from this many of the latest git commits.
    pub history: Option<usize>,
    /// Describe this partition instead of clustering (`ficus … --partition FILE`).
    pub partition: Option<partition::Partition>,
}

impl Default for Options {
    fn default() -> Self {
        Options { resolution: 1.0, services: None, history: None, partition: None }
    }
}

/// The stages of an analysis, reported to a progress callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Parsing this many files.
    Parsing(usize),
    /// Resolving names, SQL and routes.
    Resolving,
    /// Reading git history.
    History,
    /// Clustering.
    Clustering,
}

/// Analyses the crate or workspace at `path`.
pub fn analyze(path: &Path, opts: &Options) -> Result<Report, AnalyzeError> {
    analyze_with_progress(path, opts, &|_| {})
}

/// [`analyze`], telling `progress` when each stage starts.
pub fn analyze_with_progress(
    path: &Path,
    opts: &Options,
    progress: &(dyn Fn(Stage) + Sync),
) -> Result<Report, AnalyzeError> {
    analysis(path, opts, progress).map(|a| a.report)
}

/// [`analyze_with_progress`], returning the unit-level facts behind the report too
/// (for the guard and the HTML report).
pub fn analysis(path: &Path, opts: &Options, progress: &(dyn Fn(Stage) + Sync)) -> Result<Analysis, AnalyzeError> {
    let start = Instant::now();
    let mut diags = Vec::new();
    let project = discover::discover(path, &mut diags)?;
    let nfiles: usize = project.crates.iter().map(|c| c.files.len()).sum();
    progress(Stage::Parsing(nfiles));
    let files = parse_all(path, &project, &mut diags)?;
    progress(Stage::Resolving);
    let index = index::Index::build(&project, files, path, &mut diags);
    let history = match opts.history {
        Some(n) => {
            progress(Stage::History);
            history::change_coupling(path, n, &mut diags)
        }
        None => Default::default(),
    };
    progress(Stage::Clustering);
    let (mut report, facts) =
        services::report(&project, &index, &history, opts, diags).map_err(AnalyzeError::Partition)?;
    report.stats.elapsed_ms = start.elapsed().as_millis() as u64;
    // Freeing millions of facts takes a while: let another thread do it.
    let bulk = index.into_bulk();
    let _ = std::thread::Builder::new().name("ficus-drop".into()).spawn(move || drop(bulk));
    Ok(Analysis { report, facts })
}

/// Parse-only pass over the same files an analysis reads (for benchmarks): returns
/// (files, lines, parse errors).
pub fn parse_only(path: &Path) -> Result<(usize, usize, usize), AnalyzeError> {
    let mut diags = Vec::new();
    let project = discover::discover(path, &mut diags)?;
    let paths: Vec<&PathBuf> = project.crates.iter().flat_map(|c| &c.files).collect();
    let pool = pool()?;
    let counts: Vec<(usize, usize)> = pool.install(|| {
        paths
            .par_iter()
            .map(|p| {
                let text = std::fs::read(p).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
                let ok = syn::parse_file(&text).is_ok();
                proc_macro2::extra::invalidate_current_thread_spans();
                (text.lines().count(), usize::from(!ok))
            })
            .collect()
    });
    Ok((paths.len(), counts.iter().map(|c| c.0).sum(), counts.iter().map(|c| c.1).sum()))
}

fn pool() -> Result<rayon::ThreadPool, AnalyzeError> {
    // Deeply nested code recurses deeply in syn and in the visitors: give workers room.
    rayon::ThreadPoolBuilder::new().stack_size(256 << 20).build().map_err(|e| AnalyzeError::Threads(e.to_string()))
}

fn parse_all(
    root: &Path,
    project: &discover::Project,
    diags: &mut Vec<Diagnostic>,
) -> Result<Vec<index::SourceFile>, AnalyzeError> {
    let jobs: Vec<(usize, &PathBuf)> =
        project.crates.iter().enumerate().flat_map(|(ci, c)| c.files.iter().map(move |f| (ci, f))).collect();
    let pool = pool()?;
    let results: Vec<(index::SourceFile, Vec<Diagnostic>)> = pool.install(|| {
        jobs.par_iter()
            .map(|&(ci, p)| {
                let rel = discover::rel(root, p);
                let mut d = Vec::new();
                let text = match std::fs::read(p) {
                    Ok(bytes) => match String::from_utf8(bytes) {
                        Ok(s) => s,
                        Err(e) => {
                            d.push(Diagnostic::new(
                                rel.clone(),
                                0,
                                "not valid UTF-8; read with replacement characters",
                            ));
                            String::from_utf8_lossy(e.as_bytes()).into_owned()
                        }
                    },
                    Err(e) => {
                        d.push(Diagnostic::new(rel.clone(), 0, format!("cannot read: {e}")));
                        String::new()
                    }
                };
                let facts = match std::panic::catch_unwind(|| facts::extract(&text)) {
                    Ok(f) => f,
                    Err(_) => {
                        d.push(Diagnostic::new(
                            rel.clone(),
                            0,
                            "internal error while reading this file (skipped its facts)",
                        ));
                        facts::FileFacts { lines: text.lines().count(), ..Default::default() }
                    }
                };
                proc_macro2::extra::invalidate_current_thread_spans();
                for (line, msg) in &facts.unread {
                    d.push(Diagnostic::new(rel.clone(), *line, msg.clone()));
                }
                if let Some((line, msg)) = &facts.error {
                    d.push(Diagnostic::new(rel.clone(), *line, format!("does not parse: {msg}")));
                }
                let mut facts = facts;
                if facts.scopes.is_empty() {
                    facts.scopes.push(facts::ScopeFacts::default());
                }
                (index::SourceFile { rel, path: p.clone(), crate_idx: ci, facts }, d)
            })
            .collect()
    });
    let mut files = Vec::with_capacity(results.len());
    for (f, d) in results {
        diags.extend(d);
        files.push(f);
    }
    files.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(files)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// The function-level call graph of a fixture: (caller, callee) → weight.
    fn calls(fixture: &str) -> Vec<(String, String, f64)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(fixture);
        let mut diags = Vec::new();
        let project = crate::discover::discover(&root, &mut diags).expect("fixture");
        let files = crate::parse_all(&root, &project, &mut diags).expect("parse");
        let ix = crate::index::Index::build(&project, files, &root, &mut diags);
        let name = |f: usize| ix.qualified(ix.fns[f].module, &ix.fns[f].name);
        ix.fn_calls.iter().map(|(&(a, b), &w)| (name(a), name(b), w)).collect()
    }

    #[test]
    fn a_trait_method_of_unknown_receiver_calls_every_impl_by_one_over_n() {
        let c = calls("resolve");
        let from = "layered::handlers::save_anything";
        let to: Vec<(&str, f64)> = c.iter().filter(|(a, _, _)| a == from).map(|(_, b, w)| (b.as_str(), *w)).collect();
        assert_eq!(to, vec![("layered::db::Db::save_record", 0.5), ("layered::services::FileStore::save_record", 0.5)]);
    }

    #[test]
    fn a_known_receiver_calls_its_own_impl_only() {
        let c = calls("resolve");
        let has = |a: &str, b: &str| c.iter().any(|(x, y, w)| x == a && y == b && *w == 1.0);
        assert!(has("layered::handlers::get_user", "layered::db::users::Db::find_user"), "{c:?}");
        assert!(has("layered::handlers::create_user", "layered::db::users::Db::insert_user"), "{c:?}");
        assert!(has("layered::handlers::list_orders", "layered::db::orders::OrderRepo::list_orders"), "{c:?}");
        assert!(has("layered::handlers::place_order", "layered::services::OrderService::new"), "{c:?}");
        assert!(has("layered::services::OrderService::place", "layered::db::orders::OrderRepo::insert_order"), "{c:?}");
        assert!(has("layered::handlers::audit_orders", "layered::db::users::User::audit"), "{c:?}");
    }
}
