//! Golden responses: a fixed set of catalog requests, recorded from one server and
//! compared with another's answers (status and JSON, structurally), naming the first
//! JSON pointer where each pair differs.

use reqwest::StatusCode;
use serde_json::Value;

/// The catalog requests the walkthrough records and replays: every endpoint, its
/// filters, paging, and the errors of its contract.
pub const CATALOG_REQUESTS: &[&str] = &[
    "/api/products",
    "/api/products?page=2&per_page=50",
    "/api/products?page=10&per_page=20",
    "/api/products?category=books",
    "/api/products?category=kitchen&q=classic",
    "/api/products?q=lamp",
    "/api/products?in_stock=true&per_page=100",
    "/api/products?category=&q=&in_stock=&page=&per_page=",
    "/api/products?per_page=0",
    "/api/products?page=abc",
    "/api/products/1",
    "/api/products/42",
    "/api/products/200",
    "/api/products/999999",
    "/api/products/abc",
    "/api/categories",
];

/// One recorded answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// The request path and query.
    pub path: String,
    /// The status.
    pub status: u16,
    /// The JSON body (Null when not JSON).
    pub body: Value,
}

/// Sends every request of [`CATALOG_REQUESTS`] to `base`.
pub async fn record(client: &reqwest::Client, base: &str) -> Result<Vec<Recorded>, reqwest::Error> {
    let mut out = Vec::with_capacity(CATALOG_REQUESTS.len());
    for path in CATALOG_REQUESTS {
        out.push(fetch(client, base, path).await?);
    }
    Ok(out)
}

/// One request's answer.
pub async fn fetch(client: &reqwest::Client, base: &str, path: &str) -> Result<Recorded, reqwest::Error> {
    let resp = client.get(format!("{base}{path}")).send().await?;
    let status = resp.status();
    let bytes = resp.bytes().await?;
    Ok(Recorded {
        path: path.to_string(),
        status: status.as_u16(),
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    })
}

/// Where two answers differ: `None` when they are the same, else a readable line
/// naming the status or the first differing JSON pointer with both values. The JSON
/// comparison is the proxy's shadow diff (`ficus_proxy::policy::diff::diff_json`): key order
/// ignored, numbers by value.
pub fn difference(a: &Recorded, b: &Recorded) -> Option<String> {
    if a.status != b.status {
        let name = |s: u16| StatusCode::from_u16(s).map(|c| c.to_string()).unwrap_or_else(|_| s.to_string());
        return Some(format!("{}: status {} vs {}", a.path, name(a.status), name(b.status)));
    }
    let first = ficus_proxy::policy::diff::diff_json(&a.body, &b.body).into_iter().next()?;
    let at = if first.pointer.is_empty() { "/" } else { first.pointer.as_str() };
    Some(format!("{}: at {at} {} vs {}", a.path, first.monolith, first.service))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rec(status: u16, body: Value) -> Recorded {
        Recorded { path: "/x".into(), status, body }
    }

    #[test]
    fn names_the_status_or_the_first_differing_pointer() {
        let a = rec(200, json!({"items": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}], "total": 2}));
        let b = rec(200, json!({"total": 2, "items": [{"id": 1, "name": "a"}, {"id": 2, "name": "c"}]}));
        assert_eq!(difference(&a, &b).unwrap(), "/x: at /items/1/name \"b\" vs \"c\"");
        assert_eq!(difference(&a, &a.clone()), None, "key order does not matter");
        assert!(difference(&rec(200, json!({})), &rec(404, json!({}))).unwrap().contains("status 200 OK vs 404"));
        assert_eq!(difference(&rec(200, json!({"a": 1})), &rec(200, json!({}))).unwrap(), "/x: at /a 1 vs null");
    }
}
