//! The example shop: its seven capabilities come out as seven services, and its
//! documented tangles (TANGLES.md) show up as shared tables and dependencies.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use ficus_analyzer::Report;

fn shop() -> Report {
    crate::fixtures::report_of(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../example-monolith"))
}

const CAPABILITIES: &[&str] = &["users", "catalog", "cart", "orders", "payments", "inventory", "notifications"];

#[test]
fn seven_capabilities_are_seven_services() {
    let r = shop();
    // capability → the services its units were put in.
    let mut placed: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for s in &r.services {
        for u in &s.units {
            let mut segs = u.id.split("::");
            segs.next();
            if let Some(cap) = segs.next().and_then(|c| CAPABILITIES.iter().find(|&&x| x == c)) {
                placed.entry(cap).or_default().insert(s.name.clone());
            }
        }
    }
    assert_eq!(placed.len(), 7, "capability modules found: {placed:?}");
    for (cap, services) in &placed {
        assert_eq!(services.len(), 1, "{cap} is split over {services:?}");
        assert_eq!(services.iter().next().map(String::as_str), Some(*cap), "{cap}'s service is named after it");
    }
    let distinct: BTreeSet<&String> = placed.values().flatten().collect();
    assert_eq!(distinct.len(), 7, "the capabilities share services: {placed:?}");
}

#[test]
fn products_is_shared_catalog_writes_cart_and_orders_read() {
    let r = shop();
    let products = r.shared_tables.iter().find(|t| t.table == "products").expect("products is shared");
    assert!(products.writers.contains(&"catalog".to_string()), "{products:?}");
    for reader in ["cart", "orders"] {
        assert!(products.readers.contains(&reader.to_string()), "{products:?}");
    }
    // Catalog search joins inventory's table for "in stock only".
    let inventory = r.shared_tables.iter().find(|t| t.table == "inventory").expect("inventory is shared");
    assert_eq!(inventory.writers, vec!["inventory".to_string()]);
    assert!(inventory.readers.contains(&"catalog".to_string()));
}

#[test]
fn checkout_tangles_are_dependencies_with_evidence() {
    let r = shop();
    let dep = |from: &str, to: &str| r.dependencies.iter().find(|d| d.from == from && d.to == to);
    for to in ["inventory", "payments", "notifications", "cart"] {
        let d = dep("orders", to).unwrap_or_else(|| panic!("orders → {to} missing"));
        assert!(d.calls > 0, "orders → {to}: {d:?}");
        assert!(d.evidence.iter().any(|e| e.file == "src/orders/checkout.rs" && e.line > 0), "{d:?}");
    }
    let reserve = dep("orders", "inventory").expect("orders → inventory");
    assert!(reserve.evidence.iter().any(|e| e.what == "calls inventory::repo::reserve"), "{reserve:?}");
}

#[test]
fn every_endpoint_of_the_design_is_found() {
    let r = shop();
    let found: BTreeSet<String> = r.endpoints.iter().map(|e| format!("{} {}", e.method, e.path)).collect();
    for e in [
        "POST /api/users",
        "POST /api/sessions",
        "GET /api/users/me",
        "GET /api/products",
        "GET /api/products/{id}",
        "POST /api/products",
        "PUT /api/products/{id}",
        "GET /api/categories",
        "GET /api/cart",
        "POST /api/cart/items",
        "PUT /api/cart/items/{product_id}",
        "DELETE /api/cart/items/{product_id}",
        "POST /api/orders",
        "GET /api/orders",
        "GET /api/orders/{id}",
        "GET /api/inventory/{product_id}",
        "PUT /api/inventory/{product_id}",
        "GET /api/notifications",
        "GET /healthz",
    ] {
        assert!(found.contains(e), "{e} not found; found {found:?}");
    }
    let get_product = r.endpoints.iter().find(|e| e.path == "/api/products/{id}" && e.method == "GET").expect("found");
    assert_eq!(get_product.handler, "shop::catalog::http::get_product");
    assert_eq!(get_product.unit, "shop::catalog::http");
    assert_eq!(get_product.file, "src/catalog/http.rs");
}
