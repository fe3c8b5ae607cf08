//! Comparing two answers to the same request, as the shadow stage does: status, the route's
//! chosen headers, then bodies — JSON structurally (key order ignored, numbers by value, each
//! difference named by its RFC 6901 pointer), anything else byte for byte — and the pointer
//! patterns (`*` = any one segment) that `shadow_ignore` and learnt noise are written in.

use std::collections::BTreeSet;

use bytes::Bytes;
use http::{HeaderMap, HeaderName};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The pointer a status difference is reported under.
pub const STATUS_POINTER: &str = "(status)";
/// One answer: status, the route's chosen headers and body (up to the shadow stage's body limit).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// The route's `shadow_headers` the answer carried, each with its values joined by ", ".
    pub headers: Vec<(HeaderName, String)>,
    /// Body bytes.
    pub body: Bytes,
}

impl Answer {
    /// An answer without compared headers.
    pub fn new(status: u16, body: Bytes) -> Answer {
        Answer { status, headers: Vec::new(), body }
    }
}

/// The headers of `names` that `map` holds, each with its values joined by ", ".
pub fn chosen_headers(map: &HeaderMap, names: &[HeaderName]) -> Vec<(HeaderName, String)> {
    names
        .iter()
        .filter(|n| map.contains_key(*n))
        .map(|n| {
            let values: Vec<String> =
                map.get_all(n).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect();
            (n.clone(), values.join(", "))
        })
        .collect()
}

/// One difference between two answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Difference {
    /// RFC 6901 JSON pointer ("" for a whole non-JSON body, [`STATUS_POINTER`] for the status).
    pub pointer: String,
    /// The monolith's value (null when absent).
    pub monolith: Value,
    /// The service's value (null when absent).
    pub service: Value,
    /// The pointer with array indices replaced by `*` (how noise is remembered).
    #[serde(skip)]
    pub pattern: String,
}

/// Compares the monolith's answer with another: status, the chosen headers, then bodies (JSON
/// structurally when both parse as JSON, bytes otherwise).
pub fn compare(monolith: &Answer, other: &Answer) -> Vec<Difference> {
    let mut out = Vec::new();
    if monolith.status != other.status {
        out.push(Difference {
            pointer: STATUS_POINTER.to_owned(),
            monolith: Value::from(monolith.status),
            service: Value::from(other.status),
            pattern: STATUS_POINTER.to_owned(),
        });
    }
    let names: BTreeSet<&str> = monolith.headers.iter().chain(&other.headers).map(|(n, _)| n.as_str()).collect();
    for name in names {
        let value = |a: &Answer| {
            a.headers.iter().find(|(n, _)| n.as_str() == name).map_or(Value::Null, |(_, v)| Value::from(v.as_str()))
        };
        let (m, o) = (value(monolith), value(other));
        if m != o {
            let pointer = format!("(header {name})");
            out.push(Difference { pointer: pointer.clone(), monolith: m, service: o, pattern: pointer });
        }
    }
    if monolith.body == other.body {
        return out;
    }
    match (serde_json::from_slice::<Value>(&monolith.body), serde_json::from_slice::<Value>(&other.body)) {
        (Ok(a), Ok(b)) => out.extend(diff_json(&a, &b)),
        _ => out.push(Difference {
            pointer: String::new(),
            monolith: Value::String(String::from_utf8_lossy(&monolith.body).into_owned()),
            service: Value::String(String::from_utf8_lossy(&other.body).into_owned()),
            pattern: String::new(),
        }),
    }
    out
}

/// Escapes one pointer segment (RFC 6901: `~` → `~0`, `/` → `~1`).
pub fn escape_segment(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

fn unescape_segment(s: &str) -> String {
    s.replace("~1", "/").replace("~0", "~")
}

fn numbers_equal(a: &serde_json::Number, b: &serde_json::Number) -> bool {
    match (a.as_i64(), b.as_i64(), a.as_u64(), b.as_u64()) {
        (Some(x), Some(y), _, _) => x == y,
        (_, _, Some(x), Some(y)) => x == y,
        _ => a.as_f64().zip(b.as_f64()).is_some_and(|(x, y)| x == y),
    }
}

/// Structural difference of two JSON values: key order ignored, numbers compared by value,
/// arrays by position. Each difference names its RFC 6901 pointer.
pub fn diff_json(a: &Value, b: &Value) -> Vec<Difference> {
    let mut out = Vec::new();
    walk(a, b, &mut String::new(), &mut String::new(), &mut out);
    out
}

fn walk(a: &Value, b: &Value, pointer: &mut String, pattern: &mut String, out: &mut Vec<Difference>) {
    let at = (pointer.len(), pattern.len());
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let seg = escape_segment(k);
                pointer.push('/');
                pointer.push_str(&seg);
                pattern.push('/');
                pattern.push_str(&seg);
                match (x.get(k), y.get(k)) {
                    (Some(va), Some(vb)) => walk(va, vb, pointer, pattern, out),
                    (va, vb) => out.push(absent_on_one_side(pointer, pattern, va, vb)),
                }
                pointer.truncate(at.0);
                pattern.truncate(at.1);
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for i in 0..x.len().max(y.len()) {
                pointer.push('/');
                pointer.push_str(&i.to_string());
                pattern.push_str("/*");
                match (x.get(i), y.get(i)) {
                    (Some(va), Some(vb)) => walk(va, vb, pointer, pattern, out),
                    (va, vb) => out.push(absent_on_one_side(pointer, pattern, va, vb)),
                }
                pointer.truncate(at.0);
                pattern.truncate(at.1);
            }
        }
        (Value::Number(x), Value::Number(y)) if numbers_equal(x, y) => {}
        _ if a == b => {}
        _ => out.push(Difference {
            pointer: pointer.clone(),
            monolith: a.clone(),
            service: b.clone(),
            pattern: pattern.clone(),
        }),
    }
}

/// A member or element present on one side only (the other shows `null`).
fn absent_on_one_side(pointer: &str, pattern: &str, monolith: Option<&Value>, service: Option<&Value>) -> Difference {
    Difference {
        pointer: pointer.to_owned(),
        monolith: monolith.cloned().unwrap_or(Value::Null),
        service: service.cloned().unwrap_or(Value::Null),
        pattern: pattern.to_owned(),
    }
}

/// Whether a pointer pattern (`*` matches any one segment) matches `pointer` or one of its
/// ancestors, so ignoring `/meta` also ignores `/meta/at`. `""` matches everything.
pub fn pattern_matches(pattern: &str, pointer: &str) -> bool {
    // `(status)` and `(header NAME)` match only themselves.
    if pattern.starts_with('(') || pointer.starts_with('(') {
        return pattern == pointer;
    }
    if pattern.is_empty() {
        return true;
    }
    let (Some(p), Some(q)) = (pattern.strip_prefix('/'), pointer.strip_prefix('/')) else { return false };
    let mut ps = p.split('/');
    let mut qs = q.split('/');
    loop {
        match (ps.next(), qs.next()) {
            (None, _) => return true,
            (Some(_), None) => return false,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if unescape_segment(a) == unescape_segment(b) => {}
            _ => return false,
        }
    }
}

/// Checks a `shadow_ignore` entry: `""`, a pointer starting with `/`, `(status)` or
/// `(header NAME)`.
pub fn valid_pattern(pattern: &str) -> bool {
    pattern.is_empty()
        || pattern.starts_with('/')
        || pattern == STATUS_POINTER
        || pattern
            .strip_prefix("(header ")
            .and_then(|p| p.strip_suffix(')'))
            .is_some_and(|n| HeaderName::from_bytes(n.as_bytes()).is_ok_and(|h| h.as_str() == n))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pointers(d: &[Difference]) -> Vec<&str> {
        d.iter().map(|d| d.pointer.as_str()).collect()
    }

    #[test]
    fn json_diff_ignores_key_order_and_compares_numbers_by_value() {
        let a = json!({"a": 1, "b": {"c": 2.0, "d": [1, 2]}});
        let b = json!({"b": {"d": [1, 2], "c": 2}, "a": 1.0});
        assert!(diff_json(&a, &b).is_empty());
        assert!(diff_json(&json!(1), &json!(2)).len() == 1);
        assert!(diff_json(&json!(1), &json!("1")).len() == 1);
    }

    #[test]
    fn json_diff_names_each_difference_with_an_escaped_pointer() {
        let a = json!({"a/b": 1, "m~n": [1, {"x": true}], "gone": null, "same": "s"});
        let b = json!({"a/b": 2, "m~n": [1, {"x": false}, 3], "new": 1, "same": "s"});
        let d = diff_json(&a, &b);
        assert_eq!(pointers(&d), ["/a~1b", "/gone", "/m~0n/1/x", "/m~0n/2", "/new"]);
        assert_eq!(d[0].monolith, json!(1));
        assert_eq!(d[0].service, json!(2));
        assert_eq!(d[2].pattern, "/m~0n/*/x");
        assert_eq!(d[3].service, json!(3));
        assert_eq!(d[3].monolith, Value::Null);
    }

    #[test]
    fn non_json_bodies_compare_byte_for_byte_and_status_counts() {
        let a = Answer::new(200, Bytes::from_static(b"hello"));
        let b = Answer::new(200, Bytes::from_static(b"hellO"));
        assert_eq!(pointers(&compare(&a, &b)), [""]);
        assert!(compare(&a, &a.clone()).is_empty());
        let c = Answer::new(404, Bytes::from_static(b"hello"));
        assert_eq!(pointers(&compare(&a, &c)), [STATUS_POINTER]);
        let j1 = Answer::new(200, Bytes::from_static(br#"{"a":1,"b":2}"#));
        let j2 = Answer::new(200, Bytes::from_static(br#"{"b":2, "a":1}"#));
        assert!(compare(&j1, &j2).is_empty());
    }

    #[test]
    fn chosen_headers_are_compared_by_value() {
        let names = [HeaderName::from_static("content-type"), HeaderName::from_static("cache-control")];
        let mut m = HeaderMap::new();
        m.insert("content-type", http::HeaderValue::from_static("application/json"));
        m.insert("date", http::HeaderValue::from_static("now"));
        let mut s = m.clone();
        s.insert("date", http::HeaderValue::from_static("later"));
        let answer = |h: &HeaderMap| Answer { status: 200, headers: chosen_headers(h, &names), body: Bytes::new() };
        // `date` is not chosen: no difference.
        assert!(compare(&answer(&m), &answer(&s)).is_empty());
        s.insert("content-type", http::HeaderValue::from_static("text/plain"));
        s.append("cache-control", http::HeaderValue::from_static("no-store"));
        let d = compare(&answer(&m), &answer(&s));
        assert_eq!(pointers(&d), ["(header cache-control)", "(header content-type)"]);
        assert_eq!((d[0].monolith.clone(), d[0].service.clone()), (Value::Null, json!("no-store")));
        assert_eq!(d[1].service, json!("text/plain"));
        assert!(pattern_matches("(header content-type)", &d[1].pointer));
        assert!(!pattern_matches("", &d[1].pointer));
        assert!(valid_pattern("(header etag)") && !valid_pattern("(header Bad Name)"));
    }

    #[test]
    fn patterns_match_with_wildcards_and_ancestors() {
        assert!(pattern_matches("/created_at", "/created_at"));
        assert!(pattern_matches("/items/*/id", "/items/3/id"));
        assert!(!pattern_matches("/items/*/id", "/items/3/name"));
        assert!(!pattern_matches("/items/*/id", "/items/3"));
        assert!(pattern_matches("/meta", "/meta/at/0"));
        assert!(!pattern_matches("/meta", "/metadata"));
        assert!(pattern_matches("/a~1b", "/a~1b"));
        assert!(!pattern_matches("/a~1b", "/a/b"));
        assert!(pattern_matches("", "/anything"));
        assert!(!pattern_matches("/x", STATUS_POINTER));
        assert!(pattern_matches(STATUS_POINTER, STATUS_POINTER));
        assert!(valid_pattern("/x") && valid_pattern("") && !valid_pattern("x"));
    }
}
