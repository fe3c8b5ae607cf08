//! Machine formats of a report: JSON (the contract), Graphviz DOT and Mermaid (the
//! service graph: services as nodes, dependencies as edges labelled with their call
//! sites and tables), and a self-contained HTML page. Plain strings, deterministic;
//! the text summary for people lives in the CLI.

use std::fmt::Write as _;

use crate::report::Report;
use crate::unitfacts::Analysis;

/// The report as pretty JSON, ending with a newline.
pub fn json(r: &Report) -> String {
    let mut s = serde_json::to_string_pretty(r).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    s.push('\n');
    s
}

fn edge_label(calls: usize, tables: &[String]) -> String {
    let mut parts = Vec::new();
    if calls > 0 {
        parts.push(format!("{calls} calls"));
    }
    if !tables.is_empty() {
        parts.push(tables.join(", "));
    }
    parts.join("; ")
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The service graph in Graphviz DOT.
pub fn dot(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "digraph \"{}\" {{", esc(&r.root));
    let _ = writeln!(s, "  rankdir=LR;\n  node [shape=box, style=rounded];");
    for svc in &r.services {
        let _ = writeln!(
            s,
            "  \"{}\" [label=\"{}\\n{} units, {} endpoints\\nowns: {}\"];",
            esc(&svc.name),
            esc(&svc.name),
            svc.units.len(),
            svc.endpoints.len(),
            esc(&svc.tables.owns.join(", "))
        );
    }
    for d in &r.dependencies {
        let _ = writeln!(
            s,
            "  \"{}\" -> \"{}\" [label=\"{}\"];",
            esc(&d.from),
            esc(&d.to),
            esc(&edge_label(d.calls, &d.tables))
        );
    }
    s.push_str("}\n");
    s
}

fn mermaid_id(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect()
}

/// The service graph as a Mermaid flowchart.
pub fn mermaid(r: &Report) -> String {
    let mut s = String::from("flowchart LR\n");
    for svc in &r.services {
        let _ = writeln!(
            s,
            "  {}[\"{}<br/>{} units, {} endpoints\"]",
            mermaid_id(&svc.name),
            svc.name.replace('"', "'"),
            svc.units.len(),
            svc.endpoints.len()
        );
    }
    for d in &r.dependencies {
        let label = edge_label(d.calls, &d.tables).replace('"', "'").replace('|', "/");
        let _ = writeln!(s, "  {} -->|\"{}\"| {}", mermaid_id(&d.from), label, mermaid_id(&d.to));
    }
    s
}

fn h(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Evidence kept per pair of units (or per table access) in the HTML page's data.
const PAGE_EVIDENCE: usize = 3;

/// The service graph's drawing area for up to `SMALL_GRAPH` services, in SVG units;
/// bigger graphs get a bigger area (the page scrolls) so labels keep their size.
const WIDTH: f32 = 1000.0;
const HEIGHT: f32 = 640.0;
const SMALL_GRAPH: usize = 20;
/// Room kept between two circles for their labels.
const LABEL_ROOM: f32 = 46.0;

/// The drawing area for `n` services.
fn canvas(n: usize) -> (f32, f32) {
    let k = (n as f32 / SMALL_GRAPH as f32).sqrt().max(1.0);
    ((WIDTH * k).round(), (HEIGHT * k).round())
}

/// A service's circle radius, as the page draws it (report.js `radius`).
fn radius(lines: usize, max_lines: usize) -> f32 {
    14.0 + 26.0 * (lines as f32 / max_lines.max(1) as f32).sqrt()
}

/// Where each service is drawn (`(x, y)` in `report.services` order), laid out at
/// report time by a force-directed simulation (force_graph): services that depend on
/// each other are pulled together, all repel, and a fixed centre holds every service
/// on a spring so that unconnected ones do not drift off. Circles are then pushed
/// apart until none overlaps (with room for labels). Deterministic: fixed start on a
/// circle, fixed steps. The shared kernel is set apart, in a band below the others.
pub fn layout(r: &Report) -> Vec<(f32, f32)> {
    use force_graph::{EdgeData, ForceGraph, NodeData};
    let n = r.services.len();
    let (w, h) = canvas(n);
    let mut pos = vec![(w / 2.0, h / 2.0); n];
    let others: Vec<usize> = (0..n).filter(|&i| !r.services[i].kernel).collect();
    let mut g = <ForceGraph>::new(Default::default());
    let centre = g.add_node(NodeData { is_anchor: true, ..Default::default() });
    let mut idx = vec![None; n];
    for (k, &i) in others.iter().enumerate() {
        let a = k as f32 / others.len().max(1) as f32 * std::f32::consts::TAU;
        let node = g.add_node(NodeData { x: 400.0 * a.cos(), y: 300.0 * a.sin(), ..Default::default() });
        g.add_edge(centre, node, EdgeData::default());
        idx[i] = Some(node);
    }
    let by_name: std::collections::BTreeMap<&str, usize> =
        r.services.iter().enumerate().map(|(i, s)| (s.name.as_str(), i)).collect();
    for d in &r.dependencies {
        if let (Some(&a), Some(&b)) = (by_name.get(d.from.as_str()), by_name.get(d.to.as_str()))
            && let (Some(x), Some(y)) = (idx[a], idx[b])
        {
            g.add_edge(x, y, EdgeData::default());
        }
    }
    for _ in 0..400 {
        g.update(0.02);
    }
    let mut xy = Vec::new();
    g.visit_nodes(|node| xy.push((node.index(), node.x(), node.y())));
    let xy: Vec<(usize, f32, f32)> = idx
        .iter()
        .enumerate()
        .filter_map(|(i, slot)| xy.iter().find(|p| Some(p.0) == *slot).map(|p| (i, p.1, p.2)))
        .collect();
    let (min_x, max_x) = xy.iter().fold((f32::MAX, f32::MIN), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    let (min_y, max_y) = xy.iter().fold((f32::MAX, f32::MIN), |(lo, hi), p| (lo.min(p.2), hi.max(p.2)));
    // Fit into the area above the kernel's band, keeping a margin for the labels.
    let (left, right, top, bottom) = (90.0, w - 90.0, 70.0, h - 150.0);
    let scale = |v: f32, lo: f32, hi: f32, from: f32, to: f32| {
        if hi - lo < 1.0 { (from + to) / 2.0 } else { from + (v - lo) / (hi - lo) * (to - from) }
    };
    let max_lines = r.services.iter().filter(|s| !s.kernel).map(|s| s.lines).max().unwrap_or(1);
    let mut placed: Vec<(usize, f32, f32, f32)> = xy
        .iter()
        .map(|&(i, x, y)| {
            let rad = radius(r.services[i].lines, max_lines);
            (i, scale(x, min_x, max_x, left, right), scale(y, min_y, max_y, top, bottom), rad)
        })
        .collect();
    // Push overlapping circles apart, half each way, a bounded number of rounds.
    for _ in 0..300 {
        let mut moved = false;
        for a in 0..placed.len() {
            for b in a + 1..placed.len() {
                let (dx, dy) = (placed[b].1 - placed[a].1, placed[b].2 - placed[a].2);
                let need = placed[a].3 + placed[b].3 + LABEL_ROOM;
                let dist = (dx * dx + dy * dy).sqrt();
                if dist >= need {
                    continue;
                }
                moved = true;
                // Coincident circles part along a fixed direction per pair.
                let (ux, uy) = if dist > 0.01 { (dx / dist, dy / dist) } else { ((a as f32).cos(), (b as f32).sin()) };
                let push = (need - dist) / 2.0;
                placed[a].1 = (placed[a].1 - ux * push).clamp(left, right);
                placed[a].2 = (placed[a].2 - uy * push).clamp(top, bottom);
                placed[b].1 = (placed[b].1 + ux * push).clamp(left, right);
                placed[b].2 = (placed[b].2 + uy * push).clamp(top, bottom);
            }
        }
        if !moved {
            break;
        }
    }
    for (i, x, y, _) in placed {
        pos[i] = ((x * 10.0).round() / 10.0, (y * 10.0).round() / 10.0);
    }
    for (i, s) in r.services.iter().enumerate() {
        if s.kernel {
            pos[i] = (w / 2.0, h - 50.0);
        }
    }
    pos
}

/// The data the HTML page works on: the report, the layout, and the unit-level facts
/// its what-if needs (calls and table accesses per unit, with a little evidence each).
fn page_data(a: &Analysis) -> serde_json::Value {
    use serde_json::json;
    let r = &a.report;
    let calls: Vec<serde_json::Value> = a
        .facts
        .calls
        .iter()
        .map(|c| json!([c.from, c.to, c.sites.len(), c.sites.iter().take(PAGE_EVIDENCE).collect::<Vec<_>>()]))
        .collect();
    // Accesses grouped by (unit, table, write), each with its count and first sites.
    type Sites<'a> = Vec<(&'a str, usize)>;
    let mut acc: std::collections::BTreeMap<(usize, &str, bool), Sites<'_>> = Default::default();
    for x in &a.facts.accesses {
        acc.entry((x.unit, x.table.as_str(), x.write)).or_default().push((x.file.as_str(), x.line));
    }
    let accesses: Vec<serde_json::Value> = acc
        .into_iter()
        .map(|((u, t, w), sites)| {
            let ev: Vec<serde_json::Value> =
                sites.iter().take(PAGE_EVIDENCE).map(|(f, l)| json!({"file": f, "line": l})).collect();
            json!([u, t, w, sites.len(), ev])
        })
        .collect();
    let edges: Vec<serde_json::Value> =
        a.facts.edges.iter().map(|&(x, y, w)| json!([x, y, (w * 1e6).round() / 1e6])).collect();
    let mut report = serde_json::to_value(r).unwrap_or_default();
    // The page lists the diagnostics' count; the JSON report has them all.
    if let Some(d) = report.get_mut("diagnostics") {
        *d = json!(r.diagnostics.iter().take(50).collect::<Vec<_>>());
    }
    json!({
        "report": report,
        "diagnostics": r.diagnostics.len(),
        "layout": layout(r),
        "size": canvas(r.services.len()),
        "small": SMALL_GRAPH,
        "calls": calls,
        "accesses": accesses,
        "edges": edges,
        "partition_version": crate::partition::VERSION,
    })
}

/// The page's script and style, ours and small (no library, no network).
const PAGE_JS: &str = include_str!("report.js");
const PAGE_CSS: &str = include_str!("report.css");

/// A self-contained HTML page (no network at view time; works from `file://`): the
/// service graph drawn as SVG, a panel with a service's endpoints, tables, units,
/// functions, dependencies with evidence and place in the extraction order, and a
/// what-if that moves units between services, recomputes the metrics and the
/// dependencies, and exports the edited partition for `ficus plan --partition`.
pub fn html(a: &Analysis) -> String {
    let r = &a.report;
    // `</script` or `<!--` in the data would end or confuse the script element: JSON has
    // `<` only inside strings, where `\u003c` means the same.
    let data = page_data(a).to_string().replace('<', "\\u003c");
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>ficus analyze: {root}</title>\n<style>\n{css}</style></head>\n<body>\n<header><h1>{root}</h1><p id=\"summary\">{files} files, {lines} lines, {eps} endpoints, {tables} tables; {n} services ({view} view).</p>\n<div id=\"metrics\"></div><div id=\"whatif\"></div></header>\n<main><section id=\"graph-pane\"><noscript>The service graph needs JavaScript; the JSON report (--format json) has the same data.</noscript></section>\n<aside id=\"details\"><p>Click a service or a dependency.</p></aside></main>\n<script type=\"application/json\" id=\"ficus-data\">{data}</script>\n<script>\n{js}</script>\n</body></html>\n",
        root = h(&r.root),
        css = PAGE_CSS,
        files = r.stats.files,
        lines = r.stats.lines,
        eps = r.endpoints.len(),
        tables = r.tables.len(),
        n = r.services.len(),
        view = h(&r.view.used),
        data = data,
        js = PAGE_JS,
    )
}
