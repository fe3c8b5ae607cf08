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
    let data = html.split_once("id=\"ficus-data\">").and_then(|(_, rest)| rest.split_once("</script>")).expect("data");
    assert!(!data.0.contains('<'), "no `<` inside the embedded data, where it could end the script element");
    assert!(serde_json::from_str::<serde_json::Value>(data.0).is_ok(), "the embedded data is JSON");
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

/// Writes a rules file with one rule and runs the guard on the shop.
fn guard(dir: &Path, rule: &str) -> Output {
    let rules = dir.join("rules.toml");
    std::fs::write(&rules, format!("version = 1\n\n[[forbid]]\n{rule}\nwhy = \"moved to the catalog\"\n"))
        .expect("write rules");
    ficus(&["analyze", shop().to_str().expect("utf-8"), "--check", rules.to_str().expect("utf-8")])
}

#[test]
fn check_exits_1_with_file_line_0_when_rules_hold_2_when_a_rule_names_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let broken = guard(dir.path(), "from = \"shop::orders\"\ntouches_table = \"products\"");
    assert_eq!(broken.status.code(), Some(1), "{}", stderr(&broken));
    let out = stdout(&broken);
    let first = out.lines().next().unwrap_or_default();
    let (file, rest) = first.split_once(':').expect("FILE:LINE");
    assert!(file.starts_with("src/orders/") && file.ends_with(".rs"), "{first}");
    assert!(rest.split(':').next().is_some_and(|l| l.parse::<usize>().is_ok()), "{first}");
    assert!(first.contains(": rule 1 (moved to the catalog): shop::orders"), "{first}");
    assert!(stderr(&broken).contains("of rule 1 of"), "{}", stderr(&broken));

    let kept = guard(dir.path(), "from = \"shop::payments\"\ntouches_table = \"products\"");
    assert_eq!(kept.status.code(), Some(0), "{}", stderr(&kept));
    assert!(stdout(&kept).is_empty() && stderr(&kept).contains("1 rule of"), "{}", stderr(&kept));

    let nothing = guard(dir.path(), "from = \"shop::orders\"\ntouches_table = \"no_such_table\"");
    assert_eq!(nothing.status.code(), Some(2));
    assert!(stderr(&nothing).contains("rules.toml: rule 1: no table named \"no_such_table\""), "{}", stderr(&nothing));

    let invalid = guard(dir.path(), "from = \"*\"");
    assert_eq!(invalid.status.code(), Some(2));
    assert!(stderr(&invalid).contains("give exactly one of"), "{}", stderr(&invalid));
}

#[test]
fn plan_routes_out_round_trips_through_the_proxy_parser_keeping_comments() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = dir.path().join("ficus.toml");
    let shop = shop();
    let shop = shop.to_str().expect("utf-8");
    let write = || ficus(&["plan", shop, "--service", "catalog", "--routes-out", cfg.to_str().expect("utf-8")]);
    // A new file.
    let o = write();
    assert!(o.status.success(), "{}", stderr(&o));
    let fresh = std::fs::read_to_string(&cfg).expect("written");
    let parsed = ficus_proxy::config::Config::parse(&fresh, &cfg).expect("the proxy accepts it");
    assert_eq!(parsed.routes.len(), 3, "{fresh}");
    assert!(stderr(&o).contains("3 added in stage shadow") && stderr(&o).contains("placeholder"), "{}", stderr(&o));

    // An existing file: comments kept, a route already live keeps its stage.
    let mine = "# our proxy, hand-written\nversion = 1\n\n[listen]\nhttp = \"127.0.0.1:8080\" # the edge\nadmin = \"127.0.0.1:9901\"\n\n[upstreams.monolith]\naddrs = [\"127.0.0.1:3000\"]\n\n[upstreams.catalog]\naddrs = [\"127.0.0.1:3101\"]\n\n[default]\nupstream = \"monolith\"\n\n# live since Monday\n[[routes]]\nname = \"catalog-api-categories\"\npath = \"/api/categories\"\nupstream = \"catalog\"\nstage = \"canary\"\npercent = 25\n";
    std::fs::write(&cfg, mine).expect("write");
    let o = write();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("2 added in stage shadow, 1 updated") && !stderr(&o).contains("placeholder"));
    let merged = std::fs::read_to_string(&cfg).expect("written");
    for kept in ["# our proxy, hand-written", "# the edge", "# live since Monday"] {
        assert!(merged.contains(kept), "{kept:?} kept:\n{merged}");
    }
    let parsed = ficus_proxy::config::Config::parse(&merged, &cfg).expect("the proxy accepts it");
    assert_eq!(parsed.routes.len(), 3);
    assert!(merged.contains("stage = \"canary\"\npercent = 25"), "{merged}");

    // A file the proxy would refuse is left as it was.
    std::fs::write(&cfg, "version = 1\n[listen]\nhttp = \"nonsense\"\n").expect("write");
    let o = write();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not written, the proxy would refuse the result"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&cfg).expect("read"), "version = 1\n[listen]\nhttp = \"nonsense\"\n");
}
