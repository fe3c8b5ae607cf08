//! The Pingora side: `FicusProxy` implements `ProxyHttp`. Its hooks normalise the path, call the
//! pure [`crate::policy::route::select`], pick a peer, fall back to the monolith when the service fails
//! before answering, stamp `x-ficus-upstream`, and count everything. The hooks read route state
//! from memory only (one lock-free `ArcSwap` load per request).

use std::borrow::Cow;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Method, StatusCode};
use pingora::http::ResponseHeader;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::normalize::normalize_path;
use crate::policy::route::{Decision, RequestHead, select};
use crate::shadow;
use crate::state::{Runtime, Shared};

/// Response header naming the upstream that answered.
pub const UPSTREAM_HEADER: &str = "x-ficus-upstream";
const REQUEST_ID: &str = "x-request-id";
const TRACEPARENT: &str = "traceparent";

/// The strangler-fig proxy logic handed to Pingora.
pub struct FicusProxy {
    shared: Arc<Shared>,
}

impl FicusProxy {
    /// Wraps the shared state.
    pub fn new(shared: Arc<Shared>) -> FicusProxy {
        FicusProxy { shared }
    }
}

/// Per-request state carried between the hooks.
pub struct Ctx {
    start: Instant,
    rt: Option<Arc<Runtime>>,
    decision: Option<Decision>,
    /// Idempotent, on a service target whose route allows fallback.
    can_fall_back: bool,
    fell_back: bool,
    /// Set by `upstream_response_filter` when an answer is turned into another try (a
    /// fallback, or a retry of a 502/503).
    retry_asked: bool,
    /// Retries made (not counting other addresses after a failed connect, nor fallbacks).
    retries: u32,
    /// The next attempt waits a jittered backoff first.
    backoff_next: bool,
    /// The place held in the upstream's bulkhead, given back when the request ends.
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    /// Seconds a refused client should wait (`Retry-After`).
    retry_after: Option<u64>,
    /// A response head from the upstream was accepted: no retry after this.
    answered: bool,
    /// (upstream, endpoint) of the current attempt.
    serving: Option<(usize, usize)>,
    tries: usize,
    /// What the upstream request gets on top of the client's (see [`Forward`]).
    forward: Forward,
    /// A shadowed request: its copy and the monolith's answer, captured as they stream.
    shadow: Option<Box<Capture>>,
}

/// What a shadowed request leaves for the shadow workers.
struct Capture {
    route: usize,
    shadow: Arc<shadow::RouteShadow>,
    method: Method,
    path_and_query: String,
    headers: http::HeaderMap,
    request_body: BytesMut,
    status: Option<u16>,
    response_headers: Vec<(http::HeaderName, String)>,
    body: BytesMut,
    too_large: bool,
}

fn append_capped(buf: &mut BytesMut, chunk: &[u8], too_large: &mut bool) {
    if *too_large {
        return;
    }
    if buf.len() + chunk.len() > shadow::BODY_LIMIT {
        *too_large = true;
        *buf = BytesMut::new();
    } else {
        buf.extend_from_slice(chunk);
    }
}

thread_local! {
    /// Per-thread xorshift state, seeded from the OS-random `RandomState`.
    static RNG: std::cell::Cell<u64> = std::cell::Cell::new(std::hash::RandomState::new().hash_one(0u64) | 1);
}

/// The wait before retry `n` (from 1): 25 ms doubled each time, up to 1 s, times a random
/// factor in [0.5, 1.5), so that retries of many requests do not arrive together.
fn backoff(n: u32) -> std::time::Duration {
    let base = 25u64 << n.saturating_sub(1).min(6);
    let jitter = 500 + random_u64() % 1000;
    std::time::Duration::from_micros(base.min(1000) * jitter)
}

/// A fast per-thread pseudo-random number (xorshift64*): ids for tracing need to be unique and
/// unpredictable enough, not cryptographic.
fn random_u64() -> u64 {
    RNG.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

fn push_hex(out: &mut [u8], at: &mut usize, v: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..16).rev() {
        out[*at] = HEX[((v >> (shift * 4)) & 0xf) as usize];
        *at += 1;
    }
}

/// The ids a request lacks, made from one random trace id: `traceparent` is W3C's
/// `00-<32 hex trace id>-<16 hex parent id>-01`, and `x-request-id` is the same trace id, so that
/// logs keyed by either find the same request. Both values share one allocation.
struct NewIds {
    traceparent: HeaderValue,
    request_id: HeaderValue,
}

impl NewIds {
    fn generate() -> NewIds {
        let mut buf = [0u8; 55];
        buf[..3].copy_from_slice(b"00-");
        let mut at = 3;
        push_hex(&mut buf, &mut at, random_u64());
        push_hex(&mut buf, &mut at, random_u64());
        buf[at] = b'-';
        at += 1;
        push_hex(&mut buf, &mut at, random_u64());
        buf[at..].copy_from_slice(b"-01");
        let bytes = Bytes::from_owner(buf);
        let value = |b: Bytes| HeaderValue::from_maybe_shared(b).expect("hex is a valid header value");
        NewIds { request_id: value(bytes.slice(3..35)), traceparent: value(bytes) }
    }
}

fn class_code(e: &Error) -> u16 {
    match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}

impl FicusProxy {
    async fn respond(&self, session: &mut Session, ctx: &Ctx, code: u16, message: &str) -> Result<()> {
        let mut resp = ResponseHeader::build(code, Some(4))?;
        let body = Bytes::from(format!("{message}\n"));
        resp.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
        resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
        resp.insert_header(http::header::CACHE_CONTROL, "private, no-store")?;
        if let Some(after) = ctx.retry_after {
            resp.insert_header(http::header::RETRY_AFTER, after.to_string())?;
        }
        if let (Some(rt), Some((upstream, _))) = (&ctx.rt, ctx.serving)
            && rt.config.proxy.upstream_header
        {
            resp.insert_header(UPSTREAM_HEADER, rt.pools[upstream].header_value.clone())?;
        }
        session.set_keepalive(None);
        session.write_response_header(Box::new(resp), false).await?;
        session.write_response_body(Some(body), true).await
    }

    fn fallback_metric(ctx: &Ctx) {
        if let (Some(rt), Some(Decision { route: Some(r), .. })) = (&ctx.rt, ctx.decision) {
            rt.route_metrics[r].fallbacks.inc();
        }
    }

    /// Counts a request that could not fall back because its body outgrew the retry buffer.
    fn fallback_impossible(ctx: &Ctx) {
        if let (Some(rt), Some(Decision { route: Some(r), .. })) = (&ctx.rt, ctx.decision) {
            rt.route_metrics[r].fallback_impossible.inc();
            tracing::warn!(
                route = %rt.config.routes[r].name,
                "service failed before answering, and the request body was over {} KB: cannot fall back",
                crate::metrics::FALLBACK_BODY_LIMIT / 1024
            );
        }
    }

    /// Switches the request to the monolith when allowed; true when it did.
    fn try_fall_back(ctx: &mut Ctx) -> bool {
        if ctx.can_fall_back && !ctx.fell_back && !ctx.answered {
            ctx.fell_back = true;
            Self::fallback_metric(ctx);
            if let Some(Decision { route: Some(r), .. }) = ctx.decision
                && let Some(rt) = &ctx.rt
            {
                tracing::warn!(route = %rt.config.routes[r].name, "service failed before answering: serving from the monolith");
            }
            true
        } else {
            false
        }
    }

    /// Gives a shadowed request to its route's shadow queue (never waits).
    fn hand_to_shadow(&self, rt: &Runtime, c: Capture) {
        let Some(status) = c.status else { return };
        let route = &rt.config.routes[c.route];
        let shadow = c.shadow;
        if c.too_large {
            shadow.skip();
            return;
        }
        let pick = |u: usize| {
            let pool = &rt.pools[u];
            let e = &pool.endpoints[(random_u64() % pool.endpoints.len() as u64) as usize];
            shadow::Target { base: e.shadow_base.clone(), client: pool.shadow_client.clone() }
        };
        let service = &rt.config.upstreams[route.upstream];
        shadow.submit(shadow::Job {
            method: c.method,
            path_and_query: c.path_and_query,
            headers: c.headers,
            body: c.request_body.freeze(),
            monolith: crate::policy::diff::Answer { status, headers: c.response_headers, body: c.body.freeze() },
            monolith_target: pick(rt.config.default_upstream),
            service_target: pick(route.upstream),
            timeout: service.connect_timeout + service.read_timeout,
            ignore: route.shadow_ignore.clone().into(),
            compared_headers: route.shadow_headers.clone().into(),
        });
    }

    /// Takes a retry on the same upstream when the request is idempotent, the upstream allows
    /// more (`retries`) and its retry budget has one; the next attempt waits a backoff first.
    fn try_retry(&self, ctx: &mut Ctx) -> bool {
        let (Some(rt), Some(d), Some((u, _))) = (&ctx.rt, ctx.decision, ctx.serving) else { return false };
        let pool = &rt.pools[u];
        if !d.idempotent || ctx.answered || ctx.retries >= pool.spec.retries || !pool.retry_budget.withdraw() {
            return false;
        }
        ctx.retries += 1;
        ctx.backoff_next = true;
        self.shared.metrics.retries.with_label_values(&[pool.name()]).inc();
        true
    }

    fn breaker_failure(ctx: &Ctx) {
        if let (Some(rt), Some((u, e))) = (&ctx.rt, ctx.serving) {
            rt.pools[u].endpoints[e].breaker.failure();
        }
    }
}

impl FicusProxy {
    /// Everything `request_filter` does, synchronously: checks the head, normalises the path,
    /// routes, stamps the ids and prepares a shadow capture. Returns the rejection to answer, if
    /// any (kept out of the hook's future so that the per-request future stays small).
    fn route_request(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Option<(u16, Cow<'static, str>)>> {
        let rt = self.shared.current();
        // The head is in: its deadline stops. A raw space in the target was re-encoded by
        // Pingora's parser, so only the connection saw it.
        if crate::conn::mark_head_read(session) == crate::conn::HeadCheck::RawSpaceInTarget {
            ctx.rt = Some(rt);
            return Ok(Some((400, "the request target holds a raw space or control character".into())));
        }
        // Requests sent back to back on one connection are answered in order (RFC 9112 §9.3.2),
        // not dropped after the first.
        session.set_pipelining_enabled(true);
        ctx.rt = Some(rt);
        let Some(rt) = ctx.rt.as_ref() else { return Ok(None) };
        let req = session.req_header();
        let scan = HeadScan::of(req);
        if scan.size > rt.config.proxy.max_header_bytes {
            return Ok(Some((431, "request header fields too large".into())));
        }
        // HTTP/1.1 requires Host (RFC 9112 §3.2): without it the request is ambiguous.
        if req.version == http::Version::HTTP_11 && scan.host.is_none() {
            return Ok(Some((400, "an HTTP/1.1 request must have a Host header".into())));
        }
        // Route on the target as received: the parsed URI may have replaced bytes it could not hold.
        let raw = req.raw_path();
        // Absolute-form (`GET http://host/path`) is forwarded in origin-form, with its
        // authority as the Host (RFC 9112 §3.2.2).
        let absolute = raw.starts_with(b"http://") || raw.starts_with(b"https://");
        let authority = if absolute { req.uri.authority().map(|a| a.as_str().to_owned()) } else { None };
        let path = if raw.first() == Some(&b'/') {
            std::str::from_utf8(raw).ok().and_then(|s| s.split(['?', '#']).next())
        } else if raw.starts_with(b"http://") || raw.starts_with(b"https://") {
            Some(req.uri.path())
        } else {
            None
        };
        let rewritten = match path.map(normalize_path) {
            Some(Ok(Cow::Borrowed(p))) if p == req.uri.path() && !absolute => None,
            Some(Ok(p)) => Some(p.into_owned()),
            Some(Err(e)) => return Ok(Some((400, e.to_string().into()))),
            None => return Ok(Some((400, "the request target must be a path starting with '/'".into()))),
        };
        if let Some(path) = rewritten {
            // Forward the normalised path so the upstream sees what was routed.
            let mut target = path;
            if let Some(q) = req.uri.query() {
                target.push('?');
                target.push_str(q);
            }
            match http::Uri::try_from(target) {
                Ok(uri) => session.req_header_mut().set_uri(uri),
                Err(_) => return Ok(Some((400, "the request target is not a valid URI".into()))),
            }
            if let Some(host) = authority {
                session.req_header_mut().insert_header(http::header::HOST, host)?;
            }
        }
        let req = session.req_header();
        let client_ip = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
        let head = RequestHead { method: &req.method, path: req.uri.path(), headers: &req.headers, client_ip };
        let decision = select(&rt.table, &head);
        if let Some(r) = decision.route
            && let Some(limiter) = &rt.limiters[r]
            && let Err(after) = limiter.admit(&head)
        {
            rt.route_metrics[r].rate_limited.inc();
            ctx.retry_after = Some(after);
            ctx.decision = Some(decision);
            return Ok(Some((429, "too many requests: this route's rate limit".into())));
        }
        ctx.can_fall_back = decision.can_fall_back;
        let needs_buffer = ctx.can_fall_back && !matches!(req.method, Method::GET | Method::HEAD);
        ctx.decision = Some(decision);
        if needs_buffer {
            session.as_downstream_mut().enable_retry_buffering();
        }
        // What the upstream request gets, decided once; each attempt's copy of the request gets
        // it in `upstream_request_filter`.
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        ctx.forward = Forward::decide(&scan, session.req_header(), client_ip, tls, rt);
        if let Some(r) = decision.route
            && decision.mirror
        {
            let req = session.req_header();
            let route = &rt.config.routes[r];
            let shadow = rt.shadows[r].as_ref().filter(|s| s.admit(route.shadow_max_per_second)).cloned();
            if let Some(shadow) = shadow {
                ctx.shadow = Some(Box::new(Capture {
                    route: r,
                    shadow,
                    method: req.method.clone(),
                    path_and_query: req.uri.path_and_query().map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
                    headers: ctx.forward.applied_to(&req.headers),
                    request_body: BytesMut::new(),
                    status: None,
                    response_headers: Vec::new(),
                    body: BytesMut::new(),
                    too_large: false,
                }));
            }
        }
        Ok(None)
    }
}

/// The longest `x-request-id` passed on.
pub const MAX_REQUEST_ID: usize = 128;

/// An `x-request-id` worth passing on: 1 to [`MAX_REQUEST_ID`] visible ASCII characters.
fn valid_request_id(v: &[u8]) -> bool {
    !v.is_empty() && v.len() <= MAX_REQUEST_ID && v.iter().all(|b| b.is_ascii_graphic())
}

/// A W3C `traceparent` (Trace Context level 1): `VV-<32 hex>-<16 hex>-FF`, lower-case
/// hex, version not `ff`, trace and parent ids not all zeros; version `00` has exactly
/// those four fields, a later version may add more after a `-`.
fn valid_traceparent(v: &[u8]) -> bool {
    let hex = |s: &[u8]| s.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b));
    let zero = |s: &[u8]| s.iter().all(|&b| b == b'0');
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return false;
    }
    let (version, trace, parent, flags) = (&v[0..2], &v[3..35], &v[36..52], &v[53..55]);
    let rest_ok = if version == b"00" { v.len() == 55 } else { v.len() == 55 || v[55] == b'-' };
    hex(version)
        && version != b"ff"
        && hex(trace)
        && !zero(trace)
        && hex(parent)
        && !zero(parent)
        && hex(flags)
        && rest_ok
}

static FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
static REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
/// The prefix of the proxy's own headers, which a client may not send on to an upstream.
const OWN_PREFIX: &str = "x-ficus-";

/// What an upstream request gets on top of what the client sent, decided once per request in
/// `request_filter` and applied to each attempt's copy of the request (Pingora clones the
/// client's request for every attempt, so the client's own header map is left as it came):
///
/// - the proxy's own `x-ficus-*` headers are removed (the force header has been read by then);
/// - a client in `[security] trusted_proxies` (a proxy in front of this one) keeps its
///   forwarding headers, and its address is appended to `X-Forwarded-For`; anyone else's
///   `X-Forwarded-For`, `Forwarded` and `X-Real-IP` are dropped and replaced by what this proxy
///   saw; `X-Forwarded-Proto` (`https` when the client came over TLS) and `X-Forwarded-Host`
///   are set when not kept;
/// - a malformed `x-request-id` or `traceparent` is replaced, a missing one created when
///   `create_ids` is on.
#[derive(Debug, Default)]
struct Forward {
    /// Remove the client's `x-ficus-*` headers.
    strip_own: bool,
    /// Remove the client's forwarding headers (an untrusted client that sent some).
    strip_forwarding: bool,
    /// `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host`, when set here.
    forwarded_for: Option<HeaderValue>,
    forwarded_proto: Option<HeaderValue>,
    forwarded_host: Option<HeaderValue>,
    /// Ids made here (the request id is echoed to the client too).
    request_id: Option<HeaderValue>,
    traceparent: Option<HeaderValue>,
}

// Names as &'static str for Pingora's insert: it keeps them as they are written on the wire.
const FOR: &str = "X-Forwarded-For";
const PROTO: &str = "X-Forwarded-Proto";
const HOST: &str = "X-Forwarded-Host";

impl Forward {
    fn decide(
        scan: &HeadScan,
        req: &pingora::http::RequestHeader,
        client: Option<std::net::IpAddr>,
        tls: bool,
        rt: &Runtime,
    ) -> Forward {
        let trusted = client.is_some_and(|ip| rt.config.security.trusted_proxies.iter().any(|n| n.contains(ip)));
        let forwarded_for = if trusted {
            let before = req.headers.get(&FORWARDED_FOR).and_then(|v| v.to_str().ok()).filter(|v| !v.trim().is_empty());
            match (before, client) {
                (Some(b), Some(ip)) => HeaderValue::try_from(format!("{b}, {ip}")).ok(),
                (None, Some(ip)) => Some(ip_value(ip)),
                (_, None) => None,
            }
        } else {
            client.map(ip_value)
        };
        let keeps = |present: bool| trusted && present;
        let create = rt.config.proxy.create_ids;
        let new_request_id = scan.request_id == Id::Invalid || (create && scan.request_id == Id::Absent);
        let new_traceparent = scan.traceparent == Id::Invalid || (create && scan.traceparent == Id::Absent);
        let ids = (new_request_id || new_traceparent).then(NewIds::generate);
        Forward {
            strip_own: scan.own_headers,
            strip_forwarding: !trusted && scan.forwarding,
            forwarded_for,
            forwarded_proto: (!keeps(scan.forwarded_proto))
                .then(|| HeaderValue::from_static(if tls { "https" } else { "http" })),
            forwarded_host: if keeps(scan.forwarded_host) { None } else { scan.host.clone() },
            request_id: ids.as_ref().filter(|_| new_request_id).map(|i| i.request_id.clone()),
            traceparent: ids.filter(|_| new_traceparent).map(|i| i.traceparent),
        }
    }

    /// The headers this adds, with the names they are written with.
    fn added(&self) -> impl Iterator<Item = (&'static str, &HeaderValue)> {
        [
            (FOR, &self.forwarded_for),
            (PROTO, &self.forwarded_proto),
            (HOST, &self.forwarded_host),
            (REQUEST_ID, &self.request_id),
            (TRACEPARENT, &self.traceparent),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.as_ref().map(|v| (name, v)))
    }

    /// The client's headers that go: its `x-ficus-*` ones, and its forwarding ones when it is
    /// not trusted.
    fn removed<'a>(&self, names: impl Iterator<Item = &'a HeaderName>) -> Vec<HeaderName> {
        if !self.strip_own && !self.strip_forwarding {
            return Vec::new();
        }
        let forwarding = [&FORWARDED, &REAL_IP, &FORWARDED_PROTO, &FORWARDED_HOST, &FORWARDED_FOR];
        let mut out: Vec<HeaderName> = names
            .filter(|k| {
                (self.strip_own && k.as_str().starts_with(OWN_PREFIX))
                    || (self.strip_forwarding && forwarding.contains(k))
            })
            .cloned()
            .collect();
        out.dedup();
        out
    }

    /// Applies it to the copy of the request an upstream gets.
    fn apply(&self, req: &mut pingora::http::RequestHeader) -> Result<()> {
        for k in self.removed(req.headers.keys()) {
            req.remove_header(&k);
        }
        for (name, value) in self.added() {
            req.insert_header(name, value.clone())?;
        }
        Ok(())
    }

    /// The client's headers as the upstream gets them (for a shadow copy).
    fn applied_to(&self, headers: &http::HeaderMap) -> http::HeaderMap {
        let mut out = headers.clone();
        for k in self.removed(headers.keys()) {
            out.remove(&k);
        }
        for (name, value) in self.added() {
            if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
                out.insert(name, value.clone());
            }
        }
        out
    }
}

/// Whether a request carries an id header, and in what shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Id {
    #[default]
    Absent,
    Valid,
    Invalid,
}

/// What one pass over a request's headers tells the hooks: every question is answered at once,
/// instead of a lookup per question.
#[derive(Debug, Default)]
struct HeadScan {
    /// The head's size as counted against `max_header_bytes` (path, names, values).
    size: usize,
    /// The Host header (kept for `X-Forwarded-Host`).
    host: Option<HeaderValue>,
    /// An `x-ficus-*` header, which no upstream may get from a client.
    own_headers: bool,
    /// A forwarding header (`Forwarded`, `X-Real-IP`, `X-Forwarded-*`).
    forwarding: bool,
    forwarded_proto: bool,
    forwarded_host: bool,
    request_id: Id,
    traceparent: Id,
}

impl HeadScan {
    fn of(req: &pingora::http::RequestHeader) -> HeadScan {
        let mut scan = HeadScan { size: req.uri.path().len(), ..HeadScan::default() };
        let id = |valid: bool| if valid { Id::Valid } else { Id::Invalid };
        for (name, value) in &req.headers {
            let name = name.as_str();
            scan.size += name.len() + value.len() + 4;
            match name {
                "host" => scan.host = Some(value.clone()),
                REQUEST_ID => {
                    scan.request_id = id(scan.request_id != Id::Invalid && valid_request_id(value.as_bytes()))
                }
                TRACEPARENT => {
                    scan.traceparent = id(scan.traceparent != Id::Invalid && valid_traceparent(value.as_bytes()))
                }
                "x-forwarded-proto" => (scan.forwarding, scan.forwarded_proto) = (true, true),
                "x-forwarded-host" => (scan.forwarding, scan.forwarded_host) = (true, true),
                "forwarded" | "x-real-ip" | "x-forwarded-for" => scan.forwarding = true,
                _ if name.starts_with(OWN_PREFIX) => scan.own_headers = true,
                _ => {}
            }
        }
        scan
    }
}

/// A client address as a header value; an IPv4 address is written without the formatter.
fn ip_value(ip: std::net::IpAddr) -> HeaderValue {
    let std::net::IpAddr::V4(v4) = ip else {
        return HeaderValue::try_from(ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"));
    };
    let mut buf = [0u8; 15];
    let mut n = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            buf[n] = b'.';
            n += 1;
        }
        let digits = [octet / 100, octet / 10 % 10, octet % 10];
        let skip = if octet >= 100 {
            0
        } else if octet >= 10 {
            1
        } else {
            2
        };
        for d in &digits[skip..] {
            buf[n] = b'0' + d;
            n += 1;
        }
    }
    HeaderValue::from_bytes(&buf[..n]).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

#[async_trait]
impl ProxyHttp for FicusProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            start: Instant::now(),
            rt: None,
            decision: None,
            can_fall_back: false,
            fell_back: false,
            retry_asked: false,
            retries: 0,
            backoff_next: false,
            permit: None,
            retry_after: None,
            answered: false,
            serving: None,
            tries: 0,
            forward: Forward::default(),
            shadow: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        match self.route_request(session, ctx)? {
            None => Ok(false),
            Some((code, message)) => {
                Box::pin(self.respond(session, ctx, code, &message)).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut pingora::http::RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.forward.apply(upstream_request)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let (Some(c), Some(chunk)) = (ctx.shadow.as_deref_mut(), body.as_ref()) {
            append_capped(&mut c.request_body, chunk, &mut c.too_large);
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<std::time::Duration>> {
        if let (Some(c), Some(chunk)) = (ctx.shadow.as_deref_mut(), body.as_ref()) {
            append_capped(&mut c.body, chunk, &mut c.too_large);
        }
        Ok(None)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let (Some(rt), Some(d)) = (ctx.rt.clone(), ctx.decision) else {
            return Error::e_explain(ErrorType::InternalError, "no routing decision");
        };
        if std::mem::take(&mut ctx.backoff_next) {
            tokio::time::sleep(backoff(ctx.retries)).await;
        }
        ctx.tries += 1;
        // The place held in a bulkhead goes back before another is taken (a retry, a fallback).
        ctx.permit = None;
        loop {
            let mut upstream = match (ctx.fell_back, d.fallback) {
                (true, Some(monolith)) => monolith,
                _ => d.upstream,
            };
            let endpoint = match rt.pools[upstream].pick() {
                Some(e) => e,
                None if Self::try_fall_back(ctx) => {
                    upstream = d.fallback.unwrap_or(upstream);
                    let pool = &rt.pools[upstream];
                    pool.pick().unwrap_or_else(|| pool.pick_any())
                }
                // Nothing healthy and nowhere to fall back to: try anyway rather than refuse.
                None => rt.pools[upstream].pick_any(),
            };
            ctx.serving = Some((upstream, endpoint));
            ctx.answered = false;
            let pool = &rt.pools[upstream];
            if let Some(bulkhead) = &pool.bulkhead {
                let place = match bulkhead.clone().try_acquire_owned() {
                    Ok(p) => Some(p),
                    Err(_) => tokio::time::timeout(pool.spec.queue_timeout, bulkhead.clone().acquire_owned())
                        .await
                        .ok()
                        .and_then(Result::ok),
                };
                match place {
                    Some(p) => ctx.permit = Some(p),
                    None => {
                        self.shared.metrics.bulkhead_rejected.with_label_values(&[pool.name()]).inc();
                        if Self::try_fall_back(ctx) {
                            continue;
                        }
                        return Error::e_explain(
                            ErrorType::HTTPStatus(503),
                            format!("upstream `{}` has max_concurrent requests in flight", pool.name()),
                        );
                    }
                }
            }
            if ctx.tries == 1 {
                pool.retry_budget.deposit();
            }
            return Ok(Box::new(pool.endpoints[endpoint].peer.clone()));
        }
    }

    fn fail_to_connect(&self, _session: &mut Session, peer: &HttpPeer, ctx: &mut Ctx, mut e: Box<Error>) -> Box<Error> {
        Self::breaker_failure(ctx);
        if matches!(
            e.etype(),
            ErrorType::TLSHandshakeFailure
                | ErrorType::InvalidCert
                | ErrorType::HandshakeError
                | ErrorType::TLSHandshakeTimedout
        ) {
            // Say why, with the reason rustls gives (a name that does not match, an expired or
            // untrusted certificate): the client only sees a 502.
            let upstream = match (&ctx.rt, ctx.serving) {
                (Some(rt), Some((u, _))) => rt.pools[u].name().to_owned(),
                _ => String::new(),
            };
            tracing::warn!(%upstream, %peer, "TLS to the upstream failed: {e}");
        }
        let addresses = match (&ctx.rt, ctx.serving) {
            (Some(rt), Some((u, _))) => rt.pools[u].endpoints.len(),
            _ => 1,
        };
        if ctx.tries < addresses {
            // Another address of the same upstream; the request was not sent, so this is safe.
            e.set_retry(true);
        } else if self.try_retry(ctx) || Self::try_fall_back(ctx) {
            e.set_retry(true);
        } else {
            e.set_retry(false);
        }
        e
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let status = upstream_response.status;
        if status.is_informational() {
            return Ok(());
        }
        let on_service = ctx.decision.is_some_and(|d| Some(d.upstream) == ctx.serving.map(|s| s.0));
        let code = status.as_u16();
        if on_service && matches!(code, 502..=504) {
            Self::breaker_failure(ctx);
        } else if let (Some(rt), Some((u, e))) = (&ctx.rt, ctx.serving) {
            rt.pools[u].endpoints[e].breaker.success();
        }
        let not_there = code == 404
            && on_service
            && matches!((&ctx.rt, ctx.decision), (Some(rt), Some(Decision { route: Some(r), .. })) if rt.config.routes[r].fallback_on_404);
        let again = if matches!(code, 502 | 503) && self.try_retry(ctx) {
            Some("upstream answered 502/503: retrying")
        } else if on_service && (status.is_server_error() || not_there) && Self::try_fall_back(ctx) {
            Some("service failed: falling back to the monolith")
        } else {
            None
        };
        if let Some(why) = again {
            ctx.retry_asked = true;
            let mut e = Error::explain(ErrorType::HTTPStatus(code), why);
            e.set_retry(true);
            return Err(e);
        }
        ctx.answered = true;
        Ok(())
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        if std::mem::take(&mut ctx.retry_asked) {
            e.set_retry(true);
            return e;
        }
        let truncated = session.as_ref().retry_buffer_truncated();
        if e.esource() == &ErrorSource::Upstream && !ctx.answered {
            Self::breaker_failure(ctx);
            if truncated && ctx.can_fall_back && !ctx.fell_back {
                Self::fallback_impossible(ctx);
            } else if !truncated && (self.try_retry(ctx) || Self::try_fall_back(ctx)) {
                e.set_retry(true);
                return e;
            }
        }
        if !session.req_header().method.is_idempotent() || truncated || ctx.answered {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    async fn response_filter(&self, _session: &mut Session, resp: &mut ResponseHeader, ctx: &mut Ctx) -> Result<()> {
        if let (Some(rt), Some((upstream, _))) = (&ctx.rt, ctx.serving)
            && rt.config.proxy.upstream_header
        {
            resp.insert_header(UPSTREAM_HEADER, rt.pools[upstream].header_value.clone())?;
        }
        if let Some(id) = &ctx.forward.request_id {
            resp.insert_header(REQUEST_ID, id.clone())?;
        }
        if let (Some(c), Some(rt)) = (ctx.shadow.as_deref_mut(), &ctx.rt) {
            c.status = Some(resp.status.as_u16());
            c.response_headers =
                crate::policy::diff::chosen_headers(&resp.headers, &rt.config.routes[c.route].shadow_headers);
        }
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let code = class_code(e);
        if code > 0 {
            let reason = StatusCode::from_u16(code).ok().and_then(|s| s.canonical_reason()).unwrap_or("error");
            let _ = Box::pin(self.respond(session, ctx, code, reason)).await;
        }
        FailToProxy { error_code: code, can_reuse_downstream: false }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        crate::conn::mark_request_done(session);
        let Some(rt) = &ctx.rt else { return };
        let status = session.response_written().map(|r| r.status.as_u16()).or_else(|| e.map(class_code)).unwrap_or(0);
        if status == 0 {
            return;
        }
        let elapsed = ctx.start.elapsed().as_secs_f64();
        let Some(d) = ctx.decision else {
            rt.rejected_metrics.observe(status, elapsed);
            return;
        };
        match d.route {
            None => rt.unmatched_metrics.observe(status, elapsed),
            Some(r) => {
                let m = &rt.route_metrics[r];
                let on_service = ctx.serving.map(|s| s.0) == Some(rt.config.routes[r].upstream)
                    && rt.config.routes[r].upstream != rt.config.default_upstream;
                if on_service { m.service.observe(status, elapsed) } else { m.monolith.observe(status, elapsed) }
            }
        }
        if e.is_none()
            && let Some(c) = ctx.shadow.take()
        {
            self.hand_to_shadow(rt, *c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_passed_on_only_when_well_formed() {
        assert!(valid_request_id(b"abc-123") && valid_request_id(&[b'x'; MAX_REQUEST_ID]));
        for bad in [&b""[..], &[b'x'; MAX_REQUEST_ID + 1], b"a b", b"a\x01", "é".as_bytes()] {
            assert!(!valid_request_id(bad), "{bad:?}");
        }
        let good = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(valid_traceparent(good));
        assert!(valid_traceparent(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future"));
        for bad in [
            &b"garbage"[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            b"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(!valid_traceparent(bad), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn client_addresses_are_written_as_the_formatter_would() {
        for ip in ["127.0.0.1", "0.0.0.0", "255.255.255.255", "10.20.3.104", "::1", "2001:db8::7"] {
            let addr: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(ip_value(addr).to_str().unwrap(), addr.to_string());
        }
    }
}
