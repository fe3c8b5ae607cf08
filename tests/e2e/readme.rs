//! The README's two commands keep working: the main one is run here exactly as
//! written (plus a free port and a scratch data directory), and the test command is
//! the one CI runs.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use ficus_e2e::{readme_main_commands, workspace_root};

#[test]
fn ci_runs_the_readme_test_command() {
    let (_, test) = readme_main_commands();
    let ci = std::fs::read_to_string(workspace_root().join(".ci/run")).expect(".ci/run");
    assert!(ci.contains(&test), ".ci/run does not run the README's test command `{test}`");
}

/// Sends a signal to every process of a group (`kill -s SIG -- -PGID`).
fn signal_group(pgid: u32, signal: &str) {
    let _ = Command::new("kill").args(["-s", signal, "--", &format!("-{pgid}")]).status();
}

/// Kills a process group when dropped, so a failed assertion leaves nothing running.
struct Group(u32);

impl Drop for Group {
    fn drop(&mut self) {
        signal_group(self.0, "KILL");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_main_command_serves_the_seeded_shop() {
    let (run, _) = readme_main_commands();
    let mut words: Vec<String> = run.split_whitespace().map(String::from).collect();
    assert_eq!(words.first().map(String::as_str), Some("cargo"));
    assert!(words.windows(2).any(|w| w == ["-p", "shop"]), "the main command runs the shop: `{run}`");
    assert!(words.iter().any(|w| w == "--seed"), "the main command seeds the shop: `{run}`");
    let data = tempfile::tempdir().unwrap();
    // Same command, but on a free port and a scratch directory (later flags win).
    words.extend(["--listen".into(), "127.0.0.1:0".into(), "--data-dir".into(), data.path().display().to_string()]);
    let mut child = Command::new(&words[0])
        .args(&words[1..])
        .current_dir(workspace_root())
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("cargo runs");
    let group = Group(child.id());
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    for stream in [Box::new(stdout) as Box<dyn std::io::Read + Send>, Box::new(stderr)] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    drop(tx);
    let mut seen = Vec::new();
    let addr = loop {
        let line = rx.recv_timeout(Duration::from_secs(600)).unwrap_or_else(|_| panic!("no address logged: {seen:#?}"));
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
        seen.push(line);
    };
    let client = reqwest::Client::new();
    let mut healthy = false;
    for _ in 0..600 {
        if client.get(format!("http://{addr}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(healthy, "the shop at {addr} never became healthy");
    let page: serde_json::Value =
        client.get(format!("http://{addr}/api/products?per_page=1")).send().await.unwrap().json().await.unwrap();
    assert_eq!(page["total"], 200, "the seeded catalogue is served");
    // SIGTERM to the group (cargo run execs the shop, so the shop leads it): it drains
    // in-flight requests and exits cleanly.
    signal_group(group.0, "TERM");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "still running 30 s after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let rest: Vec<String> = rx.iter().collect();
    assert!(rest.iter().any(|l| l.contains("stopped")), "no clean stop logged: {rest:#?}");
    assert!(status.success(), "the shop exited with {status} on SIGTERM");
}
