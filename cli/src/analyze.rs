//! `ficus analyze` and `ficus plan`: run the analyzer, print its report in the format
//! asked for (the text summary is written here; JSON, DOT, Mermaid and HTML come from
//! `ficus_analyzer::render`), and map failures to exit statuses (1 input rejected,
//! 2 usage error).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use ficus_analyzer::{Options, Report, Stage, render};

use crate::Format;

/// Exit status of a usage error (clap uses the same for the errors it finds).
const USAGE: u8 = 2;

/// The `analyze` command's arguments.
pub struct AnalyzeArgs {
    /// The crate or workspace.
    pub path: PathBuf,
    /// Output format.
    pub format: Format,
    /// Output file (standard output when absent).
    pub out: Option<PathBuf>,
    /// Target number of services.
    pub services: Option<u32>,
    /// Clustering resolution.
    pub resolution: f64,
    /// Commits of git history to weigh.
    pub history: Option<usize>,
}

fn colour_on() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
}

fn run(path: &Path, opts: &Options) -> Result<Report, ExitCode> {
    let show = std::io::stderr().is_terminal();
    let progress = move |s: Stage| {
        if !show {
            return;
        }
        let msg = match s {
            Stage::Parsing(n) => format!("parsing {n} files…"),
            Stage::Resolving => "resolving calls, tables and routes…".to_string(),
            Stage::History => "reading git history…".to_string(),
            Stage::Clustering => "clustering…".to_string(),
        };
        eprint!("\r\x1b[2K{msg}");
    };
    let result = ficus_analyzer::analyze_with_progress(path, opts, &progress);
    if show {
        eprint!("\r\x1b[2K");
    }
    result.map_err(|e| {
        eprintln!("ficus: {e}");
        ExitCode::from(1)
    })
}

/// `ficus analyze`.
pub fn analyze(args: AnalyzeArgs) -> ExitCode {
    if !(args.resolution.is_finite() && args.resolution > 0.0) {
        eprintln!("ficus analyze: --resolution must be a number above 0, got {}", args.resolution);
        return ExitCode::from(USAGE);
    }
    let opts =
        Options { resolution: args.resolution, services: args.services.map(|n| n as usize), history: args.history };
    let report = match run(&args.path, &opts) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let colour = args.out.is_none() && colour_on();
    let text = match args.format {
        Format::Text => summary(&report, colour),
        Format::Json => render::json(&report),
        Format::Dot => render::dot(&report),
        Format::Mermaid => render::mermaid(&report),
        Format::Html => render::html(&report),
    };
    match write_out(args.out.as_deref(), &text) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ficus analyze: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn write_out(out: Option<&Path>, text: &str) -> anyhow::Result<()> {
    match out {
        Some(p) => std::fs::write(p, text).with_context(|| format!("writing {}", p.display())),
        None => {
            let mut stdout = std::io::stdout().lock();
            // A closed pipe (`| head`) is not an error worth a message.
            match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                other => other.context("writing to standard output"),
            }
        }
    }
}

/// `ficus plan`.
pub fn plan(path: &Path, service: &str) -> ExitCode {
    let report = match run(path, &Options::default()) {
        Ok(r) => r,
        Err(code) => return code,
    };
    match ficus_analyzer::plan::plan(&report, service) {
        Ok(p) => match write_out(None, &p.render()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ficus plan: {e:#}");
                ExitCode::from(1)
            }
        },
        Err(e) => {
            eprintln!("ficus plan: {e}");
            ExitCode::from(1)
        }
    }
}

struct Style {
    on: bool,
}

impl Style {
    fn bold(&self, s: &str) -> String {
        if self.on { format!("\x1b[1m{s}\x1b[0m") } else { s.to_string() }
    }
    fn dim(&self, s: &str) -> String {
        if self.on { format!("\x1b[2m{s}\x1b[0m") } else { s.to_string() }
    }
}

fn join_or_none(v: &[String]) -> String {
    if v.is_empty() { "-".to_string() } else { v.join(", ") }
}

/// Lower-layer functions listed per service in the text summary.
const MAX_FUNCTIONS_SHOWN: usize = 6;

/// Endpoints listed per service in the text summary.
const MAX_ENDPOINTS_SHOWN: usize = 12;

/// The report as a summary a person scans in a terminal.
fn summary(r: &Report, colour: bool) -> String {
    use std::fmt::Write as _;
    let st = Style { on: colour };
    let mut s = String::new();
    let m = &r.metrics;
    let _ = writeln!(
        s,
        "{}: {} files, {} lines, {} parse errors; {} endpoints, {} tables",
        st.bold(&r.root),
        r.stats.files,
        r.stats.lines,
        r.stats.parse_errors,
        r.endpoints.len(),
        r.tables.len()
    );
    let _ = writeln!(
        s,
        "{} services · modularity {} · SM {} · ICP {} · IFN {} · NED {}\n",
        m.services, m.modularity, m.sm, m.icp, m.ifn, m.ned
    );
    if !r.view.used.is_empty() {
        let _ = writeln!(s, "{} {}\n", st.bold(&format!("View: {}.", r.view.used)), st.dim(&r.view.why));
    }
    let _ = writeln!(s, "{}", st.bold("Extraction order (least entangled first)"));
    for e in &r.extraction_order {
        let _ = writeln!(s, "  {:>2}. {:<16} {}", e.rank, e.service, st.dim(&e.why));
    }
    let _ = writeln!(s, "\n{}", st.bold("Services"));
    for svc in &r.services {
        let _ = writeln!(
            s,
            "  {}  {} units, {} lines, {} endpoints{}",
            st.bold(&svc.name),
            svc.units.len(),
            svc.lines,
            svc.endpoints.len(),
            if svc.kernel { " (shared kernel: stays in the monolith or becomes a library)" } else { "" }
        );
        let units: Vec<&str> = svc.units.iter().map(|u| u.id.as_str()).collect();
        let _ = writeln!(s, "    units:  {}", units.join(", "));
        let _ = writeln!(s, "    owns:   {}", join_or_none(&svc.tables.owns));
        let _ = writeln!(s, "    reads:  {}", join_or_none(&svc.tables.reads));
        if !svc.functions.is_empty() {
            // The lower-layer code that goes with the service, where a person can check it.
            let shown: Vec<String> = svc
                .functions
                .iter()
                .take(MAX_FUNCTIONS_SHOWN)
                .map(|f| {
                    format!(
                        "{} ({}:{})",
                        f.name
                            .rsplit("::")
                            .take(2)
                            .collect::<Vec<_>>()
                            .into_iter()
                            .rev()
                            .collect::<Vec<_>>()
                            .join("::"),
                        f.file,
                        f.line
                    )
                })
                .collect();
            let more = svc.functions.len().saturating_sub(MAX_FUNCTIONS_SHOWN);
            let tail = if more > 0 { format!(", … and {more} more") } else { String::new() };
            let _ = writeln!(s, "    code:   {}{}", shown.join(", "), st.dim(&tail));
        }
        // A summary: the first endpoints of a big service, and how many more there are.
        for e in svc.endpoints.iter().take(MAX_ENDPOINTS_SHOWN) {
            let _ = writeln!(s, "    {:<7} {}", e.method, e.path);
        }
        if svc.endpoints.len() > MAX_ENDPOINTS_SHOWN {
            let more = svc.endpoints.len() - MAX_ENDPOINTS_SHOWN;
            let _ = writeln!(s, "    {}", st.dim(&format!("… and {more} more endpoints (see --format json)")));
        }
    }
    if !r.dependencies.is_empty() {
        let _ = writeln!(s, "\n{}", st.bold("Dependencies between services"));
        for d in &r.dependencies {
            let tables = if d.tables.is_empty() { String::new() } else { format!(", tables {}", d.tables.join(", ")) };
            let first =
                d.evidence.first().map(|e| format!("  e.g. {}:{} {}", e.file, e.line, e.what)).unwrap_or_default();
            let _ = writeln!(s, "  {} → {}: {} calls{}{}", d.from, d.to, d.calls, tables, st.dim(&first));
        }
    }
    if !r.shared_tables.is_empty() {
        let _ = writeln!(s, "\n{}", st.bold("Shared tables"));
        for t in &r.shared_tables {
            let _ = writeln!(
                s,
                "  {:<16} written by {}; read by {}",
                t.table,
                join_or_none(&t.writers),
                join_or_none(&t.readers)
            );
        }
    }
    if !r.diagnostics.is_empty() {
        let _ = writeln!(s, "\n{} ({})", st.bold("Diagnostics"), r.diagnostics.len());
        for d in r.diagnostics.iter().take(10) {
            let _ = writeln!(s, "  {}:{}: {}", d.file, d.line, d.message);
        }
        if r.diagnostics.len() > 10 {
            let _ = writeln!(s, "  … and {} more (see --format json)", r.diagnostics.len() - 10);
        }
    }
    s
}
