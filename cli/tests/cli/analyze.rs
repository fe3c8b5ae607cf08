//! `ficus analyze` and `ficus plan` as a user runs them: formats, output file, exit
//! statuses, messages.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ficus(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ficus")).args(args).env("NO_COLOR", "1").output().expect("ficus runs")
}

fn shop() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../example-monolith")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn analyze_shop_as_json_follows_the_contract() {
    let o = ficus(&["analyze", shop().to_str().expect("utf-8 path"), "--format", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for field in [
        "\"version\": 1",
        "\"root\": \"shop\"",
        "\"stats\"",
        "\"units\"",
        "\"endpoints\"",
        "\"tables\"",
        "\"services\"",
        "\"dependencies\"",
        "\"shared_tables\"",
        "\"metrics\"",
        "\"extraction_order\"",
        "\"diagnostics\"",
        "\"handler\": \"shop::catalog::http::get_product\"",
    ] {
        assert!(out.contains(field), "{field} missing from the report");
    }
    assert!(stderr(&o).is_empty(), "no progress when stderr is not a terminal: {}", stderr(&o));
}

#[test]
fn analyze_text_summary_and_graph_formats() {
    let path = shop();
    let path = path.to_str().expect("utf-8 path");
    let text = ficus(&["analyze", path]);
    assert!(text.status.success());
    let t = stdout(&text);
    assert!(t.contains("Extraction order") && t.contains("Shared tables") && t.contains("products"), "{t}");
    assert!(!t.contains('\x1b'), "NO_COLOR is honoured");
    let dot = stdout(&ficus(&["analyze", path, "--format", "dot"]));
    assert!(dot.starts_with("digraph \"shop\" {") && dot.contains("\"orders\" -> \"inventory\""), "{dot}");
    let mermaid = stdout(&ficus(&["analyze", path, "--format", "mermaid"]));
    assert!(mermaid.starts_with("flowchart LR") && mermaid.contains("orders -->|"), "{mermaid}");
    let html = stdout(&ficus(&["analyze", path, "--format", "html"]));
    assert!(html.starts_with("<!doctype html>") && html.contains("id=\"ficus-data\"") && html.contains("\"catalog\""));
}

#[test]
fn analyze_out_writes_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("report.json");
    let o =
        ficus(&["analyze", shop().to_str().expect("utf-8"), "--format", "json", "--out", out.to_str().expect("utf-8")]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).is_empty());
    assert!(std::fs::read_to_string(&out).expect("report written").contains("\"shared_tables\""));
}

#[test]
fn analyze_services_target() {
    let o = ficus(&["analyze", shop().to_str().expect("utf-8"), "--format", "json", "--services", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("\"services\": 3,"), "three services asked for");
}

#[test]
fn analyze_rejects_a_path_without_cargo_toml_with_status_1() {
    let dir = tempfile::tempdir().expect("temp dir");
    let o = ficus(&["analyze", dir.path().to_str().expect("utf-8")]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("has no Cargo.toml") && e.contains(dir.path().to_str().expect("utf-8")), "{e}");
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(ficus(&["analyze"]).status.code(), Some(2));
    assert_eq!(ficus(&["analyze", ".", "--format", "yaml"]).status.code(), Some(2));
    assert_eq!(ficus(&["analyze", ".", "--resolution", "-1"]).status.code(), Some(2));
    assert_eq!(ficus(&["analyze", ".", "--services", "0"]).status.code(), Some(2));
}

#[test]
fn plan_prints_routes_and_unknown_service_exits_1() {
    let path = shop();
    let path = path.to_str().expect("utf-8");
    let o = ficus(&["plan", path, "--service", "catalog"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let t = stdout(&o);
    assert!(
        t.contains("# Extraction plan: catalog")
            && t.contains("stage    = \"shadow\"")
            && t.contains("stage    = \"canary\""),
        "{t}"
    );
    let o = ficus(&["plan", path, "--service", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("nope") && e.contains("catalog") && e.contains("orders"), "{e}");
}
