//! Analyzer benchmark: parse-only time vs. full analysis time on the same files,
//! files/s and lines/s, and peak memory (VmHWM) of this process.
//!
//! Run with `cargo bench -p ficus-analyzer --bench analyze -- [PATH ...]` (default:
//! the example shop). Each PATH is analysed 5 times; the best time counts. Besides wall
//! time it reports the CPU time (user + system, all threads) of the best runs, which
//! other load on a shared machine moves much less than wall time.

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The best wall time and the least CPU time over `runs` runs, and the last result.
fn best<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, f64, T) {
    let mut best = Duration::MAX;
    let mut cpu = f64::MAX;
    let mut last = None;
    for _ in 0..runs {
        let c = cpu_secs();
        let t = Instant::now();
        let v = f();
        best = best.min(t.elapsed());
        cpu = cpu.min(cpu_secs() - c);
        last = Some(v);
    }
    (best, cpu, last.expect("at least one run"))
}

/// CPU time (user + system) of this process so far, from `/proc/self/stat` (Linux;
/// clock ticks of 1/100 s).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // After the command name in parentheses come the state, then 10 counters: utime and
    // stime are the 12th and 13th fields from there.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok());
    num(11).zip(num(12)).map_or(f64::NAN, |(u, s)| (u + s) / 100.0)
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
        let (parse, parse_cpu, counts) = best(5, || ficus_analyzer::parse_only(&path));
        let Ok((files, lines, errors)) = counts else {
            println!("{}: {:?}", path.display(), counts.err());
            continue;
        };
        let (full, full_cpu, report) = best(5, || ficus_analyzer::analyze(&path, &opts));
        let services = report.map(|r| r.services.len()).unwrap_or(0);
        let secs = full.as_secs_f64();
        println!(
            "{}: {files} files, {lines} lines ({errors} parse errors), {services} services\n  parse only {:.3}s, full analyze {:.3}s, ratio {:.2}x (CPU {:.2}s vs {:.2}s: {:.2}x), {:.0} files/s, {:.0} lines/s, {:.2}s per 100k lines, peak RSS {:.0} MiB",
            path.display(),
            parse.as_secs_f64(),
            secs,
            secs / parse.as_secs_f64(),
            full_cpu,
            parse_cpu,
            full_cpu / parse_cpu,
            files as f64 / secs,
            lines as f64 / secs,
            secs / (lines as f64 / 100_000.0),
            peak_rss_mib().unwrap_or(f64::NAN),
        );
    }
}
