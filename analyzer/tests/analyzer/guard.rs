//! The guard (`Rules`) and partition files, on the example shop and a layered fixture:
//! every rule kind, every selector, the errors of a rule naming nothing, and a
//! partition that reproduces or edits the proposal.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ficus_analyzer::guard::{Rules, Violation};
use ficus_analyzer::partition::{PartService, Partition};
use ficus_analyzer::{Analysis, Options};

fn path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn analysis_of(rel: &str, opts: &Options) -> Analysis {
    ficus_analyzer::analysis(&path(rel), opts, &|_| {}).expect("analyses")
}

fn shop() -> &'static Analysis {
    static SHOP: OnceLock<Analysis> = OnceLock::new();
    SHOP.get_or_init(|| analysis_of("../example-monolith", &Options::default()))
}

fn rules(body: &str) -> Rules {
    Rules::parse(&format!("version = 1\n{body}")).expect("valid rules")
}

fn check(a: &Analysis, body: &str) -> Vec<Violation> {
    rules(body).check(a).expect("rules name what exists")
}

fn rule(from: &str, what: &str) -> String {
    format!("[[forbid]]\nfrom = {from:?}\n{what}\nwhy = \"test\"\n")
}

#[test]
fn touches_table_finds_each_read_with_its_line() {
    let v = check(shop(), &rule("shop::orders", "touches_table = \"products\""));
    assert!(!v.is_empty());
    for x in &v {
        assert!(x.file.starts_with("src/orders/") && x.line > 0, "{x}");
        assert!(x.what.contains("table products"), "{x}");
        assert_eq!((x.rule, x.why.as_str()), (1, "test"));
    }
    assert!(v[0].to_string().starts_with(&format!("{}:{}: rule 1 (test): shop::orders", v[0].file, v[0].line)));
    assert!(check(shop(), &rule("shop::payments", "touches_table = \"products\"")).is_empty());
}

#[test]
fn writes_table_ignores_reads() {
    // Orders reads products (the tangle) but does not write them.
    assert!(check(shop(), &rule("shop::orders", "writes_table = \"products\"")).is_empty());
    let v = check(shop(), &rule("shop::orders", "writes_table = \"orders\""));
    assert!(!v.is_empty() && v.iter().all(|x| x.what.contains("writes table orders")), "{v:?}");
}

#[test]
fn calls_counts_calls_from_outside_the_target_only() {
    let all = check(shop(), &rule("*", "calls = \"shop::catalog::repo\""));
    assert!(all.iter().all(|x| !x.what.starts_with("shop::catalog::repo")), "the target's own calls: {all:?}");
    assert!(all.iter().any(|x| x.what.starts_with("shop::catalog::")), "catalog calls its repo: {all:?}");
    let outside =
        check(shop(), "[[forbid]]\nfrom = \"*\"\nexcept = [\"shop::catalog\"]\ncalls = \"shop::catalog::repo\"\n");
    assert!(!outside.is_empty() && outside.len() < all.len(), "{outside:?}");
    assert!(outside.iter().all(|x| !x.what.starts_with("shop::catalog")), "{outside:?}");
    assert!(outside.iter().all(|x| x.what.contains("calls catalog::repo::")), "{outside:?}");
}

#[test]
fn depends_on_a_service_is_a_call_into_it_or_a_table_it_writes() {
    let v = check(shop(), &rule("service:orders", "depends_on = \"service:cart\""));
    assert!(v.iter().any(|x| x.what.contains("calls cart::repo::")), "{v:?}");
    assert!(v.iter().any(|x| x.what.contains("reads table cart_items")), "{v:?}");
    // Nothing depends on the orders service's code from payments.
    assert!(check(shop(), &rule("service:payments", "depends_on = \"service:orders\"")).is_empty());
}

#[test]
fn except_takes_one_or_many_modules_and_services() {
    let one = check(shop(), &rule("*", "writes_table = \"payments\"\nexcept = \"service:payments\""));
    let many =
        check(shop(), &rule("*", "writes_table = \"payments\"\nexcept = [\"service:payments\", \"shop::seed\"]"));
    assert!(one.is_empty() && many.is_empty(), "{one:?} {many:?}");
    assert!(!check(shop(), &rule("*", "writes_table = \"payments\"")).is_empty());
}

#[test]
fn rules_are_numbered_in_file_order() {
    let body = format!(
        "{}{}",
        rule("shop::payments", "touches_table = \"products\""),
        rule("shop::cart", "touches_table = \"products\"")
    );
    let v = check(shop(), &body);
    assert!(!v.is_empty() && v.iter().all(|x| x.rule == 2), "{v:?}");
}

#[test]
fn a_rule_naming_nothing_that_exists_is_an_error() {
    let cases = [
        (rule("shop::nope", "touches_table = \"products\""), "no module \"shop::nope\""),
        (rule("shop::orders", "touches_table = \"no_such_table\""), "no table named \"no_such_table\""),
        (rule("service:nope", "touches_table = \"products\""), "no service named \"nope\"; the services are:"),
        (rule("*", "calls = \"shop::nowhere\""), "no module \"shop::nowhere\""),
        (rule("*", "depends_on = \"service:nope\""), "no service named \"nope\""),
        (format!("{}except = \"shop::gone\"\n", rule("*", "touches_table = \"products\"")), "no module \"shop::gone\""),
    ];
    for (body, want) in cases {
        let err = rules(&body).check(shop()).expect_err(&body);
        assert!(err.starts_with("rule 1: ") && err.contains(want), "{body}: {err}");
    }
}

#[test]
fn invalid_rules_files_say_why() {
    let cases = [
        ("version = 2\n", "version 2 is not supported"),
        ("version = 1\n[[forbid]]\nfrom = \"*\"\nwhy = \"x\"\n", "rule 1: give exactly one of"),
        (
            "version = 1\n[[forbid]]\nfrom = \"*\"\ncalls = \"a\"\ntouches_table = \"b\"\n",
            "rule 1: give exactly one of touches_table, writes_table, calls, depends_on (it has 2)",
        ),
        ("version = 1\n[[forbid]]\nfrom = \"*\"\ntouches = \"b\"\n", "unknown field `touches`"),
        ("version = 1\n[[forbid]]\ncalls = \"a\"\n", "missing field `from`"),
        ("[[forbid]]\nfrom = \"*\"\ncalls = \"a\"\n", "missing field `version`"),
    ];
    for (text, want) in cases {
        let err = Rules::parse(text).expect_err(text);
        assert!(err.contains(want), "{text}: {err}");
    }
}

#[test]
fn module_paths_select_what_is_under_them_in_a_layered_app() {
    let a = analysis_of("tests/fixtures/resolve", &Options::default());
    // The handlers reach the database layer through method calls.
    let v = check(&a, &rule("layered::handlers", "calls = \"layered::db\""));
    assert!(
        v.iter().any(|x| x.what.contains("find_user")) && v.iter().any(|x| x.what.contains("list_orders")),
        "{v:?}"
    );
    assert!(v.iter().all(|x| x.file == "src/handlers.rs"), "{v:?}");
    let v = check(&a, &rule("layered::db::orders", "touches_table = \"orders\""));
    assert!(v.iter().all(|x| x.file == "src/db/orders.rs") && v.len() == 2, "{v:?}");
    // The use-case view has a service of endpoints only (its handler is in shared code).
    let empty = a.report.services.iter().find(|s| s.units.is_empty() && !s.kernel).expect("an endpoints-only service");
    let err =
        rules(&rule(&format!("service:{}", empty.name), "touches_table = \"orders\"")).check(&a).expect_err("no units");
    assert!(err.contains("has no units of its own"), "{err}");
}

/// The proposed partition of a report, as a partition file.
fn partition_of(a: &Analysis) -> Partition {
    Partition {
        version: 1,
        root: a.report.root.clone(),
        services: a
            .report
            .services
            .iter()
            .map(|s| PartService {
                name: s.name.clone(),
                kernel: s.kernel,
                units: s.units.iter().map(|u| u.id.clone()).collect(),
                endpoints: s.endpoints.iter().map(|e| format!("{} {}", e.method, e.path)).collect(),
            })
            .collect(),
    }
}

#[test]
fn a_partition_file_of_the_proposal_gives_the_same_services_metrics_and_dependencies() {
    let proposed = shop();
    let again =
        analysis_of("../example-monolith", &Options { partition: Some(partition_of(proposed)), ..Default::default() });
    assert_eq!(again.report.view.used, "partition");
    assert_eq!(again.report.metrics, proposed.report.metrics);
    assert_eq!(again.report.services, proposed.report.services);
    assert_eq!(again.report.dependencies, proposed.report.dependencies);
    assert_eq!(again.report.extraction_order, proposed.report.extraction_order);
}

#[test]
fn moving_a_unit_in_a_partition_moves_its_endpoints_and_changes_the_metrics() {
    let mut p = partition_of(shop());
    let from = p.services.iter().position(|s| s.name == "catalog").expect("catalog");
    let to = p.services.iter().position(|s| s.name == "inventory").expect("inventory");
    p.services[from].units.retain(|u| u != "shop::catalog::http");
    p.services[from].endpoints.clear();
    p.services[to].units.push("shop::catalog::http".into());
    let a = analysis_of("../example-monolith", &Options { partition: Some(p), ..Default::default() });
    let inv = a.report.services.iter().find(|s| s.name == "inventory").expect("inventory");
    assert!(inv.endpoints.iter().any(|e| e.path == "/api/products/{id}"), "{:?}", inv.endpoints);
    assert_ne!(a.report.metrics, shop().report.metrics);
    assert!(a.report.dependencies.iter().any(|d| d.from == "inventory" && d.to == "catalog"));
}

#[test]
fn a_partition_that_does_not_fit_the_code_is_refused() {
    let mut p = partition_of(shop());
    p.services[0].units.push("shop::gone".into());
    let err = ficus_analyzer::analysis(
        &path("../example-monolith"),
        &Options { partition: Some(p), ..Default::default() },
        &|_| {},
    )
    .expect_err("refused");
    assert!(err.to_string().contains("no such unit in the code: shop::gone"), "{err}");
}
