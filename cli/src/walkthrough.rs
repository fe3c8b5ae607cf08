//! `ficus walkthrough`: prints the steps of `ficus_walkthrough::engine::run` as they happen,
//! with a ✔ or ✘ and the evidence for every check, waits for Enter between steps unless
//! `--auto`, and ends with the figures.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use ficus_walkthrough::engine::{Extraction, Options, Reporter, WalkError, run};

/// Prints to the terminal; colour only on a terminal without NO_COLOR.
struct Terminal {
    auto: bool,
    colour: bool,
    started: Instant,
}

impl Terminal {
    fn paint(&self, code: &str, text: &str) -> String {
        if self.colour { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_string() }
    }
}

impl Reporter for Terminal {
    fn step(&mut self, number: u8, name: &str, title: &str, why: &str) -> bool {
        if !self.auto && number > 1 {
            print!("\n{} ", self.paint("2", &format!("Enter runs step {number}, q stops:")));
            let _ = std::io::stdout().flush();
            let mut line = String::new();
            match std::io::stdin().lock().read_line(&mut line) {
                Ok(0) | Err(_) => return false,
                Ok(_) if line.trim().eq_ignore_ascii_case("q") => return false,
                Ok(_) => {}
            }
        }
        let elapsed = self.started.elapsed().as_secs_f64();
        println!(
            "\n{} {}",
            self.paint("1", &format!("Step {number} · {name}. {title}")),
            self.paint("2", &format!("[{elapsed:.1}s]"))
        );
        println!("  {}", self.paint("2", why));
        true
    }

    fn check(&mut self, passed: bool, what: &str, evidence: &str) {
        let mark = if passed { self.paint("32", "✔") } else { self.paint("31", "✘") };
        println!("  {mark} {what}");
        for line in evidence.lines() {
            println!("      {}", self.paint("2", line));
        }
    }

    fn note(&mut self, text: &str) {
        println!("  · {text}");
    }
}

/// `ficus walkthrough`'s arguments.
pub struct Args {
    /// `catalog`, `notifications`, `payments` or `all`.
    pub which: String,
    /// No pauses between steps.
    pub auto: bool,
    /// Where its files go.
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL for the shop.
    pub shop_database: Option<String>,
    /// PostgreSQL for the catalog service.
    pub catalog_database: Option<String>,
    /// PostgreSQL for the notifications service.
    pub notifications_database: Option<String>,
    /// PostgreSQL for the payments service.
    pub payments_database: Option<String>,
    /// NATS for the shop's events.
    pub nats: Option<String>,
}

/// Runs the walkthrough; exit 0 when every check passed (or the person stopped it), 1
/// when a check failed or a step could not run.
pub fn run_command(args: Args) -> ExitCode {
    let Args {
        which,
        auto,
        data_dir,
        shop_database,
        catalog_database,
        notifications_database,
        payments_database,
        nats,
    } = args;
    let Some(extractions) = Extraction::parse_list(&which) else {
        eprintln!("ficus walkthrough: {which:?} is not catalog, notifications, payments or all");
        return ExitCode::from(2);
    };
    let data_dir = data_dir.unwrap_or_else(|| std::env::temp_dir().join("ficus-walkthrough"));
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut terminal = Terminal { auto, colour, started: Instant::now() };
    let names: Vec<&str> = extractions.iter().map(|e| e.service()).collect();
    println!(
        "Ficus walkthrough: extract {} from Ficus Shop, step by step, while shoppers keep shopping.",
        names.join(", then ")
    );
    println!("Data directory: {} (its shop/, service folders and ficus.toml are made anew)", data_dir.display());
    let mut options = Options::new(data_dir);
    options.shop_database = shop_database;
    options.catalog_database = catalog_database;
    options.notifications_database = notifications_database;
    options.payments_database = payments_database;
    options.nats_url = nats;
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ficus walkthrough: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        tokio::select! {
            result = run(&extractions, options, &mut terminal) => Some(result),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    // Dropping the runtime stops every server the walkthrough started in this process.
    drop(runtime);
    let elapsed = terminal.started.elapsed().as_secs_f64();
    match result {
        Some(Ok(summary)) => {
            println!("\n{}", terminal.paint("1", "What moved"));
            for line in &summary.figures {
                println!("  · {line}");
            }
            println!(
                "  · orders: {} acknowledged, {} found afterwards",
                summary.orders.acknowledged, summary.orders.found
            );
            println!("  · shoppers: {} requests sent, {} failed", summary.load.requests, summary.load.failures);
            println!("\n{} all {} steps green in {elapsed:.1}s", terminal.paint("32", "✔"), summary.steps);
            ExitCode::SUCCESS
        }
        Some(Err(WalkError::Stopped(step))) => {
            println!("\nStopped before step {step}; everything it started has been stopped.");
            ExitCode::SUCCESS
        }
        Some(Err(e)) => {
            eprintln!("\n{} ficus walkthrough: {e}", terminal.paint("31", "✘"));
            ExitCode::from(1)
        }
        None => {
            println!("\nInterrupted; everything the walkthrough started has been stopped.");
            ExitCode::from(1)
        }
    }
}
