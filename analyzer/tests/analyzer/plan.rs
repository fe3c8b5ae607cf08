//! `plan`: one service's extraction plan and proxy routes.

use std::path::Path;

use ficus_analyzer::plan::{PlanError, plan};

#[test]
fn catalog_plan_has_routes_tangles_and_stages() {
    let r = crate::fixtures::report_of(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../example-monolith"));
    let p = plan(&r, "catalog").expect("catalog is a service");
    let detail = p.routes.iter().find(|r| r.path == "/api/products/{id}").expect("route for product detail");
    assert_eq!(detail.methods, vec!["GET".to_string(), "PUT".to_string()]);
    assert_eq!(detail.name, "catalog-api-products-id");
    let shadow = p.routes_toml("shadow");
    assert!(shadow.contains("[[routes]]\nname     = \"catalog-api-products-id\"\npath     = \"/api/products/{id}\"\nmethods  = [\"GET\", \"PUT\"]\nupstream = \"catalog\"\nstage    = \"shadow\"\n"), "{shadow}");
    assert!(p.routes_toml("canary").contains("stage    = \"canary\"\npercent  = 10\n"));
    assert!(p.shared.iter().any(|t| t.table == "products"));
    assert!(p.incoming.iter().any(|d| d.from == "inventory" || d.from == "orders" || d.from == "cart"));
    let text = p.render();
    assert!(text.contains("## Tangles to cut") && text.contains("src/catalog/search.rs"), "{text}");
    // Calls into the shared kernel (error types, the pool) are not service calls.
    assert_eq!(p.kernel.as_deref(), Some("shop"));
    assert!(text.contains("catalog depends on shop") && text.contains("shared code of the monolith"), "{text}");
}

#[test]
fn unknown_service_names_the_known_ones() {
    let r = crate::fixtures::report_of(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/axum"));
    match plan(&r, "nope") {
        Err(PlanError::UnknownService { name, known }) => {
            assert_eq!(name, "nope");
            assert!(!known.is_empty());
        }
        Ok(_) => panic!("a plan for a service that does not exist"),
    }
}
