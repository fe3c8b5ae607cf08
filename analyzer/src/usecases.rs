//! Use cases across layers: endpoints clustered by what their slices share, and the
//! lower-layer code that goes with each cluster.
//!
//! An endpoint's *slice* is what its handler reaches through the function-level call
//! graph (`Index::fn_calls`, at most `SLICE_DEPTH` calls deep): functions, the tables
//! they read and write, the types the handler uses. Each endpoint is described by
//! features of several kinds, each feature weighing its strength in the slice (a
//! function reached three calls deep counts a third) × idf (ln(N / endpoints with the
//! feature), so what most endpoints share — the error type, the pool — weighs nothing).
//! Two endpoints are tied by Σ over kinds of (kind weight × the cosine of their
//! feature vectors of that kind), so no kind outweighs another by sheer numbers (a
//! slice reaches hundreds of functions, a handler has one file). Kinds, by weight:
//! - the route's resource: its first literal path segment after the prefixes most
//!   routes share 3, its first two 1.5 (the structure of the API itself);
//! - the handler's file 3, its folder 2 and the router function that registered it 2
//!   (how the team grouped the code; a folder every handler shares weighs nothing, so
//!   a flat `handlers/` is not one service);
//! - tables written 2, tables read 1 (the data a use case owns);
//! - the types the handler itself uses (request and response types) 1.5;
//! - the functions its slice calls 1.
//!
//! Each endpoint keeps its `NEIGHBOURS` strongest ties, and the endpoint graph is
//! clustered with the same deterministic Louvain as the module graph (at `RESOLUTION`
//! times the requested resolution). Each function reached by slices then votes for the
//! clusters that reach it; `services` places modules and functions by those votes.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::cluster::{self, Graph};
use crate::index::{Access, FoundEndpoint, Index};

/// What the use-case view reads of the `Index`: the parts that can go to another
/// thread (the index's name-lookup memo cannot), so the view is computed while the
/// module graph is clustered.
pub(crate) struct Input<'a> {
    endpoints: &'a [FoundEndpoint],
    fn_calls: &'a BTreeMap<(usize, usize), f64>,
    fn_types: &'a BTreeMap<usize, BTreeSet<(usize, String)>>,
    accesses: &'a [Access],
}

impl<'a> Input<'a> {
    /// The parts of `ix` the use-case view reads.
    pub(crate) fn of(ix: &'a Index) -> Self {
        Input { endpoints: &ix.endpoints, fn_calls: &ix.fn_calls, fn_types: &ix.fn_types, accesses: &ix.accesses }
    }
}

/// How deep a slice follows calls from its handler.
const SLICE_DEPTH: usize = 4;
/// The endpoint graph is clustered at this multiple of the requested resolution: an
/// endpoint graph is denser than a module graph, and its communities smaller.
const RESOLUTION: f64 = 1.5;
/// How many of its strongest ties each endpoint keeps.
const NEIGHBOURS: usize = 7;
/// Features held by more than this share of the endpoints tell nothing apart.
const MAX_DF_SHARE: f64 = 0.5;

const W_TABLE_WRITE: f64 = 2.0;
const W_TABLE_READ: f64 = 1.0;
const W_FILE: f64 = 3.0;
const W_ROUTER: f64 = 2.0;
const W_DIR: f64 = 2.0;
const W_RESOURCE: f64 = 3.0;
const W_RESOURCE2: f64 = 1.5;
const W_TYPE: f64 = 1.5;
const W_CALL: f64 = 1.0;

/// Kinds of features, and their weights (in `Feature::kind` order).
const KINDS: usize = 9;
const KIND_WEIGHTS: [f64; KINDS] =
    [W_TABLE_WRITE, W_TABLE_READ, W_FILE, W_ROUTER, W_DIR, W_RESOURCE, W_RESOURCE2, W_TYPE, W_CALL];

/// A feature of an endpoint's slice.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Feature {
    TableWrite(String),
    TableRead(String),
    File(String),
    Router(usize),
    Dir(String),
    Resource(String),
    Resource2(String, String),
    Type(usize, String),
    Call(usize),
}

impl Feature {
    /// Which kind of feature (an index into the per-kind similarities).
    fn kind(&self) -> usize {
        match self {
            Feature::TableWrite(_) => 0,
            Feature::TableRead(_) => 1,
            Feature::File(_) => 2,
            Feature::Router(..) => 3,
            Feature::Dir(_) => 4,
            Feature::Resource(_) => 5,
            Feature::Resource2(..) => 6,
            Feature::Type(..) => 7,
            Feature::Call(_) => 8,
        }
    }
}

/// The use cases found: a cluster per endpoint and the votes of the code they reach.
pub(crate) struct UseCases {
    /// Cluster of each endpoint (by index into `Index::endpoints`).
    pub endpoint_cluster: Vec<usize>,
    /// Number of clusters.
    pub clusters: usize,
    /// Per function reached by some slice: cluster → strength of the slices reaching it.
    pub fn_votes: BTreeMap<usize, BTreeMap<usize, f64>>,
    /// The resource (first literal path segment after the shared prefixes) of each endpoint.
    pub resource: Vec<Option<String>>,
}

/// What a handler's slice reaches: function → strength (1 for the handler, 1/depth below).
fn slice(out_edges: &BTreeMap<usize, Vec<(usize, f64)>>, handler: usize) -> BTreeMap<usize, f64> {
    let mut reach: BTreeMap<usize, f64> = BTreeMap::new();
    reach.insert(handler, 1.0);
    let mut frontier = vec![handler];
    for depth in 1..=SLICE_DEPTH {
        let mut next = Vec::new();
        for f in frontier {
            for &(g, share) in out_edges.get(&f).map(Vec::as_slice).unwrap_or(&[]) {
                let s = share.min(1.0) / depth as f64;
                let e = reach.entry(g).or_insert(0.0);
                if s > *e {
                    if *e == 0.0 {
                        next.push(g);
                    }
                    *e = s;
                }
            }
        }
        next.sort_unstable();
        next.dedup();
        frontier = next;
    }
    reach
}

/// The literal segments of a route path, without parameters.
fn literal_segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty() && !s.starts_with('{')).collect()
}

fn is_version(s: &str) -> bool {
    s.len() >= 2 && s.starts_with('v') && s[1..].chars().all(|c| c.is_ascii_digit())
}

/// Each endpoint's resource path below the prefixes most routes share (`/api`,
/// `/auth/v1`): leading literal segments are dropped while one value leads at least
/// half of the remaining paths, and version segments always.
fn resources(paths: &[&str]) -> Vec<Vec<String>> {
    let mut segs: Vec<Vec<&str>> = paths.iter().map(|p| literal_segments(p)).collect();
    for _ in 0..4 {
        let mut lead: BTreeMap<&str, usize> = BTreeMap::new();
        for s in &segs {
            if let Some(f) = s.first() {
                *lead.entry(f).or_default() += 1;
            }
        }
        let Some((top, n)) = lead.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0))).map(|(k, v)| (*k, *v)) else {
            break;
        };
        if n * 2 < segs.len() || lead.len() == 1 && segs.iter().all(|s| s.len() <= 1) {
            break;
        }
        for s in segs.iter_mut() {
            if s.len() > 1 && s.first() == Some(&top) {
                s.remove(0);
            }
        }
    }
    segs.into_iter().map(|s| s.into_iter().filter(|x| !is_version(x)).map(str::to_string).collect()).collect()
}

/// Clusters the endpoints of `ix` by their slices.
pub(crate) fn cluster(ix: &Input<'_>, resolution: f64) -> UseCases {
    let mut out_edges: BTreeMap<usize, Vec<(usize, f64)>> = BTreeMap::new();
    for (&(a, b), &w) in ix.fn_calls {
        out_edges.entry(a).or_default().push((b, w));
    }
    let mut fn_tables: BTreeMap<usize, BTreeMap<&str, bool>> = BTreeMap::new();
    for a in ix.accesses {
        if let Some(f) = a.owner {
            *fn_tables.entry(f).or_default().entry(a.table.as_str()).or_default() |= a.write;
        }
    }
    let paths: Vec<&str> = ix.endpoints.iter().map(|e| e.path.as_str()).collect();
    let res = resources(&paths);
    // Endpoints sharing a handler are one node.
    let mut node_of_key: BTreeMap<(usize, String), usize> = BTreeMap::new();
    let mut node_of: Vec<usize> = Vec::with_capacity(ix.endpoints.len());
    let mut node_handler: Vec<Option<usize>> = Vec::new();
    let mut node_eps: Vec<Vec<usize>> = Vec::new();
    for (i, e) in ix.endpoints.iter().enumerate() {
        let handler = e.handler_fn;
        let key = match handler {
            Some(h) => (h, String::new()),
            None => (usize::MAX, format!("{i}")),
        };
        let n = *node_of_key.entry(key).or_insert_with(|| {
            node_handler.push(handler);
            node_eps.push(Vec::new());
            node_handler.len() - 1
        });
        node_eps[n].push(i);
        node_of.push(n);
    }
    let nn = node_handler.len();
    let mut features: Vec<BTreeMap<Feature, f64>> = vec![BTreeMap::new(); nn];
    let mut slices: Vec<BTreeMap<usize, f64>> = vec![BTreeMap::new(); nn];
    for n in 0..nn {
        let fs = &mut features[n];
        let mut put = |f: Feature, s: f64| {
            let e = fs.entry(f).or_insert(0.0);
            *e = e.max(s);
        };
        for &i in &node_eps[n] {
            let e = &ix.endpoints[i];
            put(Feature::File(e.file.clone()), 1.0);
            if let Some(r) = e.router {
                put(Feature::Router(r), 1.0);
            }
            if let Some((dir, _)) = e.file.rsplit_once('/') {
                put(Feature::Dir(dir.to_string()), 1.0);
            }
            if let Some(first) = res[i].first() {
                put(Feature::Resource(first.clone()), 1.0);
                if let Some(second) = res[i].get(1) {
                    put(Feature::Resource2(first.clone(), second.clone()), 1.0);
                }
            }
        }
        let Some(h) = node_handler[n] else { continue };
        for (tm, name) in ix.fn_types.get(&h).into_iter().flatten() {
            put(Feature::Type(*tm, name.clone()), 1.0);
        }
        let reach = slice(&out_edges, h);
        for (&f, &s) in &reach {
            if f != h {
                put(Feature::Call(f), s);
            }
            for (&t, &w) in fn_tables.get(&f).into_iter().flatten() {
                put(if w { Feature::TableWrite(t.to_string()) } else { Feature::TableRead(t.to_string()) }, s);
            }
        }
        slices[n] = reach;
    }
    // Inverted index: feature → nodes holding it.
    let mut postings: BTreeMap<&Feature, Vec<(usize, f64)>> = BTreeMap::new();
    for (n, fs) in features.iter().enumerate() {
        for (f, &s) in fs {
            postings.entry(f).or_default().push((n, s));
        }
    }
    let mut pair: BTreeMap<(usize, usize), f64> = BTreeMap::new();
    let max_df = ((nn as f64) * MAX_DF_SHARE).max(2.0) as usize;
    {
        // Per kind: the cosine of the two endpoints' tf-idf vectors.
        let mut norms: Vec<[f64; KINDS]> = vec![[0.0; KINDS]; nn];
        for (f, list) in &postings {
            if list.len() > max_df {
                continue;
            }
            let idf = (nn as f64 / list.len() as f64).ln();
            for &(n, s) in list {
                norms[n][f.kind()] += (s * idf).powi(2);
            }
        }
        // Summed in postings order (so the same every run), keyed by hash for speed.
        let mut dots: HashMap<(usize, usize), [f64; KINDS]> = HashMap::new();
        for (f, list) in &postings {
            if list.len() < 2 || list.len() > max_df {
                continue;
            }
            let idf = (nn as f64 / list.len() as f64).ln();
            let k = f.kind();
            for (i, &(a, sa)) in list.iter().enumerate() {
                for &(b, sb) in &list[i + 1..] {
                    dots.entry((a, b)).or_insert([0.0; KINDS])[k] += sa * sb * idf * idf;
                }
            }
        }
        for ((a, b), d) in dots {
            let mut w = 0.0;
            for k in 0..KINDS {
                if d[k] > 0.0 {
                    w += KIND_WEIGHTS[k] * d[k] / (norms[a][k].sqrt() * norms[b][k].sqrt());
                }
            }
            pair.insert((a, b), w);
        }
    }
    // Each endpoint keeps its `NEIGHBOURS` strongest ties: the weak long-range ones
    // (a helper most endpoints reach) would glue use cases together.
    let mut keep: BTreeMap<(usize, usize), f64> = BTreeMap::new();
    {
        let mut adj: Vec<Vec<(f64, usize)>> = vec![Vec::new(); nn];
        for (&(a, b), &w) in &pair {
            adj[a].push((w, b));
            adj[b].push((w, a));
        }
        for (a, list) in adj.iter_mut().enumerate() {
            list.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
            for &(w, b) in list.iter().take(NEIGHBOURS) {
                keep.insert((a.min(b), a.max(b)), w);
            }
        }
    }
    let mut g = Graph::new(nn);
    for (&(a, b), &w) in &keep {
        g.add(a, b, w);
    }
    let part = if nn == 0 { Vec::new() } else { cluster::partition(&g, resolution * RESOLUTION, None) };
    let clusters = part.iter().max().map_or(0, |m| m + 1);
    let mut fn_votes: BTreeMap<usize, BTreeMap<usize, f64>> = BTreeMap::new();
    for n in 0..nn {
        for (&f, &s) in &slices[n] {
            *fn_votes.entry(f).or_default().entry(part[n]).or_default() += s;
        }
    }
    UseCases {
        endpoint_cluster: node_of.iter().map(|&n| part[n]).collect(),
        clusters,
        fn_votes,
        resource: res.into_iter().map(|r| r.into_iter().next()).collect(),
    }
}
