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
/// naming the status or the first differing JSON pointer with both values.
pub fn difference(a: &Recorded, b: &Recorded) -> Option<String> {
    if a.status != b.status {
        let name = |s: u16| StatusCode::from_u16(s).map(|c| c.to_string()).unwrap_or_else(|_| s.to_string());
        return Some(format!("{}: status {} vs {}", a.path, name(a.status), name(b.status)));
    }
    first_difference(&a.body, &b.body, String::new()).map(|(pointer, x, y)| {
        format!("{}: at {} {} vs {}", a.path, if pointer.is_empty() { "/" } else { &pointer }, x, y)
    })
}

/// The first JSON pointer where `a` and `b` differ (objects compared by key, arrays
/// by position), with the two values there.
pub fn first_difference(a: &Value, b: &Value, at: String) -> Option<(String, String, String)> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| {
                let here = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                match (x.get(k), y.get(k)) {
                    (Some(v), Some(w)) => first_difference(v, w, here),
                    (v, w) => Some((here, show(v), show(w))),
                }
            })
        }
        (Value::Array(x), Value::Array(y)) => (0..x.len().max(y.len())).find_map(|i| match (x.get(i), y.get(i)) {
            (Some(v), Some(w)) => first_difference(v, w, format!("{at}/{i}")),
            (v, w) => Some((format!("{at}/{i}"), show(v), show(w))),
        }),
        (x, y) if x == y => None,
        (x, y) => Some((at, x.to_string(), y.to_string())),
    }
}

fn show(v: Option<&Value>) -> String {
    v.map(Value::to_string).unwrap_or_else(|| "(absent)".into())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rec(status: u16, body: Value) -> Recorded {
        Recorded { path: "/x".into(), status, body }
    }

    #[test]
    fn names_the_first_differing_pointer() {
        let a = rec(200, json!({"items": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}], "total": 2}));
        let b = rec(200, json!({"total": 2, "items": [{"id": 1, "name": "a"}, {"id": 2, "name": "c"}]}));
        assert_eq!(difference(&a, &b).unwrap(), "/x: at /items/1/name \"b\" vs \"c\"");
        assert_eq!(difference(&a, &a.clone()), None, "key order does not matter");
        assert!(difference(&rec(200, json!({})), &rec(404, json!({}))).unwrap().contains("status 200 OK vs 404"));
        assert_eq!(difference(&rec(200, json!({"a": 1})), &rec(200, json!({}))).unwrap(), "/x: at /a 1 vs (absent)");
        assert_eq!(first_difference(&json!({"a/b": 1}), &json!({"a/b": 2}), String::new()).unwrap().0, "/a~1b");
    }
}
