//! `ficus proxy`, `ficus routes`, `ficus stage` and `ficus diffs`, run as processes: a bad config is refused with
//! file:line, the admin commands print routes and pass on the server's errors, SIGTERM exits 0.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};

fn ficus() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ficus"))
}

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn config(dir: &Path, routes: &str) -> std::path::PathBuf {
    let port = closed_port();
    let text = format!(
        "version = 1\n\n[listen]\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\n[server]\nthreads = 1\ngrace_period_seconds = 0\n\n\
         [upstreams.monolith]\naddrs = [\"127.0.0.1:{port}\"]\n\n[upstreams.catalog]\naddrs = [\"127.0.0.1:{port}\"]\n\n\
         [default]\nupstream = \"monolith\"\n\n{routes}"
    );
    let path = dir.join("ficus.toml");
    std::fs::write(&path, text).unwrap();
    path
}

const ROUTE: &str =
    "[[routes]]\nname = \"catalog\"\npath = \"/api/products/{*rest}\"\nupstream = \"catalog\"\nstage = \"monolith\"\n";

struct Proxy {
    child: Child,
    admin: String,
}

impl Proxy {
    /// Starts `ficus proxy` and reads the admin address from its "listening" log line.
    fn start(config: &Path, token: &str) -> Proxy {
        let mut child = ficus()
            .args(["proxy", "--config"])
            .arg(config)
            .env("FICUS_ADMIN_TOKEN", token)
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let admin = loop {
            let line = lines.next().expect("ficus proxy exited before listening").unwrap();
            if let Some(rest) = line.split("admin=").nth(1) {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
        };
        // Keep draining stderr so the proxy never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Proxy { child, admin: format!("http://{admin}") }
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        self.child.wait().unwrap()
    }
}

#[test]
fn an_invalid_config_is_refused_with_its_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), &ROUTE.replace("stage = \"monolith\"", "stage = \"sideways\""));
    let out = ficus().args(["proxy", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ficus.toml:24: route `catalog`: stage `sideways`"), "{stderr}");
}

#[test]
fn routes_and_stage_talk_to_the_admin_api() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), ROUTE);
    let proxy = Proxy::start(&path, "s3cret");
    let run = |args: &[&str], token: &str| {
        let out = ficus().args(args).args(["--admin", &proxy.admin]).env("FICUS_ADMIN_TOKEN", token).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, _) = run(&["routes"], "s3cret");
    assert_eq!(code, Some(0));
    assert!(stdout.contains("catalog") && stdout.contains("monolith"), "{stdout}");

    assert!(stdout.contains("migration: 1 route: 1 on the monolith; endpoints 0.0% moved"), "{stdout}");
    let (code, stdout, _) = run(&["audit"], "s3cret");
    assert_eq!((code, stdout.as_str()), (Some(0), "no stage change recorded\n"));

    let (code, stdout, _) =
        run(&["stage", "catalog", "canary", "--percent", "25", "--reason", "first quarter"], "s3cret");
    assert_eq!(code, Some(0));
    assert!(stdout.contains("canary 25%"), "{stdout}");
    assert!(std::fs::read_to_string(&path).unwrap().contains("stage = \"canary\"\npercent = 25"));
    let (code, stdout, _) = run(&["routes"], "s3cret");
    assert_eq!(code, Some(0));
    assert!(stdout.contains("migration: 1 route: 1 in canary; endpoints 25.0% moved"), "{stdout}");
    let (code, stdout, _) = run(&["audit", "catalog"], "s3cret");
    assert_eq!(code, Some(0));
    assert!(stdout.contains("catalog: monolith → canary 25%  by "), "{stdout}");
    // `$USER (ficus CLI)`, or `ficus CLI` where USER is not set.
    assert!(
        stdout.contains("ficus CLI") && stdout.contains(" (admin API from 127.0.0.1)\n    first quarter\n"),
        "{stdout}"
    );
    let audit_file = std::fs::read_to_string(dir.path().join("ficus.audit.jsonl")).unwrap();
    assert!(audit_file.contains("\"why\":\"first quarter\""), "{audit_file}");

    let (code, _, stderr) = run(&["stage", "catalog", "sideways"], "s3cret");
    assert_eq!(code, Some(1));
    assert!(stderr.contains("400") && stderr.contains("sideways"), "{stderr}");
    let (code, _, stderr) = run(&["stage", "nope", "service"], "s3cret");
    assert_eq!(code, Some(1));
    assert!(stderr.contains("no route named `nope`"), "{stderr}");
    let (code, stdout, _) = run(&["diffs", "catalog"], "s3cret");
    assert_eq!(code, Some(0));
    assert!(stdout.contains("route catalog: 0 compared, 0 matched, 0 mismatched"), "{stdout}");
    let (code, _, stderr) = run(&["diffs", "nope"], "s3cret");
    assert_eq!(code, Some(1));
    assert!(stderr.contains("404") && stderr.contains("no route named `nope`"), "{stderr}");
    let (code, _, stderr) = run(&["routes"], "wrong");
    assert_eq!(code, Some(1));
    assert!(stderr.contains("401"), "{stderr}");

    assert!(proxy.terminate().success(), "SIGTERM drains and exits 0");
}

#[test]
fn an_unreachable_admin_api_exits_1() {
    let out = ficus().args(["routes", "--admin", &format!("http://127.0.0.1:{}", closed_port())]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the admin API"));
}
