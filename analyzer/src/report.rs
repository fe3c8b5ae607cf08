//! The analyzer report (DESIGN.md "Analyzer report", version 1): plain data, every list
//! sorted, serialised as JSON by serde. Field order here is the JSON's field order.

use serde::{Deserialize, Serialize};

/// The whole report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// Report format version (1).
    pub version: u32,
    /// Name of the analysed crate or workspace.
    pub root: String,
    /// Counts and timing.
    pub stats: Stats,
    /// Every unit (module) in the service graph.
    pub units: Vec<Unit>,
    /// Every HTTP endpoint found.
    pub endpoints: Vec<Endpoint>,
    /// Every table touched, with the units that read and write it.
    pub tables: Vec<Table>,
    /// The proposed services.
    pub services: Vec<Service>,
    /// Dependencies between proposed services, with evidence.
    pub dependencies: Vec<Dependency>,
    /// Tables touched by more than one service.
    pub shared_tables: Vec<SharedTable>,
    /// Quality of the proposal.
    pub metrics: Metrics,
    /// Suggested order of extraction, least entangled first.
    pub extraction_order: Vec<Extraction>,
    /// Files that could not be read or parsed, SQL not understood, and the like.
    pub diagnostics: Vec<crate::Diagnostic>,
    /// Which view the services come from, and why.
    #[serde(default)]
    pub view: View,
}

/// Counts and timing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    /// `.rs` files read.
    pub files: usize,
    /// Lines in them.
    pub lines: usize,
    /// Files that did not parse.
    pub parse_errors: usize,
    /// Wall-clock time of the analysis (the one field that varies between runs).
    pub elapsed_ms: u64,
    /// Call sites resolved between units.
    pub calls: usize,
    /// The resolution the clustering used.
    pub resolution: f64,
    /// With `--history`: how many file pairs change together often enough to count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coupled_file_pairs: Option<usize>,
}

/// A module: a file or an inline `mod`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Unit {
    /// `crate::path::to::module`.
    pub id: String,
    /// File, relative to PATH.
    pub file: String,
    /// Lines.
    pub lines: usize,
}

/// An HTTP endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    /// HTTP method (upper case, `ANY` for all).
    pub method: String,
    /// Path with `{param}` and `{*rest}` segments.
    pub path: String,
    /// Fully qualified handler, `crate::module::fn`.
    pub handler: String,
    /// File of the handler (or of the registration when the handler is not a path).
    pub file: String,
    /// Its line.
    pub line: usize,
    /// The unit holding it.
    pub unit: String,
}

/// A table and who touches it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Table {
    /// Table name.
    pub name: String,
    /// Units that only read it.
    pub readers: Vec<String>,
    /// Units that write it.
    pub writers: Vec<String>,
    /// Defined by a migration, a CREATE TABLE string or a diesel schema.
    pub defined: bool,
}

/// A unit as listed in a service.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServiceUnit {
    /// Unit id.
    pub id: String,
    /// Its file.
    pub file: String,
}

/// An endpoint as listed in a service.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServiceEndpoint {
    /// HTTP method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Handler.
    pub handler: String,
    /// File.
    pub file: String,
    /// Line.
    pub line: usize,
}

/// The tables of a service.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct ServiceTables {
    /// Tables it writes.
    pub owns: Vec<String>,
    /// Tables it only reads.
    pub reads: Vec<String>,
}

/// A proposed service.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Service {
    /// Named after the module path segment most of its units share.
    pub name: String,
    /// Its units.
    pub units: Vec<ServiceUnit>,
    /// Its endpoints.
    pub endpoints: Vec<ServiceEndpoint>,
    /// Its tables.
    pub tables: ServiceTables,
    /// Lines of code in its units.
    pub lines: usize,
    /// The shared kernel: code every other service uses, which stays in the monolith
    /// or becomes a library rather than a service.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kernel: bool,
    /// Functions of lower layers that go with this service's endpoints (use-case view),
    /// with the share of the slices reaching them that are this service's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub functions: Vec<ServiceFunction>,
}

/// A function that goes with a service: reached by its endpoints' slices.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, PartialOrd)]
pub struct ServiceFunction {
    /// Fully qualified name (`crate::db::users::Db::find_user`).
    pub name: String,
    /// File.
    pub file: String,
    /// Line.
    pub line: usize,
    /// The share of the slice strength reaching it that comes from this service's
    /// endpoints (the kernel lists functions no service holds half of).
    pub share: f64,
}

/// Which partition the report proposes, and why.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct View {
    /// `modules` (the module graph: the code's folders are its capabilities) or
    /// `use-cases` (endpoints clustered by their slices across layers).
    pub used: String,
    /// Why that one.
    pub why: String,
}

/// Where a dependency shows in the code.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Evidence {
    /// File.
    pub file: String,
    /// Line.
    pub line: usize,
    /// What happens there.
    pub what: String,
}

/// One service depending on another.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dependency {
    /// The service that depends.
    pub from: String,
    /// The service it depends on.
    pub to: String,
    /// Call sites from `from` into `to`.
    pub calls: usize,
    /// Tables of `to` (written by it) that `from` touches.
    pub tables: Vec<String>,
    /// Where (at most 50 entries; `calls` counts them all).
    pub evidence: Vec<Evidence>,
}

/// A table touched by more than one service.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct SharedTable {
    /// Table name.
    pub table: String,
    /// Services that write it.
    pub writers: Vec<String>,
    /// Services that only read it.
    pub readers: Vec<String>,
}

/// Quality of the proposal.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Metrics {
    /// Number of services.
    pub services: usize,
    /// Newman modularity Q of the partition on the weighted unit graph.
    pub modularity: f64,
    /// Mono2Micro structural modularity (higher is better).
    pub sm: f64,
    /// Mono2Micro inter-call percentage (lower is better).
    pub icp: f64,
    /// Mono2Micro interface number (lower is better).
    pub ifn: f64,
    /// Mono2Micro non-extreme distribution (lower is better).
    pub ned: f64,
}

/// One step of the extraction order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Extraction {
    /// Service name.
    pub service: String,
    /// 1 = extract first.
    pub rank: usize,
    /// Why it is at this rank.
    pub why: String,
}
