//! The unit-level facts behind a report, beyond its JSON contract: the weighted graph
//! the clustering and the modularity use, every call site between units and every
//! table access, each with its file and line. The guard (`guard`) checks rules on them,
//! and the HTML page embeds them to recompute metrics and dependencies when a unit is
//! moved by hand (`render::html`).

use serde::Serialize;

use crate::report::Evidence;

/// Units are numbered as in `Report::units` (sorted by id).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct UnitFacts {
    /// The weighted, undirected unit graph `(a, b, weight)`, `a ≤ b`, parallel edges
    /// summed: the graph of `Metrics::modularity`.
    pub edges: Vec<(usize, usize, f64)>,
    /// Calls between two different units, with every call site.
    pub calls: Vec<UnitCalls>,
    /// Every table access.
    pub accesses: Vec<UnitAccess>,
    /// Tables defined by a migration, a CREATE TABLE string or a diesel schema.
    pub known_tables: Vec<String>,
}

/// The call sites from one unit into another.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct UnitCalls {
    /// Calling unit.
    pub from: usize,
    /// Called unit.
    pub to: usize,
    /// One per call site.
    pub sites: Vec<Evidence>,
}

/// One read or write of a table.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct UnitAccess {
    /// The unit doing it.
    pub unit: usize,
    /// The table.
    pub table: String,
    /// A write (else a read).
    pub write: bool,
    /// File.
    pub file: String,
    /// Line.
    pub line: usize,
}

/// A report with the facts it was made from.
#[derive(Debug, Clone)]
pub struct Analysis {
    /// The report (the JSON contract).
    pub report: crate::Report,
    /// The unit-level facts behind it.
    pub facts: UnitFacts,
}
