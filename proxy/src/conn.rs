//! What the proxy does with a client connection before and around Pingora's HTTP code: the
//! limits that protect it from slow and greedy clients, which Pingora does not have.
//!
//! - **A cap on open connections per client address** (`security.max_connections_per_client`):
//!   one more is answered 503 and closed at once. Counted from the moment Pingora hands over the
//!   connection (after a TLS handshake) until the connection is dropped.
//! - **A deadline for a whole request head** (`security.header_timeout_ms`): Pingora times
//!   each read, so a client sending a byte a second would hold a connection forever. The clock
//!   starts when the connection is accepted, and for later requests on a keep-alive connection
//!   at the first byte of the head (the wait before it is the idle timeout's). The request head
//!   is complete when the proxy's first hook runs ([`mark_head_read`]).
//! - **A raw space in a request target** is noted as it is read, since Pingora's parser
//!   percent-encodes it before any hook could see it; the hook answers 400.
//!
//! How: [`Guard`] is the application Pingora's listening service runs. It wraps each accepted
//! stream in a [`GuardedStream`] (the deadline's clock and the request-line check, and the
//! connection's slot in the per-address count, released on drop), and runs Pingora's HTTP
//! handling on it through [`HttpGuard`], which sees each request on the connection start.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream, ServerApp};
use pingora::protocols::http::ServerSession;
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

// Phases of a connection, as the head deadline sees it.
/// Waiting for (the rest of) a request head: the deadline runs.
const HEAD: u8 = 0;
/// Between requests on a keep-alive connection: the deadline starts at the next byte.
const IDLE: u8 = 1;
/// The head was read: body and response, no deadline.
const BODY: u8 = 2;

/// A client connection with the head deadline and the request-line check (see the module's
/// docs). Everything else is the stream it wraps.
pub struct GuardedStream {
    inner: Stream,
    _slot: Option<Slot>,
    /// [`HEAD`], [`IDLE`] or [`BODY`]; set by the hooks through a shared reference.
    phase: AtomicU8,
    header_timeout: Duration,
    /// When the current head must be complete (in phase [`HEAD`]).
    deadline: tokio::time::Instant,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The request line being read; `None` once its end was seen.
    line: Option<LineCheck>,
    /// A request line with a raw space (or a control byte) in its target was read.
    bad_line: AtomicBool,
    /// An HTTP/2 connection: no head deadline, no request lines.
    h2: bool,
    /// Counts the connections closed by the deadline.
    timeouts: prometheus::IntCounter,
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
    /// Takes in the line's bytes up to (not including) its `\n`.
    fn take(&mut self, bytes: &[u8]) {
        for &b in bytes.iter().filter(|&&b| b != b'\r') {
            self.len += 1;
            self.spaces += usize::from(b == b' ');
            self.control |= b < 0x20 || b == 0x7f;
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
    fn new(
        inner: Stream,
        slot: Option<Slot>,
        header_timeout: Duration,
        timeouts: prometheus::IntCounter,
    ) -> GuardedStream {
        // HTTP/2 multiplexes requests over frames; its heads have no such deadline here.
        let h2 = matches!(inner.selected_alpn_proto(), Some(ALPN::H2));
        GuardedStream {
            inner,
            _slot: slot,
            phase: AtomicU8::new(if h2 { BODY } else { HEAD }),
            header_timeout,
            deadline: tokio::time::Instant::now() + header_timeout,
            timer: None,
            line: (!h2).then(LineCheck::default),
            bad_line: AtomicBool::new(false),
            h2,
            timeouts,
        }
    }

    /// Notes the request line in bytes just read (until its end has been seen).
    fn check_line(&mut self, bytes: &[u8]) {
        if feed_line(&mut self.line, bytes) == Some(true) {
            self.bad_line.store(true, Ordering::Relaxed);
        }
    }

    /// A new request starts on this connection (keep-alive): the next byte starts the clock.
    fn next_request(&self) {
        if !self.h2 && self.phase.load(Ordering::Relaxed) == BODY {
            self.phase.store(IDLE, Ordering::Relaxed);
        }
    }
}

/// The proxy's first hook calls this when the request head has been read: stops the head's
/// clock, and says whether its request line held a raw space (then the answer is 400).
pub fn mark_head_read(session: &pingora::proxy::Session) -> HeadCheck {
    let Some(g) = session.as_ref().stream().and_then(|s| s.as_any().downcast_ref::<GuardedStream>()) else {
        return HeadCheck::Clean;
    };
    g.phase.store(BODY, Ordering::Relaxed);
    if g.bad_line.swap(false, Ordering::Relaxed) { HeadCheck::RawSpaceInTarget } else { HeadCheck::Clean }
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
        let phase = this.phase.load(Ordering::Relaxed);
        if phase == BODY {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        match polled {
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                if phase == IDLE && !read.is_empty() {
                    // The first byte of the next head: its clock starts now, and its request
                    // line is checked (the reads in between were bodies).
                    this.phase.store(HEAD, Ordering::Relaxed);
                    this.deadline = tokio::time::Instant::now() + this.header_timeout;
                    this.timer = None;
                    this.line = Some(LineCheck::default());
                }
                this.check_line(read);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending if phase == IDLE => Poll::Pending,
            Poll::Pending => {
                let deadline = this.deadline;
                let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.timeouts.inc();
                        // Once: the connection is closed after this error.
                        this.deadline = tokio::time::Instant::now() + this.header_timeout;
                        this.timer = None;
                        Poll::Ready(Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "the request head was not complete within security.header_timeout_ms",
                        )))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

use std::future::Future;

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

/// Pingora's HTTP handling, told when each request on a connection starts.
pub struct HttpGuard<A> {
    http: Arc<A>,
    shared: Arc<Shared>,
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> HttpServerApp for HttpGuard<A> {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        if let Some(g) = session.stream().and_then(|s| s.as_any().downcast_ref::<GuardedStream>()) {
            g.next_request();
        }
        // Pingora waits forever for the next request on an HTTP/1.1 keep-alive connection:
        // the idle timeout bounds that wait (and the reads of the head that follows).
        if !*shutdown.borrow() && session.get_keepalive().is_some() {
            session.set_keepalive(Some(self.shared.guard().config.security.idle_timeout.as_secs()));
        }
        self.http.process_new_http(session, shutdown).await
    }

    fn h2_options(&self) -> Option<pingora::protocols::http::v2::server::H2Options> {
        self.http.h2_options()
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.http.server_options()
    }

    async fn http_cleanup(&self) {
        self.http.http_cleanup().await;
    }
}

/// The application Pingora's listening service runs for each accepted connection.
pub struct Guard<A> {
    http: Arc<HttpGuard<A>>,
    counts: Arc<ClientCounts>,
}

impl<A> Guard<A> {
    /// Guards `http` (Pingora's HTTP proxy) with the limits of `shared`'s live config.
    pub fn new(http: A, shared: Arc<Shared>) -> Guard<A> {
        Guard { http: Arc::new(HttpGuard { http: Arc::new(http), shared }), counts: Arc::default() }
    }

    /// The per-address connection counts (for tests and metrics).
    pub fn counts(&self) -> Arc<ClientCounts> {
        self.counts.clone()
    }
}

/// What an over-the-cap connection is told before it is closed.
const TOO_MANY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
content-length: 43\r\nretry-after: 1\r\nconnection: close\r\n\r\ntoo many open connections from your address\n";

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for Guard<A> {
    async fn process_new(self: &Arc<Self>, mut stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let (max, header_timeout) = {
            let rt = self.http.shared.guard();
            (rt.config.security.max_connections_per_client, rt.config.security.header_timeout)
        };
        let ip = stream.get_socket_digest().and_then(|d| d.peer_addr().and_then(|a| a.as_inet().map(|a| a.ip())));
        let slot = match ip {
            Some(ip) => match self.counts.acquire(ip, max) {
                Some(slot) => Some(slot),
                None => {
                    self.http.shared.metrics.connections_closed.with_label_values(&["too_many_from_client"]).inc();
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
        let timeouts = self.http.shared.metrics.connections_closed.with_label_values(&["header_timeout"]);
        let guarded: Stream = Box::new(GuardedStream::new(stream, slot, header_timeout, timeouts));
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
