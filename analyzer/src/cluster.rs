//! Community detection on the weighted unit graph: Louvain modularity optimisation
//! (Blondel et al. 2008) with a resolution parameter γ, made deterministic — nodes are
//! visited in index order, a node moves only for a strictly better gain and ties go
//! to the lowest community number, so no random seed is involved. `--services N` is a
//! target: resolutions are scanned for the partition closest to N from above, then
//! the pair of communities whose merge costs the least modularity is merged until N.

use std::collections::BTreeMap;

/// An undirected weighted edge list over nodes `0..n`; self-loops allowed.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    /// Number of nodes.
    pub n: usize,
    /// Edges (u, v, weight), u ≤ v; parallel edges add up.
    pub edges: Vec<(usize, usize, f64)>,
}

impl Graph {
    /// A graph of `n` nodes and no edges.
    pub fn new(n: usize) -> Self {
        Graph { n, edges: Vec::new() }
    }

    /// Adds weight between two nodes.
    pub fn add(&mut self, a: usize, b: usize, w: f64) {
        if w > 0.0 && a < self.n && b < self.n {
            self.edges.push((a.min(b), a.max(b), w));
        }
    }

    /// The same graph with parallel edges summed, in (u, v) order.
    pub fn merged(&self) -> Graph {
        let mut m: BTreeMap<(usize, usize), f64> = BTreeMap::new();
        for &(u, v, w) in &self.edges {
            *m.entry((u, v)).or_default() += w;
        }
        Graph { n: self.n, edges: m.into_iter().map(|((u, v), w)| (u, v, w)).collect() }
    }

    fn degrees(&self) -> Vec<f64> {
        let mut k = vec![0.0; self.n];
        for &(u, v, w) in &self.edges {
            k[u] += w;
            k[v] += w;
        }
        k
    }
}

/// Newman's weighted modularity of a partition, with resolution γ:
/// Q = Σ_c [ L_c / m − γ (d_c / 2m)² ], L_c the weight inside c, d_c its total degree.
pub fn modularity(g: &Graph, part: &[usize], gamma: f64) -> f64 {
    let m: f64 = g.edges.iter().map(|e| e.2).sum();
    if m <= 0.0 {
        return 0.0;
    }
    let k = g.degrees();
    let mut inside: BTreeMap<usize, f64> = BTreeMap::new();
    let mut tot: BTreeMap<usize, f64> = BTreeMap::new();
    for &(u, v, w) in &g.edges {
        if part[u] == part[v] {
            *inside.entry(part[u]).or_default() += w;
        }
    }
    for (i, &c) in part.iter().enumerate() {
        *tot.entry(c).or_default() += k[i];
    }
    tot.iter().map(|(c, d)| inside.get(c).copied().unwrap_or(0.0) / m - gamma * (d / (2.0 * m)).powi(2)).sum()
}

/// Renumbers communities 0.. in order of first appearance.
fn renumber(part: &mut [usize]) -> usize {
    let mut map: BTreeMap<usize, usize> = BTreeMap::new();
    let mut order = Vec::new();
    for &c in part.iter() {
        if let std::collections::btree_map::Entry::Vacant(e) = map.entry(c) {
            e.insert(order.len());
            order.push(c);
        }
    }
    for c in part.iter_mut() {
        *c = map[c];
    }
    order.len()
}

/// One level of local moving; returns the partition and whether anything moved.
fn local_moves(g: &Graph, gamma: f64) -> (Vec<usize>, bool) {
    let n = g.n;
    let k = g.degrees();
    let m2: f64 = k.iter().sum();
    let mut comm: Vec<usize> = (0..n).collect();
    if m2 <= 0.0 {
        return (comm, false);
    }
    let mut adj: Vec<Vec<(usize, f64)>> = vec![Vec::new(); n];
    for &(u, v, w) in &g.edges {
        if u != v {
            adj[u].push((v, w));
            adj[v].push((u, w));
        }
    }
    let mut tot = k.clone();
    let mut moved_any = false;
    for _pass in 0..200 {
        let mut moved = false;
        for i in 0..n {
            let ci = comm[i];
            let mut to: BTreeMap<usize, f64> = BTreeMap::new();
            for &(j, w) in &adj[i] {
                *to.entry(comm[j]).or_default() += w;
            }
            tot[ci] -= k[i];
            let gain = |c: usize, w: f64| w - gamma * tot[c] * k[i] / m2;
            let mut best = ci;
            let mut best_gain = gain(ci, to.get(&ci).copied().unwrap_or(0.0));
            for (&c, &w) in &to {
                let gval = gain(c, w);
                if gval > best_gain + 1e-12 {
                    best = c;
                    best_gain = gval;
                }
            }
            tot[best] += k[i];
            if best != ci {
                comm[i] = best;
                moved = true;
                moved_any = true;
            }
        }
        if !moved {
            break;
        }
    }
    (comm, moved_any)
}

/// Louvain: local moving then aggregation, repeated until nothing moves. Returns a
/// community number per node, numbered in order of first appearance.
pub fn louvain(g: &Graph, gamma: f64) -> Vec<usize> {
    let mut part: Vec<usize> = (0..g.n).collect();
    let mut cur = g.merged();
    for _level in 0..32 {
        let (mut comm, moved) = local_moves(&cur, gamma);
        if !moved {
            break;
        }
        let nc = renumber(&mut comm);
        for p in part.iter_mut() {
            *p = comm[*p];
        }
        let mut next = Graph::new(nc);
        for &(u, v, w) in &cur.edges {
            next.add(comm[u], comm[v], w);
        }
        cur = next.merged();
    }
    renumber(&mut part);
    part
}

/// Merges the two communities whose union loses the least modularity (most gains).
fn merge_once(g: &Graph, part: &mut [usize]) {
    let nc = part.iter().max().map_or(0, |m| m + 1);
    if nc < 2 {
        return;
    }
    let m: f64 = g.edges.iter().map(|e| e.2).sum::<f64>().max(1e-12);
    let k = g.degrees();
    let mut tot = vec![0.0; nc];
    for (i, &c) in part.iter().enumerate() {
        tot[c] += k[i];
    }
    let mut between: BTreeMap<(usize, usize), f64> = BTreeMap::new();
    for &(u, v, w) in &g.edges {
        let (a, b) = (part[u].min(part[v]), part[u].max(part[v]));
        if a != b {
            *between.entry((a, b)).or_default() += w;
        }
    }
    let mut best = (0, 1);
    let mut best_gain = f64::NEG_INFINITY;
    for a in 0..nc {
        for b in a + 1..nc {
            let w = between.get(&(a, b)).copied().unwrap_or(0.0);
            let gain = w / m - tot[a] * tot[b] / (2.0 * m * m);
            if gain > best_gain + 1e-12 {
                best_gain = gain;
                best = (a, b);
            }
        }
    }
    for c in part.iter_mut() {
        if *c == best.1 {
            *c = best.0;
        }
    }
    renumber(part);
}

/// The partition for a resolution and an optional target number of communities.
pub fn partition(g: &Graph, gamma: f64, target: Option<usize>) -> Vec<usize> {
    let Some(n) = target else { return louvain(g, gamma) };
    let n = n.max(1);
    let count = |p: &[usize]| p.iter().max().map_or(0, |m| m + 1);
    let mut best: Option<Vec<usize>> = None;
    let mut gamma_scan = 0.05;
    while gamma_scan <= 20.0 {
        let p = louvain(g, gamma_scan);
        let c = count(&p);
        if c >= n {
            best = Some(p);
            break;
        }
        gamma_scan *= 1.2;
    }
    let mut p = best.unwrap_or_else(|| louvain(g, 20.0));
    while count(&p) > n {
        merge_once(g, &mut p);
    }
    p
}

/// The adjusted Rand index of two partitions of the same items (Hubert & Arabie 1985):
/// 1 when they agree, about 0 when they agree no more than chance.
pub fn adjusted_rand(a: &[usize], b: &[usize]) -> f64 {
    let n = a.len().min(b.len());
    if n < 2 {
        return 1.0;
    }
    let c2 = |x: f64| x * (x - 1.0) / 2.0;
    let mut joint: std::collections::BTreeMap<(usize, usize), f64> = Default::default();
    let (mut ra, mut rb): (std::collections::BTreeMap<usize, f64>, std::collections::BTreeMap<usize, f64>) =
        Default::default();
    for i in 0..n {
        *joint.entry((a[i], b[i])).or_default() += 1.0;
        *ra.entry(a[i]).or_default() += 1.0;
        *rb.entry(b[i]).or_default() += 1.0;
    }
    let index: f64 = joint.values().map(|&x| c2(x)).sum();
    let sa: f64 = ra.values().map(|&x| c2(x)).sum();
    let sb: f64 = rb.values().map(|&x| c2(x)).sum();
    let expected = sa * sb / c2(n as f64);
    let max = (sa + sb) / 2.0;
    if (max - expected).abs() < f64::EPSILON { 1.0 } else { (index - expected) / (max - expected) }
}
