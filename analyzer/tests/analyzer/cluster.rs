//! Louvain clustering: finds the obvious communities, deterministically, and honours
//! a target number of services.

use ficus_analyzer::cluster::{Graph, louvain, partition};

use crate::metrics::two_triangles;

#[test]
fn louvain_splits_two_triangles() {
    assert_eq!(louvain(&two_triangles(), 1.0), vec![0, 0, 0, 1, 1, 1]);
}

#[test]
fn louvain_is_deterministic_on_a_ring_of_cliques() {
    // Ten 4-cliques joined in a ring: every run gives the ten cliques.
    let mut g = Graph::new(40);
    for c in 0..10 {
        for i in 0..4 {
            for j in i + 1..4 {
                g.add(c * 4 + i, c * 4 + j, 1.0);
            }
        }
        g.add(c * 4 + 3, ((c + 1) % 10) * 4, 1.0);
    }
    let first = louvain(&g, 1.0);
    let expected: Vec<usize> = (0..40).map(|i| i / 4).collect();
    assert_eq!(first, expected);
    for _ in 0..5 {
        assert_eq!(louvain(&g, 1.0), first);
    }
}

#[test]
fn target_number_of_services() {
    let g = two_triangles();
    assert_eq!(partition(&g, 1.0, Some(1)), vec![0; 6]);
    assert_eq!(partition(&g, 1.0, Some(2)), vec![0, 0, 0, 1, 1, 1]);
    let three = partition(&g, 1.0, Some(3));
    assert_eq!(three.iter().max(), Some(&2), "{three:?}");
}

#[test]
fn resolution_changes_granularity() {
    // At a very low resolution everything connected is one community.
    assert_eq!(louvain(&two_triangles(), 0.01), vec![0; 6]);
}
