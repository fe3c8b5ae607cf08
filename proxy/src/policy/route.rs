//! The routing decision: a pure function of (route table, request head). No I/O, no clock, no
//! randomness, so it is unit-tested without sockets and behaves the same on every instance.
//!
//! Matching walks a segment trie (a radix tree whose edges are whole path segments), depth first,
//! trying at each level the literal segment, then `{param}`, then `{*rest}`: the first template
//! found is the most specific one, and when its routes all refuse the request (method or header)
//! the walk simply goes on to the next most specific template. The cost is the path's depth, not
//! the number of routes. (matchit was the first choice, but it refuses `/a/{id}` next to
//! `/a/{*rest}`, which is the most common pair in a migration.) Routes with the same template shape
//! form a group, ordered most specific first: a header match, then a method list, then file order.

use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;

use http::{HeaderMap, HeaderName, Method};

use crate::config::{Config, Secret};
use crate::policy::model::{Cohort, Percent, RouteSpec, Segment, Stage};

/// What the decision looks at: the request's method, normalised path, headers and client IP.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    /// The method.
    pub method: &'a Method,
    /// The normalised path (see [`crate::normalize`]), without the query.
    pub path: &'a str,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The client's address, for the `ip` cohort.
    pub client_ip: Option<IpAddr>,
}

/// Which side of the migration serves the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The monolith (the default upstream).
    Monolith,
    /// The route's new service.
    Service,
}

/// Why the decision came out as it did (logged, and asserted by tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No route matched: the default upstream.
    Unmatched,
    /// The route's stage decides alone (monolith or service).
    Stage,
    /// Shadow: served by the monolith (the service gets a copy, see `shadow`).
    ShadowAsMonolith,
    /// Canary: the cohort's bucket (0..10 000) against the percent.
    Canary {
        /// The cohort's bucket.
        bucket: u16,
    },
    /// Canary without the cohort key in the request: the monolith.
    NoCohortKey,
    /// `x-ficus-force` chose the target.
    Forced,
}

/// The routing decision for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Index of the matched route in [`RouteTable::routes`].
    pub route: Option<usize>,
    /// Who serves it.
    pub target: Target,
    /// Index of the upstream to send it to (into the config's upstream list).
    pub upstream: usize,
    /// The monolith upstream, when the route allows falling back to it.
    pub fallback: Option<usize>,
    /// This request may be served by the monolith if the service fails before answering: the
    /// route allows fallback and the request is idempotent (GET, HEAD, or an `Idempotency-Key`).
    pub can_fall_back: bool,
    /// A copy goes to the service to be compared: a shadowed route, for GET and HEAD (every
    /// method with `shadow_writes`). Whether it is sent is the shadow's rate cap's to say.
    pub mirror: bool,
    /// Safe to send twice (GET, HEAD, or an `Idempotency-Key`): what retries need.
    pub idempotent: bool,
    /// Why.
    pub reason: Reason,
}

/// FNV-1a (64 bit) finished with the SplitMix64 mixer, so that the low bits are well spread.
///
/// Unseeded on purpose. Cohort buckets must be the same on every instance and every release
/// ([`bucket`]). The trie's segment maps gain speed and lose nothing: their keys come from the
/// config, so a client cannot add colliding keys, only look up ones that are missing.
#[derive(Debug, Clone, Copy)]
pub struct StableHasher(u64);

impl Default for StableHasher {
    fn default() -> StableHasher {
        StableHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for StableHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 30;
        h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^= h >> 27;
        h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^ (h >> 31)
    }
}

/// A node's literal children. Most nodes have a handful, which a comparison of each finds faster
/// than hashing the segment; a node with many (a version or tenant segment) hashes.
#[derive(Debug)]
enum Children {
    Few(Vec<(Box<str>, Node)>),
    Many(std::collections::HashMap<Box<str>, Node, BuildHasherDefault<StableHasher>>),
}

impl Default for Children {
    fn default() -> Children {
        Children::Few(Vec::new())
    }
}

impl Children {
    /// Above this many children, a node hashes.
    const FEW: usize = 8;

    fn get(&self, segment: &str) -> Option<&Node> {
        match self {
            Children::Few(v) => v.iter().find(|(s, _)| **s == *segment).map(|(_, n)| n),
            Children::Many(m) => m.get(segment),
        }
    }

    /// The child for `segment`, created when new.
    fn entry(&mut self, segment: &str) -> &mut Node {
        if let Children::Few(v) = self
            && v.len() >= Self::FEW
            && !v.iter().any(|(s, _)| **s == *segment)
        {
            *self = Children::Many(std::mem::take(v).into_iter().collect());
        }
        match self {
            Children::Few(v) => {
                let i = match v.iter().position(|(s, _)| **s == *segment) {
                    Some(i) => i,
                    None => {
                        v.push((segment.into(), Node::default()));
                        v.len() - 1
                    }
                };
                &mut v[i].1
            }
            Children::Many(m) => m.entry(segment.into()).or_default(),
        }
    }
}

/// One node of the segment trie.
#[derive(Debug, Default)]
struct Node {
    statics: Children,
    param: Option<Box<Node>>,
    catch_all: Option<usize>,
    end: Option<usize>,
}

impl Node {
    /// The group of this template shape, created when new.
    fn group_slot(&mut self, segments: &[Segment]) -> &mut Option<usize> {
        match segments.split_first() {
            None => &mut self.end,
            Some((Segment::CatchAll, _)) => &mut self.catch_all,
            Some((Segment::Param, rest)) => self.param.get_or_insert_with(Default::default).group_slot(rest),
            Some((Segment::Static(s), rest)) => self.statics.entry(s).group_slot(rest),
        }
    }

    /// Calls `f` with every group whose template matches, most specific first, until `f` says stop.
    /// `rest` is the path after this node's segment, without its leading `/`; `None` at the end.
    fn walk(&self, rest: Option<&str>, f: &mut impl FnMut(usize) -> bool) -> bool {
        let Some(r) = rest else {
            return self.end.is_some_and(&mut *f);
        };
        // A plain byte loop: segments are short, and `split_once` sets up a memchr search.
        let (segment, next) = match r.bytes().position(|b| b == b'/') {
            Some(i) => (&r[..i], Some(&r[i + 1..])),
            None => (r, None),
        };
        if let Some(child) = self.statics.get(segment)
            && child.walk(next, f)
        {
            return true;
        }
        if !segment.is_empty()
            && let Some(p) = &self.param
            && p.walk(next, f)
        {
            return true;
        }
        !r.is_empty() && self.catch_all.is_some_and(f)
    }
}

/// The compiled route table: built once per config, then read lock-free by every request.
#[derive(Debug)]
pub struct RouteTable {
    routes: Vec<RouteSpec>,
    root: Node,
    /// Route indices per template shape, most specific first.
    groups: Vec<Vec<usize>>,
    default_upstream: usize,
    /// Forcing is on only with a token to check.
    force_token: Option<Secret>,
}

/// The header a tester uses to force a route's target.
pub const FORCE_HEADER: &str = "x-ficus-force";
/// The header carrying the force token; without the right one `x-ficus-force` is ignored.
pub const FORCE_TOKEN_HEADER: &str = "x-ficus-force-token";
// The names as `HeaderName`s, so that a lookup does not parse them again.
static FORCE_HEADER_NAME: HeaderName = HeaderName::from_static(FORCE_HEADER);
static FORCE_TOKEN_NAME: HeaderName = HeaderName::from_static(FORCE_TOKEN_HEADER);
static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

impl RouteTable {
    /// Compiles the routes of a config. `force_token`: the secret that lets a request force its
    /// target (`[security] force_token_env`); `None` turns forcing off.
    pub fn build(config: &Config, force_token: Option<Secret>) -> RouteTable {
        let mut root = Node::default();
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for (i, r) in config.routes.iter().enumerate() {
            let slot = root.group_slot(r.path.segments());
            match *slot {
                Some(g) => groups[g].push(i),
                None => {
                    *slot = Some(groups.len());
                    groups.push(vec![i]);
                }
            }
        }
        for g in &mut groups {
            // Stable sort: header match first, then method lists, then file order.
            g.sort_by_key(|&i| {
                let r = &config.routes[i];
                (r.header.is_none(), r.methods.is_none())
            });
        }
        RouteTable {
            routes: config.routes.clone(),
            root,
            groups,
            default_upstream: config.default_upstream,
            force_token,
        }
    }

    /// The routes, in file order.
    pub fn routes(&self) -> &[RouteSpec] {
        &self.routes
    }

    /// The default (monolith) upstream's index.
    pub fn default_upstream(&self) -> usize {
        self.default_upstream
    }

    fn accepts(r: &RouteSpec, head: &RequestHead<'_>) -> bool {
        if let Some(methods) = &r.methods
            && !methods.iter().any(|m| m == head.method)
        {
            return false;
        }
        if let Some(h) = &r.header {
            match (head.headers.get(&h.name), &h.value) {
                (None, _) => return false,
                (Some(got), Some(want)) if got != want => return false,
                _ => {}
            }
        }
        true
    }

    /// The route that serves this request, if any.
    pub fn find(&self, head: &RequestHead<'_>) -> Option<usize> {
        let rest = head.path.strip_prefix('/')?;
        let mut found = None;
        self.root.walk((!rest.is_empty()).then_some(rest), &mut |g| {
            found = self.groups[g].iter().copied().find(|&i| Self::accepts(&self.routes[i], head));
            found.is_some()
        });
        found
    }
}

/// The cohort's bucket for a route: a stable hash of (route name, cohort key) modulo 10 000.
///
/// The hash is [`StableHasher`] over the route name, a 0xff separator and the key. It is fixed
/// here, not taken from a hasher that may be seeded or change between releases: every proxy
/// instance, and every release, puts a cohort in the same bucket. A cohort is sent to the service
/// when its bucket is below the percent in basis points, so raising the percent only ever adds
/// cohorts to the service.
pub fn bucket(route: &str, key: &[u8]) -> u16 {
    let mut h = StableHasher::default();
    h.write(route.as_bytes());
    h.write(&[0xff]);
    h.write(key);
    (h.finish() % 10_000) as u16
}

/// Calls `f` with the request's value of `cohort` (a header, a cookie, the client address).
pub fn cohort_key<R>(cohort: &Cohort, head: &RequestHead<'_>, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
    match cohort {
        Cohort::Header(name) => head.headers.get(name).map(|v| f(v.as_bytes())),
        Cohort::Cookie(name) => {
            for value in head.headers.get_all(http::header::COOKIE) {
                let Ok(s) = value.to_str() else { continue };
                for pair in s.split(';') {
                    if let Some((k, v)) = pair.trim().split_once('=')
                        && k.trim() == name
                    {
                        return Some(f(v.trim().as_bytes()));
                    }
                }
            }
            None
        }
        Cohort::Ip => head.client_ip.map(|ip| match ip {
            IpAddr::V4(v4) => f(&v4.octets()),
            IpAddr::V6(v6) => f(&v6.octets()),
        }),
    }
}

/// Decides where a request goes. Pure: same table and head, same answer.
///
/// A canary request without its cohort key (say `header:x-user-id` and no such header) goes to the
/// monolith: a random pick per request would bounce one user between two implementations.
pub fn select(table: &RouteTable, head: &RequestHead<'_>) -> Decision {
    let monolith = table.default_upstream;
    // Idempotent: safe to send twice (to the service, then the monolith; or again).
    let idempotent =
        || matches!(*head.method, Method::GET | Method::HEAD) || head.headers.contains_key(&IDEMPOTENCY_KEY);
    let Some(i) = table.find(head) else {
        return Decision {
            route: None,
            target: Target::Monolith,
            upstream: monolith,
            fallback: None,
            can_fall_back: false,
            mirror: false,
            idempotent: idempotent(),
            reason: Reason::Unmatched,
        };
    };
    let r = &table.routes[i];
    let (target, reason) = match forced(table, head) {
        Some(t) => (t, Reason::Forced),
        None => match r.stage {
            Stage::Monolith => (Target::Monolith, Reason::Stage),
            Stage::Shadow => (Target::Monolith, Reason::ShadowAsMonolith),
            Stage::Service => (Target::Service, Reason::Stage),
            Stage::Canary => match cohort_key(&r.cohort, head, |k| bucket(&r.name, k)) {
                None => (Target::Monolith, Reason::NoCohortKey),
                Some(b) => (in_canary(b, r.percent), Reason::Canary { bucket: b }),
            },
        },
    };
    match target {
        Target::Monolith => Decision {
            route: Some(i),
            target,
            upstream: monolith,
            fallback: None,
            can_fall_back: false,
            mirror: r.stage == Stage::Shadow && (matches!(*head.method, Method::GET | Method::HEAD) || r.shadow_writes),
            idempotent: idempotent(),
            reason,
        },
        Target::Service => {
            let fallback = (r.fallback && r.upstream != monolith).then_some(monolith);
            let idempotent = idempotent();
            Decision {
                route: Some(i),
                target,
                upstream: r.upstream,
                fallback,
                can_fall_back: fallback.is_some() && idempotent,
                mirror: false,
                idempotent,
                reason,
            }
        }
    }
}

fn in_canary(bucket: u16, percent: Percent) -> Target {
    if bucket < percent.basis_points() { Target::Service } else { Target::Monolith }
}

/// The target `x-ficus-force` asks for, when forcing is on and the request carries the token.
fn forced(table: &RouteTable, head: &RequestHead<'_>) -> Option<Target> {
    let token = table.force_token.as_ref()?;
    let target = match head.headers.get(&FORCE_HEADER_NAME)?.as_bytes() {
        b"service" => Target::Service,
        b"monolith" => Target::Monolith,
        _ => return None,
    };
    token.matches(head.headers.get(&FORCE_TOKEN_NAME)?.as_bytes()).then_some(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(routes: &str) -> Config {
        let text = format!(
            "version = 1\n[listen]\nhttp = \"127.0.0.1:0\"\n[upstreams.monolith]\naddrs = [\"127.0.0.1:1\"]\n\
             [upstreams.svc]\naddrs = [\"127.0.0.1:2\"]\n[default]\nupstream = \"monolith\"\n{routes}"
        );
        Config::parse(&text, Path::new("t.toml")).unwrap()
    }

    fn head<'a>(method: &'a Method, path: &'a str, headers: &'a HeaderMap) -> RequestHead<'a> {
        RequestHead { method, path, headers, client_ip: Some("10.0.0.1".parse().unwrap()) }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    const ROUTES: &str = r#"
[[routes]]
name = "catch"
path = "/api/products/{*rest}"
upstream = "svc"
stage = "service"

[[routes]]
name = "one"
path = "/api/products/{id}"
methods = ["GET"]
upstream = "svc"
stage = "service"

[[routes]]
name = "beta"
path = "/api/products/{id}"
header = "x-beta: 1"
upstream = "svc"
stage = "service"

[[routes]]
name = "exact"
path = "/api/products/featured"
upstream = "svc"
stage = "monolith"

[[routes]]
name = "shadowed"
path = "/api/cart"
upstream = "svc"
stage = "shadow"

[[routes]]
name = "canary"
path = "/api/orders/{*rest}"
upstream = "svc"
stage = "canary"
percent = 50
cohort = "cookie:uid"
fallback = true
"#;

    #[test]
    fn the_most_specific_route_wins() {
        let t = RouteTable::build(&config(ROUTES), None);
        let get = Method::GET;
        let post = Method::POST;
        let none = HeaderMap::new();
        let beta = headers(&[("x-beta", "1")]);
        let cases: &[(&Method, &str, &HeaderMap, Option<&str>)] = &[
            (&get, "/api/products/1", &none, Some("one")),
            (&get, "/api/products/1", &beta, Some("beta")),
            (&post, "/api/products/1", &beta, Some("beta")),
            (&post, "/api/products/1", &none, Some("catch")),
            (&get, "/api/products/featured", &none, Some("exact")),
            (&get, "/api/products/1/reviews", &none, Some("catch")),
            (&get, "/api/products", &none, None),
            (&get, "/api/products/", &none, None),
            (&get, "/api/cart", &none, Some("shadowed")),
            (&get, "/api/cart/", &none, None),
            (&get, "/api/orders/7", &none, Some("canary")),
            (&get, "/healthz", &none, None),
        ];
        for (m, p, h, want) in cases {
            let got = t.find(&head(m, p, h)).map(|i| t.routes()[i].name.as_str());
            assert_eq!(got, *want, "{m} {p} {h:?}");
        }
    }

    #[test]
    fn stages_decide_the_target() {
        let t = RouteTable::build(&config(ROUTES), None);
        let get = Method::GET;
        let none = HeaderMap::new();
        let svc = t.routes()[0].upstream;
        let mono = t.default_upstream();
        let d = select(&t, &head(&get, "/api/products/1", &none));
        assert_eq!((d.target, d.upstream, d.reason, d.fallback), (Target::Service, svc, Reason::Stage, None));
        let d = select(&t, &head(&get, "/api/products/featured", &none));
        assert_eq!((d.target, d.upstream), (Target::Monolith, mono));
        let d = select(&t, &head(&get, "/api/cart", &none));
        assert_eq!((d.target, d.reason), (Target::Monolith, Reason::ShadowAsMonolith));
        let d = select(&t, &head(&get, "/nothing", &none));
        assert_eq!((d.route, d.target, d.reason), (None, Target::Monolith, Reason::Unmatched));
        let d = select(&t, &head(&get, "/api/orders/1", &none));
        assert_eq!((d.target, d.reason), (Target::Monolith, Reason::NoCohortKey));
    }

    #[test]
    fn the_force_header_overrides_only_with_the_token() {
        const TOKEN: &str = "a-long-enough-secret";
        let get = Method::GET;
        fn force(target: &'static str, token: Option<&'static str>) -> HeaderMap {
            let mut pairs = vec![(FORCE_HEADER, target)];
            pairs.extend(token.map(|t| (FORCE_TOKEN_HEADER, t)));
            headers(&pairs)
        }
        let t = RouteTable::build(&config(ROUTES), Some(Secret::new(TOKEN.as_bytes())));
        let d = select(&t, &head(&get, "/api/products/featured", &force("service", Some(TOKEN))));
        assert_eq!((d.target, d.reason), (Target::Service, Reason::Forced));
        let d = select(&t, &head(&get, "/api/products/1", &force("monolith", Some(TOKEN))));
        assert_eq!((d.target, d.reason), (Target::Monolith, Reason::Forced));
        // Unmatched paths are not forced anywhere.
        assert_eq!(select(&t, &head(&get, "/x", &force("service", Some(TOKEN)))).target, Target::Monolith);
        // Without the token, or with a wrong one (same length, a prefix, longer), the stage decides.
        for token in [None, Some("a-long-enough-secreT"), Some("a-long-enough"), Some("a-long-enough-secret!")] {
            let d = select(&t, &head(&get, "/api/products/featured", &force("service", token)));
            assert_eq!((d.target, d.reason), (Target::Monolith, Reason::Stage), "{token:?}");
        }
        // Forcing is off without a configured token, whatever the request sends.
        let t = RouteTable::build(&config(ROUTES), None);
        let d = select(&t, &head(&get, "/api/products/featured", &force("service", Some(TOKEN))));
        assert_eq!((d.target, d.reason), (Target::Monolith, Reason::Stage));
    }

    #[test]
    fn fallback_and_mirroring_are_decided_with_the_target() {
        let routes = "[[routes]]\nname = \"s\"\npath = \"/s\"\nupstream = \"svc\"\nstage = \"service\"\nfallback = true\n\
                      [[routes]]\nname = \"sh\"\npath = \"/sh\"\nupstream = \"svc\"\nstage = \"shadow\"\n\
                      [[routes]]\nname = \"shw\"\npath = \"/shw\"\nupstream = \"svc\"\nstage = \"shadow\"\nshadow_writes = true\n";
        let t = RouteTable::build(&config(routes), None);
        let none = HeaderMap::new();
        let keyed = headers(&[("idempotency-key", "k1")]);
        // (method, path, headers) → (can_fall_back, mirror)
        let cases: &[(Method, &str, &HeaderMap, (bool, bool))] = &[
            (Method::GET, "/s", &none, (true, false)),
            (Method::HEAD, "/s", &none, (true, false)),
            (Method::POST, "/s", &none, (false, false)),
            (Method::POST, "/s", &keyed, (true, false)),
            (Method::GET, "/sh", &none, (false, true)),
            (Method::POST, "/sh", &none, (false, false)),
            (Method::POST, "/shw", &none, (false, true)),
            (Method::GET, "/elsewhere", &none, (false, false)),
        ];
        for (method, path, h, want) in cases {
            let d = select(&t, &head(method, path, h));
            assert_eq!((d.can_fall_back, d.mirror), *want, "{method} {path}");
        }
    }

    fn canary_table(percent: f64, cohort: &str) -> RouteTable {
        let routes = format!(
            "[[routes]]\nname = \"c\"\npath = \"/c\"\nupstream = \"svc\"\nstage = \"canary\"\npercent = {percent}\ncohort = \"{cohort}\"\nfallback = true\n"
        );
        RouteTable::build(&config(&routes), None)
    }

    fn decide_for_user(t: &RouteTable, user: u32) -> Target {
        let mut h = HeaderMap::new();
        h.insert("x-user-id", user.to_string().parse().unwrap());
        select(t, &head(&Method::GET, "/c", &h)).target
    }

    #[test]
    fn canary_shares_are_within_three_points_over_ten_thousand_cohorts() {
        for percent in [1.0, 10.0, 25.0, 50.0, 75.0, 99.0] {
            let t = canary_table(percent, "header:x-user-id");
            let n = 10_000;
            let to_service = (0..n).filter(|&u| decide_for_user(&t, u) == Target::Service).count();
            let share = to_service as f64 * 100.0 / f64::from(n);
            assert!((share - percent).abs() <= 3.0, "{percent}%: got {share}%");
        }
        assert!((0..1000).all(|u| decide_for_user(&canary_table(0.0, "header:x-user-id"), u) == Target::Monolith));
        assert!((0..1000).all(|u| decide_for_user(&canary_table(100.0, "header:x-user-id"), u) == Target::Service));
    }

    #[test]
    fn canary_is_sticky_and_monotone_in_percent() {
        let tables: Vec<RouteTable> = (0..=20).map(|p| canary_table(f64::from(p) * 5.0, "header:x-user-id")).collect();
        for user in 0..2000 {
            let mut seen_service = false;
            for t in &tables {
                let a = decide_for_user(t, user);
                assert_eq!(a, decide_for_user(t, user), "sticky");
                if seen_service {
                    assert_eq!(a, Target::Service, "user {user} moved back to the monolith");
                }
                seen_service |= a == Target::Service;
            }
        }
    }

    #[test]
    fn buckets_are_stable_across_builds_and_instances() {
        // Pinned values: changing the hash would move cohorts between releases.
        assert_eq!(bucket("catalog", b"42"), bucket("catalog", b"42"));
        let pinned = [bucket("catalog", b"42"), bucket("catalog", b"43"), bucket("orders", b"42")];
        assert_eq!(pinned, [7491, 5384, 239]);
    }

    #[test]
    fn cohort_keys_from_cookies_and_ips() {
        let t = canary_table(50.0, "cookie:uid");
        let get = Method::GET;
        let a = headers(&[("cookie", "theme=dark; uid=alice")]);
        let d = select(&t, &head(&get, "/c", &a));
        assert_eq!(d.reason, Reason::Canary { bucket: bucket("c", b"alice") });
        let t = canary_table(50.0, "ip");
        let none = HeaderMap::new();
        let d = select(&t, &head(&get, "/c", &none));
        assert_eq!(d.reason, Reason::Canary { bucket: bucket("c", &[10, 0, 0, 1]) });
        let d = select(&t, &RequestHead { client_ip: None, ..head(&get, "/c", &none) });
        assert_eq!(d.reason, Reason::NoCohortKey);
    }

    #[test]
    fn fallback_points_at_the_monolith_only_for_service_targets() {
        let t = canary_table(100.0, "header:x-user-id");
        let mut h = HeaderMap::new();
        h.insert("x-user-id", "1".parse().unwrap());
        let d = select(&t, &head(&Method::GET, "/c", &h));
        assert_eq!(d.fallback, Some(t.default_upstream()));
    }

    #[test]
    fn a_thousand_routes_build_and_match() {
        let mut routes = String::new();
        for i in 0..1000 {
            routes.push_str(&format!(
                "[[routes]]\nname = \"r{i}\"\npath = \"/api/v{i}/items/{{id}}\"\nupstream = \"svc\"\nstage = \"service\"\n"
            ));
        }
        let t = RouteTable::build(&config(&routes), None);
        let none = HeaderMap::new();
        let d = select(&t, &head(&Method::GET, "/api/v999/items/5", &none));
        assert_eq!(d.route, Some(999));
    }
}
