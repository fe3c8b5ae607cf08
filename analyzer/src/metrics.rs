//! Decomposition quality metrics from Kalia et al., "Mono2Micro" (FSE 2021), computed
//! exactly as the replication package's `metrics_util.py` does, over the static call
//! graph between units (a call edge's volume is its number of call sites):
//!
//! - **SM** (structural modularity, higher is better): mean over services of
//!   scoh = μ / N² (μ: connected unordered pairs of units inside the service) minus
//!   scop = 2 / (K (K−1)) · Σ_{i≠j} σ_ij / (2 N_i N_j) (σ_ij: connected unit pairs
//!   across services i and j; the sum runs over ordered pairs, as the reference does).
//! - **ICP** (inter-call percentage, lower is better): Σ over cross-service call edges
//!   of (ln(calls) + 1) divided by the same sum over all call edges.
//! - **IFN** (interface number, lower is better): connected unit pairs across
//!   services, divided by the number of services K.
//! - **NED** (non-extreme distribution, lower is better): 1 − (units in services of 5
//!   to 20 units) / (all units); 1 when no service is of that size.
//!
//! Self-calls are ignored, as in the reference. Where the reference divides by zero
//! (no call edge at all for ICP) the value reported here is 0.

use std::collections::{BTreeMap, BTreeSet};

/// The four Mono2Micro metrics of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Mono2Micro {
    /// Structural modularity.
    pub sm: f64,
    /// Inter-call percentage.
    pub icp: f64,
    /// Interface number.
    pub ifn: f64,
    /// Non-extreme distribution.
    pub ned: f64,
}

/// Computes SM, ICP, IFN and NED for `part` (a service number per unit) over directed
/// call edges `(from, to, calls)`.
pub fn mono2micro(part: &[usize], calls: &[(usize, usize, u64)]) -> Mono2Micro {
    let services: BTreeSet<usize> = part.iter().copied().collect();
    let k = services.len();
    let mut size: BTreeMap<usize, usize> = BTreeMap::new();
    for &c in part {
        *size.entry(c).or_default() += 1;
    }
    // Unordered connected pairs (either direction), self-calls dropped.
    let mut pairs: BTreeSet<(usize, usize)> = BTreeSet::new();
    let mut volume: BTreeMap<(usize, usize), u64> = BTreeMap::new();
    for &(a, b, n) in calls {
        if a == b || n == 0 || a >= part.len() || b >= part.len() {
            continue;
        }
        pairs.insert((a.min(b), a.max(b)));
        *volume.entry((a, b)).or_default() += n;
    }
    // SM.
    let mut mu: BTreeMap<usize, f64> = BTreeMap::new();
    let mut sigma: BTreeMap<(usize, usize), f64> = BTreeMap::new();
    for &(a, b) in &pairs {
        let (ca, cb) = (part[a], part[b]);
        if ca == cb {
            *mu.entry(ca).or_default() += 1.0;
        } else {
            *sigma.entry((ca.min(cb), ca.max(cb))).or_default() += 1.0;
        }
    }
    let scoh: f64 = services
        .iter()
        .map(|c| {
            let n = size[c] as f64;
            mu.get(c).copied().unwrap_or(0.0) / (n * n)
        })
        .sum::<f64>()
        / k.max(1) as f64;
    let scop = if k <= 1 {
        0.0
    } else {
        // Σ over ordered pairs i≠j of σ/(2 N_i N_j) = 2 Σ over unordered pairs.
        let ordered: f64 = sigma.iter().map(|(&(a, b), s)| 2.0 * s / (2.0 * size[&a] as f64 * size[&b] as f64)).sum();
        ordered / k as f64 / (k as f64 - 1.0) * 2.0
    };
    // ICP.
    let (mut total, mut inter) = (0.0, 0.0);
    for (&(a, b), &n) in &volume {
        let w = (n as f64).ln() + 1.0;
        total += w;
        if part[a] != part[b] {
            inter += w;
        }
    }
    let icp = if total > 0.0 { inter / total } else { 0.0 };
    // IFN.
    let cross = pairs.iter().filter(|&&(a, b)| part[a] != part[b]).count() as f64;
    let ifn = if k > 0 { cross / k as f64 } else { 0.0 };
    // NED.
    let all: usize = size.values().sum();
    let non_extreme: usize = size.values().filter(|&&s| (5..=20).contains(&s)).sum();
    let ned = if all > 0 && non_extreme > 0 { 1.0 - non_extreme as f64 / all as f64 } else { 1.0 };
    Mono2Micro { sm: scoh - scop, icp, ifn, ned }
}
