//! Finding what to read: the crates under PATH (the root package and the workspace's
//! `members`, globs expanded, `exclude` honoured), each crate's roots (lib, main, bins)
//! and every `.rs` file it holds (skipping `target/`, hidden directories and nested
//! packages, which are crates of their own), plus the `.sql` files of `migrations/`
//! directories.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::{AnalyzeError, Diagnostic};

/// One crate to analyse.
#[derive(Debug, Clone)]
pub(crate) struct CrateInfo {
    /// The crate's name as Rust code spells it (`-` becomes `_`).
    pub name: String,
    /// Its directory.
    pub dir: PathBuf,
    /// Library root, if any.
    pub lib: Option<PathBuf>,
    /// Binary roots: (name, file).
    pub bins: Vec<(String, PathBuf)>,
    /// Its `.rs` files.
    pub files: Vec<PathBuf>,
}

/// Everything to read under PATH.
#[derive(Debug)]
pub(crate) struct Project {
    /// Name of the root package, or of the workspace directory.
    pub name: String,
    /// The crates, in a fixed order.
    pub crates: Vec<CrateInfo>,
    /// `.sql` files in `migrations/` directories.
    pub sql_files: Vec<PathBuf>,
}

fn read_toml(path: &Path, diags: &mut Vec<Diagnostic>, root: &Path) -> Option<toml::Table> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            diags.push(Diagnostic::new(rel(root, path), 0, format!("cannot read: {e}")));
            return None;
        }
    };
    match text.parse::<toml::Table>() {
        Ok(t) => Some(t),
        Err(e) => {
            let line = e.span().map(|s| text[..s.start.min(text.len())].lines().count().max(1)).unwrap_or(0);
            diags.push(Diagnostic::new(rel(root, path), line, format!("not valid TOML: {}", e.message())));
            None
        }
    }
}

/// `path` relative to `root`, with `/` separators.
pub(crate) fn rel(root: &Path, path: &Path) -> String {
    let r = path.strip_prefix(root).unwrap_or(path);
    let s: Vec<String> = r.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    s.join("/")
}

fn skip_dir(name: &str) -> bool {
    name == "target" || (name.starts_with('.') && name.len() > 1)
}

/// Expands a workspace member pattern (`crates/*`, `services/api`) relative to `root`.
fn expand(root: &Path, pattern: &str) -> Vec<PathBuf> {
    let mut current = vec![root.to_path_buf()];
    for part in pattern.split('/').filter(|p| !p.is_empty() && *p != ".") {
        let mut next = Vec::new();
        for dir in &current {
            if part.contains('*') || part.contains('?') {
                let Ok(rd) = std::fs::read_dir(dir) else { continue };
                let mut names: Vec<_> = rd.filter_map(Result::ok).filter(|e| e.path().is_dir()).collect();
                names.sort_by_key(|e| e.file_name());
                for e in names {
                    let n = e.file_name().to_string_lossy().into_owned();
                    if wildcard(part, &n) && !skip_dir(&n) {
                        next.push(e.path());
                    }
                }
            } else if part == ".." {
                next.push(dir.join(".."));
            } else {
                next.push(dir.join(part));
            }
        }
        current = next;
    }
    current
}

/// Shell-style wildcard match (`*` and `?`).
fn wildcard(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            pi += 1;
            mark = ni;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

fn str_list(t: &toml::Table, key: &str) -> Vec<String> {
    t.get(key)
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// Reads the crate at `dir` (which has a Cargo.toml with `[package]`).
fn crate_at(dir: &Path, manifest: &toml::Table) -> CrateInfo {
    let pkg = manifest.get("package").and_then(|p| p.as_table());
    let pkg_name =
        pkg.and_then(|p| p.get("name")).and_then(|n| n.as_str()).map(str::to_string).unwrap_or_else(|| {
            dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "crate".into())
        });
    let lib_table = manifest.get("lib").and_then(|l| l.as_table());
    let name = lib_table
        .and_then(|l| l.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| pkg_name.clone())
        .replace('-', "_");
    let lib = lib_table
        .and_then(|l| l.get("path"))
        .and_then(|p| p.as_str())
        .map(|p| dir.join(p))
        .or_else(|| Some(dir.join("src/lib.rs")))
        .filter(|p| p.is_file());
    let mut bins = Vec::new();
    if let Some(arr) = manifest.get("bin").and_then(|b| b.as_array()) {
        for b in arr.iter().filter_map(|b| b.as_table()) {
            let bname = b.get("name").and_then(|n| n.as_str()).unwrap_or(&pkg_name).to_string();
            let path = match b.get("path").and_then(|p| p.as_str()) {
                Some(p) => dir.join(p),
                None if bname == pkg_name => dir.join("src/main.rs"),
                None => dir.join("src/bin").join(format!("{bname}.rs")),
            };
            if path.is_file() {
                bins.push((bname, path));
            }
        }
    }
    let main = dir.join("src/main.rs");
    if main.is_file() && !bins.iter().any(|(_, p)| *p == main) {
        bins.push((pkg_name.clone(), main));
    }
    if let Ok(rd) = std::fs::read_dir(dir.join("src/bin")) {
        let mut extra: Vec<PathBuf> = rd.filter_map(Result::ok).map(|e| e.path()).collect();
        extra.sort();
        for p in extra {
            let f = if p.is_dir() { p.join("main.rs") } else { p.clone() };
            if f.extension().is_some_and(|e| e == "rs") && f.is_file() && !bins.iter().any(|(_, b)| *b == f) {
                let n = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                bins.push((n, f));
            }
        }
    }
    CrateInfo { name, dir: dir.to_path_buf(), lib, bins, files: Vec::new() }
}

/// Finds the crates and files under `root`.
pub(crate) fn discover(root: &Path, diags: &mut Vec<Diagnostic>) -> Result<Project, AnalyzeError> {
    if !root.is_dir() {
        return Err(AnalyzeError::NotADirectory(root.to_path_buf()));
    }
    let manifest_path = root.join("Cargo.toml");
    if !manifest_path.is_file() {
        return Err(AnalyzeError::NoManifest(root.to_path_buf()));
    }
    let manifest = read_toml(&manifest_path, diags, root).unwrap_or_default();
    let dir_name = root
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "root".into());
    let mut crate_dirs: Vec<PathBuf> = Vec::new();
    let is_package = manifest.contains_key("package");
    if is_package || !manifest.contains_key("workspace") {
        crate_dirs.push(root.to_path_buf());
    }
    if let Some(ws) = manifest.get("workspace").and_then(|w| w.as_table()) {
        let excluded: BTreeSet<PathBuf> = str_list(ws, "exclude")
            .iter()
            .flat_map(|p| expand(root, p))
            .filter_map(|p| p.canonicalize().ok())
            .collect();
        for m in str_list(ws, "members") {
            for dir in expand(root, &m) {
                if !dir.join("Cargo.toml").is_file() {
                    continue;
                }
                let canon = dir.canonicalize().unwrap_or_else(|_| dir.clone());
                if excluded.contains(&canon)
                    || crate_dirs.iter().any(|d| d.canonicalize().ok().as_ref() == Some(&canon))
                {
                    continue;
                }
                crate_dirs.push(dir);
            }
        }
    }
    let name = if is_package {
        manifest
            .get("package")
            .and_then(|p| p.get("name"))
            .and_then(|n| n.as_str())
            .map(|s| s.replace('-', "_"))
            .unwrap_or(dir_name)
    } else {
        dir_name
    };
    let mut crates = Vec::new();
    for dir in &crate_dirs {
        let m = if dir == root {
            manifest.clone()
        } else {
            read_toml(&dir.join("Cargo.toml"), diags, root).unwrap_or_default()
        };
        crates.push(crate_at(dir, &m));
    }
    // Two members may share a crate name (rare): keep unit ids apart.
    let mut seen = BTreeSet::new();
    for c in &mut crates {
        let mut n = c.name.clone();
        let mut k = 2;
        while !seen.insert(n.clone()) {
            n = format!("{}{k}", c.name);
            k += 1;
        }
        c.name = n;
    }
    let crate_canon: Vec<PathBuf> =
        crates.iter().map(|c| c.dir.canonicalize().unwrap_or_else(|_| c.dir.clone())).collect();
    let mut sql_files = Vec::new();
    for (ci, c) in crates.iter_mut().enumerate() {
        let own = &crate_canon[ci];
        let walker =
            walkdir::WalkDir::new(&c.dir).follow_links(false).sort_by_file_name().into_iter().filter_entry(|e| {
                if e.depth() == 0 {
                    return true;
                }
                let name = e.file_name().to_string_lossy();
                if e.file_type().is_dir() {
                    if skip_dir(&name) {
                        return false;
                    }
                    // A nested package is a crate of its own (or not part of this analysis).
                    if e.path().join("Cargo.toml").is_file() {
                        let canon = e.path().canonicalize().unwrap_or_else(|_| e.path().to_path_buf());
                        return canon == *own;
                    }
                }
                true
            });
        for entry in walker {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    let p = e.path().map(|p| rel(root, p)).unwrap_or_default();
                    diags.push(Diagnostic::new(p, 0, format!("cannot read directory entry: {e}")));
                    continue;
                }
            };
            if !entry.file_type().is_file() {
                continue;
            }
            let p = entry.path();
            match p.extension().and_then(|e| e.to_str()) {
                Some("rs") => c.files.push(p.to_path_buf()),
                Some("sql") if p.components().any(|x| x.as_os_str() == "migrations") => sql_files.push(p.to_path_buf()),
                _ => {}
            }
        }
    }
    sql_files.sort();
    sql_files.dedup();
    if crates.iter().all(|c| c.files.is_empty()) {
        return Err(AnalyzeError::NoRustFiles(root.to_path_buf()));
    }
    Ok(Project { name, crates, sql_files })
}
