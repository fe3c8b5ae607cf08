//! TLS at the edge (HTTP/1.1 and HTTP/2 by ALPN, a certificate swapped on disk) and to upstreams
//! (verification, SNI, HTTP/2 with trailers end to end), with certificates made here by rcgen.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pingora::tls::{CertificateDer, RootCertStore, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{TestProxy, Upstream, config_text, eventually};

/// A certificate authority made for one test.
struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A leaf certificate for `names` (DNS names or IP addresses) and its key, as PEM; `expired`
    /// makes one whose validity ended in 2021.
    fn issue(&self, names: &[&str], expired: bool) -> (String, String) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, names[0]);
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        roots
    }
}

/// Writes `text` to `dir/name` and returns the path.
fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// An HTTPS client trusting only `ca_pem`, with `localhost` pinned to `addr`.
fn https_client(ca_pem: &str, addr: SocketAddr, http1_only: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .resolve("localhost", addr)
        .timeout(Duration::from_secs(10));
    if http1_only {
        b = b.http1_only();
    }
    b.build().unwrap()
}

/// A proxy with a TLS listener serving `cert`/`key`, in front of a monolith and a catalog.
async fn https_proxy(cert: &Path, key: &Path) -> (TestProxy, Upstream, Upstream) {
    let mono = Upstream::start("monolith").await;
    let svc = Upstream::start("catalog").await;
    let routes = "[[routes]]\nname = \"catalog\"\npath = \"/api/products/{*rest}\"\nupstream = \"catalog\"\nstage = \"service\"\n";
    let listen = format!(
        "[listen]\nhttps = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let text = config_text(&[("monolith", mono.addr), ("catalog", svc.addr)], routes).replace("[listen]\n", &listen);
    (TestProxy::start(&text).await, mono, svc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_at_the_edge_speaks_http1_and_http2_and_serves_a_swapped_certificate_on_the_next_connection() {
    let files = tempfile::tempdir().unwrap();
    let first = Ca::new("first CA");
    let (cert_pem, key_pem) = first.issue(&["localhost", "127.0.0.1"], false);
    let cert = write(files.path(), "cert.pem", &cert_pem);
    let key = write(files.path(), "key.pem", &key_pem);
    let (p, _mono, _svc) = https_proxy(&cert, &key).await;
    let addr = p.proxy.as_ref().unwrap().https_addr().expect("a TLS listener");

    for (http1_only, version) in [(true, reqwest::Version::HTTP_11), (false, reqwest::Version::HTTP_2)] {
        let client = https_client(&first.pem(), addr, http1_only);
        let resp = client.get(format!("https://localhost:{}/api/products/1", addr.port())).send().await.unwrap();
        assert_eq!((resp.status().as_u16(), resp.version()), (200, version));
        assert_eq!(resp.headers()["x-ficus-upstream"], "catalog");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["headers"]["x-forwarded-proto"], "https", "{body}");
    }
    // Plain HTTP keeps working beside it.
    assert_eq!(p.get("/api/products/1", &[]).await.0, 200);

    // A connection opened before the swap, kept alive through it.
    let kept = https_client(&first.pem(), addr, true);
    let url = format!("https://localhost:{}/api/orders", addr.port());
    assert_eq!(kept.get(&url).send().await.unwrap().status(), 200);

    // Swap the files for a certificate from another CA.
    let second = Ca::new("second CA");
    let (cert_pem, key_pem) = second.issue(&["localhost"], false);
    write(files.path(), "cert.pem", &cert_pem);
    write(files.path(), "key.pem", &key_pem);
    let served = eventually(Duration::from_secs(10), || async {
        let fresh = https_client(&second.pem(), addr, false);
        fresh.get(&url).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(served, "the new certificate is served on a new connection within 10 s");
    // A new connection trusting only the first CA is refused now ...
    assert!(https_client(&first.pem(), addr, true).get(&url).send().await.is_err());
    // ... while the connection opened before the swap was not dropped.
    assert_eq!(kept.get(&url).send().await.unwrap().status(), 200, "the open connection lives on");

    // A pair that does not load is refused; the last good certificate stays.
    write(files.path(), "cert.pem", "not a certificate");
    let refused = eventually(Duration::from_secs(10), || async {
        let metrics = p.admin(reqwest::Method::GET, "/metrics", None, Some(crate::support::TOKEN)).await.1;
        metrics.as_str().unwrap_or_default().contains("ficus_tls_reloads_total{result=\"error\"} 1")
    })
    .await;
    assert!(refused, "the bad pair is refused (and counted)");
    let fresh = https_client(&second.pem(), addr, false);
    assert_eq!(fresh.get(&url).send().await.unwrap().status(), 200, "the last good certificate is served");
}

/// A TLS upstream on port 0 answering HTTP/1.1 and HTTP/2 (by ALPN) with JSON that names it, the
/// protocol and the SNI, and keeping the SNI of every handshake; a gRPC request (`content-type: application/grpc`) is answered with
/// trailers, as gRPC does.
async fn tls_upstream(name: &'static str, cert_pem: &str, key_pem: &str) -> TlsUpstream {
    pingora::tls::install_default_crypto_provider();
    let certs: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut cert_pem.as_bytes()).collect::<Result<_, _>>().unwrap();
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes()).unwrap().unwrap();
    let mut config = pingora::tls::ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key).unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = pingora::tls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let snis = Arc::new(std::sync::Mutex::new(Vec::new()));
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (kept, count) = (snis.clone(), accepted.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (acceptor, kept) = (acceptor.clone(), kept.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let (_, conn) = tls.get_ref();
                let sni = conn.server_name().map(str::to_owned);
                let alpn = conn.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned());
                kept.lock().unwrap().push(sni.clone());
                let about = json!({"upstream": name, "sni": sni, "alpn": alpn});
                if alpn.as_deref() == Some("h2") {
                    serve_h2(tls, about).await;
                } else {
                    serve_h1(tls, about).await;
                }
            });
        }
    });
    TlsUpstream { addr, snis, accepted }
}

/// A running [`tls_upstream`].
struct TlsUpstream {
    addr: SocketAddr,
    /// The SNI of every completed handshake.
    snis: Arc<std::sync::Mutex<Vec<Option<String>>>>,
    /// TCP connections accepted (a refused handshake included).
    accepted: Arc<std::sync::atomic::AtomicUsize>,
}

async fn serve_h1<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut s: S, about: Value) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = about.to_string();
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(head.as_bytes()).await;
    let _ = s.write_all(body.as_bytes()).await;
    let _ = s.shutdown().await;
}

async fn serve_h2<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(s: S, about: Value) {
    let Ok(mut conn) = h2::server::handshake(s).await else { return };
    while let Some(Ok((req, mut respond))) = conn.accept().await {
        let about = about.clone();
        tokio::spawn(async move {
            let grpc = req.headers().get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
            let mut body = req.into_body();
            let mut received = Vec::new();
            while let Some(Ok(data)) = body.data().await {
                let _ = body.flow_control().release_capacity(data.len());
                received.extend_from_slice(&data);
            }
            let kind = if grpc { "application/grpc" } else { "application/json" };
            let resp = http::Response::builder().status(200).header("content-type", kind).body(()).unwrap();
            let Ok(mut send) = respond.send_response(resp, false) else { return };
            let out = json!({"about": about, "received": received.len()}).to_string();
            let _ = send.send_data(Bytes::from(out), !grpc);
            if grpc {
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                trailers.insert("grpc-message", http::HeaderValue::from_static("ok"));
                let _ = send.send_trailers(trailers);
            }
        });
    }
}

/// A proxy whose `catalog` upstream is `upstream_toml` (the table's body), route in stage service.
async fn proxy_to(upstream_toml: &str, extra_listen: &str) -> (TestProxy, Upstream) {
    let mono = Upstream::start("monolith").await;
    let routes = "[[routes]]\nname = \"catalog\"\npath = \"/api/products/{*rest}\"\nupstream = \"catalog\"\nstage = \"service\"\n";
    let text = config_text(&[("monolith", mono.addr)], routes)
        .replace(
            "# where unmatched requests go\n",
            &format!("[upstreams.catalog]\n{upstream_toml}\n\n# where unmatched requests go\n"),
        )
        .replace("[listen]\n", &format!("[listen]\n{extra_listen}"));
    (TestProxy::start(&text).await, mono)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_over_tls_is_verified_by_name_and_speaks_http2() {
    let files = tempfile::tempdir().unwrap();
    let ca = Ca::new("upstream CA");
    let ca_file = write(files.path(), "ca.pem", &ca.pem());
    let (cert, key) = ca.issue(&["catalog.internal"], false);
    let up = tls_upstream("catalog", &cert, &key).await;
    let toml = format!(
        "addrs = [\"https://{}\"]\nsni = \"catalog.internal\"\nca_file = \"{}\"\nconnect_timeout_ms = 2000",
        up.addr,
        ca_file.display()
    );
    let (p, _mono) = proxy_to(&toml, "").await;
    let (status, upstream, body) = p.get("/api/products/1", &[]).await;
    assert_eq!((status, upstream.as_deref()), (200, Some("catalog")), "{body}");
    assert_eq!(body["about"]["sni"], "catalog.internal", "SNI is sent: {body}");
    assert_eq!(body["about"]["alpn"], "h2", "HTTP/2 is used when the upstream offers it: {body}");
    assert!(up.snis.lock().unwrap().iter().all(|sni| sni.as_deref() == Some("catalog.internal")));

    // With h2 = false the proxy offers HTTP/1.1 only.
    let (p, _mono) = proxy_to(&format!("{toml}\nh2 = false"), "").await;
    let (status, _, body) = p.get("/api/products/1", &[]).await;
    assert_eq!((status, body["alpn"].as_str()), (200, Some("http/1.1")), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_wrong_name_or_untrusted_upstream_certificate_is_refused() {
    let files = tempfile::tempdir().unwrap();
    let ca = Ca::new("upstream CA");
    let ca_file = write(files.path(), "ca.pem", &ca.pem());
    let other_ca = Ca::new("someone else's CA");
    let cases = [
        ("wrong name", ca.issue(&["elsewhere.example"], false), Some(&ca_file)),
        ("expired", ca.issue(&["catalog.internal"], true), Some(&ca_file)),
        ("untrusted CA (the system's roots)", other_ca.issue(&["catalog.internal"], false), None),
    ];
    for (why, (cert, key), ca_file) in cases {
        let up = tls_upstream("catalog", &cert, &key).await;
        let ca_line = ca_file.map(|f| format!("\nca_file = \"{}\"", f.display())).unwrap_or_default();
        let toml = format!(
            "addrs = [\"https://{}\"]\nsni = \"catalog.internal\"{ca_line}\nconnect_timeout_ms = 2000",
            up.addr
        );
        let (p, _mono) = proxy_to(&toml, "").await;
        let (status, upstream, body) = p.get("/api/products/1", &[]).await;
        assert_eq!((status, upstream.as_deref()), (502, Some("catalog")), "{why}: {body}");
        // The upstream was reached, and no handshake completed: refused on its certificate.
        assert!(up.accepted.load(std::sync::atomic::Ordering::Relaxed) > 0, "{why}: the upstream was reached");
        assert!(up.snis.lock().unwrap().is_empty(), "{why}: no handshake completed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_passes_through_over_http2_with_its_trailers() {
    let files = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let ca_file = write(files.path(), "ca.pem", &ca.pem());
    let (up_cert, up_key) = ca.issue(&["catalog.internal"], false);
    let up = tls_upstream("catalog", &up_cert, &up_key).await;
    let (edge_cert, edge_key) = ca.issue(&["localhost"], false);
    let cert = write(files.path(), "cert.pem", &edge_cert);
    let key = write(files.path(), "key.pem", &edge_key);
    let toml =
        format!("addrs = [\"https://{}\"]\nsni = \"catalog.internal\"\nca_file = \"{}\"", up.addr, ca_file.display());
    let listen =
        format!("https = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n", cert.display(), key.display());
    let (p, _mono) = proxy_to(&toml, &listen).await;
    let edge = p.proxy.as_ref().unwrap().https_addr().unwrap();

    // An HTTP/2 client, as a gRPC client is.
    let mut config = pingora::tls::ClientConfig::builder().with_root_certificates(ca.roots()).with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = pingora::tls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(edge).await.unwrap();
    let tls = connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    let (mut client, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method("POST")
        .uri("https://localhost/api/products/grpc.Catalog/Get")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (resp, mut stream) = client.send_request(req, false).unwrap();
    stream.send_data(Bytes::from_static(b"\0\0\0\0\x05hello"), true).unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/grpc");
    let mut body = resp.into_body();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let answer: Value = serde_json::from_slice(&data).unwrap();
    assert_eq!((answer["about"]["alpn"].as_str(), answer["received"].as_u64()), (Some("h2"), Some(10)), "{answer}");
    let trailers = body.trailers().await.unwrap().expect("trailers reach the client");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "ok");
}
