//! From unit-level facts to proposed services: the weighted unit graph, its clustering,
//! and the report's services, dependencies, shared tables, metrics and extraction order.
//!
//! Two views: the module graph below, and the use-case view (`usecases`: endpoints
//! clustered by their slices). The module view is kept when both group the endpoints
//! alike (ARI ≥ `VIEWS_AGREE`: the folders are the capabilities); otherwise endpoints
//! go by use case, units and functions by the slices reaching them (`use_case_units`),
//! and dependencies by function-level call sites.
//!
//! Edge weights (undirected, added up per pair of units):
//! - module structure: a module and its parent module 3 (1 when the parent is a crate
//!   root, which declares every top-level module), two modules with the same non-root
//!   parent 2 (when the parent has at most 12 children) — the module tree is the code's
//!   stated design, the strongest single signal;
//! - calls: 0.5·(1 + ln n) for n call sites, either direction;
//! - shared types: 0.5·(1 + ln n) for n distinct types or consts one uses from the other;
//! - shared tables: both write it 2, one writes and the other reads 1, both read 0.25,
//!   divided by (units touching the table − 1) so a table everyone reads weighs little;
//! - change coupling (`--history`): 2 × the Code Maat degree of the files' coupling.

use std::collections::{BTreeMap, BTreeSet};

use petgraph::graph::{NodeIndex, UnGraph};
use petgraph::visit::EdgeRef;

use crate::cluster::{self, Graph};
use crate::discover::Project;
use crate::history::Coupling;
use crate::index::Index;
use crate::metrics;
use crate::partition;
use crate::report::*;
use crate::unitfacts::{UnitAccess, UnitCalls, UnitFacts};
use crate::usecases;
use crate::{Diagnostic, Options};

const W_PARENT: f64 = 3.0;
const W_PARENT_ROOT: f64 = 1.0;
const W_SIBLING: f64 = 2.0;
const W_CALL: f64 = 0.5;
const W_TYPE: f64 = 0.5;
const W_TABLE_WW: f64 = 2.0;
const W_TABLE_WR: f64 = 1.0;
const W_TABLE_RR: f64 = 0.25;
const W_HISTORY: f64 = 2.0;
const MAX_EVIDENCE: usize = 50;

/// A dependency being gathered: call sites, tables, evidence.
type DepAcc = (usize, BTreeSet<String>, BTreeSet<Evidence>);
/// Siblings of a bigger module (generated bindings, flat `handlers/`) tell little about
/// each other, and a clique over them would grow quadratically.
const MAX_SIBLINGS: usize = 12;

/// The unit graph, its partition and names, shared by the report and the plan.
struct Model {
    /// Module index of each unit, units sorted by id.
    units: Vec<usize>,
    /// Unit index of each module (None for non-units).
    unit_of: Vec<Option<usize>>,
    /// Service number of each unit.
    part: Vec<usize>,
    /// Service names by number.
    names: Vec<String>,
    graph: Graph,
    /// The shared kernel's service name, when there is one.
    kernel: Option<String>,
    /// Service number of each endpoint (by index into `Index::endpoints`).
    endpoint_svc: Vec<usize>,
    /// Functions that go with a service (use-case view): function → (service, share).
    fn_svc: BTreeMap<usize, (usize, f64)>,
    /// Which view, and why.
    view: View,
}

fn label(id: &str, multi_crate: bool) -> String {
    let mut segs = id.split("::");
    let krate = segs.next().unwrap_or(id);
    match segs.next() {
        Some(s) if !multi_crate => s.to_string(),
        Some(s) => format!("{krate}-{s}"),
        None => krate.to_string(),
    }
}

fn build_graph(ix: &Index, units: &[usize], unit_of: &[Option<usize>], history: &Coupling) -> UnGraph<String, f64> {
    let mut g: UnGraph<String, f64> = UnGraph::with_capacity(units.len(), units.len() * 4);
    let nodes: Vec<NodeIndex> = units.iter().map(|&m| g.add_node(ix.modules[m].id.clone())).collect();
    let mut w: BTreeMap<(usize, usize), f64> = BTreeMap::new();
    let mut add = |a: usize, b: usize, x: f64| {
        if a != b {
            *w.entry((a.min(b), a.max(b))).or_default() += x;
        }
    };
    // Structure.
    let id_to_unit: BTreeMap<&str, usize> =
        units.iter().enumerate().map(|(u, &m)| (ix.modules[m].id.as_str(), u)).collect();
    let mut children: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (u, &m) in units.iter().enumerate() {
        let module = &ix.modules[m];
        let parent = match module.parent.and_then(|p| unit_of[p]) {
            Some(p) => Some(p),
            // Files no `mod` reaches: attach to the unit named by the longest prefix.
            None => {
                let mut id = module.id.as_str();
                let mut found = None;
                while let Some((head, _)) = id.rsplit_once("::") {
                    if let Some(&p) = id_to_unit.get(head) {
                        found = Some(p);
                        break;
                    }
                    id = head;
                }
                found
            }
        };
        if let Some(p) = parent {
            let pm = units[p];
            let root = ix.modules[pm].parent.is_none() && !ix.modules[pm].id.contains("::");
            add(u, p, if root { W_PARENT_ROOT } else { W_PARENT });
            if !root {
                children.entry(p).or_default().push(u);
            }
        }
    }
    for kids in children.values().filter(|k| k.len() <= MAX_SIBLINGS) {
        for (i, &a) in kids.iter().enumerate() {
            for &b in &kids[i + 1..] {
                add(a, b, W_SIBLING);
            }
        }
    }
    // Calls and types.
    for (&(a, b), ev) in &ix.calls {
        if let (Some(ua), Some(ub)) = (unit_of[a], unit_of[b]) {
            add(ua, ub, W_CALL * (1.0 + (ev.len() as f64).ln()));
        }
    }
    for (&(a, b), names) in &ix.types {
        if let (Some(ua), Some(ub)) = (unit_of[a], unit_of[b]) {
            add(ua, ub, W_TYPE * (1.0 + (names.len() as f64).ln()));
        }
    }
    // Tables.
    let mut touch: BTreeMap<&str, BTreeMap<usize, bool>> = BTreeMap::new();
    for a in &ix.accesses {
        if let Some(u) = unit_of[a.module] {
            let e = touch.entry(a.table.as_str()).or_default().entry(u).or_insert(false);
            *e |= a.write;
        }
    }
    for users in touch.values() {
        if users.len() < 2 {
            continue;
        }
        let norm = (users.len() - 1) as f64;
        let list: Vec<(usize, bool)> = users.iter().map(|(&u, &w)| (u, w)).collect();
        for (i, &(a, wa)) in list.iter().enumerate() {
            for &(b, wb) in &list[i + 1..] {
                let x = match (wa, wb) {
                    (true, true) => W_TABLE_WW,
                    (false, false) => W_TABLE_RR,
                    _ => W_TABLE_WR,
                };
                add(a, b, x / norm);
            }
        }
    }
    // History: file pairs → the units in those files.
    if !history.pairs.is_empty() {
        let mut by_file: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (u, &m) in units.iter().enumerate() {
            by_file.entry(ix.files[ix.modules[m].file].rel.as_str()).or_default().push(u);
        }
        for ((fa, fb), degree) in &history.pairs {
            if let (Some(ua), Some(ub)) = (by_file.get(fa.as_str()), by_file.get(fb.as_str())) {
                for &a in ua {
                    for &b in ub {
                        add(a, b, W_HISTORY * degree);
                    }
                }
            }
        }
    }
    for ((a, b), x) in w {
        g.add_edge(nodes[a], nodes[b], x);
    }
    g
}

/// The last segment (not a version like `v1`) of the longest module path all `ids`
/// share below their crate root.
fn common_module(ids: &[&str]) -> Option<String> {
    let first: Vec<&str> = ids.first()?.split("::").collect();
    let mut len = first.len();
    for id in &ids[1..] {
        let segs: Vec<&str> = id.split("::").collect();
        len = len.min(segs.len());
        len = (0..len).find(|&i| segs[i] != first[i]).unwrap_or(len);
    }
    first
        .get(1..len.max(1))?
        .iter()
        .rev()
        .find(|s| !(s.len() >= 2 && s.starts_with('v') && s[1..].chars().all(|c| c.is_ascii_digit())))
        .map(|s| s.to_string())
}

/// Service names; the kernel, if any, is `(its number, the project's name)`.
fn name_services(
    ix: &Index,
    units: &[usize],
    part: &[usize],
    multi_crate: bool,
    kernel: Option<(usize, &str)>,
) -> Vec<String> {
    let nc = part.iter().max().map_or(0, |m| m + 1);
    // Per service and level (first module segment, then second): label → (units, lines).
    let mut counts: Vec<[BTreeMap<String, (usize, usize)>; 2]> = vec![[BTreeMap::new(), BTreeMap::new()]; nc];
    for (u, &m) in units.iter().enumerate() {
        let id = &ix.modules[m].id;
        // Level 0 and level 1 labels: in one crate its first and second module segments
        // (`catalog`, then `search`); in a workspace the crate, then `crate-module`.
        let mut labels = Vec::new();
        if multi_crate {
            labels.push(id.split("::").next().unwrap_or(id).to_string());
            labels.push(label(id, true));
        } else {
            labels.push(label(id, false));
            if let Some(second) = id.split("::").nth(2) {
                labels.push(second.to_string());
            }
        }
        for (level, l) in labels.into_iter().enumerate() {
            let e = counts[part[u]][level].entry(l).or_default();
            e.0 += 1;
            e.1 += ix.modules[m].lines;
        }
    }
    let rank = |c: &BTreeMap<String, (usize, usize)>| -> Vec<String> {
        let mut v: Vec<(&String, &(usize, usize))> = c.iter().collect();
        v.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(b.1.1.cmp(&a.1.1)).then(a.0.cmp(b.0)));
        v.into_iter().map(|(l, _)| l.clone()).collect()
    };
    // The dominant first-level label, else (when a bigger service took it) the dominant
    // second-level one: two services under `http::` become `articles` and `users`.
    // Best of all: the deepest module all units under the dominant label share
    // (`web::api::server::v1::contexts::torrent::*` → `torrent`), skipping version segments.
    let mut members: Vec<Vec<&str>> = vec![Vec::new(); nc];
    for (u, &m) in units.iter().enumerate() {
        members[part[u]].push(ix.modules[m].id.as_str());
    }
    let ranked: Vec<Vec<String>> = counts
        .iter()
        .enumerate()
        .map(|(c, cnt)| {
            let first = rank(&cnt[0]);
            let mut v = Vec::new();
            if let Some(top) = first.first() {
                let ids: Vec<&str> = members[c]
                    .iter()
                    .copied()
                    .filter(|id| {
                        let l = if multi_crate {
                            id.split("::").next().unwrap_or(id).to_string()
                        } else {
                            label(id, false)
                        };
                        l == *top
                    })
                    .collect();
                if let Some(name) = common_module(&ids) {
                    let krate = ids.first().and_then(|id| id.split("::").next()).unwrap_or_default();
                    v.push(if multi_crate { format!("{krate}-{name}") } else { name });
                }
            }
            // In a workspace a crate-wide service is named after its crate, unless one
            // of the crate's modules holds most of its units (`shop-orders`).
            let second = rank(&cnt[1]);
            let total: usize = cnt[0].values().map(|x| x.0).sum();
            let majority = second.first().is_some_and(|l| cnt[1][l].0 * 2 > total);
            if multi_crate && majority {
                v.extend(second.iter().take(1).cloned());
            }
            v.extend(first.iter().take(1).cloned());
            v.extend(second);
            v.extend(first.into_iter().skip(1));
            v
        })
        .collect();
    let size = |c: usize| -> usize { counts[c][0].values().map(|x| x.0).sum() };
    let mut order: Vec<usize> = (0..nc).collect();
    order.sort_by(|&a, &b| size(b).cmp(&size(a)).then(ranked[a].first().cmp(&ranked[b].first())));
    let mut names = vec![String::new(); nc];
    let mut taken = BTreeSet::new();
    if let Some((k, root)) = kernel {
        names[k] = root.to_string();
        taken.insert(root.to_string());
    }
    for c in order.into_iter().filter(|&c| kernel.is_none_or(|(k, _)| k != c)) {
        let name = ranked[c].iter().find(|l| !taken.contains(*l)).cloned().unwrap_or_else(|| {
            let base = ranked[c].first().cloned().unwrap_or_else(|| "service".into());
            (2..).map(|k| format!("{base}-{k}")).find(|n| !taken.contains(n)).unwrap_or(base)
        });
        taken.insert(name.clone());
        names[c] = name;
    }
    names
}

/// The names of the two views.
const MODULES: &str = "modules";
const USE_CASES: &str = "use-cases";
/// The view of a partition file (`Options::partition`).
const PARTITION: &str = "partition";

/// Above this agreement (ARI) between the endpoints' partition by the module graph and
/// by their use-case slices, the module tree already is the capabilities: keep it.
const VIEWS_AGREE: f64 = 0.7;
/// A unit goes with the cluster holding at least this share of the slices reaching it;
/// reached by several with none holding it, it is shared kernel.
const MAJORITY: f64 = 0.5;

fn model(project: &Project, ix: &Index, history: &Coupling, opts: &Options) -> Result<Model, String> {
    let mut units: Vec<usize> = (0..ix.modules.len()).filter(|&m| ix.modules[m].is_unit).collect();
    units.sort_by(|&a, &b| ix.modules[a].id.cmp(&ix.modules[b].id));
    let mut unit_of = vec![None; ix.modules.len()];
    for (u, &m) in units.iter().enumerate() {
        unit_of[m] = Some(u);
    }
    let pg = build_graph(ix, &units, &unit_of, history);
    let mut graph = Graph::new(units.len());
    for e in pg.edge_references() {
        graph.add(e.source().index(), e.target().index(), *e.weight());
    }
    let multi = project.crates.len() > 1;
    if let Some(p) = &opts.partition {
        let ids: Vec<&str> = units.iter().map(|&m| ix.modules[m].id.as_str()).collect();
        let keys: Vec<String> = ix.endpoints.iter().map(|e| partition::endpoint_key(&e.method, &e.path)).collect();
        let a = p.assign(&ids, &keys)?;
        let endpoint_svc = ix
            .endpoints
            .iter()
            .zip(&a.endpoints)
            .map(|(e, placed)| placed.unwrap_or_else(|| unit_of[e.module].map_or(0, |u| a.part[u])))
            .collect();
        let kernel = a.kernel.map(|k| a.names[k].clone());
        let view = View { used: PARTITION.into(), why: "placed by hand in a partition file".into() };
        let (part, names) = (a.part, a.names);
        return Ok(Model { units, unit_of, part, names, graph, kernel, endpoint_svc, fn_svc: BTreeMap::new(), view });
    }
    // The two views are independent: the use-case view is clustered on a second thread.
    let input = usecases::Input::of(ix);
    let (mut part, uc) = std::thread::scope(|s| {
        let uc = s.spawn(|| usecases::cluster(&input, opts.resolution));
        let part = cluster::partition(&graph, opts.resolution, opts.services);
        (part, uc.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
    });
    let by_module: Vec<usize> =
        ix.endpoints.iter().map(|e| unit_of[e.module].map_or(usize::MAX, |u| part[u])).collect();
    let agree = cluster::adjusted_rand(&by_module, &uc.endpoint_cluster);
    if opts.services.is_some() || ix.endpoints.len() < 2 || agree >= VIEWS_AGREE {
        let kernel = if opts.services.is_none() { split_kernel(ix, &units, &graph, &mut part) } else { None };
        let names = name_services(ix, &units, &part, multi, kernel.map(|k| (k, project.name.as_str())));
        let kernel = kernel.map(|k| names[k].clone());
        let endpoint_svc = ix.endpoints.iter().map(|e| unit_of[e.module].map_or(0, |u| part[u])).collect();
        let why = if opts.services.is_some() {
            "--services asks for a number of services of the module graph".to_string()
        } else if ix.endpoints.len() < 2 {
            "fewer than two endpoints: nothing to cluster by use case".to_string()
        } else {
            format!(
                "the module graph and the endpoints' use-case slices agree (ARI {agree:.2} ≥ {VIEWS_AGREE}): the folders already are the capabilities"
            )
        };
        let view = View { used: MODULES.into(), why };
        return Ok(Model { units, unit_of, part, names, graph, kernel, endpoint_svc, fn_svc: BTreeMap::new(), view });
    }
    let (part, kernel, fn_svc) = use_case_units(ix, &units, &unit_of, &graph, &uc, &part);
    let nc = part.iter().chain(&uc.endpoint_cluster).max().map_or(0, |m| m + 1);
    let mut names = name_services(ix, &units, &part, multi, kernel.map(|k| (k, project.name.as_str())));
    names.resize(nc, String::new());
    name_by_resource(&mut names, &uc, kernel);
    let kernel = kernel.map(|k| names[k].clone());
    let view = View {
        used: USE_CASES.into(),
        why: format!(
            "the module graph groups the endpoints unlike their use-case slices (ARI {agree:.2} < {VIEWS_AGREE}): the folders are layers, so services follow what each endpoint reaches"
        ),
    };
    Ok(Model { units, unit_of, part, names, graph, kernel, endpoint_svc: uc.endpoint_cluster, fn_svc, view })
}

/// The units' services in the use-case view: each unit goes with the cluster whose
/// slices reach it most (at least `MAJORITY`), or to the kernel when several share it;
/// units no slice reaches take the service of the units they are tied to, else keep
/// their module-graph cluster as a service of their own. Returns (part, kernel, the
/// functions' services).
#[allow(clippy::type_complexity)]
fn use_case_units(
    ix: &Index,
    units: &[usize],
    unit_of: &[Option<usize>],
    g: &Graph,
    uc: &usecases::UseCases,
    module_part: &[usize],
) -> (Vec<usize>, Option<usize>, BTreeMap<usize, (usize, f64)>) {
    let kernel = uc.clusters;
    let mut votes: Vec<BTreeMap<usize, f64>> = vec![BTreeMap::new(); units.len()];
    let mut fn_svc = BTreeMap::new();
    let mut any_kernel = false;
    for (&f, v) in &uc.fn_votes {
        let total: f64 = v.values().sum();
        let (best, w) = v.iter().fold((0, f64::MIN), |acc, (&c, &w)| if w > acc.1 { (c, w) } else { acc });
        let share = if total > 0.0 { w / total } else { 0.0 };
        if share >= MAJORITY {
            fn_svc.insert(f, (best, share));
        } else {
            fn_svc.insert(f, (kernel, share));
            any_kernel = true;
        }
        if let Some(u) = unit_of[ix.fns[f].module] {
            for (&c, &x) in v {
                *votes[u].entry(c).or_default() += x;
            }
        }
    }
    // Handlers anchor their modules: an endpoint counts for its handler's unit.
    for (i, e) in ix.endpoints.iter().enumerate() {
        if let Some(u) = unit_of[e.module] {
            *votes[u].entry(uc.endpoint_cluster[i]).or_default() += 1.0;
        }
    }
    const NONE: usize = usize::MAX;
    let mut part = vec![NONE; units.len()];
    for u in 0..units.len() {
        let total: f64 = votes[u].values().sum();
        if total <= 0.0 {
            continue;
        }
        let (best, w) = votes[u].iter().fold((0, f64::MIN), |acc, (&c, &w)| if w > acc.1 { (c, w) } else { acc });
        if w / total >= MAJORITY {
            part[u] = best;
        } else {
            part[u] = kernel;
            any_kernel = true;
        }
    }
    // Crate roots no slice reaches wire everything together: shared kernel.
    for u in 0..units.len() {
        if part[u] == NONE && !ix.modules[units[u]].id.contains("::") {
            part[u] = kernel;
            any_kernel = true;
        }
    }
    // Units no slice reaches: label propagation over the unit graph, a few rounds, a
    // unit joining the service holding at least `MAJORITY` of its ties.
    let mut adj: Vec<Vec<(usize, f64)>> = vec![Vec::new(); units.len()];
    for &(a, b, w) in &g.edges {
        if a != b {
            adj[a].push((b, w));
            adj[b].push((a, w));
        }
    }
    for _ in 0..6 {
        let snapshot = part.clone();
        let mut moved = false;
        for u in 0..units.len() {
            if snapshot[u] != NONE {
                continue;
            }
            // The share is of all the unit's ties (to unplaced units and the kernel too), so
            // infrastructure tied to many places does not cascade into one service.
            let mut by: BTreeMap<usize, f64> = BTreeMap::new();
            let mut total = 0.0;
            for &(v, w) in &adj[u] {
                total += w;
                if snapshot[v] != NONE && snapshot[v] != kernel {
                    *by.entry(snapshot[v]).or_default() += w;
                }
            }
            if let Some((&c, &w)) = by.iter().max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(a.0)))
                && w / total >= MAJORITY
            {
                part[u] = c;
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
    // The rest keep their module-graph cluster, as services without endpoints.
    let base = kernel + 1;
    let mut extra: BTreeMap<usize, usize> = BTreeMap::new();
    for u in 0..units.len() {
        if part[u] == NONE {
            let next = base + extra.len();
            part[u] = *extra.entry(module_part[u]).or_insert(next);
        }
    }
    // Renumber densely, keeping every endpoint cluster's number.
    let mut used: BTreeSet<usize> = part.iter().copied().collect();
    used.extend(0..uc.clusters);
    if !any_kernel {
        used.remove(&kernel);
    }
    let map: BTreeMap<usize, usize> = used.iter().enumerate().map(|(i, &c)| (c, i)).collect();
    for c in part.iter_mut() {
        *c = map[c];
    }
    for v in fn_svc.values_mut() {
        v.0 = map[&v.0];
    }
    (part, any_kernel.then(|| map[&kernel]), fn_svc)
}

/// Names the use-case services after the resource most of their endpoints serve
/// (`/api/users/{id}` → `users`) when that name is free, biggest service first.
fn name_by_resource(names: &mut [String], uc: &usecases::UseCases, kernel: Option<usize>) {
    let mut counts: Vec<BTreeMap<&str, usize>> = vec![BTreeMap::new(); names.len()];
    for (i, &c) in uc.endpoint_cluster.iter().enumerate() {
        if let Some(r) = &uc.resource[i] {
            *counts[c].entry(r.as_str()).or_default() += 1;
        }
    }
    let mut order: Vec<usize> = (0..names.len()).filter(|&c| Some(c) != kernel).collect();
    order.sort_by_key(|&c| (std::cmp::Reverse(counts[c].values().sum::<usize>()), c));
    let mut taken: BTreeSet<String> = kernel.map(|k| names[k].clone()).into_iter().collect();
    let mut fallback = Vec::new();
    for c in order {
        let mut ranked: Vec<(&str, usize)> = counts[c].iter().map(|(k, v)| (*k, *v)).collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        match ranked.iter().find(|(r, _)| !taken.contains(*r)) {
            Some((r, _)) => {
                names[c] = r.to_string();
                taken.insert(names[c].clone());
            }
            None => fallback.push(c),
        }
    }
    for c in fallback {
        let base = if names[c].is_empty() { "service".to_string() } else { names[c].clone() };
        let name = std::iter::once(base.clone())
            .chain((2..).map(|k| format!("{base}-{k}")))
            .find(|n| !taken.contains(n))
            .unwrap_or(base);
        taken.insert(name.clone());
        names[c] = name;
    }
}

/// The shared kernel: leaf modules directly under a crate root (and crate roots
/// themselves) tied to three or more proposed services, none holding half their
/// weight — error types, the database pool, extractors, `lib.rs` wiring every router
/// together. Louvain would glue each to whichever service it happened to touch most;
/// they are what stays in the monolith (or becomes a shared library), so they get a
/// service of their own, named after the crate. Root-level leaves then tied mostly to
/// the kernel (`main.rs`) join it. Returns the kernel's service number.
#[allow(clippy::needless_range_loop)]
fn split_kernel(ix: &Index, units: &[usize], g: &Graph, part: &mut [usize]) -> Option<usize> {
    let n = units.len();
    let mut adj: Vec<Vec<(usize, f64)>> = vec![Vec::new(); n];
    for &(a, b, w) in &g.edges {
        if a != b {
            adj[a].push((b, w));
            adj[b].push((a, w));
        }
    }
    let has_children: BTreeSet<usize> = units.iter().filter_map(|&m| ix.modules[m].parent).collect();
    let root_leaf = |u: usize| {
        let m = units[u];
        let depth = ix.modules[m].id.matches("::").count();
        depth == 0 || (depth == 1 && !has_children.contains(&m))
    };
    // `through_capabilities`: count only ties to units that are not root-level leaves
    // themselves, so the kernel's members do not vouch for each other.
    let weights = |u: usize, part: &[usize], through_capabilities: bool| -> BTreeMap<usize, f64> {
        let mut by: BTreeMap<usize, f64> = BTreeMap::new();
        for &(v, w) in &adj[u] {
            if !(through_capabilities && root_leaf(v)) {
                *by.entry(part[v]).or_default() += w;
            }
        }
        by
    };
    let nc = part.iter().max().map_or(0, |m| m + 1);
    let kernel = nc;
    let mut any = false;
    let snapshot = part.to_vec();
    for u in 0..n {
        if !root_leaf(u) {
            continue;
        }
        let by = weights(u, &snapshot, true);
        let total: f64 = by.values().sum();
        let max = by.values().copied().fold(0.0, f64::max);
        if by.len() >= 3 && total > 0.0 && max / total < 0.5 {
            part[u] = kernel;
            any = true;
        }
    }
    if !any {
        return None;
    }
    for _round in 0..8 {
        let mut moved = false;
        for u in 0..n {
            if !root_leaf(u) || part[u] == kernel {
                continue;
            }
            let by = weights(u, part, false);
            let best = by.iter().fold((part[u], f64::MIN), |acc, (&c, &w)| if w > acc.1 { (c, w) } else { acc });
            if best.0 == kernel {
                part[u] = kernel;
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
    // Renumber in order of first appearance; the kernel keeps its place in that order.
    let mut map: BTreeMap<usize, usize> = BTreeMap::new();
    for c in part.iter_mut() {
        let next = map.len();
        *c = *map.entry(*c).or_insert(next);
    }
    map.get(&kernel).copied()
}

/// Builds the report and the unit facts behind it; fails only on a partition file
/// that does not fit the code.
pub(crate) fn report(
    project: &Project,
    ix: &Index,
    history: &Coupling,
    opts: &Options,
    mut diags: Vec<Diagnostic>,
) -> Result<(Report, UnitFacts), String> {
    let md = model(project, ix, history, opts)?;
    let svc_of_module = |m: usize| md.unit_of[m].map(|u| md.names[md.part[u]].clone());
    let unit_id = |m: usize| ix.modules[m].id.clone();
    // A table access goes with the function doing it when that function goes with a
    // service (use-case view), else with its unit.
    let svc_of_access = |a: &crate::index::Access| match a.owner.and_then(|f| md.fn_svc.get(&f)) {
        Some(&(c, _)) => Some(md.names[c].clone()),
        None => svc_of_module(a.module),
    };

    let units: Vec<Unit> = md
        .units
        .iter()
        .map(|&m| Unit { id: unit_id(m), file: ix.files[ix.modules[m].file].rel.clone(), lines: ix.modules[m].lines })
        .collect();
    let endpoints: Vec<Endpoint> = ix
        .endpoints
        .iter()
        .map(|e| Endpoint {
            method: e.method.clone(),
            path: e.path.clone(),
            handler: e.handler.clone(),
            file: e.file.clone(),
            line: e.line,
            unit: unit_id(e.module),
        })
        .collect();

    // Tables: per table, unit readers / writers; per service, owns / reads.
    let mut t_units: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
    let mut t_svcs: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
    for a in &ix.accesses {
        let e = t_units.entry(a.table.clone()).or_default();
        if a.write {
            e.1.insert(unit_id(a.module))
        } else {
            e.0.insert(unit_id(a.module))
        };
        if let Some(s) = svc_of_access(a) {
            let e = t_svcs.entry(a.table.clone()).or_default();
            if a.write {
                e.1.insert(s)
            } else {
                e.0.insert(s)
            };
        }
    }
    let tables: Vec<Table> = t_units
        .iter()
        .map(|(name, (r, w))| Table {
            name: name.clone(),
            readers: r.difference(w).cloned().collect(),
            writers: w.iter().cloned().collect(),
            defined: ix.known_tables.contains(name),
        })
        .collect();
    let shared_tables: Vec<SharedTable> = t_svcs
        .iter()
        .filter(|(_, (r, w))| r.union(w).count() > 1)
        .map(|(t, (r, w))| SharedTable {
            table: t.clone(),
            writers: w.iter().cloned().collect(),
            readers: r.difference(w).cloned().collect(),
        })
        .collect();

    // Services.
    let mut services: Vec<Service> = md
        .names
        .iter()
        .map(|n| Service {
            name: n.clone(),
            units: Vec::new(),
            endpoints: Vec::new(),
            tables: ServiceTables::default(),
            lines: 0,
            kernel: md.kernel.as_deref() == Some(n.as_str()),
            functions: Vec::new(),
        })
        .collect();
    for (u, &m) in md.units.iter().enumerate() {
        let s = &mut services[md.part[u]];
        s.units.push(ServiceUnit { id: unit_id(m), file: ix.files[ix.modules[m].file].rel.clone() });
        s.lines += ix.modules[m].lines;
    }
    for (i, e) in ix.endpoints.iter().enumerate() {
        services[md.endpoint_svc[i]].endpoints.push(ServiceEndpoint {
            method: e.method.clone(),
            path: e.path.clone(),
            handler: e.handler.clone(),
            file: e.file.clone(),
            line: e.line,
        });
    }
    let handlers: BTreeSet<usize> = ix.endpoints.iter().filter_map(|e| e.handler_fn).collect();
    for (&f, &(c, share)) in &md.fn_svc {
        if handlers.contains(&f) {
            continue;
        }
        let node = &ix.fns[f];
        let name = ix.qualified(node.module, &node.name);
        services[c].functions.push(ServiceFunction {
            name,
            file: ix.files[ix.modules[node.module].file].rel.clone(),
            line: node.line,
            share: (share * 1000.0).round() / 1000.0,
        });
    }
    for (t, (r, w)) in &t_svcs {
        for s in services.iter_mut() {
            if w.contains(&s.name) {
                s.tables.owns.push(t.clone());
            } else if r.contains(&s.name) {
                s.tables.reads.push(t.clone());
            }
        }
    }
    for s in services.iter_mut() {
        s.units.sort();
        s.endpoints.sort();
        s.functions.sort_by(|a, b| a.name.cmp(&b.name).then(a.line.cmp(&b.line)));
    }
    services.sort_by(|a, b| a.name.cmp(&b.name));

    // Dependencies: cross-service calls and table accesses.
    // In the use-case view a call goes from the caller's service to the callee's, each
    // function placed where it went (a handler with its endpoint), else with its unit.
    let mut deps: BTreeMap<(String, String), DepAcc> = BTreeMap::new();
    if md.view.used == USE_CASES {
        let mut handler_svc: BTreeMap<usize, usize> = BTreeMap::new();
        for (i, e) in ix.endpoints.iter().enumerate() {
            if let Some(h) = e.handler_fn {
                handler_svc.entry(h).or_insert(md.endpoint_svc[i]);
            }
        }
        let svc_of_fn = |f: usize| -> Option<String> {
            match (handler_svc.get(&f), md.fn_svc.get(&f)) {
                (Some(&c), _) | (None, Some(&(c, _))) => Some(md.names[c].clone()),
                (None, None) => svc_of_module(ix.fns[f].module),
            }
        };
        // Registering a handler on a router is wiring, not a call that becomes remote.
        let routers: BTreeSet<usize> = ix.endpoints.iter().filter_map(|e| e.router).collect();
        for site in &ix.fn_sites {
            if routers.contains(&site.from) && handler_svc.contains_key(&site.to) {
                continue;
            }
            let (Some(sa), Some(sb)) = (svc_of_fn(site.from), svc_of_fn(site.to)) else { continue };
            if sa != sb {
                let d = deps.entry((sa, sb)).or_default();
                d.0 += 1;
                let file = ix.files[ix.modules[site.module].file].rel.clone();
                d.2.insert(Evidence { file, line: site.line, what: ix.call_evidence(site.to) });
            }
        }
    } else {
        for (&(a, b), ev) in &ix.calls {
            let (Some(sa), Some(sb)) = (svc_of_module(a), svc_of_module(b)) else { continue };
            if sa == sb {
                continue;
            }
            let d = deps.entry((sa, sb)).or_default();
            d.0 += ev.len();
            d.2.extend(ev.iter().cloned());
        }
    }
    for a in &ix.accesses {
        let Some(sa) = svc_of_access(a) else { continue };
        let Some((_, writers)) = t_svcs.get(&a.table) else { continue };
        for w in writers {
            if *w == sa {
                continue;
            }
            let d = deps.entry((sa.clone(), w.clone())).or_default();
            d.1.insert(a.table.clone());
            let verb = if a.write { "writes" } else { "reads" };
            d.2.insert(Evidence {
                file: a.file.clone(),
                line: a.line,
                what: format!("{verb} table {} (written by {w})", a.table),
            });
        }
    }
    let dependencies: Vec<Dependency> = deps
        .into_iter()
        .map(|((from, to), (calls, tables, ev))| Dependency {
            from,
            to,
            calls,
            tables: tables.into_iter().collect(),
            evidence: ev.into_iter().take(MAX_EVIDENCE).collect(),
        })
        .collect();

    // Metrics.
    let call_edges: Vec<(usize, usize, u64)> =
        ix.calls.iter().filter_map(|(&(a, b), ev)| Some((md.unit_of[a]?, md.unit_of[b]?, ev.len() as u64))).collect();
    let m2m = metrics::mono2micro(&md.part, &call_edges);
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    let metrics = Metrics {
        services: services.len(),
        modularity: round(cluster::modularity(&md.graph, &md.part, 1.0)),
        sm: round(m2m.sm),
        icp: round(m2m.icp),
        ifn: round(m2m.ifn),
        ned: round(m2m.ned),
    };

    let extraction_order = extraction_order(&services, &dependencies, &shared_tables, md.kernel.as_deref());

    diags.sort();
    diags.dedup();
    let parse_errors = ix.files.iter().filter(|f| f.facts.error.is_some()).count();
    let facts = UnitFacts {
        edges: md.graph.merged().edges,
        calls: ix
            .calls
            .iter()
            .filter_map(|(&(a, b), ev)| {
                let (from, to) = (md.unit_of[a]?, md.unit_of[b]?);
                (from != to).then(|| UnitCalls { from, to, sites: ev.clone() })
            })
            .collect(),
        accesses: ix
            .accesses
            .iter()
            .filter_map(|a| {
                Some(UnitAccess {
                    unit: md.unit_of[a.module]?,
                    table: a.table.clone(),
                    write: a.write,
                    file: a.file.clone(),
                    line: a.line,
                })
            })
            .collect(),
        known_tables: ix.known_tables.iter().cloned().collect(),
    };
    let report = Report {
        version: 1,
        root: project.name.clone(),
        stats: Stats {
            files: ix.files.len(),
            lines: ix.files.iter().map(|f| f.facts.lines).sum(),
            parse_errors,
            elapsed_ms: 0,
            calls: ix.calls.values().map(Vec::len).sum(),
            resolution: opts.resolution,
            coupled_file_pairs: opts.history.map(|_| history.pairs.len()),
        },
        units,
        endpoints,
        tables,
        services,
        dependencies,
        shared_tables,
        metrics,
        extraction_order,
        diagnostics: diags,
        view: md.view.clone(),
    };
    Ok((report, facts))
}

fn sites(n: usize) -> String {
    if n == 1 { "1 call site".to_string() } else { format!("{n} call sites") }
}

fn list(names: &BTreeSet<&str>) -> String {
    names.iter().copied().collect::<Vec<_>>().join(", ")
}

/// Least entangled first: a service's entanglement is its call sites to and from other
/// services plus 5 for each table it shares with another service (a shared table
/// takes a data migration, not just a client); ties go to the service with fewer
/// units (more self-contained), then by name. The shared kernel comes last.
fn extraction_order(
    services: &[Service],
    deps: &[Dependency],
    shared: &[SharedTable],
    kernel: Option<&str>,
) -> Vec<Extraction> {
    let mut rows = Vec::new();
    for s in services {
        let (mut out_calls, mut in_calls) = (0, 0);
        let (mut out_to, mut in_from) = (BTreeSet::new(), BTreeSet::new());
        for d in deps {
            if d.from == s.name && d.calls > 0 {
                out_calls += d.calls;
                out_to.insert(d.to.as_str());
            }
            if d.to == s.name && d.calls > 0 {
                in_calls += d.calls;
                in_from.insert(d.from.as_str());
            }
        }
        let tables: BTreeSet<&str> = shared
            .iter()
            .filter(|t| t.writers.contains(&s.name) || t.readers.contains(&s.name))
            .map(|t| t.table.as_str())
            .collect();
        let score = out_calls + in_calls + 5 * tables.len();
        let mut why = Vec::new();
        if out_calls > 0 {
            why.push(format!("{} into {}", sites(out_calls), list(&out_to)));
        }
        if in_calls > 0 {
            why.push(format!("{} from {}", sites(in_calls), list(&in_from)));
        }
        if !tables.is_empty() {
            why.push(format!("shares tables {}", list(&tables)));
        }
        let is_kernel = kernel == Some(s.name.as_str());
        let why = if is_kernel {
            let kernel = "shared kernel (code every service uses): stays in the monolith or becomes a library";
            if why.is_empty() { kernel.to_string() } else { format!("{kernel}; {}", why.join("; ")) }
        } else if why.is_empty() {
            "no calls or tables shared with other services".to_string()
        } else {
            format!("entanglement {score}: {}", why.join("; "))
        };
        rows.push((is_kernel, score, s.units.len(), s.name.clone(), why));
    }
    rows.sort();
    rows.into_iter().enumerate().map(|(i, (_, _, _, service, why))| Extraction { service, rank: i + 1, why }).collect()
}
