//! The `shop` binary as an operator runs it: it logs the address it bound first, serves
//! the seeded catalogue, and on SIGTERM drains and exits cleanly.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::walkthrough::built;

/// Sends a signal to a process group (`kill -s SIG -- -PGID`). A group that has already exited
/// is not an error here (the drop guard's KILL usually finds it gone), so kill's complaint is muted.
fn signal_group(pgid: u32, signal: &str) {
    let _ = Command::new("kill").args(["-s", signal, "--", &format!("-{pgid}")]).stderr(Stdio::null()).status();
}

/// Kills the process group when dropped, so a failed assertion leaves nothing running.
struct Group(u32);

impl Drop for Group {
    fn drop(&mut self) {
        signal_group(self.0, "KILL");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shop_binary_serves_the_seed_and_stops_cleanly_on_sigterm() {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(built("shop"))
        .args(["--seed", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .env("NO_COLOR", "1")
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("shop runs");
    let group = Group(child.id());
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(60)).expect("a first log line");
    let addr =
        first.split("listening on http://").nth(1).unwrap_or_else(|| panic!("first line is not the address: {first}"));
    let addr = addr.split_whitespace().next().unwrap().to_string();
    let client = reqwest::Client::new();
    let page: serde_json::Value =
        client.get(format!("http://{addr}/api/products?per_page=1")).send().await.unwrap().json().await.unwrap();
    assert_eq!(page["total"], 200, "the seeded catalogue is served");
    signal_group(group.0, "TERM");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "still running 30 s after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let rest: Vec<String> = rx.iter().collect();
    assert!(status.success(), "the shop exited with {status} on SIGTERM");
    assert!(rest.iter().any(|l| l.contains("stopped")), "no clean stop logged: {rest:#?}");
}
