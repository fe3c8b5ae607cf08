//! `ficus proxy`, `ficus routes` and `ficus stage`: argument handling and printing around
//! ficus-proxy's `RunningProxy` and `AdminClient`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::ValueEnum;
use ficus_proxy::admin::StageChange;
use ficus_proxy::audit::Entry;
use ficus_proxy::shadow::DiffReport;
use ficus_proxy::{AdminClient, Progress, ProxyError, RouteView, RunningProxy, StartOptions};

/// Log line format of `ficus proxy`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

const TOKEN_VAR: &str = "FICUS_ADMIN_TOKEN";

fn token() -> Option<String> {
    std::env::var(TOKEN_VAR).ok().filter(|t| !t.is_empty())
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("FICUS_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => {
            builder.with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()).try_init()
        }
    };
}

/// Runs the proxy until SIGTERM (drain, then exit), SIGINT (exit now) or SIGQUIT (hand the
/// listening sockets to a process started with `--upgrade`, then drain and exit).
pub fn run(config: PathBuf, upgrade: bool, log_format: LogFormat) -> ExitCode {
    init_logging(log_format);
    // Set but empty is refused by the proxy (an empty secret is no authentication).
    let admin_token = std::env::var(TOKEN_VAR).ok();
    let options = StartOptions { config, admin_token, upgrade, handle_signals: true, ..StartOptions::default() };
    match RunningProxy::start(options) {
        Ok(proxy) => {
            proxy.wait();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ficus proxy: {e}");
            ExitCode::from(1)
        }
    }
}

/// A client of the admin API that names the user (`$USER`) in the audit log.
fn client(admin: &str) -> AdminClient {
    let user = ["USER", "LOGNAME"].iter().find_map(|v| std::env::var(v).ok()).filter(|u| !u.is_empty());
    AdminClient::new(admin, token())
        .actor(Some(user.map_or_else(|| "ficus CLI".to_owned(), |u| format!("{u} (ficus CLI)"))))
}

/// Runs one admin call to completion (the CLI has no runtime of its own).
fn block<T>(call: impl std::future::Future<Output = Result<T, ProxyError>>) -> Result<T, ProxyError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ProxyError::Server(format!("cannot start a runtime: {e}")))?
        .block_on(call)
}

fn fail(command: &str, e: &ProxyError) -> ExitCode {
    eprintln!("ficus {command}: {e}");
    ExitCode::from(1)
}

fn print_routes(routes: &[RouteView]) {
    let rows: Vec<[String; 6]> = routes
        .iter()
        .map(|r| {
            let methods = if r.methods.is_empty() { "*".to_owned() } else { r.methods.join(",") };
            let mut stage = if r.stage == "canary" { format!("canary {}%", r.percent) } else { r.stage.clone() };
            if let Some(ro) = &r.rollout {
                stage.push_str(&format!(" (rollout step {}/{})", ro.step, ro.steps.len()));
            }
            // With a shared state store: the version to give `ficus stage --if-version`.
            if let Some(v) = r.version {
                stage.push_str(&format!(" v{v}"));
            }
            [
                r.name.clone(),
                format!("{methods} {}", r.path),
                r.upstream.clone(),
                stage,
                format!("{}/{}", r.requests_service, r.requests_monolith),
                r.fallbacks.to_string(),
            ]
        })
        .collect();
    let header = ["ROUTE", "MATCH", "SERVICE", "STAGE", "REQS SVC/MONO", "FALLBACKS"].map(str::to_owned);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", line.join("  ").trim_end());
    }
}

/// The migration's progress in one paragraph.
fn format_progress(p: &Progress) -> String {
    let mut stages = Vec::new();
    for (n, what) in [
        (p.service, "on their service"),
        (p.canary, "in canary"),
        (p.shadow, "in shadow"),
        (p.monolith, "on the monolith"),
    ] {
        if n > 0 {
            stages.push(format!("{n} {what}"));
        }
    }
    format!(
        "migration: {} route{}: {}; endpoints {:.1}% moved (a canary counts by its percent)\n\
         traffic: {:.1}% answered by the new services ({} of {} requests since the proxy started)\n",
        p.routes,
        if p.routes == 1 { "" } else { "s" },
        if stages.is_empty() { "none".to_owned() } else { stages.join(", ") },
        p.endpoint_share * 100.0,
        p.traffic_share * 100.0,
        p.requests_service,
        p.requests_total
    )
}

/// `ficus routes`.
pub fn routes(admin: &str) -> ExitCode {
    match block(client(admin).routes()) {
        Ok((routes, progress)) => {
            print_routes(&routes);
            for r in routes.iter().filter(|r| r.rollout.is_some()) {
                if let Some(ro) = &r.rollout {
                    let steps: Vec<String> = ro.steps.iter().map(|s| format!("{s}%")).collect();
                    println!("rollout {}: steps {}; {}", r.name, steps.join(" → "), ro.status);
                }
            }
            print!("\n{}", format_progress(&progress));
            ExitCode::SUCCESS
        }
        Err(e) => fail("routes", &e),
    }
}

/// `ficus audit [ROUTE]`.
pub fn audit(admin: &str, route: Option<&str>) -> ExitCode {
    match block(client(admin).audit(route)) {
        Ok(entries) => {
            if entries.is_empty() {
                println!("no stage change recorded");
            }
            for e in &entries {
                print!("{}", format_entry(e));
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail("audit", &e),
    }
}

fn format_entry(e: &Entry) -> String {
    format!("{}  {}: {} → {}  by {}\n    {}\n", e.time, e.route, e.from, e.to, e.by, e.why)
}

/// `ficus stage ROUTE STAGE [--percent N] [--force] [--reason TEXT]`.
pub fn stage(admin: &str, route: &str, change: StageChange) -> ExitCode {
    match block(client(admin).set_stage(route, &change)) {
        Ok(r) => {
            print_routes(std::slice::from_ref(&r));
            ExitCode::SUCCESS
        }
        Err(e) => fail("stage", &e),
    }
}

/// `ficus diffs ROUTE`.
pub fn diffs(admin: &str, route: &str) -> ExitCode {
    match block(client(admin).diffs(route)) {
        Ok(d) => {
            print!("{}", format_diffs(&d));
            ExitCode::SUCCESS
        }
        Err(e) => fail("diffs", &e),
    }
}

fn format_diffs(d: &DiffReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let rate = if d.compared == 0 { 0.0 } else { d.mismatched as f64 * 100.0 / d.compared as f64 };
    let _ = writeln!(
        out,
        "route {}: {} compared, {} matched, {} mismatched ({rate:.2}%)",
        d.route, d.compared, d.matched, d.mismatched
    );
    let _ = writeln!(
        out,
        "dropped {} (queue full), failed {} (service error or timeout), skipped {} (body over the limit), \
         sampled out {} (over shadow_max_per_second)",
        d.dropped, d.failed, d.skipped, d.sampled_out
    );
    if d.noise.is_empty() {
        let _ = writeln!(out, "noise: none found");
    } else {
        let _ = writeln!(out, "noise (differs between two monolith answers, not counted): {}", d.noise.join(", "));
    }
    if d.samples.is_empty() {
        let _ = writeln!(out, "no mismatch recorded");
    }
    for s in &d.samples {
        let _ = writeln!(out, "\n{} {}", s.method, s.path);
        for x in &s.diff {
            let pointer = if x.pointer.is_empty() { "(body)" } else { x.pointer.as_str() };
            let _ = writeln!(out, "  {pointer}: monolith {} | service {}", short(&x.monolith), short(&x.service));
        }
    }
    out
}

/// A JSON value on one line, cut to 80 characters.
fn short(v: &serde_json::Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 80 { format!("{}…", s.chars().take(79).collect::<String>()) } else { s }
}

#[cfg(test)]
mod tests {
    use ficus_proxy::Progress;
    use ficus_proxy::audit::{Entry, Position};
    use ficus_proxy::policy::diff::Difference;
    use ficus_proxy::shadow::{DiffReport, Sample};
    use serde_json::json;

    #[test]
    fn progress_and_audit_entries_read_as_sentences() {
        let p = Progress {
            routes: 4,
            monolith: 2,
            canary: 1,
            service: 1,
            endpoint_share: 0.3125,
            requests_total: 1000,
            requests_service: 410,
            traffic_share: 0.41,
            ..Progress::default()
        };
        assert_eq!(
            super::format_progress(&p),
            "migration: 4 routes: 1 on their service, 1 in canary, 2 on the monolith; endpoints 31.2% moved (a canary counts by its percent)\ntraffic: 41.0% answered by the new services (410 of 1000 requests since the proxy started)\n"
        );
        let e = Entry {
            time: "2026-11-26T15:00:00.000Z".into(),
            route: "catalog".into(),
            from: Position { stage: "canary".into(), percent: 25.0 },
            to: Position { stage: "monolith".into(), percent: 0.0 },
            why: "rollback: service error rate 40.00%".into(),
            by: "rollout".into(),
        };
        assert_eq!(
            super::format_entry(&e),
            "2026-11-26T15:00:00.000Z  catalog: canary 25% → monolith  by rollout\n    rollback: service error rate 40.00%\n"
        );
    }

    #[test]
    fn diffs_print_counts_noise_and_each_difference() {
        let d = DiffReport {
            route: "catalog".into(),
            compared: 200,
            matched: 180,
            mismatched: 20,
            dropped: 0,
            failed: 1,
            skipped: 0,
            sampled_out: 0,
            noise: vec!["/served_at".into()],
            samples: vec![Sample {
                method: "GET".into(),
                path: "/api/products/7".into(),
                diff: vec![Difference {
                    pointer: "/name".into(),
                    monolith: json!("product 7"),
                    service: json!("renamed"),
                    pattern: String::new(),
                }],
            }],
        };
        let text = super::format_diffs(&d);
        assert!(text.contains("route catalog: 200 compared, 180 matched, 20 mismatched (10.00%)"), "{text}");
        assert!(text.contains("noise (differs between two monolith answers, not counted): /served_at"), "{text}");
        assert!(text.contains("GET /api/products/7\n  /name: monolith \"product 7\" | service \"renamed\""), "{text}");
    }
}
