//! `ficus analyze` and `ficus plan`: run the analyzer, print its report in the format
//! asked for (the text summary is written here; JSON, DOT, Mermaid and HTML come from
//! `ficus_analyzer::render`), and map failures to exit statuses (1 input rejected,
//! 2 usage error).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use ficus_analyzer::guard::Rules;
use ficus_analyzer::partition::Partition;
use ficus_analyzer::{Analysis, Options, Report, Stage, render};

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
    /// Rules to check (the guard).
    pub check: Option<PathBuf>,
    /// A partition to describe instead of the proposed one.
    pub partition: Option<PathBuf>,
}

fn colour_on() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
}

fn run(path: &Path, opts: &Options) -> Result<Analysis, ExitCode> {
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
    let result = ficus_analyzer::analysis(path, opts, &progress);
    if show {
        eprint!("\r\x1b[2K");
    }
    result.map_err(|e| {
        eprintln!("ficus: {e}");
        ExitCode::from(1)
    })
}

/// Reads a file given on the command line; a failure is a usage error naming it.
fn read_arg<T>(cmd: &str, what: &str, path: &Path, parse: impl Fn(&str) -> Result<T, String>) -> Result<T, ExitCode> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        eprintln!("ficus {cmd}: cannot read {what} {}: {e}", path.display());
        ExitCode::from(USAGE)
    })?;
    parse(&text).map_err(|e| {
        eprintln!("ficus {cmd}: {}: {e}", path.display());
        ExitCode::from(USAGE)
    })
}

fn partition_arg(cmd: &str, path: Option<&Path>) -> Result<Option<Partition>, ExitCode> {
    path.map(|p| read_arg(cmd, "the partition", p, Partition::parse)).transpose()
}

/// `ficus analyze`.
pub fn analyze(args: AnalyzeArgs) -> ExitCode {
    if !(args.resolution.is_finite() && args.resolution > 0.0) {
        eprintln!("ficus analyze: --resolution must be a number above 0, got {}", args.resolution);
        return ExitCode::from(USAGE);
    }
    let (partition, rules) = match (
        partition_arg("analyze", args.partition.as_deref()),
        args.check.as_deref().map(|p| read_arg("analyze", "the rules", p, Rules::parse)).transpose(),
    ) {
        (Ok(p), Ok(r)) => (p, r),
        (Err(code), _) | (_, Err(code)) => return code,
    };
    let opts = Options {
        resolution: args.resolution,
        services: args.services.map(|n| n as usize),
        history: args.history,
        partition,
    };
    let analysis = match run(&args.path, &opts) {
        Ok(a) => a,
        Err(code) => return code,
    };
    if let (Some(rules), Some(file)) = (&rules, &args.check) {
        // The guard prints its verdict; the report is written too only when --out asks.
        if args.out.is_some()
            && let Err(code) = write_report(&analysis, &args)
        {
            return code;
        }
        return guard(&analysis, rules, file);
    }
    write_report(&analysis, &args).err().unwrap_or(ExitCode::SUCCESS)
}

fn write_report(analysis: &Analysis, args: &AnalyzeArgs) -> Result<(), ExitCode> {
    let report = &analysis.report;
    let colour = args.out.is_none() && colour_on();
    let text = match args.format {
        Format::Text => summary(report, colour),
        Format::Json => render::json(report),
        Format::Dot => render::dot(report),
        Format::Mermaid => render::mermaid(report),
        Format::Html => render::html(analysis),
    };
    write_out(args.out.as_deref(), &text).map_err(|e| {
        eprintln!("ficus analyze: {e:#}");
        ExitCode::from(1)
    })
}

/// `ficus analyze --check`: every violation as `FILE:LINE: rule N (why): what`.
fn guard(analysis: &Analysis, rules: &Rules, file: &Path) -> ExitCode {
    let violations = match rules.check(analysis) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("ficus analyze: {}: {e}", file.display());
            return ExitCode::from(USAGE);
        }
    };
    let mut text = String::new();
    for v in &violations {
        text.push_str(&format!("{v}\n"));
    }
    if let Err(e) = write_out(None, &text) {
        eprintln!("ficus analyze: {e:#}");
        return ExitCode::from(1);
    }
    let n = rules.forbid.len();
    if violations.is_empty() {
        let (count, verb) = if n == 1 { ("1 rule".to_string(), "holds") } else { (format!("{n} rules"), "hold") };
        eprintln!("ficus analyze: {count} of {} {verb}", file.display());
        ExitCode::SUCCESS
    } else {
        let broken: std::collections::BTreeSet<usize> = violations.iter().map(|v| v.rule).collect();
        let broken: Vec<String> = broken.iter().map(usize::to_string).collect();
        eprintln!(
            "ficus analyze: {} violation{} of rule{} {} of {}",
            violations.len(),
            if violations.len() == 1 { "" } else { "s" },
            if broken.len() == 1 { "" } else { "s" },
            broken.join(", "),
            file.display()
        );
        ExitCode::from(1)
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
pub fn plan(path: &Path, service: &str, routes_out: Option<&Path>, partition: Option<&Path>) -> ExitCode {
    let partition = match partition_arg("plan", partition) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let report = match run(path, &Options { partition, ..Options::default() }) {
        Ok(a) => a.report,
        Err(code) => return code,
    };
    let plan = match ficus_analyzer::plan::plan(&report, service) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ficus plan: {e}");
            return ExitCode::from(1);
        }
    };
    let result = match routes_out {
        Some(file) => write_routes(&plan, file),
        None => write_out(None, &plan.render()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ficus plan: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// `ficus plan --routes-out`: merges the routes into the file, and replaces it (atomically)
/// only when the proxy's own parser accepts the result.
fn write_routes(plan: &ficus_analyzer::plan::Plan, file: &Path) -> anyhow::Result<()> {
    let existing = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    let (text, done) =
        plan.merge_routes(&existing, "shadow").map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    if let Err(e) = ficus_proxy::config::Config::parse(&text, file) {
        anyhow::bail!("{}: not written, the proxy would refuse the result: {e}", file.display());
    }
    let tmp = file.with_extension("toml.ficus-tmp");
    std::fs::write(&tmp, &text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, file).with_context(|| format!("replacing {}", file.display()))?;
    let upstream = if done.upstream_added {
        format!("; added [upstreams.{}] with a placeholder address: point it at the service", plan.service.name)
    } else {
        String::new()
    };
    eprintln!(
        "ficus plan: {} routes of {} in {} ({} added in stage shadow, {} updated){upstream}",
        plan.routes.len(),
        plan.service.name,
        file.display(),
        done.added,
        done.updated
    );
    Ok(())
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
