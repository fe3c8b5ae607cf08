//! What the proxy does with a client connection around Pingora's HTTP code: the limits that
//! protect it from slow and greedy clients, which Pingora does not have.
//!
//! - **A cap on open connections per client address** (`security.max_connections_per_client`):
//!   one more is answered 503 and closed at once. Counted from the moment Pingora hands over the
//!   connection (after a TLS handshake) until the connection is dropped.
//! - **A deadline for a whole request head** (`security.header_timeout_ms`): Pingora times
//!   each read, so a client sending a byte a second would hold a connection forever. The clock
//!   starts when the connection is accepted, and for later requests on a keep-alive connection
//!   with the first byte of the head. The head is complete when the proxy's first hook runs
//!   ([`mark_head_read`]); the request is over when its last hook runs ([`mark_request_done`]).
//! - **An idle timeout between requests** (`security.idle_timeout_ms`), whatever the client's
//!   `Keep-Alive` header asks for: closed like an orderly end of the connection.
//! - **A raw space in a request target** is noted as it is read, since Pingora's parser
//!   percent-encodes it before any hook could see it; the hook answers 400.
//!
//! How: [`Guard`] is the application Pingora's listening service runs. It wraps each accepted
//! stream in a [`GuardedStream`] (the clocks, the request-line check, and the connection's slot
//! in the per-address count, released on drop) and hands it to Pingora's HTTP handling. The
//! stream keeps one timer for its life, moved rather than re-created: on a busy keep-alive
//! connection the per-request cost is a clock read and a few comparisons.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::{
    ALPN, GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream, TimingDigest,
    UniqueID, UniqueIDType,
};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::state::Shared;

/// Open connections per client address, and the slots that hold them.
#[derive(Debug, Default)]
pub struct ClientCounts {
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl ClientCounts {
    /// Takes a slot for `ip` unless it already holds `max`.
    fn acquire(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot { counts: self.clone(), ip })
    }

    /// Connections open from `ip` now.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).get(&ip).copied().unwrap_or(0)
    }
}

/// One counted connection; dropping it releases the count.
#[derive(Debug)]
struct Slot {
    counts: Arc<ClientCounts>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.counts.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

// Phases of a connection, as its clocks see it.
/// Waiting for (the rest of) a request head: the head's deadline runs.
const HEAD: u8 = 0;
/// Between requests on a keep-alive connection: the idle timeout runs; the next byte starts a
/// head.
const IDLE: u8 = 1;
/// The head was read: body and response, no clock of ours.
const BODY: u8 = 2;

/// The limits a connection was accepted under.
#[derive(Debug, Clone, Copy)]
struct Limits {
    header_timeout: Duration,
    idle_timeout: Duration,
}

/// A client connection with the head deadline, the idle timeout and the request-line check
/// (see the module's docs). Everything else is the stream it wraps.
pub struct GuardedStream {
    inner: Stream,
    _slot: Option<Slot>,
    /// [`HEAD`], [`IDLE`] or [`BODY`]; set by the hooks through a shared reference.
    phase: AtomicU8,
    /// The phase the last read saw, to notice what the hooks changed.
    seen: u8,
    limits: Limits,
    /// When the current wait ends: the head's deadline, or the end of the idle timeout; `None`
    /// until the first read of this phase that has to wait (the clock is read only then).
    deadline: Option<tokio::time::Instant>,
    /// The one timer of the connection, moved to each new deadline.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The waker the timer was last polled with, while it is set and has not fired: polling it
    /// again with the same waker would change nothing.
    timer_armed: Option<std::task::Waker>,
    /// The request line being read; `None` once its end was seen.
    line: Option<LineCheck>,
    /// A request line with a raw space (or a control byte) in its target was read.
    bad_line: AtomicBool,
    /// An HTTP/2 connection: no clocks of ours (HTTP/2 has its own), no request lines.
    h2: bool,
    /// Counts the connections closed by the head deadline.
    timeouts: prometheus::IntCounter,
    /// The head deadline has passed (the connection is being closed).
    timed_out: bool,
}

/// What the request line read so far holds (`\r` left out).
#[derive(Debug, Clone, Copy, Default)]
struct LineCheck {
    len: usize,
    spaces: usize,
    control: bool,
    /// Its last 16 bytes, the newest in the low byte.
    tail: u128,
}

/// `bytes` as the low bytes of a `u128`, the last one lowest.
const fn packed(bytes: &[u8]) -> u128 {
    let mut v = 0u128;
    let mut i = 0;
    while i < bytes.len() {
        v = (v << 8) | bytes[i] as u128;
        i += 1;
    }
    v
}

impl LineCheck {
    /// Takes in the line's bytes up to (not including) its `\n`. Whole-slice counts rather
    /// than a loop per byte: they compile to vector code.
    fn take(&mut self, bytes: &[u8]) {
        let returns = bytes.iter().filter(|&&b| b == b'\r').count();
        self.len += bytes.len() - returns;
        self.spaces += bytes.iter().filter(|&&b| b == b' ').count();
        self.control |= bytes.iter().fold(false, |c, &b| c | ((b < 0x20 && b != b'\r') | (b == 0x7f)));
        for &b in bytes[bytes.len().saturating_sub(16)..].iter().filter(|&&b| b != b'\r') {
            self.tail = (self.tail << 8) | u128::from(b);
        }
    }

    /// Whether the finished line is a request line (`… HTTP/1.x`, what Pingora's parser
    /// re-encodes) whose target held a raw space or a control byte. A line that does not end
    /// like a request line is not judged: it may be the middle of a head read earlier.
    fn bad(&self) -> bool {
        const VERSION_MASK: u128 = (1 << 72) - 1;
        let version = self.tail & VERSION_MASK;
        let ends_like_request = version == packed(b" HTTP/1.1") || version == packed(b" HTTP/1.0");
        ends_like_request && (self.spaces > 2 || self.control)
    }
}

/// Feeds bytes read to the request-line check; `Some(bad)` when the line ended with them (then
/// `line` is `None`: nothing more to check until the next request).
fn feed_line(line: &mut Option<LineCheck>, bytes: &[u8]) -> Option<bool> {
    let check = line.as_mut()?;
    let mut rest = bytes;
    while let Some(end) = rest.iter().position(|&b| b == b'\n') {
        check.take(&rest[..end]);
        // A blank line before a request line is skipped by the parser, and so here.
        if check.len > 0 {
            let bad = check.bad();
            *line = None;
            return Some(bad);
        }
        *check = LineCheck::default();
        rest = &rest[end + 1..];
    }
    check.take(rest);
    None
}

impl std::fmt::Debug for GuardedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedStream").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl GuardedStream {
    fn new(inner: Stream, slot: Option<Slot>, limits: Limits, timeouts: prometheus::IntCounter) -> GuardedStream {
        let h2 = matches!(inner.selected_alpn_proto(), Some(ALPN::H2));
        let phase = if h2 { BODY } else { HEAD };
        GuardedStream {
            inner,
            _slot: slot,
            phase: AtomicU8::new(phase),
            seen: phase,
            limits,
            // The first head's clock runs from the connection's start.
            deadline: (!h2).then(|| tokio::time::Instant::now() + limits.header_timeout),
            timer: None,
            timer_armed: None,
            line: (!h2).then(LineCheck::default),
            bad_line: AtomicBool::new(false),
            h2,
            timeouts,
            timed_out: false,
        }
    }

    /// Notes the request line in bytes just read (until its end has been seen).
    fn check_line(&mut self, bytes: &[u8]) {
        if feed_line(&mut self.line, bytes) == Some(true) {
            self.bad_line.store(true, Ordering::Relaxed);
        }
    }

    /// Waits for the current deadline (set now when not yet set: `after` from now). `Ready` when
    /// it has passed.
    ///
    /// The timer is not moved for every wait: one set earlier than this wait's deadline is left
    /// to fire, and moved on then. A busy keep-alive connection, whose every idle wait ends a
    /// little later than the one before, so moves it about once per timeout, not per request.
    fn wait(&mut self, cx: &mut Context<'_>, after: Duration) -> Poll<()> {
        let deadline = *self.deadline.get_or_insert_with(|| tokio::time::Instant::now() + after);
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() > deadline {
            timer.as_mut().reset(deadline);
            self.timer_armed = None;
        }
        // A timer already polled with this waker and not yet fired will wake it: nothing to do.
        if self.timer_armed.as_ref().is_some_and(|w| w.will_wake(cx.waker())) && !timer.is_elapsed() {
            return Poll::Pending;
        }
        loop {
            match timer.as_mut().poll(cx) {
                Poll::Pending => {
                    self.timer_armed = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                Poll::Ready(()) if timer.deadline() >= deadline => {
                    self.timer_armed = None;
                    return Poll::Ready(());
                }
                // It fired for an earlier wait: on to this one's deadline.
                Poll::Ready(()) => timer.as_mut().reset(deadline),
            }
        }
    }
}

/// The proxy's first hook calls this when the request head has been read: stops the head's
/// clock, and says whether its request line held a raw space (then the answer is 400).
pub fn mark_head_read(session: &pingora::proxy::Session) -> HeadCheck {
    let Some(g) = guarded(session) else { return HeadCheck::Clean };
    g.phase.store(BODY, Ordering::Relaxed);
    if g.bad_line.swap(false, Ordering::Relaxed) { HeadCheck::RawSpaceInTarget } else { HeadCheck::Clean }
}

/// The proxy's last hook calls this when a request is over: the wait for the next one is idle
/// time, and its first byte starts the next head's clock. A request whose body was not read to
/// its end leaves the connection as it is (what follows may still be body bytes).
pub fn mark_request_done(session: &mut pingora::proxy::Session) {
    if !session.as_downstream_mut().is_body_done() {
        return;
    }
    if let Some(g) = guarded(session)
        && !g.h2
    {
        g.phase.store(IDLE, Ordering::Relaxed);
    }
}

fn guarded(session: &pingora::proxy::Session) -> Option<&GuardedStream> {
    session.as_downstream().stream().and_then(|s| s.as_any().downcast_ref::<GuardedStream>())
}

/// What [`mark_head_read`] found in the request line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadCheck {
    /// Nothing wrong.
    Clean,
    /// A raw space or control byte in the request line (Pingora re-encoded it).
    RawSpaceInTarget,
}

impl AsyncRead for GuardedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let mut phase = this.phase.load(Ordering::Relaxed);
        if phase != this.seen {
            // A hook moved the connection on: the next wait gets a deadline of its own.
            this.seen = phase;
            this.deadline = None;
        }
        if phase == BODY {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                if phase == IDLE && !read.is_empty() {
                    // The first byte of the next head: its clock starts at the first wait, and
                    // its request line is checked (the reads in between were bodies).
                    phase = HEAD;
                    this.phase.store(HEAD, Ordering::Relaxed);
                    this.seen = HEAD;
                    this.deadline = None;
                    this.line = Some(LineCheck::default());
                }
                if phase == HEAD {
                    this.check_line(read);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let after = if phase == HEAD { this.limits.header_timeout } else { this.limits.idle_timeout };
                match this.wait(cx, after) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(()) if phase == IDLE => {
                        // Idle too long: the connection ends as if the client had closed it.
                        Poll::Ready(Ok(()))
                    }
                    Poll::Ready(()) => {
                        // Counted once per connection, however often it is read after this.
                        if !std::mem::replace(&mut this.timed_out, true) {
                            this.timeouts.inc();
                        }
                        Poll::Ready(Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "the request head was not complete within security.header_timeout_ms",
                        )))
                    }
                }
            }
        }
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for GuardedStream {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(self.inner.as_mut()).await;
    }
}

impl UniqueID for GuardedStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for GuardedStream {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for GuardedStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for GuardedStream {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for GuardedStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

#[async_trait]
impl Peek for GuardedStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

/// The application Pingora's listening service runs for each accepted connection: the
/// per-address cap, then Pingora's HTTP handling on a [`GuardedStream`].
pub struct Guard<A> {
    http: Arc<A>,
    shared: Arc<Shared>,
    counts: Arc<ClientCounts>,
}

impl<A> Guard<A> {
    /// Guards `http` (Pingora's HTTP proxy) with the limits of `shared`'s live config.
    pub fn new(http: A, shared: Arc<Shared>) -> Guard<A> {
        Guard { http: Arc::new(http), shared, counts: Arc::default() }
    }
}

/// What an over-the-cap connection is told before it is closed.
const TOO_MANY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
content-length: 43\r\nretry-after: 1\r\nconnection: close\r\n\r\ntoo many open connections from your address\n";

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for Guard<A> {
    async fn process_new(self: &Arc<Self>, mut stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let (max, limits) = {
            let rt = self.shared.guard();
            let s = &rt.config.security;
            (s.max_connections_per_client, Limits { header_timeout: s.header_timeout, idle_timeout: s.idle_timeout })
        };
        let ip = stream.get_socket_digest().and_then(|d| d.peer_addr().and_then(|a| a.as_inet().map(|a| a.ip())));
        let slot = match ip {
            Some(ip) => match self.counts.acquire(ip, max) {
                Some(slot) => Some(slot),
                None => {
                    self.shared.metrics.connections_closed.with_label_values(&["too_many_from_client"]).inc();
                    tracing::warn!(client = %ip, max, "connection refused: too many open connections from this address");
                    if !matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
                        let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(TOO_MANY)).await;
                        let _ = tokio::time::timeout(Duration::from_secs(1), stream.flush()).await;
                    }
                    Shutdown::shutdown(stream.as_mut()).await;
                    return None;
                }
            },
            None => None,
        };
        let timeouts = self.shared.metrics.connections_closed.with_label_values(&["header_timeout"]);
        let guarded: Stream = Box::new(GuardedStream::new(stream, slot, limits, timeouts));
        ServerApp::process_new(&self.http, guarded, shutdown).await
    }

    async fn cleanup(&self) {
        self.http.http_cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_holds_at_most_its_cap_and_dropping_frees_a_slot() {
        let counts = Arc::new(ClientCounts::default());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let held: Vec<Slot> = (0..3).map(|_| counts.acquire(a, 3).expect("under the cap")).collect();
        assert!(counts.acquire(a, 3).is_none(), "a fourth from the same address is refused");
        assert!(counts.acquire(b, 3).is_some(), "another address has its own count");
        assert_eq!(counts.open_from(a), 3);
        drop(held);
        assert_eq!(counts.open_from(a), 0);
        assert!(counts.open.lock().unwrap().is_empty(), "no entry left for addresses with nothing open");
    }

    fn judged(reads: &[&[u8]]) -> Option<bool> {
        let mut line = Some(LineCheck::default());
        reads.iter().find_map(|read| feed_line(&mut line, read))
    }

    #[test]
    fn raw_spaces_and_control_bytes_in_a_request_line_are_seen() {
        let cases: &[(&[&[u8]], Option<bool>)] = &[
            (&[b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"], Some(false)),
            (&[b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n"], Some(true)),
            (&[b"GET /a b HTTP/1.0\n\n"], Some(true)),
            (&[b"GET /a\tb HTTP/1.1\r\n"], Some(true)),
            (&[b"GET /a\x7fb HTTP/1.1\r\n"], Some(true)),
            // Split over reads, blank lines first.
            (&[b"\r\n", b"GET /a ", b"b HTT", b"P/1.1\r", b"\n"], Some(true)),
            (&[b"\r\nGET /a", b" HTTP/1.1\r\n"], Some(false)),
            // Not a request line (the middle of a head): not judged bad.
            (&[b"User-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n"], Some(false)),
            (&[b"GET /a b"], None),
        ];
        for (reads, want) in cases {
            assert_eq!(judged(reads), *want, "{reads:?}");
        }
    }
}
