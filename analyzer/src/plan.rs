//! The extraction plan for one proposed service, read off a [`Report`]: its units,
//! endpoints and tables, the tangles to cut (dependencies in both directions and shared
//! tables, with file:line evidence), and the `ficus.toml` `[[routes]]` that move its
//! endpoints to the new service — first in `shadow`, then in `canary`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::report::{Dependency, Report, Service, SharedTable};

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// No proposed service has that name.
    #[error("no proposed service named {name:?}; the services are: {}", known.join(", "))]
    UnknownService {
        /// The name asked for.
        name: String,
        /// The names there are.
        known: Vec<String>,
    },
}

/// A proxy route for some of the service's endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    /// Route name.
    pub name: String,
    /// Path in proxy syntax (`{param}`, `{*rest}`).
    pub path: String,
    /// Methods (empty = all).
    pub methods: Vec<String>,
}

/// The start of a new `ficus.toml`: the proxy in front of the monolith, everything on it.
const STARTER: &str =
    "# Written by `ficus plan --routes-out`: check the addresses, then `ficus proxy --config` this file.
version = 1

[listen]
http  = \"127.0.0.1:8080\"
admin = \"127.0.0.1:9901\"

[upstreams.monolith]
addrs  = [\"127.0.0.1:3000\"]
health = \"/healthz\"

# Requests no route matches go to the monolith.
[default]
upstream = \"monolith\"
";

/// What [`Plan::merge_routes`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MergeSummary {
    /// Routes added.
    pub added: usize,
    /// Routes of the same name updated in place.
    pub updated: usize,
    /// An `[upstreams.NAME]` placeholder was added.
    pub upstream_added: bool,
}

/// The plan for one service.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The service.
    pub service: Service,
    /// Its rank in the extraction order, and why.
    pub rank: Option<(usize, String)>,
    /// Dependencies of the service on others.
    pub outgoing: Vec<Dependency>,
    /// Dependencies of others on the service.
    pub incoming: Vec<Dependency>,
    /// Shared tables it touches.
    pub shared: Vec<SharedTable>,
    /// Proxy routes for its endpoints.
    pub routes: Vec<RouteEntry>,
    /// The shared kernel's name, if the report has one.
    pub kernel: Option<String>,
}

/// Makes the plan for `service`.
pub fn plan(report: &Report, service: &str) -> Result<Plan, PlanError> {
    let Some(svc) = report.services.iter().find(|s| s.name == service) else {
        return Err(PlanError::UnknownService {
            name: service.to_string(),
            known: report.services.iter().map(|s| s.name.clone()).collect(),
        });
    };
    let outgoing = report.dependencies.iter().filter(|d| d.from == service).cloned().collect();
    let incoming = report.dependencies.iter().filter(|d| d.to == service).cloned().collect();
    let shared = report
        .shared_tables
        .iter()
        .filter(|t| t.writers.iter().chain(&t.readers).any(|s| s == service))
        .cloned()
        .collect();
    let rank = report.extraction_order.iter().find(|e| e.service == service).map(|e| (e.rank, e.why.clone()));
    let kernel = report.services.iter().find(|s| s.kernel).map(|s| s.name.clone());
    Ok(Plan { service: svc.clone(), rank, outgoing, incoming, shared, routes: routes(svc), kernel })
}

fn slug(path: &str) -> String {
    let s: String = path
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .collect::<String>()
        .split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    if s.is_empty() { "root".into() } else { s }
}

/// One route per path, with the methods the service serves on it.
fn routes(svc: &Service) -> Vec<RouteEntry> {
    let mut by_path: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for e in &svc.endpoints {
        by_path.entry(e.path.as_str()).or_default().push(e.method.clone());
    }
    let mut out = Vec::new();
    for (path, mut methods) in by_path {
        methods.sort();
        methods.dedup();
        if methods.iter().any(|m| m == "ANY") {
            methods.clear();
        }
        out.push(RouteEntry { name: format!("{}-{}", svc.name, slug(path)), path: path.to_string(), methods });
    }
    out
}

fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

impl Plan {
    /// The `ficus.toml` entries for a stage: `shadow` (the monolith answers, the service
    /// gets a copy) or `canary` (a share of cohorts goes to the service).
    pub fn routes_toml(&self, stage: &str) -> String {
        let mut s = String::new();
        for r in &self.routes {
            let _ = writeln!(s, "[[routes]]");
            let _ = writeln!(s, "name     = {}", toml_str(&r.name));
            let _ = writeln!(s, "path     = {}", toml_str(&r.path));
            if !r.methods.is_empty() {
                let m: Vec<String> = r.methods.iter().map(|m| toml_str(m)).collect();
                let _ = writeln!(s, "methods  = [{}]", m.join(", "));
            }
            let _ = writeln!(s, "upstream = {}", toml_str(&self.service.name));
            let _ = writeln!(s, "stage    = {}", toml_str(stage));
            if stage == "canary" {
                let _ = writeln!(s, "percent  = 10");
                let _ = writeln!(s, "cohort   = \"header:x-user-id\"");
                let _ = writeln!(s, "fallback = true");
            }
            s.push('\n');
        }
        s
    }

    /// Merges the service's routes into a `ficus.toml` (empty text for a new file: it
    /// starts from a proxy in front of a monolith on 127.0.0.1:3000),
    /// keeping its comments and layout: a route of the same name is updated in place
    /// (path, methods, upstream; its stage and percent stay as they are), a new one is
    /// added at `stage`, and an `[upstreams.NAME]` placeholder is added when the file
    /// has none for the service. Returns the text and what changed.
    pub fn merge_routes(&self, existing: &str, stage: &str) -> Result<(String, MergeSummary), String> {
        use toml_edit::{ArrayOfTables, DocumentMut, Item, Table, value};
        let existing = if existing.trim().is_empty() { STARTER } else { existing };
        let mut doc: DocumentMut = existing.parse().map_err(|e: toml_edit::TomlError| e.to_string())?;
        let mut summary = MergeSummary::default();
        if doc.get("version").is_none() {
            doc.insert("version", value(1));
        }
        let name = self.service.name.as_str();
        let upstreams = doc.entry("upstreams").or_insert_with(|| {
            let mut t = Table::new();
            t.set_implicit(true);
            Item::Table(t)
        });
        let upstreams = upstreams.as_table_mut().ok_or("`upstreams` is not a table")?;
        if !upstreams.contains_key(name) {
            let mut t = Table::new();
            t.insert("addrs", value(toml_edit::Array::from_iter(["127.0.0.1:3101"])));
            t.insert("health", value("/healthz"));
            t.decor_mut()
                .set_prefix(format!("\n# Added by `ficus plan --routes-out`: point addrs at the {name} service.\n"));
            upstreams.insert(name, Item::Table(t));
            summary.upstream_added = true;
        }
        let routes = doc.entry("routes").or_insert_with(|| Item::ArrayOfTables(ArrayOfTables::new()));
        let routes = routes.as_array_of_tables_mut().ok_or("`routes` is not an array of [[routes]] tables")?;
        for r in &self.routes {
            let existing = routes.iter_mut().find(|t| t.get("name").and_then(Item::as_str) == Some(r.name.as_str()));
            let (t, fresh) = match existing {
                Some(t) => (t, false),
                None => {
                    routes.push(Table::new());
                    (routes.iter_mut().last().expect("just pushed"), true)
                }
            };
            t.insert("name", value(&r.name));
            t.insert("path", value(&r.path));
            if r.methods.is_empty() {
                t.remove("methods");
            } else {
                t.insert("methods", value(toml_edit::Array::from_iter(r.methods.iter().map(String::as_str))));
            }
            t.insert("upstream", value(name));
            if fresh {
                t.insert("stage", value(stage));
                summary.added += 1;
            } else {
                summary.updated += 1;
            }
        }
        Ok((doc.to_string(), summary))
    }

    /// The plan as text (Markdown).
    pub fn render(&self) -> String {
        let svc = &self.service;
        let mut s = String::new();
        let _ = writeln!(s, "# Extraction plan: {}\n", svc.name);
        if let Some((rank, why)) = &self.rank {
            let _ = writeln!(s, "Extraction order: #{rank} ({why}).\n");
        }
        let _ = writeln!(s, "## Units ({}, {} lines)\n", svc.units.len(), svc.lines);
        for u in &svc.units {
            let _ = writeln!(s, "- `{}` ({})", u.id, u.file);
        }
        let _ = writeln!(s, "\n## Endpoints ({})\n", svc.endpoints.len());
        for e in &svc.endpoints {
            let _ = writeln!(s, "- {} {} → `{}` ({}:{})", e.method, e.path, e.handler, e.file, e.line);
        }
        let _ = writeln!(s, "\n## Tables\n");
        let _ = writeln!(s, "- owns (writes): {}", none_if_empty(&svc.tables.owns));
        let _ = writeln!(s, "- reads: {}", none_if_empty(&svc.tables.reads));
        let _ = writeln!(s, "\n## Tangles to cut\n");
        if self.outgoing.is_empty() && self.incoming.is_empty() && self.shared.is_empty() {
            let _ = writeln!(s, "None: nothing in the code ties this service to another.");
        }
        for d in &self.outgoing {
            let advice = if self.kernel.as_deref() == Some(d.to.as_str()) {
                format!("shared code of the monolith: move what {} needs into a library both depend on", d.from)
            } else {
                format!("replace with an API call to {}", d.to)
            };
            write_dependency(&mut s, d, &advice);
        }
        for d in &self.incoming {
            let advice = if self.kernel.as_deref() == Some(d.from.as_str()) {
                "the monolith's own wiring and tools use it: they go through the proxy or the new API once it moves"
                    .to_string()
            } else {
                format!("{} must offer this as an API", d.to)
            };
            write_dependency(&mut s, d, &advice);
        }
        for t in &self.shared {
            let _ = writeln!(
                s,
                "- table `{}` is shared: written by {}, read by {}",
                t.table,
                none_if_empty(&t.writers),
                none_if_empty(&t.readers)
            );
        }
        let _ = writeln!(s, "\n## Proxy routes (ficus.toml)\n");
        if self.routes.is_empty() {
            let _ = writeln!(s, "The service has no HTTP endpoints: nothing to route.");
            return s;
        }
        let _ = writeln!(
            s,
            "Add the service as an upstream:\n\n```toml\n[upstreams.{}]\naddrs  = [\"127.0.0.1:3101\"]\nhealth = \"/healthz\"\n```\n",
            svc.name
        );
        let _ = writeln!(
            s,
            "Step 1 — shadow: the monolith still answers; the service gets a copy to compare.\n\n```toml\n{}```\n",
            self.routes_toml("shadow")
        );
        let _ = writeln!(
            s,
            "Step 2 — canary: a share of cohorts is served by the service; raise `percent` as it holds.\n\n```toml\n{}```",
            self.routes_toml("canary")
        );
        s
    }
}

fn sites(n: usize) -> String {
    if n == 1 { "1 call site".to_string() } else { format!("{n} call sites") }
}

fn tables_note(t: &[String]) -> String {
    if t.is_empty() { String::new() } else { format!(", tables {}", t.join(", ")) }
}

fn none_if_empty(v: &[String]) -> String {
    if v.is_empty() { "none".into() } else { v.join(", ") }
}

/// One dependency of a plan's tangles, with what to do about it and its evidence.
fn write_dependency(s: &mut String, d: &Dependency, advice: &str) {
    let _ = writeln!(s, "- {} depends on {} ({}{}): {advice}", d.from, d.to, sites(d.calls), tables_note(&d.tables));
    for e in &d.evidence {
        let _ = writeln!(s, "  - {}:{} {}", e.file, e.line, e.what);
    }
}
