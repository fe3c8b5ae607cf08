//! Mono2Micro metrics and modularity against values worked out by hand.

use ficus_analyzer::cluster::{Graph, modularity};
use ficus_analyzer::metrics::mono2micro;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-4
}

/// Six units in three services: A = {0, 1, 2}, B = {3, 4}, C = {5}.
/// Calls (from → to: call sites): 0→1: 3, 1→2: 1, 2→0: 1, 3→4: 2, 2→3: 1, 4→2: 4,
/// 5→0: 1, and 1→1: 5 (a self-call, ignored as in metrics_util.py).
///
/// SM. Connected unordered pairs inside A: {0,1} {1,2} {0,2} → μ_A = 3, scoh_A = 3/3² =
/// 0.33333; inside B: {3,4} → scoh_B = 1/2² = 0.25; C has one unit → scoh_C = 0.
/// Mean scoh = (0.33333 + 0.25 + 0) / 3 = 0.19444.
/// Across: A–B pairs {2,3} {2,4} → σ = 2, σ/(2·3·2) = 0.16667; A–C pair {0,5} → σ = 1,
/// σ/(2·3·1) = 0.16667; B–C none. The reference sums over ordered pairs (each twice):
/// 0.66667, then divides by K = 3, by K−1 = 2 and multiplies by 2: scop = 0.22222.
/// SM = 0.19444 − 0.22222 = −0.02778.
///
/// ICP. Each edge weighs ln(calls) + 1: 0→1 2.09861, 1→2 1, 2→0 1, 3→4 1.69315,
/// 2→3 1, 4→2 2.38629, 5→0 1; total 10.17805; across services 2→3, 4→2, 5→0:
/// 4.38629. ICP = 4.38629 / 10.17805 = 0.43096.
///
/// IFN. Connected pairs across services: {2,3} {2,4} {0,5} = 3, over K = 3 → 1.0.
///
/// NED. Sizes 3, 2, 1: none within 5..=20 → 1.0.
#[test]
fn mono2micro_metrics_of_a_small_partition() {
    let part = [0, 0, 0, 1, 1, 2];
    let calls = [(0, 1, 3), (1, 2, 1), (2, 0, 1), (3, 4, 2), (2, 3, 1), (4, 2, 4), (5, 0, 1), (1, 1, 5)];
    let m = mono2micro(&part, &calls);
    assert!(close(m.sm, -0.027778), "SM {}", m.sm);
    assert!(close(m.icp, 0.430956), "ICP {}", m.icp);
    assert!(close(m.ifn, 1.0), "IFN {}", m.ifn);
    assert!(close(m.ned, 1.0), "NED {}", m.ned);
}

/// Six units, one service of 5 and one of 1: NED = 1 − 5/6 = 0.16667. One service of
/// 21 units is extreme again: NED = 1. With no calls at all ICP is reported as 0 (the
/// reference divides by zero) and SM is 0 − 0 = 0.
#[test]
fn ned_counts_services_of_five_to_twenty_units() {
    let m = mono2micro(&[0, 0, 0, 0, 0, 1], &[]);
    assert!(close(m.ned, 1.0 / 6.0), "NED {}", m.ned);
    assert!(close(m.icp, 0.0) && close(m.sm, 0.0), "{m:?}");
    let m = mono2micro(&[0; 21], &[]);
    assert!(close(m.ned, 1.0), "NED {}", m.ned);
}

/// Two triangles {0,1,2} and {3,4,5} joined by the edge 2–3, unit weights: m = 7.
/// Each side has L_c = 3 inside and total degree d_c = 2 + 2 + 3 = 7, so
/// Q = 2 · (3/7 − (7/14)²) = 2 · (0.428571 − 0.25) = 0.357143.
/// Everything in one community: Q = 7/7 − (14/14)² = 0.
#[test]
fn newman_modularity_of_two_triangles() {
    let g = two_triangles();
    assert!(close(modularity(&g, &[0, 0, 0, 1, 1, 1], 1.0), 0.357143));
    assert!(close(modularity(&g, &[0; 6], 1.0), 0.0));
}

pub(crate) fn two_triangles() -> Graph {
    let mut g = Graph::new(6);
    for (a, b) in [(0, 1), (1, 2), (0, 2), (3, 4), (4, 5), (3, 5), (2, 3)] {
        g.add(a, b, 1.0);
    }
    g
}
