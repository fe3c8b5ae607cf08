//! Change coupling from git history, as Code Maat computes it: two files are coupled
//! by the share of their commits they change together, degree = shared commits /
//! average of their revisions, kept when both files have at least `MIN_REVS`
//! revisions, they share at least `MIN_SHARED` commits and the degree is at least
//! `MIN_DEGREE`; commits touching more than `MAX_CHANGESET` files are ignored (bulk
//! renames and reformatting say nothing about design). Reads history with
//! `git log --name-only` on PATH — a local read, no network.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use crate::Diagnostic;

/// Files with fewer revisions are not coupled to anything (Code Maat `min-revs`).
pub const MIN_REVS: usize = 5;
/// Pairs sharing fewer commits are dropped (Code Maat `min-shared-revs`).
pub const MIN_SHARED: usize = 5;
/// Pairs coupled less are dropped (Code Maat `min-coupling`, 30 %).
pub const MIN_DEGREE: f64 = 0.3;
/// Commits changing more files are ignored (Code Maat `max-changeset-size`).
pub const MAX_CHANGESET: usize = 30;

/// Coupled file pairs (paths relative to PATH, a < b) and their degree in 0..=1.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Coupling {
    /// (file a, file b) → degree.
    pub pairs: BTreeMap<(String, String), f64>,
}

/// Coupling of the files of a list of commits (each the set of files it changed).
pub fn coupling(commits: &[Vec<String>]) -> Coupling {
    let mut revs: BTreeMap<&str, usize> = BTreeMap::new();
    let mut shared: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for c in commits {
        let files: BTreeSet<&str> = c.iter().map(String::as_str).collect();
        if files.len() > MAX_CHANGESET {
            continue;
        }
        for f in &files {
            *revs.entry(f).or_default() += 1;
        }
        let v: Vec<&str> = files.into_iter().collect();
        for (i, a) in v.iter().enumerate() {
            for b in &v[i + 1..] {
                *shared.entry((a, b)).or_default() += 1;
            }
        }
    }
    let mut pairs = BTreeMap::new();
    for ((a, b), n) in shared {
        let (ra, rb) = (revs[a], revs[b]);
        if ra < MIN_REVS || rb < MIN_REVS || n < MIN_SHARED {
            continue;
        }
        let degree = n as f64 / ((ra + rb) as f64 / 2.0);
        if degree >= MIN_DEGREE {
            pairs.insert((a.to_string(), b.to_string()), degree);
        }
    }
    Coupling { pairs }
}

/// Reads the last `max_commits` commits touching PATH and computes their coupling.
/// Not a git repository (or no git) is a diagnostic, not an error.
pub(crate) fn change_coupling(root: &Path, max_commits: usize, diags: &mut Vec<Diagnostic>) -> Coupling {
    let out = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["log", "--no-merges", "--name-only", "--relative", "--format=%x00"])
        .arg(format!("-n{max_commits}"))
        .arg("--")
        .arg(".")
        .output();
    let out = match out {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            let msg = String::from_utf8_lossy(&o.stderr).lines().next().unwrap_or("").to_string();
            diags.push(Diagnostic::new(".", 0, format!("--history: git log failed: {msg}")));
            return Coupling::default();
        }
        Err(e) => {
            diags.push(Diagnostic::new(".", 0, format!("--history: cannot run git: {e}")));
            return Coupling::default();
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let commits: Vec<Vec<String>> = text
        .split('\0')
        .map(|c| c.lines().map(str::trim).filter(|l| l.ends_with(".rs")).map(str::to_string).collect::<Vec<_>>())
        .filter(|c: &Vec<String>| !c.is_empty())
        .collect();
    coupling(&commits)
}
