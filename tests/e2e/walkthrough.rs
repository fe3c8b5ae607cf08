//! `ficus walkthrough --auto` as a user runs it: the built binary on a fresh data
//! directory. On SQLite it is the README's main command (see `readme`: all three
//! extractions); here the three run on PostgreSQL databases. Either way: every step green,
//! no failed request, every acknowledged order found.

use std::path::PathBuf;
use std::process::Command;

/// A binary `cargo test --workspace` built next to this test.
pub fn built(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build --workspace` (cargo test --workspace does)",
        bin.display()
    );
    bin
}

/// What a green walkthrough prints: every step (numbered from 1, named), no ✘, its checks,
/// no failed request, and as many orders found as acknowledged.
pub fn check_output(stdout: &str) {
    let done =
        stdout.lines().find(|l| l.contains(" steps green in ")).unwrap_or_else(|| panic!("no end line:\n{stdout}"));
    let steps: u32 = done.split_whitespace().find_map(|w| w.parse().ok()).expect("a step count");
    assert!(steps >= 10, "{done}");
    for step in 1..=steps {
        assert!(stdout.contains(&format!("Step {step} · ")), "step {step} missing:\n{stdout}");
    }
    assert!(!stdout.contains('✘'), "a check failed:\n{stdout}");
    assert!(stdout.matches('✔').count() >= 25, "too few checks:\n{stdout}");
    let shoppers = stdout.lines().find(|l| l.starts_with("  · shoppers: ")).expect("shoppers line");
    assert!(shoppers.trim_end().ends_with(" 0 failed"), "{shoppers}");
    let orders = stdout.lines().find(|l| l.starts_with("  · orders: ")).expect("orders line");
    let figures: Vec<u64> = orders.split_whitespace().filter_map(|w| w.trim_matches(',').parse().ok()).collect();
    assert!(
        figures.len() == 2 && figures[0] > 0 && figures[0] == figures[1],
        "acknowledged and found differ: {orders}"
    );
}

/// The three extractions in order on PostgreSQL, the production configuration: the shop and
/// each service on a database of its own, the shop's events through NATS JetStream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walkthrough_all_on_postgres_and_nats() {
    let Some(nats) = ficus_e2e::nats::url().await else { return };
    let mut dbs = Vec::new();
    for name in ["shop", "catalog", "notifications", "payments"] {
        let Some(db) = ficus_e2e::pg::create_database(&format!("walkthrough_{name}")).await else { return };
        dbs.push(db);
    }
    let urls: Vec<String> = dbs.iter().map(|(_, url)| url.clone()).collect();
    let data = tempfile::tempdir().unwrap();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(built("ficus"))
            .args(["walkthrough", "all", "--auto", "--shop-database", &urls[0], "--catalog-database", &urls[1]])
            .args([
                "--notifications-database",
                &urls[2],
                "--payments-database",
                &urls[3],
                "--nats",
                &nats,
                "--data-dir",
            ])
            .arg(data.path())
            .env("NO_COLOR", "1")
            .output()
            .expect("ficus runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exit {}\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    for service in ["catalog", "notifications", "payments"] {
        assert!(
            stdout.contains(&format!("{service} service listening on http://127.0.0.1:"))
                && stdout
                    .lines()
                    .any(|l| l.contains(&format!("{service} service listening")) && l.contains("database postgres://")),
            "the {service} service runs on PostgreSQL:\n{stdout}"
        );
    }
    assert!(stdout.contains("events through NATS JetStream"), "the events go through NATS:\n{stdout}");
    check_output(&stdout);
}

#[test]
fn interactive_walkthrough_goes_on_with_enter_and_stops_with_q() {
    use std::io::Write;
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(built("ficus"))
        .args(["walkthrough", "--data-dir"])
        .arg(data.path())
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("ficus runs");
    // Enter runs step 2; q stops before step 3.
    child.stdin.take().unwrap().write_all(b"\nq\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("Step 2 · ") && !stdout.contains("Step 3 · "), "{stdout}");
    assert!(stdout.contains("Stopped before step 3"), "{stdout}");
    assert!(stdout.contains("Enter runs step 3, q stops"), "{stdout}");
}
