//! A partition edited by hand (the HTML report's what-if exports one): which units, and
//! which endpoints, make up each service. `ficus analyze --partition FILE` and
//! `ficus plan --partition FILE` describe that partition instead of the one the
//! analyzer proposes.
//!
//! ```json
//! {"version": 1, "root": "shop", "services": [
//!   {"name": "catalog", "units": ["shop::catalog", "shop::catalog::repo"], "endpoints": ["GET /api/products"]},
//!   {"name": "shop", "kernel": true, "units": ["shop", "shop::db"]}
//! ]}
//! ```
//!
//! Every unit of the code is in exactly one service. An endpoint (`METHOD PATH`) goes
//! to the service listing it, else to its handler's unit's service. Functions follow
//! their unit, and dependencies are counted between units.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// The format version this build reads and writes.
pub const VERSION: u32 = 1;

/// A partition of the units into services.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    /// Format version (1).
    pub version: u32,
    /// The analysed crate or workspace (informative).
    #[serde(default)]
    pub root: String,
    /// The services.
    pub services: Vec<PartService>,
}

/// One service of a partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartService {
    /// Its name.
    pub name: String,
    /// The shared kernel (stays in the monolith or becomes a library).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kernel: bool,
    /// Unit ids.
    pub units: Vec<String>,
    /// Endpoints placed here regardless of their unit, as `METHOD PATH`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
}

/// The partition applied to the units and endpoints of an analysis.
#[derive(Debug, Clone)]
pub(crate) struct Assigned {
    /// Service number per unit.
    pub part: Vec<usize>,
    /// Service names by number.
    pub names: Vec<String>,
    /// The kernel's number.
    pub kernel: Option<usize>,
    /// Service number per endpoint, when the partition places it.
    pub endpoints: Vec<Option<usize>>,
}

/// The key of an endpoint in a partition file.
pub fn endpoint_key(method: &str, path: &str) -> String {
    format!("{method} {path}")
}

fn some_of(v: &[&str]) -> String {
    let shown: Vec<&str> = v.iter().take(5).copied().collect();
    let more = if v.len() > 5 { format!(" and {} more", v.len() - 5) } else { String::new() };
    format!("{}{more}", shown.join(", "))
}

impl Partition {
    /// Reads a partition from JSON text.
    pub fn parse(text: &str) -> Result<Partition, String> {
        let p: Partition = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if p.version != VERSION {
            return Err(format!("version {} is not supported (this build reads version {VERSION})", p.version));
        }
        Ok(p)
    }

    /// Places `units` (ids) and `endpoints` (keys): every unit must be in exactly one
    /// service, and everything named must exist.
    pub(crate) fn assign(&self, units: &[&str], endpoints: &[String]) -> Result<Assigned, String> {
        let index: BTreeMap<&str, usize> = units.iter().enumerate().map(|(i, &u)| (u, i)).collect();
        let known_eps: BTreeSet<&str> = endpoints.iter().map(String::as_str).collect();
        let mut part = vec![usize::MAX; units.len()];
        let mut names = Vec::new();
        let mut kernel = None;
        let mut ep_svc: BTreeMap<&str, usize> = BTreeMap::new();
        let (mut unknown, mut twice, mut unknown_eps) = (Vec::new(), Vec::new(), Vec::new());
        for (c, s) in self.services.iter().enumerate() {
            if s.name.trim().is_empty() {
                return Err(format!("service #{} has no name", c + 1));
            }
            if names.contains(&s.name) {
                return Err(format!("service {:?} is listed twice", s.name));
            }
            names.push(s.name.clone());
            if s.kernel {
                if kernel.is_some() {
                    return Err(format!("more than one service is the kernel (the second: {:?})", s.name));
                }
                kernel = Some(c);
            }
            for u in &s.units {
                match index.get(u.as_str()) {
                    None => unknown.push(u.as_str()),
                    Some(&i) if part[i] != usize::MAX => twice.push(u.as_str()),
                    Some(&i) => part[i] = c,
                }
            }
            for e in &s.endpoints {
                if known_eps.contains(e.as_str()) {
                    ep_svc.insert(e.as_str(), c);
                } else {
                    unknown_eps.push(e.as_str());
                }
            }
        }
        if !unknown.is_empty() {
            return Err(format!("no such unit in the code: {}", some_of(&unknown)));
        }
        if !twice.is_empty() {
            return Err(format!("units in more than one service: {}", some_of(&twice)));
        }
        if !unknown_eps.is_empty() {
            return Err(format!("no such endpoint in the code: {}", some_of(&unknown_eps)));
        }
        let missing: Vec<&str> = (0..units.len()).filter(|&i| part[i] == usize::MAX).map(|i| units[i]).collect();
        if !missing.is_empty() {
            return Err(format!("units in no service (every unit must be placed): {}", some_of(&missing)));
        }
        let endpoints = endpoints.iter().map(|e| ep_svc.get(e.as_str()).copied()).collect();
        Ok(Assigned { part, names, kernel, endpoints })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(json: &str) -> Result<Assigned, String> {
        Partition::parse(json)?.assign(&["a", "a::x", "b"], &["GET /x".to_string(), "GET /y".to_string()])
    }

    #[test]
    fn places_every_unit_and_the_endpoints_it_names() {
        let a = p(r#"{"version":1,"services":[{"name":"one","units":["a","a::x"],"endpoints":["GET /y"]},
                     {"name":"k","kernel":true,"units":["b"]}]}"#)
        .unwrap();
        assert_eq!(a.part, vec![0, 0, 1]);
        assert_eq!(a.names, vec!["one", "k"]);
        assert_eq!(a.kernel, Some(1));
        assert_eq!(a.endpoints, vec![None, Some(0)]);
    }

    #[test]
    fn names_what_is_wrong() {
        let cases = [
            (r#"{"version":2,"services":[]}"#, "version 2"),
            (
                r#"{"version":1,"services":[{"name":"s","units":["a","a::x","b","zz"]}]}"#,
                "no such unit in the code: zz",
            ),
            (
                r#"{"version":1,"services":[{"name":"s","units":["a","a::x"]},{"name":"t","units":["a","b"]}]}"#,
                "more than one service: a",
            ),
            (
                r#"{"version":1,"services":[{"name":"s","units":["a"]}]}"#,
                "no service (every unit must be placed): a::x, b",
            ),
            (
                r#"{"version":1,"services":[{"name":"s","units":["a","a::x","b"],"endpoints":["PUT /x"]}]}"#,
                "no such endpoint in the code: PUT /x",
            ),
            (r#"{"version":1,"services":[{"name":"s","units":[]},{"name":"s","units":[]}]}"#, "listed twice"),
            (r#"{"version":1,"services":[],"extra":1}"#, "unknown field"),
        ];
        for (json, want) in cases {
            let err = p(json).err().unwrap_or_default();
            assert!(err.contains(want), "{json}: {err:?} should say {want:?}");
        }
    }
}
