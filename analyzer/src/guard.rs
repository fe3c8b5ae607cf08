//! The guard: rules a team writes as it migrates, checked against the code on every CI
//! run (`ficus analyze PATH --check RULES.toml`).
//!
//! ```toml
//! version = 1
//!
//! [[forbid]]
//! from = "shop::orders"            # a module path (and what is under it), "service:NAME", or "*"
//! touches_table = "products"       # or writes_table, calls = "shop::catalog::repo", depends_on = "service:cart"
//! why = "orders reads products through the catalog API now"
//!
//! [[forbid]]                       # nothing outside the catalog calls its repository
//! from = "*"
//! except = ["shop::catalog"]       # module paths or services left out of `from`
//! calls = "shop::catalog::repo"
//! ```
//!
//! A rule says what `from` must not do; each place the code does it is a [`Violation`]
//! with its file and line. `service:NAME` stands for the units the report places in
//! that service. `calls` and `depends_on` count only what comes from outside their
//! target; `depends_on` is a call into the target or a table access to a table it
//! writes. A rule naming a module, service or table that does not exist is an error:
//! a rule that can never fire holds no line.

use std::collections::BTreeSet;
use std::fmt;

use serde::Deserialize;

use crate::unitfacts::Analysis;

/// The rules file format version this build reads.
pub const VERSION: u32 = 1;

/// A rules file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// Format version (1).
    pub version: u32,
    /// The rules, in file order (numbered from 1).
    #[serde(default)]
    pub forbid: Vec<Rule>,
}

/// One rule: `from` must not do the one thing named.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Who the rule is about.
    pub from: String,
    /// Left out of `from`.
    #[serde(default)]
    pub except: OneOrMany,
    /// Must not read or write this table.
    pub touches_table: Option<String>,
    /// Must not write this table.
    pub writes_table: Option<String>,
    /// Must not call into this module path or service.
    pub calls: Option<String>,
    /// Must not depend on (call, or touch a table written by) this module path or service.
    pub depends_on: Option<String>,
    /// Why the rule exists (printed with each violation).
    #[serde(default)]
    pub why: String,
}

/// A string or a list of strings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// None given.
    #[default]
    None,
    /// One.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl OneOrMany {
    fn items(&self) -> Vec<&str> {
        match self {
            OneOrMany::None => Vec::new(),
            OneOrMany::One(s) => vec![s.as_str()],
            OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// One place the code breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Violation {
    /// The rule's number (1 = first in the file).
    pub rule: usize,
    /// File.
    pub file: String,
    /// Line.
    pub line: usize,
    /// The rule's `why`.
    pub why: String,
    /// What the code does there.
    pub what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: rule {} ({}): {}", self.file, self.line, self.rule, self.why, self.what)
    }
}

/// What a rule forbids, its target resolved.
enum Forbidden<'a> {
    Touches(&'a str, bool),
    Calls(BTreeSet<usize>),
    DependsOn(BTreeSet<usize>, BTreeSet<&'a str>),
}

impl Rules {
    /// Reads a rules file.
    pub fn parse(text: &str) -> Result<Rules, String> {
        let rules: Rules = toml::from_str(text).map_err(|e| e.to_string())?;
        if rules.version != VERSION {
            return Err(format!("version {} is not supported (this build reads version {VERSION})", rules.version));
        }
        for (i, r) in rules.forbid.iter().enumerate() {
            let n = [&r.touches_table, &r.writes_table, &r.calls, &r.depends_on].iter().filter(|t| t.is_some()).count();
            if n != 1 {
                return Err(format!(
                    "rule {}: give exactly one of touches_table, writes_table, calls, depends_on (it has {n})",
                    i + 1
                ));
            }
        }
        Ok(rules)
    }

    /// Checks every rule; `Err` when a rule names something that does not exist.
    pub fn check(&self, a: &Analysis) -> Result<Vec<Violation>, String> {
        let mut out = Vec::new();
        for (i, rule) in self.forbid.iter().enumerate() {
            let n = i + 1;
            let err = |e: String| format!("rule {n}: {e}");
            let mut from = select(a, &rule.from).map_err(err)?;
            for x in rule.except.items() {
                for u in select(a, x).map_err(err)? {
                    from.remove(&u);
                }
            }
            let forbidden = if let Some(t) = &rule.touches_table {
                Forbidden::Touches(table(a, t).map_err(err)?, false)
            } else if let Some(t) = &rule.writes_table {
                Forbidden::Touches(table(a, t).map_err(err)?, true)
            } else if let Some(c) = &rule.calls {
                Forbidden::Calls(select(a, c).map_err(err)?)
            } else if let Some(d) = &rule.depends_on {
                let target = select(a, d).map_err(err)?;
                let written: BTreeSet<&str> = a
                    .facts
                    .accesses
                    .iter()
                    .filter(|x| x.write && target.contains(&x.unit))
                    .map(|x| x.table.as_str())
                    .collect();
                Forbidden::DependsOn(target, written)
            } else {
                unreachable!("parse checks that a rule has one target")
            };
            let unit = |u: usize| a.report.units[u].id.as_str();
            let mut found = |file: &str, line: usize, what: String| {
                out.push(Violation { rule: n, file: file.to_string(), line, why: rule.why.clone(), what })
            };
            let into = match &forbidden {
                Forbidden::Calls(t) | Forbidden::DependsOn(t, _) => Some(t),
                Forbidden::Touches(..) => None,
            };
            if let Some(target) = into {
                for c in &a.facts.calls {
                    if from.contains(&c.from) && !target.contains(&c.from) && target.contains(&c.to) {
                        for s in &c.sites {
                            found(&s.file, s.line, format!("{} {}", unit(c.from), s.what));
                        }
                    }
                }
            }
            for x in &a.facts.accesses {
                if !from.contains(&x.unit) {
                    continue;
                }
                let hit = match &forbidden {
                    Forbidden::Touches(t, write_only) => *t == x.table && (x.write || !write_only),
                    Forbidden::DependsOn(target, written) => {
                        !target.contains(&x.unit) && written.contains(x.table.as_str())
                    }
                    Forbidden::Calls(_) => false,
                };
                if hit {
                    let verb = if x.write { "writes" } else { "reads" };
                    found(&x.file, x.line, format!("{} {verb} table {}", unit(x.unit), x.table));
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

/// The units a selector names: `*`, `service:NAME`, or a module path and what is under it.
fn select(a: &Analysis, sel: &str) -> Result<BTreeSet<usize>, String> {
    let units = &a.report.units;
    if sel == "*" {
        return Ok((0..units.len()).collect());
    }
    if let Some(name) = sel.strip_prefix("service:") {
        let Some(s) = a.report.services.iter().find(|s| s.name == name) else {
            let known: Vec<&str> = a.report.services.iter().map(|s| s.name.as_str()).collect();
            return Err(format!("no service named {name:?}; the services are: {}", known.join(", ")));
        };
        if s.units.is_empty() {
            // Use-case view: a service of endpoints whose handlers sit in shared units.
            return Err(format!(
                "service {name:?} has no units of its own (its endpoints' code is shared with other services): name its modules instead"
            ));
        }
        let ids: BTreeSet<&str> = s.units.iter().map(|u| u.id.as_str()).collect();
        return Ok((0..units.len()).filter(|&i| ids.contains(units[i].id.as_str())).collect());
    }
    let under = format!("{sel}::");
    let found: BTreeSet<usize> =
        (0..units.len()).filter(|&i| units[i].id == sel || units[i].id.starts_with(&under)).collect();
    if found.is_empty() {
        let example = units.first().map_or("crate::module", |u| u.id.as_str());
        return Err(format!(
            "no module {sel:?} in the code (a module path such as {example:?}, \"service:NAME\" or \"*\")"
        ));
    }
    Ok(found)
}

fn table<'a>(a: &Analysis, name: &'a str) -> Result<&'a str, String> {
    if a.report.tables.iter().any(|t| t.name == name) || a.facts.known_tables.iter().any(|t| t == name) {
        Ok(name)
    } else {
        Err(format!("no table named {name:?} in the code"))
    }
}
