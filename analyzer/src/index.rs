//! The module tree and name resolution, and the unit-level facts built on them.
//!
//! Modules are placed by following `mod` declarations from each crate root (`lib.rs`,
//! `main.rs`, `src/bin/*`), honouring `#[path]`; a file no declaration reaches still
//! becomes a module, named after its path. Each module (a file or an inline `mod`) is
//! a *unit*, except test, bench, example and build-script code, which is read (and its
//! parse errors reported) but left out of the service graph.
//!
//! **What name resolution resolves** (syntax only, no type checker): paths starting
//! with `crate`, `self`, `super`, `::`, a crate of the workspace, or a name declared or
//! imported in the current module; `use` items (renames, groups, `self`, re-exports
//! through `pub use`, glob imports of modules); `Self::` inside impls; in value
//! position, `mod x; pub use x::*;` with a `fn x` inside (a module and a function
//! sharing a name in their two namespaces). Lookups are memoised per (module, name),
//! which also cuts `use super::*` cycles.
//!
//! **Calls, function by function** (`fn_calls`): a call resolves to the function that
//! runs, in the module holding its `impl` block (where the SQL usually is), not the
//! module declaring the type. `Type::method(..)` goes to every `impl` of `Type` with
//! that method. `x.method(..)` goes by the receiver's type when syntax gives it:
//! `self`; a typed parameter or `let`; an extractor pattern (`State(s): State<AppState>`,
//! wrappers such as `Arc`, `Data`, `Extension` looked through); a struct field
//! (`state.db`, through the struct's declared field types); a constructor
//! `Type::new(..)` or a struct literal bound by `let`; `clone()`, `lock()`, `?`,
//! `.await` and the like pass the receiver through. A receiver of unknown type (a
//! generic `S: Store`, a trait object, a method's return value) calls every impl of a
//! method of that name in the workspace, each by 1/n, when at most `MAX_GUESSES` types
//! have one and the name is not one of std's everyday methods (`EVERYDAY_METHODS`); a
//! receiver of a type from outside the workspace calls nothing of ours.
//!
//! **What it does not resolve**: return types (`a.b().c()` — `c` goes by name only),
//! closures' parameters, trait impls chosen by associated types, macros' generated code
//! (macro arguments that read as expressions are visited), items brought in by
//! `extern crate` renames or by `#[macro_use]`, names shadowed by local variables, and
//! anything outside PATH (std and dependencies are ignored). A glob cycle answered while
//! its lookup is under way resolves to nothing rather than looping.
//!
//! **Tables**: SQL in string literals (sqlx functions and macros, other SQL-looking
//! strings), diesel `table!`s and their paths, and sea-orm entities (a module whose
//! `Model` has `#[sea_orm(table_name = "x")]`: its `Entity`, `ActiveModel`, `Column`…
//! used elsewhere read `x`; an `ActiveModel` or `Entity::insert/update/delete…` writes
//! it). Each access records the function it is in.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::discover::{Project, rel};
use crate::facts::{FileFacts, ItemKind, Recv, RefKind};
use crate::routes::{RouterItem, join, normalise_path};
use crate::sql::{self, SqlTables};
use crate::{Diagnostic, Evidence};

/// A source file and its facts.
pub(crate) struct SourceFile {
    /// Path relative to PATH.
    pub rel: String,
    /// Absolute path.
    pub path: PathBuf,
    /// Which crate it belongs to.
    pub crate_idx: usize,
    /// What it says.
    pub facts: FileFacts,
}

/// A module: a file or an inline `mod`.
#[derive(Debug)]
pub(crate) struct Module {
    /// Its unit id, `crate::path::to::module`.
    pub id: String,
    /// The module `crate::` refers to from here.
    pub root: usize,
    /// The enclosing module.
    pub parent: Option<usize>,
    /// Child modules by name.
    pub children: HashMap<String, usize>,
    /// The file it is in.
    pub file: usize,
    /// Its scope in that file's facts.
    pub scope: usize,
    /// Items by name.
    pub items: HashMap<String, ItemKind>,
    /// `use` aliases.
    pub uses: HashMap<String, Vec<String>>,
    /// Glob imports.
    pub globs: Vec<Vec<String>>,
    /// Part of the service graph (not test/bench/example/build code).
    pub is_unit: bool,
    /// Lines.
    pub lines: usize,
}

/// What a path resolves to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Target {
    /// A module.
    Module(usize),
    /// An item of a module: (module, name, kind).
    Item(usize, String, ItemKind),
}

/// An endpoint found in the code.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct FoundEndpoint {
    /// HTTP method.
    pub method: String,
    /// Normalised path.
    pub path: String,
    /// Fully qualified handler.
    pub handler: String,
    /// File.
    pub file: String,
    /// Line.
    pub line: usize,
    /// Module index of the unit holding it.
    pub module: usize,
    /// The handler's function (an index into `Index::fns`), when it is one of ours.
    pub handler_fn: Option<usize>,
    /// The router-building function that registered it, when one did.
    pub router: Option<usize>,
}

/// One read or write of a table by a unit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Access {
    /// Module index.
    pub module: usize,
    /// Table name.
    pub table: String,
    /// Written (else read).
    pub write: bool,
    /// Where.
    pub file: String,
    /// Line.
    pub line: usize,
    /// The function it is in (an index into `Index::fns`).
    pub owner: Option<usize>,
}

/// A call site known to go to one function.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct FnSite {
    /// The calling function.
    pub from: usize,
    /// The called function.
    pub to: usize,
    /// The caller's module (its file is the site's file).
    pub module: usize,
    /// Where.
    pub line: usize,
}

/// A function or method of a unit: a node of the function-level graph.
#[derive(Debug, Clone)]
pub(crate) struct FnNode {
    /// The module declaring it.
    pub module: usize,
    /// Its name (`Type::name` for methods).
    pub name: String,
    /// Where it starts.
    pub line: usize,
}

/// Everything the graph and the report are built from.
pub(crate) struct Index {
    /// Files, in path order.
    pub files: Vec<SourceFile>,
    /// Modules.
    pub modules: Vec<Module>,
    /// Crate roots by crate name.
    pub crate_roots: HashMap<String, usize>,
    /// Calls between units: (from, to) → evidence (one per call site).
    pub calls: BTreeMap<(usize, usize), Vec<Evidence>>,
    /// Types (and consts) one unit uses from another: (from, to) → names.
    pub types: BTreeMap<(usize, usize), BTreeSet<String>>,
    /// Table accesses.
    pub accesses: Vec<Access>,
    /// Tables known from migrations, CREATE TABLE strings and diesel schemas.
    pub known_tables: BTreeSet<String>,
    /// Endpoints.
    pub endpoints: Vec<FoundEndpoint>,
    /// Functions and methods of the units, in (module, declaration) order.
    pub fns: Vec<FnNode>,
    /// Function index by (module, name).
    pub fn_of: HashMap<(usize, String), usize>,
    /// Calls between functions: (caller, callee) → weight (a call that may go to n
    /// implementations counts 1/n for each).
    pub fn_calls: BTreeMap<(usize, usize), f64>,
    /// Call sites known to go to one function: (caller, callee, where).
    pub fn_sites: Vec<FnSite>,
    /// Types (by defining module and name) each function refers to.
    pub fn_types: BTreeMap<usize, BTreeSet<(usize, String)>>,
    /// Per module: its scope's items → their function (None for other items).
    item_fn: Vec<Vec<Option<usize>>>,
    /// Table accesses through sea-orm entities, found while resolving paths.
    orm_accesses: Vec<Access>,
    /// Memo of `lookup`.
    lookups: RefCell<HashMap<(usize, String), Option<Target>>>,
    /// Memo of `glob_targets`.
    glob_memo: RefCell<HashMap<usize, Rc<Vec<usize>>>>,
    /// Memo of `glob_index`.
    glob_index_memo: RefCell<HashMap<usize, Rc<HashMap<String, usize>>>>,
}

/// Struct fields: struct → field → the field's type.
type Fields = HashMap<String, HashMap<String, String>>;

/// The workspace's methods and struct fields.
#[derive(Default)]
struct Methods {
    /// By type, then name: the functions.
    by_type: HashMap<String, HashMap<String, Vec<usize>>>,
    /// By name, for receivers of unknown type: every impl, when at most `MAX_GUESSES`
    /// types have one and the name is not an everyday one.
    by_name: HashMap<String, Vec<usize>>,
    /// Struct fields.
    fields: Fields,
}

/// A method call whose receiver's type is unknown is resolved by name only when at most
/// this many types have a method of that name.
const MAX_GUESSES: usize = 4;

/// Method names std and the common crates use everywhere: a call of one of these on a
/// receiver of unknown type is far more likely theirs than ours.
pub(crate) const EVERYDAY_METHODS: &[&str] = &[
    "new",
    "default",
    "from",
    "into",
    "try_from",
    "try_into",
    "clone",
    "to_owned",
    "to_string",
    "as_str",
    "as_ref",
    "get",
    "get_mut",
    "set",
    "insert",
    "remove",
    "push",
    "pop",
    "len",
    "is_empty",
    "iter",
    "iter_mut",
    "into_iter",
    "map",
    "and_then",
    "ok_or",
    "unwrap",
    "expect",
    "contains",
    "contains_key",
    "extend",
    "send",
    "recv",
    "build",
    "run",
    "call",
    "fmt",
    "eq",
    "cmp",
    "partial_cmp",
    "hash",
    "next",
    "parse",
    "execute",
    "fetch",
    "fetch_one",
    "fetch_all",
    "fetch_optional",
    "bind",
    "query",
    "lock",
    "read",
    "write",
    "clear",
    "join",
    "split",
    "filter",
    "collect",
    "find",
    "first",
    "last",
    "keys",
    "values",
    "entry",
    "update",
    "delete",
    "create",
    "list",
    "start",
    "stop",
    "close",
    "open",
    "init",
    "handle",
    "validate",
    "serialize",
    "deserialize",
    "encode",
    "decode",
    "drop",
    "deref",
    "borrow",
    "with",
    "and",
    "or",
    "is_some",
    "is_none",
    "is_ok",
    "is_err",
    "sort",
    "reverse",
    "trim",
    "to_vec",
    "as_bytes",
    "format",
    "flush",
    "spawn",
    "wait",
    "poll",
    "apply",
    "load",
    "save",
    "exists",
    "id",
    "name",
];

/// Above this many glob imports a module gets a name index.
const MANY_GLOBS: usize = 8;

fn mod_rs_like(path: &Path, is_root: bool) -> bool {
    is_root || path.file_name().is_some_and(|n| n == "mod.rs")
}

impl Index {
    /// Builds the module tree for the files of `project` and resolves every fact.
    pub(crate) fn build(project: &Project, files: Vec<SourceFile>, root: &Path, diags: &mut Vec<Diagnostic>) -> Index {
        let by_path: HashMap<PathBuf, usize> = files.iter().enumerate().map(|(i, f)| (f.path.clone(), i)).collect();
        let mut ix = Index {
            files,
            modules: Vec::new(),
            crate_roots: HashMap::new(),
            calls: BTreeMap::new(),
            types: BTreeMap::new(),
            accesses: Vec::new(),
            known_tables: BTreeSet::new(),
            endpoints: Vec::new(),
            fns: Vec::new(),
            fn_of: HashMap::new(),
            fn_calls: BTreeMap::new(),
            fn_sites: Vec::new(),
            fn_types: BTreeMap::new(),
            orm_accesses: Vec::new(),
            item_fn: Vec::new(),
            lookups: RefCell::new(HashMap::new()),
            glob_memo: RefCell::new(HashMap::new()),
            glob_index_memo: RefCell::new(HashMap::new()),
        };
        let mut placed: Vec<Option<usize>> = vec![None; ix.files.len()];
        let mut ids: BTreeSet<String> = BTreeSet::new();
        for c in &project.crates {
            let mut roots: Vec<(String, PathBuf)> = Vec::new();
            if let Some(lib) = &c.lib {
                roots.push((c.name.clone(), lib.clone()));
            }
            for (bname, p) in &c.bins {
                let id = if c.lib.is_none() && roots.is_empty() {
                    c.name.clone()
                } else if p.ends_with("src/main.rs") {
                    format!("{}::main", c.name)
                } else {
                    format!("{}::bin::{}", c.name, bname.replace('-', "_"))
                };
                roots.push((id, p.clone()));
            }
            for (id, p) in roots {
                let Some(&fi) = by_path.get(&p) else { continue };
                if placed[fi].is_some() {
                    continue;
                }
                let m = ix.place_file(fi, id, None, None, true, &by_path, &mut placed, &mut ids);
                ix.crate_roots.entry(c.name.clone()).or_insert(m);
            }
        }
        // Files no `mod` declaration reaches: name them after their path.
        for fi in 0..ix.files.len() {
            if placed[fi].is_some() {
                continue;
            }
            let c = &project.crates[ix.files[fi].crate_idx];
            let r = ix.files[fi].path.strip_prefix(&c.dir).unwrap_or(&ix.files[fi].path).to_path_buf();
            let mut segs: Vec<String> = r
                .components()
                .map(|x| x.as_os_str().to_string_lossy().trim_end_matches(".rs").replace('-', "_"))
                .collect();
            let first = segs.first().cloned().unwrap_or_default();
            let is_unit = first == "src" && !segs.iter().any(|s| s == "tests" || s == "benches");
            if first == "src" {
                segs.remove(0);
            }
            if segs.last().is_some_and(|s| s == "mod" || s == "lib" || s == "main") && segs.len() > 1 {
                segs.pop();
            }
            let mut id = std::iter::once(c.name.clone()).chain(segs).collect::<Vec<_>>().join("::");
            let base = id.clone();
            let mut k = 2;
            while ids.contains(&id) {
                id = format!("{base}_{k}");
                k += 1;
            }
            let own_root = if is_unit { ix.crate_roots.get(&c.name).copied() } else { None };
            let m = ix.place_file(fi, id, None, own_root, is_unit, &by_path, &mut placed, &mut ids);
            if !is_unit {
                ix.modules[m].is_unit = false;
            }
        }
        ix.collect_known_tables(project, root, diags);
        ix.resolve_refs();
        ix.resolve_tables(diags);
        ix.resolve_endpoints();
        ix
    }

    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
    fn place_file(
        &mut self,
        fi: usize,
        id: String,
        parent: Option<usize>,
        root: Option<usize>,
        is_unit: bool,
        by_path: &HashMap<PathBuf, usize>,
        placed: &mut Vec<Option<usize>>,
        ids: &mut BTreeSet<String>,
    ) -> usize {
        let is_crate_root = root.is_none() && parent.is_none();
        let nscopes = self.files[fi].facts.scopes.len();
        let mut scope_mod = vec![0usize; nscopes];
        let file_path = self.files[fi].path.clone();
        let file_dir = file_path.parent().map(Path::to_path_buf).unwrap_or_default();
        let own_dir = if mod_rs_like(&file_path, is_crate_root || parent.is_none()) {
            file_dir.clone()
        } else {
            file_dir.join(file_path.file_stem().unwrap_or_default())
        };
        for s in 0..nscopes {
            let (m_id, m_parent, lines) = {
                let sc = &self.files[fi].facts.scopes[s];
                match sc.parent {
                    None => (id.clone(), parent, self.files[fi].facts.lines),
                    Some(p) => {
                        let pm = scope_mod[p];
                        let name = sc.path.last().cloned().unwrap_or_default();
                        (format!("{}::{}", self.modules[pm].id, name), Some(pm), sc.lines)
                    }
                }
            };
            let idx = self.modules.len();
            let module_root = match (s, root) {
                (0, Some(r)) => r,
                (0, None) if parent.is_none() => idx,
                _ => m_parent.map(|p| self.modules[p].root).unwrap_or(idx),
            };
            let sc = &self.files[fi].facts.scopes[s];
            let mut items = HashMap::new();
            for it in &sc.items {
                items.entry(it.name.clone()).or_insert(it.kind);
            }
            let uses = sc.uses.iter().cloned().collect();
            let globs = sc.globs.clone();
            // The same module declared twice under different `cfg`s: keep ids apart.
            let mut m_id = m_id;
            if ids.contains(&m_id) {
                let base = m_id.clone();
                m_id = (2..).map(|k| format!("{base}_{k}")).find(|c| !ids.contains(c)).unwrap_or(base);
            }
            ids.insert(m_id.clone());
            self.modules.push(Module {
                id: m_id,
                root: module_root,
                parent: m_parent,
                children: HashMap::new(),
                file: fi,
                scope: s,
                items,
                uses,
                globs,
                is_unit: m_parent.map(|p| self.modules[p].is_unit).unwrap_or(is_unit),
                lines,
            });
            if let Some(p) = m_parent {
                let name = match self.files[fi].facts.scopes[s].path.last() {
                    Some(inline) => inline.clone(),
                    None => self.modules[idx].id.rsplit("::").next().unwrap_or("").to_string(),
                };
                self.modules[p].children.insert(name, idx);
            }
            scope_mod[s] = idx;
        }
        placed[fi] = Some(scope_mod[0]);
        // Out-of-line `mod x;` declarations, in every scope of this file.
        for s in 0..nscopes {
            let decls: Vec<(String, Option<String>)> =
                self.files[fi].facts.scopes[s].mods.iter().map(|d| (d.name.clone(), d.path_attr.clone())).collect();
            let inline_path = self.files[fi].facts.scopes[s].path.clone();
            let mut dir = own_dir.clone();
            for p in &inline_path {
                dir = dir.join(p);
            }
            for (name, path_attr) in decls {
                let fname = name.trim_start_matches("r#").to_string();
                let candidates: Vec<PathBuf> = match &path_attr {
                    Some(p) => vec![if s == 0 { file_dir.join(p) } else { dir.join(p) }],
                    None => vec![dir.join(format!("{fname}.rs")), dir.join(&fname).join("mod.rs")],
                };
                let Some(&cfi) = candidates.iter().find_map(|c| by_path.get(c)) else { continue };
                if placed[cfi].is_some() {
                    continue;
                }
                let pm = scope_mod[s];
                let child_id = format!("{}::{}", self.modules[pm].id, fname);
                let r = self.modules[pm].root;
                let u = self.modules[pm].is_unit;
                let child = self.place_file(cfi, child_id, Some(pm), Some(r), u, by_path, placed, ids);
                self.modules[pm].children.insert(fname.clone(), child);
                if path_attr.is_some() {
                    // `#[path]` files are named by their declaration, not by where they are.
                }
            }
        }
        scope_mod[0]
    }

    /// Resolves a path as written in module `m`.
    pub(crate) fn resolve(&self, m: usize, segs: &[String]) -> Option<Target> {
        self.resolve_depth(m, segs, 0)
    }

    /// Resolves a path in value position (a call, a handler). Modules and values live
    /// in different namespaces: for `mod home; pub use home::*;` with `fn home` inside,
    /// `home` names the module in the type namespace and the function in the value
    /// namespace — a module found here is looked into for a value of its own name.
    pub(crate) fn resolve_value(&self, m: usize, segs: &[String]) -> Option<Target> {
        match self.resolve(m, segs)? {
            Target::Module(mm) => {
                let name = segs.last()?;
                match self.lookup(mm, name, 1)? {
                    t @ Target::Item(..) => Some(t),
                    Target::Module(_) => Some(Target::Module(mm)),
                }
            }
            t => Some(t),
        }
    }

    fn resolve_depth(&self, m: usize, segs: &[String], depth: usize) -> Option<Target> {
        if depth > 10 || segs.is_empty() {
            return None;
        }
        let mut i = 1;
        let mut cur = match segs[0].as_str() {
            "::" => {
                i = 2;
                Target::Module(*self.crate_roots.get(segs.get(1)?)?)
            }
            "crate" | "$crate" => Target::Module(self.modules[m].root),
            "self" => Target::Module(m),
            "super" => {
                let mut p = self.modules[m].parent?;
                while segs.get(i).is_some_and(|s| s == "super") {
                    p = self.modules[p].parent?;
                    i += 1;
                }
                Target::Module(p)
            }
            first => match self.lookup(m, first, depth + 1) {
                Some(t) => t,
                None => Target::Module(*self.crate_roots.get(first)?),
            },
        };
        for seg in &segs[i..] {
            cur = match cur {
                Target::Module(mm) => self.lookup(mm, seg, depth + 1)?,
                Target::Item(mm, name, ItemKind::Type) => {
                    let method = format!("{name}::{seg}");
                    if self.modules[mm].items.get(&method) == Some(&ItemKind::Fn) {
                        return Some(Target::Item(mm, method, ItemKind::Fn));
                    }
                    return Some(Target::Item(mm, name, ItemKind::Type));
                }
                other => return Some(other),
            };
        }
        Some(cur)
    }

    /// A name in module `m`: its children, items, `use` aliases, then glob imports.
    /// Memoised per (module, name); a lookup already under way answers None, which
    /// cuts the cycles `use super::*` in every child of a glob-re-exporting parent makes.
    fn lookup(&self, m: usize, name: &str, depth: usize) -> Option<Target> {
        if depth > 10 {
            return None;
        }
        let key = (m, name.to_string());
        if let Some(hit) = self.lookups.borrow().get(&key) {
            return hit.clone();
        }
        self.lookups.borrow_mut().insert(key.clone(), None);
        let found = self.lookup_uncached(m, name, depth);
        self.lookups.borrow_mut().insert(key, found.clone());
        found
    }

    fn lookup_uncached(&self, m: usize, name: &str, depth: usize) -> Option<Target> {
        let module = &self.modules[m];
        if let Some(&c) = module.children.get(name) {
            return Some(Target::Module(c));
        }
        if let Some(&k) = module.items.get(name) {
            return Some(Target::Item(m, name.to_string(), k));
        }
        if let Some(path) = module.uses.get(name) {
            // `use foo::bar;` where the path is its own name (`use serde;`) must not loop.
            if !(path.len() == 1 && path[0] == name) {
                if let Some(t) = self.resolve_depth(m, path, depth + 1) {
                    return Some(t);
                }
            } else if let Some(&r) = self.crate_roots.get(name) {
                return Some(Target::Module(r));
            }
        }
        let targets = self.glob_targets(m, depth);
        if targets.len() > MANY_GLOBS {
            // A module re-exporting many modules (`pub use gen_x::*` for each of hundreds):
            // look the name up in an index instead of asking every module in turn.
            let gm = self.glob_index(m, &targets).get(name).copied()?;
            return self.lookup(gm, name, depth + 1);
        }
        for &gm in targets.iter() {
            if gm != m
                && let Some(t) = self.lookup(gm, name, depth + 1)
            {
                return Some(t);
            }
        }
        None
    }

    /// The modules `m`'s glob imports name, resolved once.
    fn glob_targets(&self, m: usize, depth: usize) -> Rc<Vec<usize>> {
        if let Some(t) = self.glob_memo.borrow().get(&m) {
            return t.clone();
        }
        self.glob_memo.borrow_mut().insert(m, Rc::new(Vec::new()));
        let mut out = Vec::new();
        for g in &self.modules[m].globs {
            if let Some(Target::Module(gm)) = self.resolve_depth(m, g, depth + 1)
                && gm != m
                && !out.contains(&gm)
            {
                out.push(gm);
            }
        }
        let out = Rc::new(out);
        self.glob_memo.borrow_mut().insert(m, out.clone());
        out
    }

    /// Name → the glob-imported module declaring it, for modules with many globs.
    fn glob_index(&self, m: usize, targets: &[usize]) -> Rc<HashMap<String, usize>> {
        if let Some(t) = self.glob_index_memo.borrow().get(&m) {
            return t.clone();
        }
        let mut index: HashMap<String, usize> = HashMap::new();
        for &gm in targets {
            let g = &self.modules[gm];
            for name in g.children.keys().chain(g.items.keys()).chain(g.uses.keys()) {
                index.entry(name.clone()).or_insert(gm);
            }
        }
        let index = Rc::new(index);
        self.glob_index_memo.borrow_mut().insert(m, index.clone());
        index
    }

    /// The path of a target as a person reads it: `inventory::repo::reserve`.
    fn describe(&self, t: &Target) -> String {
        let (m, item) = match t {
            Target::Module(m) => (*m, None),
            Target::Item(m, n, _) => (*m, Some(n.as_str())),
        };
        let id = &self.modules[m].id;
        let local = id.split_once("::").map(|(_, r)| r).unwrap_or(id);
        match item {
            Some(n) if local.is_empty() || !id.contains("::") => n.to_string(),
            Some(n) => format!("{local}::{n}"),
            None => local.to_string(),
        }
    }

    /// The function nodes of every unit.
    fn collect_fns(&mut self) {
        self.item_fn = vec![Vec::new(); self.modules.len()];
        for (m, module) in self.modules.iter().enumerate() {
            if !module.is_unit {
                continue;
            }
            let sc = &self.files[module.file].facts.scopes[module.scope];
            let mut of_item = vec![None; sc.items.len()];
            for (i, it) in sc.items.iter().enumerate().filter(|(_, it)| it.kind == ItemKind::Fn) {
                let key = (m, it.name.clone());
                let id = *self.fn_of.entry(key).or_insert_with(|| {
                    self.fns.push(FnNode { module: m, name: it.name.clone(), line: it.line });
                    self.fns.len() - 1
                });
                of_item[i] = Some(id);
            }
            self.item_fn[m] = of_item;
        }
    }

    /// The function a fact of module `m` is in, from its owner (an index into the
    /// scope's items).
    fn owner_fn(&self, m: usize, owner: Option<usize>) -> Option<usize> {
        self.item_fn.get(m)?.get(owner?).copied().flatten()
    }

    /// What a call of function `f` is, as a person reads it: `calls db::users::find`.
    pub(crate) fn call_evidence(&self, f: usize) -> String {
        format!("calls {}", self.describe(&Target::Item(self.fns[f].module, self.fns[f].name.clone(), ItemKind::Fn)))
    }

    /// The workspace's methods and struct fields.
    fn method_index(&self) -> Methods {
        let mut m = Methods::default();
        let mut named: HashMap<&str, Vec<(&str, usize)>> = HashMap::new();
        for (i, f) in self.fns.iter().enumerate() {
            if let Some((ty, name)) = f.name.rsplit_once("::") {
                m.by_type.entry(ty.to_string()).or_default().entry(name.to_string()).or_default().push(i);
                named.entry(name).or_default().push((ty, i));
            }
        }
        for (name, cands) in named {
            let types: BTreeSet<&str> = cands.iter().map(|c| c.0).collect();
            if !EVERYDAY_METHODS.contains(&name) && types.len() <= MAX_GUESSES {
                m.by_name.insert(name.to_string(), cands.iter().map(|c| c.1).collect());
            }
        }
        for file in &self.files {
            for sc in &file.facts.scopes {
                for (st, field, ty) in &sc.fields {
                    m.fields.entry(st.clone()).or_default().entry(field.clone()).or_insert_with(|| ty.clone());
                }
            }
        }
        m
    }

    /// The functions a method call may run, each with its share: the impls of the
    /// receiver's type when it is known, else (or when that type has no such method in
    /// the workspace: a trait method, a `Deref`) every impl of a method of that name,
    /// when there are at most `MAX_GUESSES` types with one and the name is not one of
    /// std's everyday methods.
    fn method_targets(&self, recv: &Recv, method: &str, methods: &Methods) -> Vec<usize> {
        fn ty_of<'a>(r: &'a Recv, fields: &'a Fields) -> Option<&'a str> {
            match r {
                Recv::Ty(t) => Some(t),
                Recv::Field(base, f) => fields.get(ty_of(base, fields)?)?.get(f).map(String::as_str),
                Recv::Unknown => None,
            }
        }
        if let Some(t) = ty_of(recv, &methods.fields) {
            if let Some(exact) = methods.by_type.get(t).and_then(|m| m.get(method)) {
                return exact.clone();
            }
            // A type from outside the workspace (`PgPool::fetch_all`): nothing of ours runs.
            if !methods.by_type.contains_key(t) && !methods.fields.contains_key(t) {
                return Vec::new();
            }
        }
        methods.by_name.get(method).cloned().unwrap_or_default()
    }

    fn resolve_refs(&mut self) {
        self.collect_fns();
        let methods = self.method_index();
        let mut calls: BTreeMap<(usize, usize), Vec<Evidence>> = BTreeMap::new();
        let mut types: BTreeMap<(usize, usize), BTreeSet<String>> = BTreeMap::new();
        // Hash maps while gathering (millions of sites on a big app), sorted at the end.
        let mut fn_calls: HashMap<(usize, usize), f64> = HashMap::new();
        let mut fn_sites = Vec::new();
        let mut fn_types: HashMap<usize, BTreeSet<(usize, String)>> = HashMap::new();
        let mut orm = Vec::new();
        for m in 0..self.modules.len() {
            if !self.modules[m].is_unit {
                continue;
            }
            let f = &self.files[self.modules[m].file];
            let sc = &f.facts.scopes[self.modules[m].scope];
            // A call that may run any of `targets` (each with share 1/n).
            let mut call = |from: Option<usize>, targets: &[usize], line: usize| {
                let share = 1.0 / targets.len().max(1) as f64;
                for &t in targets {
                    if let Some(from) = from
                        && from != t
                    {
                        *fn_calls.entry((from, t)).or_default() += share;
                    }
                    let tm = self.fns[t].module;
                    // Dependencies are evidence a person checks: only calls known to go there.
                    if targets.len() == 1 {
                        if let Some(from) = from {
                            fn_sites.push(FnSite { from, to: t, module: m, line });
                        }
                        if tm != m {
                            let what = self.call_evidence(t);
                            calls.entry((m, tm)).or_default().push(Evidence { file: f.rel.clone(), line, what });
                        }
                    }
                }
            };
            for r in &sc.refs {
                if let Some((table, write)) = self.orm_access(m, &r.segs) {
                    let owner = self.owner_fn(m, r.owner);
                    orm.push(Access { module: m, table, write, file: f.rel.clone(), line: r.line, owner });
                    continue;
                }
                // Single-segment paths are most often locals, std or prelude names:
                // resolve them only against this module's own names.
                let t = if r.kind == RefKind::Type { self.resolve(m, &r.segs) } else { self.resolve_value(m, &r.segs) };
                let Some(Target::Item(tm, name, kind)) = t else { continue };
                if !self.modules[tm].is_unit {
                    continue;
                }
                let from = self.owner_fn(m, r.owner);
                match (r.kind, kind) {
                    (RefKind::Call | RefKind::Value, ItemKind::Fn) => {
                        if let Some(&callee) = self.fn_of.get(&(tm, name)) {
                            call(from, &[callee], r.line);
                        }
                    }
                    (RefKind::Call | RefKind::Value, ItemKind::Type) if r.segs.len() >= 2 => {
                        // `Type::method(..)` with the method in another module's impl block.
                        let method = r.segs.last().map(String::as_str).unwrap_or("");
                        let targets: Vec<usize> =
                            methods.by_type.get(&name).and_then(|ms| ms.get(method)).cloned().unwrap_or_default();
                        call(from, &targets, r.line);
                        if let Some(from) = from {
                            fn_types.entry(from).or_default().insert((tm, name.clone()));
                        }
                        if tm != m {
                            types.entry((m, tm)).or_default().insert(name);
                        }
                    }
                    _ => {
                        if let Some(from) = from {
                            fn_types.entry(from).or_default().insert((tm, name.clone()));
                        }
                        if tm != m {
                            types.entry((m, tm)).or_default().insert(name);
                        }
                    }
                }
            }
            for mc in &sc.method_calls {
                let targets = self.method_targets(&mc.recv, &mc.method, &methods);
                if !targets.is_empty() {
                    call(self.owner_fn(m, mc.owner), &targets, mc.line);
                }
            }
        }
        for v in calls.values_mut() {
            v.sort();
        }
        self.calls = calls;
        self.types = types;
        fn_sites.sort();
        self.fn_calls = fn_calls.into_iter().collect();
        self.fn_sites = fn_sites;
        self.fn_types = fn_types.into_iter().collect();
        self.orm_accesses = orm;
    }

    /// A path naming a sea-orm entity's generated types (`Entity`, `ActiveModel`,
    /// `Column` …, which no item declares: a derive makes them) in a module whose
    /// `Model` carries `#[sea_orm(table_name = "x")]`: (the table, written). Written when
    /// an `ActiveModel` is used or `Entity::insert/update/delete…` is called.
    fn orm_access(&self, m: usize, segs: &[String]) -> Option<(String, bool)> {
        const GENERATED: &[&str] = &["Entity", "ActiveModel", "Column", "Model", "Relation", "PrimaryKey"];
        let at = segs.iter().rposition(|s| GENERATED.contains(&s.as_str()))?;
        let name = segs[at].as_str();
        let method = segs.get(at + 1).map(String::as_str).unwrap_or("");
        let write =
            name == "ActiveModel" || ["insert", "update", "delete", "save"].iter().any(|w| method.starts_with(w));
        let module = if at == 0 {
            let path = self.modules[m].uses.get(name)?;
            match self.resolve(m, &path[..path.len().saturating_sub(1)])? {
                Target::Module(tm) => tm,
                _ => return None,
            }
        } else {
            match self.resolve(m, &segs[..at])? {
                Target::Module(tm) => tm,
                _ => return None,
            }
        };
        if module == m {
            return None;
        }
        let sc = &self.files[self.modules[module].file].facts.scopes[self.modules[module].scope];
        Some((sc.orm_table.clone()?, write))
    }

    fn collect_known_tables(&mut self, project: &Project, root: &Path, diags: &mut Vec<Diagnostic>) {
        for p in &project.sql_files {
            match std::fs::read_to_string(p) {
                Ok(text) => self.known_tables.extend(sql::created_tables(&text)),
                Err(e) => diags.push(Diagnostic::new(rel(root, p), 0, format!("cannot read: {e}"))),
            }
        }
        for f in &self.files {
            for sc in &f.facts.scopes {
                for (_, t) in &sc.diesel_tables {
                    self.known_tables.insert(t.to_ascii_lowercase());
                }
            }
        }
    }

    fn resolve_tables(&mut self, diags: &mut Vec<Diagnostic>) {
        let mut cache: HashMap<&str, Result<SqlTables, String>> = HashMap::new();
        let mut accesses = Vec::new();
        let mut created = BTreeSet::new();
        let diesel: HashMap<String, String> = self
            .files
            .iter()
            .flat_map(|f| f.facts.scopes.iter().flat_map(|s| s.diesel_tables.iter().cloned()))
            .map(|(rust, sql)| (rust, sql.to_ascii_lowercase()))
            .collect();
        for (m, module) in self.modules.iter().enumerate() {
            let f = &self.files[module.file];
            let sc = &f.facts.scopes[module.scope];
            for lit in &sc.sql {
                let parsed = cache.entry(lit.text.as_str()).or_insert_with(|| sql::tables(&lit.text));
                match parsed {
                    Ok(t) => {
                        created.extend(t.creates.iter().cloned());
                        if !module.is_unit {
                            continue;
                        }
                        let upper = crate::facts::sql_keyword(&lit.text)
                            .is_some_and(|k| k.chars().all(|c| c.is_ascii_uppercase()));
                        let all_known = !self.known_tables.is_empty()
                            && t.reads.iter().chain(&t.writes).all(|x| self.known_tables.contains(x));
                        if !lit.sqlx && !upper && !all_known {
                            continue;
                        }
                        for (set, write) in [(&t.reads, false), (&t.writes, true)] {
                            for table in set {
                                accesses.push(Access {
                                    module: m,
                                    table: table.clone(),
                                    write,
                                    file: f.rel.clone(),
                                    line: lit.line,
                                    owner: self.owner_fn(m, lit.owner),
                                });
                            }
                        }
                    }
                    Err(e) => {
                        if lit.sqlx && module.is_unit {
                            diags.push(Diagnostic::new(f.rel.clone(), lit.line, format!("SQL not understood: {e}")));
                        }
                    }
                }
            }
            if !module.is_unit || diesel.is_empty() {
                continue;
            }
            let diesel_table = |segs: &[String]| -> Option<String> {
                for w in segs.windows(2) {
                    if matches!(w[1].as_str(), "table" | "dsl" | "columns")
                        && let Some(t) = diesel.get(&w[0])
                    {
                        return Some(t.clone());
                    }
                }
                if segs.len() == 1 {
                    return diesel.get(&segs[0]).cloned();
                }
                None
            };
            let mut writes = BTreeSet::new();
            for (segs, line) in &sc.diesel_writes {
                if let Some(t) = diesel_table(segs) {
                    writes.insert((t.clone(), *line));
                    accesses.push(Access {
                        module: m,
                        table: t,
                        write: true,
                        file: f.rel.clone(),
                        line: *line,
                        owner: None,
                    });
                }
            }
            for r in &sc.refs {
                if r.segs.len() < 2 {
                    continue;
                }
                if let Some(t) = diesel_table(&r.segs)
                    && !writes.contains(&(t.clone(), r.line))
                {
                    accesses.push(Access {
                        module: m,
                        table: t,
                        write: false,
                        file: f.rel.clone(),
                        line: r.line,
                        owner: self.owner_fn(m, r.owner),
                    });
                }
            }
            for (mac, name, line) in &sc.macro_names {
                if let Some(t) = diesel.get(name) {
                    let write = ["insert", "update", "delete", "upsert"].iter().any(|w| mac.contains(w));
                    accesses.push(Access {
                        module: m,
                        table: t.clone(),
                        write,
                        file: f.rel.clone(),
                        line: *line,
                        owner: None,
                    });
                }
            }
            // `use schema::users::dsl::*;` and the like read the table.
            for path in sc.uses.iter().map(|(_, p)| p).chain(&sc.globs) {
                if let Some(t) = diesel_table(path) {
                    accesses.push(Access {
                        module: m,
                        table: t,
                        write: false,
                        file: f.rel.clone(),
                        line: 0,
                        owner: None,
                    });
                }
            }
        }
        self.known_tables.extend(created);
        for a in std::mem::take(&mut self.orm_accesses) {
            self.known_tables.insert(a.table.clone());
            accesses.push(a);
        }
        accesses.sort();
        accesses.dedup();
        self.accesses = accesses;
    }

    /// The functions named `name` in module `m`, resolved through the path as written.
    fn fn_target(&self, m: usize, segs: &[String]) -> Option<(usize, String)> {
        match self.resolve_value(m, segs)? {
            Target::Item(tm, n, ItemKind::Fn) => Some((tm, n)),
            _ => None,
        }
    }

    fn resolve_endpoints(&mut self) {
        // Router-building functions and route attributes, by (module, fn name).
        let mut routers: HashMap<(usize, String), &Vec<RouterItem>> = HashMap::new();
        let mut attrs: HashMap<(usize, String), Vec<&crate::routes::RouteAttr>> = HashMap::new();
        let mut fn_lines: HashMap<(usize, String), usize> = HashMap::new();
        for (m, module) in self.modules.iter().enumerate() {
            if !module.is_unit {
                continue;
            }
            let sc = &self.files[module.file].facts.scopes[module.scope];
            for r in &sc.routers {
                routers.insert((m, r.name.clone()), &r.items);
            }
            for a in &sc.route_attrs {
                attrs.entry((m, a.fn_name.clone())).or_default().push(a);
            }
            for it in &sc.items {
                fn_lines.entry((m, it.name.clone())).or_insert(it.line);
            }
        }
        // A router function nested or merged into another is expanded there, not on its own.
        let mut used: BTreeSet<(usize, String)> = BTreeSet::new();
        // In key order: resolution is memoised, so the order of queries must not vary.
        let mut sorted: Vec<(&(usize, String), &&Vec<RouterItem>)> = routers.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        for ((m, _), items) in sorted {
            for it in items.iter() {
                if let RouterItem::Call { target, .. } = it
                    && let Some(t) = self.fn_target(*m, target)
                    && routers.contains_key(&t)
                {
                    used.insert(t);
                }
            }
        }
        let mut keys: Vec<&(usize, String)> = routers.keys().collect();
        keys.sort();
        let mut out: BTreeSet<FoundEndpoint> = BTreeSet::new();
        let mut attributed_seen: BTreeSet<(usize, String)> = BTreeSet::new();
        let ctx = Expand { ix: self, routers: &routers, attrs: &attrs, fn_lines: &fn_lines };
        for key in keys {
            if used.contains(key) {
                continue;
            }
            let mut stack = vec![key.clone()];
            ctx.expand(key, "", &mut stack, &mut out, &mut attributed_seen);
        }
        // Attributed handlers no router registration reached (actix `#[get]` served by
        // a macro we cannot read, utoipa docs): take the attribute's path as is.
        let mut akeys: Vec<_> = attrs.keys().collect();
        akeys.sort();
        for key in akeys {
            if attributed_seen.contains(key) {
                continue;
            }
            let handler = self.qualified(key.0, &key.1);
            let has_real = attrs[key].iter().any(|a| !a.doc_only);
            for a in &attrs[key] {
                if a.doc_only && (has_real || out.iter().any(|e| e.handler == handler)) {
                    continue;
                }
                out.insert(FoundEndpoint {
                    method: a.method.clone(),
                    path: normalise_path(&a.path),
                    handler: handler.clone(),
                    file: self.files[self.modules[key.0].file].rel.clone(),
                    line: a.line,
                    module: key.0,
                    handler_fn: self.fn_of.get(key).copied(),
                    router: None,
                });
            }
        }
        // Fill in `{CONST}` placeholders with the value of a string const of that name.
        let mut consts: BTreeMap<&str, &str> = BTreeMap::new();
        for f in &self.files {
            for sc in &f.facts.scopes {
                for (n, v) in &sc.consts {
                    consts.entry(n.as_str()).or_insert(v.as_str());
                }
            }
        }
        let out: BTreeSet<FoundEndpoint> = out
            .into_iter()
            .map(|mut e| {
                if e.path.contains('{') {
                    for (n, v) in &consts {
                        let ph = format!("{{{n}}}");
                        if e.path.contains(&ph) {
                            e.path = normalise_path(&e.path.replace(&ph, v).replace("//", "/"));
                        }
                    }
                }
                e
            })
            .collect();
        self.endpoints = out.into_iter().collect();
    }

    /// The bulk of the index (files and their facts, modules, the function graph), to
    /// be freed elsewhere; the memos, which cannot leave this thread, are dropped here.
    pub(crate) fn into_bulk(self) -> impl Send {
        (self.files, self.modules, self.fns, self.fn_of, self.fn_calls, self.fn_sites, self.fn_types, self.calls)
    }

    /// `crate::module::fn` for a function of a module.
    pub(crate) fn qualified(&self, m: usize, name: &str) -> String {
        format!("{}::{}", self.modules[m].id, name)
    }
}

struct Expand<'a> {
    ix: &'a Index,
    routers: &'a HashMap<(usize, String), &'a Vec<RouterItem>>,
    attrs: &'a HashMap<(usize, String), Vec<&'a crate::routes::RouteAttr>>,
    fn_lines: &'a HashMap<(usize, String), usize>,
}

impl Expand<'_> {
    fn endpoint(
        &self,
        key: &(usize, String),
        method: &str,
        path: &str,
        handler: Option<&[String]>,
        line: usize,
    ) -> FoundEndpoint {
        let ix = self.ix;
        let m = key.0;
        let router = ix.fn_of.get(key).copied();
        let resolved = handler.and_then(|h| ix.fn_target(m, h));
        match resolved {
            Some((hm, name)) => FoundEndpoint {
                method: method.to_string(),
                path: normalise_path(path),
                handler: ix.qualified(hm, &name),
                file: ix.files[ix.modules[hm].file].rel.clone(),
                line: self.fn_lines.get(&(hm, name.clone())).copied().unwrap_or(line),
                module: hm,
                handler_fn: ix.fn_of.get(&(hm, name)).copied(),
                router,
            },
            None => FoundEndpoint {
                method: method.to_string(),
                path: normalise_path(path),
                handler: match handler {
                    Some(h) => h.join("::"),
                    None => format!("{}::<closure>", ix.modules[m].id),
                },
                file: ix.files[ix.modules[m].file].rel.clone(),
                line,
                module: m,
                handler_fn: None,
                router,
            },
        }
    }

    fn expand(
        &self,
        key: &(usize, String),
        prefix: &str,
        stack: &mut Vec<(usize, String)>,
        out: &mut BTreeSet<FoundEndpoint>,
        seen: &mut BTreeSet<(usize, String)>,
    ) {
        let Some(items) = self.routers.get(key) else { return };
        let m = key.0;
        for it in items.iter() {
            match it {
                RouterItem::Route { method, path, handler, line } => {
                    out.insert(self.endpoint(key, method, &join(prefix, path), handler.as_deref(), *line));
                }
                RouterItem::Attributed { handler, prefix: p, line, docs } => {
                    let Some(t) = self.ix.fn_target(m, handler) else { continue };
                    let Some(list) = self.attrs.get(&t) else { continue };
                    seen.insert(t.clone());
                    for a in list.iter().filter(|a| *docs || !a.doc_only) {
                        let full = join(&join(prefix, p), &a.path);
                        out.insert(self.endpoint(key, &a.method, &full, Some(handler), *line));
                    }
                }
                RouterItem::Call { target, prefix: p, .. } => {
                    let Some(t) = self.ix.fn_target(m, target) else { continue };
                    if stack.contains(&t) || stack.len() > 32 {
                        continue;
                    }
                    stack.push(t.clone());
                    self.expand(&t, &join(prefix, p), stack, out, seen);
                    stack.pop();
                }
            }
        }
    }
}
