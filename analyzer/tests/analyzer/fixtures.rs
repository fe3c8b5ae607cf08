//! Snapshot tests: each crate under `tests/fixtures/` is analysed and its report
//! compared, byte for byte, with `tests/fixtures/<name>.expected.json` (elapsed_ms set
//! to 0). `UPDATE_EXPECT=1 cargo test -p ficus-analyzer` rewrites the expected files;
//! review the diff before committing it.

use std::path::{Path, PathBuf};

use ficus_analyzer::{Options, Report, analyze, render};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

pub(crate) fn report_of(path: &Path) -> Report {
    let mut r = analyze(path, &Options::default()).expect("fixture analyses");
    r.stats.elapsed_ms = 0;
    r
}

fn check(name: &str) -> Report {
    let report = report_of(&fixture(name));
    let actual = render::json(&report);
    let expected_path = fixture(&format!("{name}.expected.json"));
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::write(&expected_path, &actual).expect("writing the expected report");
        return report;
    }
    let expected = std::fs::read_to_string(&expected_path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_EXPECT=1 to create it)", expected_path.display()));
    assert!(actual == expected, "report of fixture {name} differs from {}; actual:\n{actual}", expected_path.display());
    report
}

fn endpoints(r: &Report) -> Vec<String> {
    r.endpoints.iter().map(|e| format!("{} {} {}", e.method, e.path, e.handler)).collect()
}

fn table(r: &Report, name: &str) -> (Vec<String>, Vec<String>) {
    let t = r.tables.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("table {name} not found"));
    (t.readers.clone(), t.writers.clone())
}

#[test]
fn axum_routes_merged_nested_and_normalised() {
    let r = check("axum");
    assert_eq!(
        endpoints(&r),
        vec![
            "ANY /api/posts/static/{*path} tower_http::services::ServeDir::new",
            "DELETE /api/posts/{id} axum_app::posts::remove",
            "GET /admin/ping axum_app::admin::ping",
            "GET /api/posts axum_app::posts::list",
            "GET /api/users axum_app::users::handlers::list",
            "GET /api/users/{id} axum_app::users::handlers::show",
            "GET /docs-only axum_app::documented",
            "GET /health axum_app::health",
            "GET /status axum_app::admin::status::status",
            "PATCH /api/posts/{id} axum_app::posts::<closure>",
            "POST /api/login axum_app::users::handlers::login",
            "POST /api/users axum_app::users::handlers::create",
        ]
    );
    assert_eq!(table(&r, "users"), (vec!["axum_app::posts::repo".into()], vec!["axum_app::users::handlers".into()]));
}

#[test]
fn actix_attributes_scopes_resources_and_configure() {
    let r = check("actix");
    assert_eq!(
        endpoints(&r),
        vec![
            "DELETE /api/items/{id} actix_app::items::delete_item",
            "GET /api/items/{id} actix_app::items::get_item",
            "GET /hello/{name} actix_app::hello",
            "GET /orphan actix_app::items::orphan",
            "POST /api/echo actix_app::echo",
            "POST /api/manual actix_app::manual",
        ]
    );
}

#[test]
fn rocket_mounts_and_routes_macro() {
    let r = check("rocket");
    assert_eq!(
        endpoints(&r),
        vec![
            "GET / rocket_app::index",
            "GET /api/hello/{name}/{age} rocket_app::hello",
            "GET /files/{*path} rocket_app::files::serve",
            "POST /api/upload rocket_app::upload",
        ]
    );
}

#[test]
fn sqlx_reads_writes_ctes_and_migrations() {
    let r = check("sqlx");
    assert_eq!(table(&r, "accounts"), (vec![], vec!["ledger::accounts".into(), "ledger::entries".into()]));
    assert_eq!(table(&r, "entries"), (vec![], vec!["ledger::entries".into()]));
    assert_eq!(table(&r, "audit"), (vec![], vec!["ledger::entries".into()]));
    // The CTE name `mine` is not a table, and English text is not SQL.
    let names: Vec<&str> = r.tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, vec!["accounts", "audit", "entries"]);
    assert!(r.tables.iter().all(|t| t.defined), "every table is defined by the migration");
}

#[test]
fn diesel_schema_and_dsl_uses() {
    let r = check("diesel");
    assert_eq!(table(&r, "users"), (vec!["blog::posts".into()], vec!["blog::users".into()]));
    assert_eq!(table(&r, "blog_posts"), (vec![], vec!["blog::posts".into()]));
    // Through the crate's own `insert!(comments, …)` macro.
    assert_eq!(table(&r, "comments"), (vec![], vec!["blog::posts".into()]));
}

#[test]
fn a_file_that_does_not_parse_is_a_diagnostic() {
    let r = check("broken");
    assert_eq!(r.stats.parse_errors, 1);
    assert_eq!(r.stats.files, 3);
    let d = &r.diagnostics[0];
    assert_eq!((d.file.as_str(), d.line), ("src/bad.rs", 2), "{d:?}");
    assert!(d.message.starts_with("does not parse"), "{}", d.message);
    // The other files are still analysed.
    assert!(r.units.iter().any(|u| u.id == "broken::good"));
}

#[test]
fn a_path_without_cargo_toml_is_rejected() {
    let dir = tempfile::tempdir().expect("temp dir");
    let err = analyze(dir.path(), &Options::default()).expect_err("no Cargo.toml");
    assert!(err.to_string().contains("has no Cargo.toml"), "{err}");
    std::fs::write(dir.path().join("Cargo.toml"), "[package]\nname = \"x\"\n").expect("write");
    let err = analyze(dir.path(), &Options::default()).expect_err("no .rs files");
    assert!(err.to_string().contains("no .rs files"), "{err}");
}

#[test]
fn workspace_members_globs_and_excludes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    let write = |p: &str, s: &str| {
        let p = root.join(p);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, s).expect("write");
    };
    write("Cargo.toml", "[workspace]\nmembers = [\"crates/*\"]\nexclude = [\"crates/skip\"]\n");
    write("crates/a/Cargo.toml", "[package]\nname = \"a-core\"\n");
    write("crates/a/src/lib.rs", "pub fn f() { b::g() }\n");
    write("crates/b/Cargo.toml", "[package]\nname = \"b\"\n");
    write("crates/b/src/lib.rs", "pub fn g() {}\n");
    write("crates/skip/Cargo.toml", "[package]\nname = \"skip\"\n");
    write("crates/skip/src/lib.rs", "pub fn h() {}\n");
    write("crates/b/target/debug/junk.rs", "this is not rust\n");
    write("crates/b/.hidden/x.rs", "neither is this\n");
    let r = report_of(root);
    let ids: Vec<&str> = r.units.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(ids, vec!["a_core", "b"]);
    assert_eq!(r.stats.files, 2);
    assert_eq!(r.stats.calls, 1, "a_core::f calls b::g across crates");
}

#[test]
fn same_input_same_bytes() {
    let shop = Path::new(env!("CARGO_MANIFEST_DIR")).join("../example-monolith");
    let a = render::json(&report_of(&shop));
    let b = render::json(&report_of(&shop));
    assert!(a == b, "two analyses of the shop differ");
}

#[test]
fn same_input_same_bytes_in_the_use_case_view() {
    let a = render::json(&report_of(&fixture("resolve")));
    let b = render::json(&report_of(&fixture("resolve")));
    assert!(a.contains("\"used\": \"use-cases\""), "the fixture is analysed by use case");
    assert!(a == b, "two analyses of the layered fixture differ");
}

#[test]
fn a_module_declared_twice_under_cfgs_gets_two_unit_ids() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    std::fs::create_dir(root.join("src")).expect("mkdir");
    std::fs::write(root.join("Cargo.toml"), "[package]\nname = \"twice\"\n").expect("write");
    std::fs::write(
        root.join("src/lib.rs"),
        "#[cfg(unix)]\n#[path = \"unix.rs\"]\nmod imp;\n#[cfg(windows)]\n#[path = \"windows.rs\"]\nmod imp;\n#[cfg(unix)]\nmod inline { pub fn f() {} }\n#[cfg(windows)]\nmod inline { pub fn f() {} }\n",
    )
    .expect("write");
    std::fs::write(root.join("src/unix.rs"), "pub fn f() {}\n").expect("write");
    std::fs::write(root.join("src/windows.rs"), "pub fn f() {}\n").expect("write");
    let r = report_of(root);
    let ids: Vec<&str> = r.units.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(ids, vec!["twice", "twice::imp", "twice::imp_2", "twice::inline", "twice::inline_2"]);
}

#[test]
fn openapi_registration_styles_are_endpoints() {
    let r = check("openapi");
    assert_eq!(
        endpoints(&r),
        vec![
            "GET /api/items openapi_app::utoipa_routes::list_items",
            "GET /health openapi_app::health",
            "GET /hello openapi_app::poem_api::Api::hello",
            "GET /reports/{id} openapi_app::docs_only::get_report",
            "GET /v1/things openapi_app::aide_routes::list_things",
            "GET /v1/things/{id} openapi_app::aide_routes::get_thing",
            "POST /api/items openapi_app::utoipa_routes::create_item",
            "POST /hello openapi_app::poem_api::Api::greet",
            "POST /v1/things openapi_app::aide_routes::create_thing",
        ]
    );
}

#[test]
fn a_utoipa_attribute_with_generic_types_is_not_dropped() {
    let r = check("openapi");
    let e = r.endpoints.iter().find(|e| e.handler.ends_with("get_report")).expect("the documented handler is found");
    assert_eq!((e.method.as_str(), e.path.as_str(), e.line), ("GET", "/reports/{id}", 10));
}

#[test]
fn unreadable_route_registrations_are_diagnostics() {
    let r = check("openapi");
    let d: Vec<String> = r.diagnostics.iter().map(|d| format!("{}:{}: {}", d.file, d.line, d.message)).collect();
    assert!(d.iter().any(|m| m.starts_with("src/main.rs:25: `.route(..)` with a path that is not a literal")), "{d:?}");
    assert!(d.iter().any(|m| m.starts_with("src/main.rs:38: #[get] on `not_readable`: no literal path")), "{d:?}");
}

/// The service holding an endpoint, by handler name.
fn service_of<'r>(r: &'r Report, handler: &str) -> &'r ficus_analyzer::Service {
    r.services
        .iter()
        .find(|s| s.endpoints.iter().any(|e| e.handler.ends_with(&format!("::{handler}"))))
        .unwrap_or_else(|| panic!("no service serves {handler}"))
}

fn functions(s: &ficus_analyzer::Service) -> Vec<&str> {
    s.functions.iter().map(|f| f.name.as_str()).collect()
}

#[test]
fn method_calls_resolve_to_the_impl_that_runs() {
    let r = check("resolve");
    assert_eq!(r.view.used, "use-cases", "{:?}", r.view);
    // `State(state): State<AppState>`, then the field `state.db: Db`; a typed parameter.
    let users = service_of(&r, "get_user");
    assert_eq!(service_of(&r, "create_user").name, users.name);
    assert_eq!(functions(users), vec!["layered::db::users::Db::find_user", "layered::db::users::Db::insert_user"]);
    assert_eq!(users.tables.owns, vec!["users"]);
    // A `let` with a type annotation; a constructor returning `Self`, then `self.repo`.
    let orders = service_of(&r, "list_orders");
    assert_eq!(service_of(&r, "place_order").name, orders.name);
    for f in [
        "layered::db::orders::OrderRepo::list_orders",
        "layered::services::OrderService::place",
        "layered::db::orders::OrderRepo::insert_order",
    ] {
        assert!(functions(orders).contains(&f), "{f} not with orders: {:?}", functions(orders));
    }
    assert_eq!(orders.tables.owns, vec!["orders"]);
    // `User::audit()`: the type is in `models`, the impl (and its SQL) in `db::users`.
    let audit = service_of(&r, "audit_orders");
    assert_eq!(functions(audit), vec!["layered::db::users::User::audit"]);
    assert_eq!(audit.tables.owns, vec!["audit_log"]);
    // A trait method through a generic: every impl in the workspace.
    let stores = service_of(&r, "save_anything");
    assert_eq!(functions(stores), vec!["layered::db::Db::save_record", "layered::services::FileStore::save_record"]);
    assert_eq!(stores.tables.owns, vec!["records"]);
}

#[test]
fn a_module_of_several_use_cases_is_split_by_function() {
    let r = check("resolve");
    // `db::users` holds the user queries and the audit query: each function goes with
    // the use case that reaches it, not the whole file with one.
    assert_ne!(service_of(&r, "get_user").name, service_of(&r, "audit_orders").name);
    // `handlers.rs` serves four use cases: it is shared kernel, its endpoints are not.
    let kernel = r.services.iter().find(|s| s.kernel).expect("a kernel");
    assert!(kernel.units.iter().any(|u| u.id == "layered::handlers"), "{kernel:?}");
    assert!(kernel.endpoints.is_empty());
}
