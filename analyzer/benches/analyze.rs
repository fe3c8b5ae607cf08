//! Analyzer benchmark: parse-only time vs. full analysis time on the same files,
//! files/s and lines/s, and peak memory (VmHWM) of this process.
//!
//! Run with `cargo bench -p ficus-analyzer --bench analyze -- [PATH ...]` (default:
//! the example shop). Each PATH is analysed 3 times; the best time counts.

use std::path::PathBuf;
use std::time::{Duration, Instant};

fn best<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        let v = f();
        best = best.min(t.elapsed());
        last = Some(v);
    }
    (best, last.expect("at least one run"))
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn main() {
    let mut paths: Vec<PathBuf> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).map(PathBuf::from).collect();
    if paths.is_empty() {
        paths.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../example-monolith"));
    }
    let opts = ficus_analyzer::Options::default();
    for path in paths {
        let (parse, counts) = best(3, || ficus_analyzer::parse_only(&path));
        let Ok((files, lines, errors)) = counts else {
            println!("{}: {:?}", path.display(), counts.err());
            continue;
        };
        let (full, report) = best(3, || ficus_analyzer::analyze(&path, &opts));
        let services = report.map(|r| r.services.len()).unwrap_or(0);
        let secs = full.as_secs_f64();
        println!(
            "{}: {files} files, {lines} lines ({errors} parse errors), {services} services\n  parse only {:.3}s, full analyze {:.3}s, ratio {:.2}x, {:.0} files/s, {:.0} lines/s, {:.2}s per 100k lines, peak RSS {:.0} MiB",
            path.display(),
            parse.as_secs_f64(),
            secs,
            secs / parse.as_secs_f64(),
            files as f64 / secs,
            lines as f64 / secs,
            secs / (lines as f64 / 100_000.0),
            peak_rss_mib().unwrap_or(f64::NAN),
        );
    }
}
