//! The plain HTTP/1.1 path (`h1_proxy`): every body framing comes through whole, upstream
//! connections are reused, a backend closing a pooled connection costs no failed request, and
//! a request it does not serve hands the connection to Pingora without losing a byte.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CONFIG: &str = r#"
[[listeners]]
name = "web"
address = "127.0.0.1"
port = @PORT
protocol = "HTTP"

[backends.origin]
endpoints = ["@ORIGIN"]

[[http_routes]]
name = "plain"
listeners = ["web"]
hostnames = ["plain.test"]

[[http_routes.rules]]
backends = [{ backend = "origin" }]

[[http_routes]]
name = "modified"
listeners = ["web"]
hostnames = ["mod.test"]

[[http_routes.rules]]
filters = [
  { type = "RequestHeaderModifier", set = [{ name = "x-set", value = "by-proxy" }], remove = ["x-drop"] },
  { type = "ResponseHeaderModifier", add = [{ name = "x-resp", value = "added" }] },
]
backends = [{ backend = "origin" }]

[[http_routes]]
name = "rewritten"
listeners = ["web"]
hostnames = ["rewrite.test"]

[[http_routes.rules]]
matches = [{ path = { type = "PathPrefix", value = "/api" } }]
filters = [
  { type = "RequestHeaderModifier", add = [{ name = "x-added", value = "1" }] },
  { type = "URLRewrite", hostname = "upstream.test", path = { type = "ReplacePrefixMatch", value = "/echo" } },
]
backends = [{ backend = "origin" }]

[[http_routes]]
name = "redirect"
listeners = ["web"]
hostnames = ["redirect.test"]

[[http_routes.rules]]
filters = [{ type = "RequestRedirect", hostname = "elsewhere.test", status_code = 301 }]
"#;

/// A scripted HTTP/1.1 origin: the path picks the answer; it counts connections.
struct Origin {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl Origin {
    async fn start() -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_origin(s));
            }
        });
        Origin { addr, connections }
    }
}

/// Reads one request (head and Content-Length body) from `buf`/`s`; `None` at EOF.
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, String, Vec<u8>)> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(n)) = req.parse(buf) {
            let len: usize = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                .unwrap_or(0);
            let chunked = req
                .headers
                .iter()
                .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
            // A chunked body (only small ones here) ends at the first empty last chunk.
            let len = match chunked {
                false => len,
                true => match buf[n..].windows(5).position(|w| w == b"0\r\n\r\n") {
                    Some(p) => p + 5,
                    None => usize::MAX - n,
                },
            };
            if buf.len() >= n + len {
                let method = req.method.unwrap().to_string();
                let path = req.path.unwrap().to_string();
                let head = buf[..n].to_vec();
                let body = buf[n..n + len].to_vec();
                buf.drain(..n + len);
                let mut raw = head;
                raw.extend_from_slice(&body);
                return Some((method, path, raw));
            }
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn serve_origin(mut s: TcpStream) {
    let mut buf = Vec::new();
    while let Some((method, path, raw)) = read_request(&mut s, &mut buf).await {
        let pause = || tokio::time::sleep(Duration::from_millis(5));
        match path.split('?').next().unwrap_or("") {
            "/cl" => {
                let body = if method == "HEAD" { "" } else { "hello" };
                let resp =
                    format!("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Case: Kept\r\n\r\n{body}");
                s.write_all(resp.as_bytes()).await.unwrap();
            }
            "/echo" => {
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", raw.len());
                s.write_all(head.as_bytes()).await.unwrap();
                s.write_all(&raw).await.unwrap();
            }
            "/chunked" => {
                // Split across writes inside the size line, the data and the trailers.
                for part in [
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r",
                    "\nhel",
                    "lo\r\n1",
                    "0;ext=1\r\n0123456789abcdef\r\n0\r\nX-Tr",
                    "ailer: 1\r\n\r\n",
                ] {
                    s.write_all(part.as_bytes()).await.unwrap();
                    pause().await;
                }
            }
            "/big" => {
                let body = vec![b'x'; 1 << 20];
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                s.write_all(head.as_bytes()).await.unwrap();
                for part in body.chunks(64 * 1024) {
                    s.write_all(part).await.unwrap();
                }
            }
            "/no-content" => {
                s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                    .await
                    .unwrap();
            }
            "/early" => {
                s.write_all(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n")
                    .await
                    .unwrap();
                pause().await;
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfinal")
                    .await
                    .unwrap();
            }
            "/until-close" => {
                s.write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil-").await.unwrap();
                pause().await;
                s.write_all(b"close").await.unwrap();
                return;
            }
            "/http10" => {
                // An HTTP/1.0 server: one response per connection.
                s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\n1.0\n")
                    .await
                    .unwrap();
                return;
            }
            "/conn-close" => {
                s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\nX-Kept: yes\r\nContent-Length: 6\r\n\r\nclose\n")
                    .await
                    .unwrap();
                return;
            }
            "/then-close" => {
                // Keep-alive by the headers, yet closed right after: a pooled connection the
                // proxy will find dead.
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await
                    .unwrap();
                return;
            }
            _ => {
                s.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                    .await
                    .unwrap();
            }
        }
    }
}

struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

/// Reads one response to a request of `method` from `buf`/`s`, decoding a chunked body.
async fn read_reply<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
    method: &str,
) -> Option<Reply> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(r) = parse_reply(buf, method) {
            return Some(r);
        }
        let mut chunk = [0u8; 65536];
        let n = tokio::time::timeout_at(deadline, s.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            // Close-delimited body.
            let text = String::from_utf8_lossy(buf).to_string();
            let (head, body) = text.split_once("\r\n\r\n")?;
            let status = head.split(' ').nth(1)?.parse().ok()?;
            let r = Reply {
                status,
                head: head.to_string(),
                body: body.as_bytes().to_vec(),
            };
            buf.clear();
            return Some(r);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn parse_reply(buf: &mut Vec<u8>, method: &str) -> Option<Reply> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return None,
    };
    let status = resp.code.unwrap();
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).to_string())
    };
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    if (100..200).contains(&status) || status == 204 || method == "HEAD" {
        buf.drain(..n);
        return Some(Reply {
            status,
            head,
            body: Vec::new(),
        });
    }
    if let Some(len) = header("content-length") {
        let len: usize = len.parse().unwrap();
        if buf.len() < n + len {
            return None;
        }
        let body = buf[n..n + len].to_vec();
        buf.drain(..n + len);
        return Some(Reply { status, head, body });
    }
    if header("transfer-encoding").is_some() {
        let mut body = Vec::new();
        let mut at = n;
        loop {
            let rest = &buf[at..];
            let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
            let line = std::str::from_utf8(&rest[..line_end]).unwrap();
            let size = usize::from_str_radix(line.split(';').next().unwrap(), 16).unwrap();
            at += line_end + 2;
            if size == 0 {
                let rest = &buf[at..];
                let end = rest
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .map(|p| p + 4);
                let end = if rest.starts_with(b"\r\n") {
                    Some(2)
                } else {
                    end
                }?;
                buf.drain(..at + end);
                return Some(Reply { status, head, body });
            }
            if buf.len() < at + size + 2 {
                return None;
            }
            body.extend_from_slice(&buf[at..at + size]);
            at += size + 2;
        }
    }
    None
}

async fn setup() -> (Origin, Proxy, SocketAddr) {
    let origin = Origin::start().await;
    let port = free_port();
    let body = fill(
        CONFIG,
        &[
            ("@PORT", port.to_string()),
            ("@ORIGIN", origin.addr.to_string()),
        ],
    );
    let proxy = Proxy::start(&body, &[port]).await;
    (origin, proxy, addr(port))
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
    method: &str,
    req: &str,
) -> Reply {
    s.write_all(req.as_bytes()).await.unwrap();
    read_reply(s, buf, method)
        .await
        .unwrap_or_else(|| panic!("no reply to {req:?}"))
}

fn get(host: &str, path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_body_framing_comes_through_whole_on_one_connection() {
    let (origin, mut proxy, at) = setup().await;
    let mut s = TcpStream::connect(at).await.unwrap();
    let mut buf = Vec::new();

    let r = exchange(&mut s, &mut buf, "GET", &get("plain.test", "/cl")).await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
    assert!(
        r.head.contains("X-Case: Kept"),
        "header case kept: {}",
        r.head
    );

    let r = exchange(
        &mut s,
        &mut buf,
        "HEAD",
        "HEAD /cl HTTP/1.1\r\nHost: plain.test\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.head.contains("Content-Length: 5"));

    let r = exchange(&mut s, &mut buf, "GET", &get("plain.test", "/chunked")).await;
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"hello0123456789abcdef"[..])
    );

    let r = exchange(&mut s, &mut buf, "GET", &get("plain.test", "/big")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 1 << 20);
    assert!(r.body.iter().all(|&b| b == b'x'));

    let r = exchange(&mut s, &mut buf, "GET", &get("plain.test", "/no-content")).await;
    assert_eq!(r.status, 204);

    s.write_all(get("plain.test", "/early").as_bytes())
        .await
        .unwrap();
    let interim = read_reply(&mut s, &mut buf, "GET").await.unwrap();
    assert_eq!(interim.status, 103);
    assert!(interim.head.contains("Link: </s.css>"));
    let r = read_reply(&mut s, &mut buf, "GET").await.unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"final"[..]));

    // A body with a Content-Length goes up as it came.
    let post = "POST /echo HTTP/1.1\r\nHost: plain.test\r\nContent-Length: 11\r\n\r\nhello world";
    let r = exchange(&mut s, &mut buf, "POST", post).await;
    assert_eq!(r.status, 200);
    assert_eq!(String::from_utf8_lossy(&r.body), post);

    // Ten more on the same connection: the upstream connection is reused throughout.
    for _ in 0..10 {
        let r = exchange(&mut s, &mut buf, "GET", &get("plain.test", "/cl")).await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(origin.connections.load(Ordering::SeqCst), 1);

    // A close-delimited body ends both connections.
    let r = exchange(&mut s, &mut buf, "GET", &get("plain.test", "/until-close")).await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"until-close"[..]));
    let mut rest = [0u8; 16];
    assert_eq!(
        s.read(&mut rest).await.unwrap(),
        0,
        "client connection closed"
    );
    proxy.assert_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_closing_pooled_connections_costs_no_failed_request() {
    let (origin, mut proxy, at) = setup().await;
    let mut s = TcpStream::connect(at).await.unwrap();
    let mut buf = Vec::new();
    for i in 0..30 {
        let r = exchange(&mut s, &mut buf, "GET", &get("plain.test", "/then-close")).await;
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, &b"ok"[..]),
            "request {i}"
        );
        if i % 3 == 0 {
            // Give the close time to arrive before the next request, sometimes.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(origin.connections.load(Ordering::SeqCst), 30);
    assert_eq!(
        proxy
            .metric("citoroute_upstream_errors_total", &[("backend", "origin")])
            .await,
        0.0
    );
    proxy.assert_alive();
}

/// A backend that ends its connection after each response (HTTP/1.0, or `Connection: close`)
/// with a framed body does not end the client's: the head goes on as HTTP/1.1 keep-alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closing_backend_does_not_close_the_client_connection() {
    let (origin, mut proxy, at) = setup().await;
    let mut s = TcpStream::connect(at).await.unwrap();
    let mut buf = Vec::new();
    for _ in 0..3 {
        let r = exchange(&mut s, &mut buf, "GET", &get("plain.test", "/http10")).await;
        assert_eq!((r.status, r.body.as_slice()), (200, &b"1.0\n"[..]));
        assert!(r.head.starts_with("HTTP/1.1 200 OK\r\n"), "{}", r.head);
        let r = exchange(&mut s, &mut buf, "GET", &get("plain.test", "/conn-close")).await;
        assert_eq!((r.status, r.body.as_slice()), (200, &b"close\n"[..]));
        assert!(r.head.contains("X-Kept: yes"), "{}", r.head);
        assert!(!r.head.to_lowercase().contains("connection"), "{}", r.head);
    }
    // Six responses on one client connection, six backend connections.
    assert_eq!(origin.connections.load(Ordering::SeqCst), 6);
    proxy.assert_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_modifiers_edit_the_forwarded_heads() {
    let (_origin, _proxy, at) = setup().await;
    let mut s = TcpStream::connect(at).await.unwrap();
    let mut buf = Vec::new();
    let req = "GET /echo HTTP/1.1\r\nHost: mod.test\r\nX-Drop: 1\r\nX-Set: client\r\nX-Other: Mixed-Case\r\n\r\n";
    let r = exchange(&mut s, &mut buf, "GET", req).await;
    assert_eq!(r.status, 200);
    let seen = String::from_utf8_lossy(&r.body).to_lowercase();
    assert!(seen.contains("x-set: by-proxy\r\n"), "{seen}");
    assert!(!seen.contains("x-set: client"), "{seen}");
    assert!(!seen.contains("x-drop"), "{seen}");
    assert!(seen.contains("x-other: mixed-case\r\n"), "{seen}");
    assert!(
        r.head.to_lowercase().contains("x-resp: added"),
        "{}",
        r.head
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_rewrites_change_the_request_line_and_host() {
    let (_origin, _proxy, at) = setup().await;
    let mut s = TcpStream::connect(at).await.unwrap();
    let mut buf = Vec::new();
    let req = "GET /api?q=1 HTTP/1.1\r\nHost: rewrite.test\r\nX-Client: Kept\r\n\r\n";
    let r = exchange(&mut s, &mut buf, "GET", req).await;
    assert_eq!(r.status, 200);
    let seen = String::from_utf8_lossy(&r.body).to_string();
    assert!(seen.starts_with("GET /echo?q=1 HTTP/1.1\r\n"), "{seen}");
    assert!(seen.contains("host: upstream.test\r\n"), "{seen}");
    assert!(!seen.contains("rewrite.test"), "{seen}");
    assert!(
        seen.contains("X-Client: Kept\r\n") && seen.contains("x-added: 1\r\n"),
        "{seen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_and_handed_off_requests_are_answered_in_order() {
    let (_origin, mut proxy, at) = setup().await;
    let mut s = TcpStream::connect(at).await.unwrap();
    let mut buf = Vec::new();
    // Three plain requests in one write are answered in order.
    let script = [
        get("plain.test", "/cl"),
        "POST /echo HTTP/1.1\r\nHost: plain.test\r\nContent-Length: 3\r\n\r\nabc".to_string(),
        get("plain.test", "/no-content"),
    ]
    .concat();
    s.write_all(script.as_bytes()).await.unwrap();
    let mut statuses = Vec::new();
    for method in ["GET", "POST", "GET"] {
        statuses.push(read_reply(&mut s, &mut buf, method).await.unwrap().status);
    }
    assert_eq!(statuses, [200, 200, 204]);
    // Then a request Pingora serves (a redirect) takes the connection over, keeping the
    // bytes read so far, and serves what follows on it. (Pingora does not pipeline, so from
    // here on each request waits for its answer.)
    let mut statuses = Vec::new();
    for (method, req) in [
        ("GET", get("redirect.test", "/r")),
        (
            "POST",
            "POST /echo HTTP/1.1\r\nHost: plain.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n".to_string(),
        ),
        ("GET", get("plain.test", "/cl")),
        ("GET", get("unknown.test", "/x")),
    ] {
        statuses.push(exchange(&mut s, &mut buf, method, &req).await.status);
    }
    assert_eq!(statuses, [301, 200, 200, 404]);
    proxy.assert_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_backend_gets_503_and_a_closed_connection() {
    let port = free_port();
    let body = fill(
        CONFIG,
        &[
            ("@PORT", port.to_string()),
            ("@ORIGIN", closed_addr().to_string()),
        ],
    );
    let mut proxy = Proxy::start(&body, &[port]).await;
    let mut s = TcpStream::connect(addr(port)).await.unwrap();
    let mut buf = Vec::new();
    let r = exchange(&mut s, &mut buf, "GET", &get("plain.test", "/cl")).await;
    assert_eq!(r.status, 503);
    let mut rest = [0u8; 16];
    assert_eq!(s.read(&mut rest).await.unwrap_or(0), 0);
    assert_eq!(
        proxy
            .metric(
                "citoroute_upstream_errors_total",
                &[("backend", "origin"), ("kind", "connect")]
            )
            .await,
        1.0,
        "one attempt: the only endpoint"
    );
    proxy.assert_alive();
}

/// Over TLS the plain path serves HTTP/1.1 too; a request it does not take hands the
/// connection to Pingora with the decrypted bytes put back in front.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_h1_is_served_and_handed_off_mid_connection() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let leaf = pki.leaf(dir.path(), "web", "plain.test");
    let port = free_port();
    let body = fill(
        r#"
[[listeners]]
name = "web"
address = "127.0.0.1"
port = @PORT
protocol = "HTTPS"
tls = { certificates = ["web"] }

[certificates.web]
cert_file = "@CERT"
key_file = "@KEY"

[backends.origin]
endpoints = ["@ORIGIN"]

[[http_routes]]
name = "plain"
listeners = ["web"]

[[http_routes.rules]]
backends = [{ backend = "origin" }]
"#,
        &[
            ("@PORT", port.to_string()),
            ("@CERT", leaf.cert_file.display().to_string()),
            ("@KEY", leaf.key_file.display().to_string()),
            ("@ORIGIN", origin.addr.to_string()),
        ],
    );
    let mut proxy = Proxy::start_in(dir, &body, &[port]).await;
    let mut s = tls_connect(addr(port), "plain.test", &pki.root(), &[b"http/1.1"])
        .await
        .unwrap();
    let mut buf = Vec::new();
    for _ in 0..3 {
        let r = exchange(&mut s, &mut buf, "GET", &get("plain.test", "/cl")).await;
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
    }
    let chunked = "POST /echo HTTP/1.1\r\nHost: plain.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    let r = exchange(&mut s, &mut buf, "POST", chunked).await;
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).ends_with("3\r\nabc\r\n0\r\n\r\n"));
    let r = exchange(&mut s, &mut buf, "GET", &get("plain.test", "/chunked")).await;
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"hello0123456789abcdef"[..])
    );
    proxy.assert_alive();
}
