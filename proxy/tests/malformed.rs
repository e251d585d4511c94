//! Malformed HTTP/1.1 over raw TCP: every case gets a 4xx (or the connection closed without a
//! 5xx), and the proxy keeps serving normal requests afterwards.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::time::Duration;

const CONFIG: &str = r#"
[[listeners]]
name = "web"
address = "127.0.0.1"
port = @PORT
protocol = "HTTP"

[backends.echo]
endpoints = ["@ECHO"]

[[http_routes]]
name = "all"
listeners = ["web"]

[[http_routes.rules]]
backends = [{ backend = "echo" }]
"#;

/// How a case must be answered.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// Exactly this status.
    Status(u16),
    /// Some 4xx, or the connection closed without any response.
    RejectedOrClosed,
    /// Some 4xx, or a response below 500 after which the connection is closed (RFC 9112
    /// section 6.3 lets a server process Transfer-Encoding alone if it then closes).
    RejectedOrAnsweredThenClosed,
}

fn cases() -> Vec<(&'static str, Vec<u8>, Want)> {
    let big = "a".repeat(100 * 1024);
    vec![
        (
            "100 KB header",
            format!("GET /big HTTP/1.1\r\nHost: m.test\r\nX-Big: {big}\r\n\r\n").into_bytes(),
            Want::RejectedOrClosed,
        ),
        (
            "missing Host on HTTP/1.1",
            b"GET /nohost HTTP/1.1\r\n\r\n".to_vec(),
            Want::Status(400),
        ),
        (
            "Host with a space and a slash",
            b"GET /badhost HTTP/1.1\r\nHost: bad host/x\r\n\r\n".to_vec(),
            Want::Status(400),
        ),
        (
            "Host with userinfo",
            b"GET /badhost HTTP/1.1\r\nHost: user@m.test\r\n\r\n".to_vec(),
            Want::Status(400),
        ),
        (
            "two Host headers",
            b"GET /twohosts HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n".to_vec(),
            Want::RejectedOrClosed,
        ),
        (
            "invalid chunked body",
            b"POST /chunked HTTP/1.1\r\nHost: m.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
                .to_vec(),
            Want::RejectedOrClosed,
        ),
        (
            "Content-Length and Transfer-Encoding together",
            b"POST /smuggle HTTP/1.1\r\nHost: m.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: m.test\r\n\r\n"
                .to_vec(),
            Want::RejectedOrAnsweredThenClosed,
        ),
        (
            "non-numeric Content-Length",
            b"POST /badlen HTTP/1.1\r\nHost: m.test\r\nContent-Length: abc\r\n\r\nhello".to_vec(),
            Want::RejectedOrClosed,
        ),
        // At least 24 bytes: see `short_requests_get_an_answer`.
        (
            "garbage request line",
            b"THIS IS NOT AN HTTP REQUEST LINE\r\n\r\n".to_vec(),
            Want::RejectedOrClosed,
        ),
        (
            "request line without a version",
            b"GET /no-version-at-all-here\r\nHost: m.test\r\n\r\n".to_vec(),
            Want::RejectedOrClosed,
        ),
        (
            "binary garbage (a TLS hello on the plaintext port)",
            [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]
                .iter()
                .copied()
                .chain(std::iter::repeat_n(0xab, 40))
                .collect(),
            Want::RejectedOrClosed,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_rejected_and_the_proxy_keeps_serving() {
    let echo = Backend::start("echo", Proto::H1).await;
    let port = free_port();
    let body = fill(
        CONFIG,
        &[
            ("@PORT", port.to_string()),
            ("@ECHO", echo.addr.to_string()),
        ],
    );
    let mut proxy = Proxy::start(&body, &[port]).await;

    let mut wrong = Vec::new();
    for (name, bytes, want) in cases() {
        let until_close = matches!(want, Want::RejectedOrAnsweredThenClosed);
        let started = std::time::Instant::now();
        let reply = raw_exchange(addr(port), &bytes, Duration::from_secs(3), !until_close).await;
        println!(
            "{name}: status {:?}, closed {}, after {:?}",
            reply.status,
            reply.closed,
            started.elapsed()
        );
        let ok = match (want, reply.status) {
            (Want::Status(code), Some(got)) => got == code,
            (Want::Status(_), None) => false,
            (Want::RejectedOrClosed, Some(got)) => (400..500).contains(&got),
            (Want::RejectedOrClosed, None) => reply.closed,
            (Want::RejectedOrAnsweredThenClosed, Some(got)) => {
                (400..500).contains(&got) || (got < 500 && reply.closed)
            }
            (Want::RejectedOrAnsweredThenClosed, None) => reply.closed,
        };
        if !ok {
            wrong.push(format!(
                "{name}: want {want:?}, got status {:?} (closed: {}) {:?}",
                reply.status,
                reply.closed,
                String::from_utf8_lossy(&reply.bytes[..reply.bytes.len().min(300)])
            ));
        }
        proxy.assert_alive();
        let r = h1_get(addr(port), "m.test", "/still-ok").await;
        match r {
            Ok(r) if r.status == 200 => {}
            other => wrong.push(format!("after {name}: a normal request got {other:?}")),
        }
    }
    // Nothing smuggled past the proxy.
    let smuggled: Vec<_> = echo
        .seen()
        .into_iter()
        .filter(|s| s["path"] == "/smuggled")
        .collect();
    assert!(
        smuggled.is_empty(),
        "a smuggled request reached the backend"
    );
    // A request framed by Transfer-Encoding must reach the backend without its Content-Length.
    for s in echo.seen().iter().filter(|s| s["path"] == "/smuggle") {
        assert!(
            s["headers"]["content-length"].is_null(),
            "Content-Length forwarded next to Transfer-Encoding: {s}"
        );
    }
    assert!(wrong.is_empty(), "malformed cases:\n{}", wrong.join("\n"));

    proxy.assert_alive();
    let r = h1_get(addr(port), "m.test", "/final").await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path"], "/final");
}

/// Requests shorter than the 24-byte HTTP/2 preface, like `GET / HTTP/1.0` with no headers,
/// must still be answered (or closed) rather than left waiting for bytes that never come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_requests_get_an_answer() {
    let echo = Backend::start("echo", Proto::H1).await;
    let port = free_port();
    let body = fill(
        CONFIG,
        &[
            ("@PORT", port.to_string()),
            ("@ECHO", echo.addr.to_string()),
        ],
    );
    let mut proxy = Proxy::start(&body, &[port]).await;
    let mut wrong = Vec::new();
    for (name, bytes, want_ok) in [
        (
            "GET / HTTP/1.0 (18 bytes)",
            &b"GET / HTTP/1.0\r\n\r\n"[..],
            true,
        ),
        ("short garbage", &b"NOT HTTP\r\n\r\n"[..], false),
    ] {
        let reply = raw_exchange(addr(port), bytes, Duration::from_secs(3), true).await;
        let ok = match reply.status {
            Some(200) => want_ok,
            Some(s) => (400..500).contains(&s) && !want_ok,
            None => reply.closed && !want_ok,
        };
        if !ok {
            wrong.push(format!(
                "{name}: status {:?}, closed {}",
                reply.status, reply.closed
            ));
        }
    }
    proxy.assert_alive();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
