//! Machine formats of a report: JSON (the contract), Graphviz DOT and Mermaid (the
//! service graph: services as nodes, dependencies as edges labelled with their call
//! sites and tables), and a self-contained HTML page. Plain strings, deterministic;
//! the text summary for people lives in the CLI.

use std::fmt::Write as _;

use crate::report::Report;

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

/// A self-contained HTML page: metrics, services with their endpoints and tables,
/// dependencies with evidence, shared tables.
pub fn html(r: &Report) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>ficus analyze: {root}</title>\n<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 6px;text-align:left}}</style></head><body>\n<h1>{root}</h1>\n<p>{files} files, {lines} lines, {errs} parse errors. {n} services; modularity {q}, SM {sm}, ICP {icp}, IFN {ifn}, NED {ned}.</p>\n",
        root = h(&r.root),
        files = r.stats.files,
        lines = r.stats.lines,
        errs = r.stats.parse_errors,
        n = r.metrics.services,
        q = r.metrics.modularity,
        sm = r.metrics.sm,
        icp = r.metrics.icp,
        ifn = r.metrics.ifn,
        ned = r.metrics.ned
    );
    s.push_str("<h2>Extraction order</h2><ol>\n");
    for e in &r.extraction_order {
        let _ = writeln!(s, "<li><b>{}</b>: {}</li>", h(&e.service), h(&e.why));
    }
    s.push_str("</ol>\n<h2>Services</h2>\n");
    for svc in &r.services {
        let _ = writeln!(
            s,
            "<h3>{}</h3><p>owns: {} &middot; reads: {}</p><ul>",
            h(&svc.name),
            h(&svc.tables.owns.join(", ")),
            h(&svc.tables.reads.join(", "))
        );
        for u in &svc.units {
            let _ = writeln!(s, "<li><code>{}</code> ({})</li>", h(&u.id), h(&u.file));
        }
        s.push_str("</ul><table><tr><th>method</th><th>path</th><th>handler</th></tr>\n");
        for e in &svc.endpoints {
            let _ = writeln!(
                s,
                "<tr><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                h(&e.method),
                h(&e.path),
                h(&e.handler)
            );
        }
        s.push_str("</table>\n");
    }
    s.push_str(
        "<h2>Dependencies</h2><table><tr><th>from</th><th>to</th><th>calls</th><th>tables</th><th>evidence</th></tr>\n",
    );
    for d in &r.dependencies {
        let ev: Vec<String> = d.evidence.iter().map(|e| format!("{}:{} {}", h(&e.file), e.line, h(&e.what))).collect();
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            h(&d.from),
            h(&d.to),
            d.calls,
            h(&d.tables.join(", ")),
            ev.join("<br>")
        );
    }
    s.push_str("</table>\n<h2>Shared tables</h2><table><tr><th>table</th><th>writers</th><th>readers</th></tr>\n");
    for t in &r.shared_tables {
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            h(&t.table),
            h(&t.writers.join(", ")),
            h(&t.readers.join(", "))
        );
    }
    s.push_str("</table>\n</body></html>\n");
    s
}
