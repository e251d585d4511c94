//! Route matching over real sockets: every match kind, Gateway API precedence, hostname
//! precedence, listener selection on a shared port, and 404.
//!
//! Each rule tags the request with `x-route: <tag>` (a RequestHeaderModifier) and the echo
//! backend reports the tag back, so a response says exactly which rule served it.

#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::Full;

fn rule(tag: &str, matches: &str) -> String {
    format!(
        r#"
[[http_routes.rules]]
matches = [{matches}]
filters = [{{ type = "RequestHeaderModifier", set = [{{ name = "x-route", value = "{tag}" }}] }}]
backends = [{{ backend = "echo" }}]
"#
    )
}

fn route(name: &str, listeners: &str, hostnames: &str, rules: &[String]) -> String {
    format!(
        "\n[[http_routes]]\nname = \"{name}\"\nlisteners = [{listeners}]\nhostnames = [{hostnames}]\n{}",
        rules.concat()
    )
}

fn listener(name: &str, port: u16, hostname: Option<&str>) -> String {
    let host = hostname
        .map(|h| format!("hostname = \"{h}\"\n"))
        .unwrap_or_default();
    format!(
        "\n[[listeners]]\nname = \"{name}\"\naddress = \"127.0.0.1\"\nport = {port}\nprotocol = \"HTTP\"\n{host}"
    )
}

fn echo_backend(b: &Backend) -> String {
    format!("\n[backends.echo]\nendpoints = [\"{}\"]\n", b.addr)
}

/// Sends one request and returns (status, tag of the rule that served it).
async fn tag(
    port: u16,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Option<String>) {
    let mut b = h1_req(method, host, path);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    let r = h1_send(addr(port), b.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap_or_else(|e| panic!("{method} {host}{path}: {e}"));
    let t = if r.status == 200 {
        Some(
            r.seen_header("x-route")
                .unwrap_or_else(|| panic!("no x-route tag: {}", r.text())),
        )
    } else {
        None
    };
    (r.status, t)
}

/// (method, host, path, headers, tag of the rule that must serve it; `None` for 404).
type Case<'a> = (
    &'a str,
    &'a str,
    &'a str,
    &'a [(&'a str, &'a str)],
    Option<&'a str>,
);

/// Checks every case, then fails once listing all mismatches.
async fn check_cases(port: u16, cases: &[Case<'_>]) {
    let mut wrong = Vec::new();
    for (method, host, path, headers, want) in cases {
        let got = tag(port, method, host, path, headers).await;
        let ok = match want {
            Some(t) => got == (200, Some(t.to_string())),
            None => got.0 == 404,
        };
        if !ok {
            wrong.push(format!(
                "{method} {host}{path} {headers:?}: want {want:?}, got {got:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "mismatches:\n{}", wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_match_kind() {
    let echo = Backend::start("echo", Proto::H1).await;
    let port = free_port();
    let rules = [
        rule(
            "exact",
            r#"{ path = { type = "Exact", value = "/exact" } }"#,
        ),
        // The trailing slash of a prefix is ignored.
        rule(
            "prefix",
            r#"{ path = { type = "PathPrefix", value = "/foo/" } }"#,
        ),
        rule(
            "regex",
            r#"{ path = { type = "RegularExpression", value = "/re/[0-9]+" } }"#,
        ),
        rule(
            "hdr-exact",
            r#"{ path = { type = "Exact", value = "/hdr" }, headers = [{ name = "X-Env", value = "canary" }] }"#,
        ),
        rule(
            "hdr-re",
            r#"{ path = { type = "Exact", value = "/hdr-re" }, headers = [{ type = "RegularExpression", name = "x-ver", value = "v[0-9]+" }] }"#,
        ),
        rule(
            "q-exact",
            r#"{ path = { type = "Exact", value = "/q" }, query = [{ name = "mode", value = "fast" }] }"#,
        ),
        rule(
            "q-re",
            r#"{ path = { type = "Exact", value = "/q-re" }, query = [{ type = "RegularExpression", name = "id", value = "[0-9]+" }] }"#,
        ),
        rule(
            "method",
            r#"{ path = { type = "Exact", value = "/m" }, method = "POST" }"#,
        ),
    ];
    let body = format!(
        "{}{}{}",
        listener("web", port, None),
        echo_backend(&echo),
        route("kinds", "\"web\"", "", &rules)
    );
    let _proxy = Proxy::start(&body, &[port]).await;
    let h = "kinds.test";
    check_cases(
        port,
        &[
            ("GET", h, "/exact", &[], Some("exact")),
            ("GET", h, "/exact/", &[], None),
            ("GET", h, "/exact/x", &[], None),
            ("GET", h, "/exactly", &[], None),
            ("GET", h, "/exact?x=1", &[], Some("exact")),
            ("GET", h, "/foo", &[], Some("prefix")),
            ("GET", h, "/foo/", &[], Some("prefix")),
            ("GET", h, "/foo/bar", &[], Some("prefix")),
            ("GET", h, "/foo/bar/baz?x=1", &[], Some("prefix")),
            ("GET", h, "/foobar", &[], None),
            ("GET", h, "/fo", &[], None),
            ("GET", h, "/re/123", &[], Some("regex")),
            ("GET", h, "/re/abc", &[], None),
            ("GET", h, "/re/123/x", &[], None),
            ("GET", h, "/x/re/1", &[], None),
            ("GET", h, "/hdr", &[("x-env", "canary")], Some("hdr-exact")),
            ("GET", h, "/hdr", &[("X-ENV", "canary")], Some("hdr-exact")),
            ("GET", h, "/hdr", &[("x-env", "Canary")], None),
            ("GET", h, "/hdr", &[("x-env", "prod")], None),
            ("GET", h, "/hdr", &[], None),
            ("GET", h, "/hdr-re", &[("x-ver", "v12")], Some("hdr-re")),
            ("GET", h, "/hdr-re", &[("x-ver", "v12x")], None),
            ("GET", h, "/hdr-re", &[("x-ver", "12")], None),
            ("GET", h, "/q?mode=fast", &[], Some("q-exact")),
            ("GET", h, "/q?a=1&mode=fast", &[], Some("q-exact")),
            ("GET", h, "/q?mode=slow", &[], None),
            ("GET", h, "/q?Mode=fast", &[], None),
            ("GET", h, "/q", &[], None),
            ("GET", h, "/q-re?id=42", &[], Some("q-re")),
            ("GET", h, "/q-re?id=4x", &[], None),
            ("POST", h, "/m", &[], Some("method")),
            ("GET", h, "/m", &[], None),
            ("GET", h, "/nothing-here", &[], None),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn precedence_between_rules_and_routes() {
    let echo = Backend::start("echo", Proto::H1).await;
    let port = free_port();
    let first = [
        rule(
            "prefix-p",
            r#"{ path = { type = "PathPrefix", value = "/p" } }"#,
        ),
        rule(
            "exact-p-x",
            r#"{ path = { type = "Exact", value = "/p/x" } }"#,
        ),
        rule(
            "prefix-p-long",
            r#"{ path = { type = "PathPrefix", value = "/p/long" } }"#,
        ),
        rule(
            "meth-none",
            r#"{ path = { type = "PathPrefix", value = "/meth" } }"#,
        ),
        rule(
            "hdr-one",
            r#"{ path = { type = "PathPrefix", value = "/h" }, headers = [{ name = "a", value = "1" }] }"#,
        ),
        rule(
            "q-one",
            r#"{ path = { type = "PathPrefix", value = "/qq" }, query = [{ name = "a", value = "1" }] }"#,
        ),
        rule(
            "tie-rule-0",
            r#"{ path = { type = "PathPrefix", value = "/tie-rule" } }"#,
        ),
        rule(
            "tie-rule-1",
            r#"{ path = { type = "PathPrefix", value = "/tie-rule" } }"#,
        ),
        rule(
            "tie-route-first",
            r#"{ path = { type = "PathPrefix", value = "/tie-route" } }"#,
        ),
    ];
    // Later in route order: each of these wins only by a precedence rule, never by order.
    let second = [
        rule(
            "meth-get",
            r#"{ path = { type = "PathPrefix", value = "/meth" }, method = "GET" }"#,
        ),
        rule(
            "hdr-two",
            r#"{ path = { type = "PathPrefix", value = "/h" }, headers = [{ name = "a", value = "1" }, { name = "b", value = "2" }] }"#,
        ),
        rule(
            "q-two",
            r#"{ path = { type = "PathPrefix", value = "/qq" }, query = [{ name = "a", value = "1" }, { name = "b", value = "2" }] }"#,
        ),
        rule(
            "tie-route-second",
            r#"{ path = { type = "PathPrefix", value = "/tie-route" } }"#,
        ),
    ];
    let body = format!(
        "{}{}{}{}",
        listener("web", port, None),
        echo_backend(&echo),
        route("first", "\"web\"", "", &first),
        route("second", "\"web\"", "", &second)
    );
    let _proxy = Proxy::start(&body, &[port]).await;
    let h = "prec.test";
    check_cases(
        port,
        &[
            // Exact beats prefix; longer prefix beats shorter, on element boundaries.
            ("GET", h, "/p/x", &[], Some("exact-p-x")),
            ("GET", h, "/p/x/y", &[], Some("prefix-p")),
            ("GET", h, "/p/y", &[], Some("prefix-p")),
            ("GET", h, "/p/long", &[], Some("prefix-p-long")),
            ("GET", h, "/p/long/z", &[], Some("prefix-p-long")),
            ("GET", h, "/p/longer", &[], Some("prefix-p")),
            // A method match beats none.
            ("GET", h, "/meth", &[], Some("meth-get")),
            ("POST", h, "/meth", &[], Some("meth-none")),
            // More header matches beat fewer.
            ("GET", h, "/h", &[("a", "1"), ("b", "2")], Some("hdr-two")),
            ("GET", h, "/h", &[("a", "1")], Some("hdr-one")),
            ("GET", h, "/h", &[("b", "2")], None),
            // More query matches beat fewer.
            ("GET", h, "/qq?a=1&b=2", &[], Some("q-two")),
            ("GET", h, "/qq?b=2&a=1", &[], Some("q-two")),
            ("GET", h, "/qq?a=1", &[], Some("q-one")),
            ("GET", h, "/qq?b=2", &[], None),
            // Ties: the earlier rule, then the earlier route.
            ("GET", h, "/tie-rule", &[], Some("tie-rule-0")),
            ("GET", h, "/tie-route/x", &[], Some("tie-route-first")),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostname_precedence_exact_then_wildcard_then_any() {
    let echo = Backend::start("echo", Proto::H1).await;
    let port = free_port();
    let all = r#"{ path = { type = "PathPrefix", value = "/" } }"#;
    // Route order is the reverse of the expected precedence.
    let body = format!(
        "{}{}{}{}{}{}",
        listener("web", port, None),
        echo_backend(&echo),
        route("any", "\"web\"", "", &[rule("any", all)]),
        route("wild", "\"web\"", "\"*.host.test\"", &[rule("wild", all)]),
        route(
            "deep-wild",
            "\"web\"",
            "\"*.deep.host.test\"",
            &[rule("deep-wild", all)]
        ),
        route(
            "exact",
            "\"web\"",
            "\"a.host.test\", \"a.deep.host.test\"",
            &[rule("exact", all)]
        ),
    );
    let _proxy = Proxy::start(&body, &[port]).await;
    let with_port = format!("a.host.test:{port}");
    check_cases(
        port,
        &[
            ("GET", "a.host.test", "/", &[], Some("exact")),
            ("GET", "A.Host.TEST", "/x", &[], Some("exact")),
            ("GET", &with_port, "/", &[], Some("exact")),
            ("GET", "b.host.test", "/", &[], Some("wild")),
            ("GET", "x.y.host.test", "/", &[], Some("wild")),
            ("GET", "b.deep.host.test", "/", &[], Some("deep-wild")),
            ("GET", "a.deep.host.test", "/", &[], Some("exact")),
            // A wildcard does not cover its apex.
            ("GET", "host.test", "/", &[], Some("any")),
            ("GET", "other.test", "/", &[], Some("any")),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_hostname_selects_listener_on_shared_port_and_404() {
    let echo = Backend::start("echo", Proto::H1).await;
    let shared = free_port();
    let only = free_port();
    let all = r#"{ path = { type = "PathPrefix", value = "/" } }"#;
    let body = format!(
        "{}{}{}{}{}{}{}{}{}",
        // Least specific first, so configuration order cannot explain the result.
        listener("l-any", shared, None),
        listener("l-wild", shared, Some("*.shared.test")),
        listener("l-exact", shared, Some("a.shared.test")),
        listener("l-only", only, Some("only.test")),
        echo_backend(&echo),
        route("r-any", "\"l-any\"", "", &[rule("l-any", all)]),
        route("r-wild", "\"l-wild\"", "", &[rule("l-wild", all)]),
        route("r-exact", "\"l-exact\"", "", &[rule("l-exact", all)]),
        route("r-only", "\"l-only\"", "", &[rule("l-only", all)]),
    );
    let _proxy = Proxy::start(&body, &[shared, only]).await;
    check_cases(
        shared,
        &[
            ("GET", "a.shared.test", "/", &[], Some("l-exact")),
            ("GET", "b.shared.test", "/", &[], Some("l-wild")),
            ("GET", "x.b.shared.test", "/", &[], Some("l-wild")),
            ("GET", "shared.test", "/", &[], Some("l-any")),
            ("GET", "elsewhere.test", "/", &[], Some("l-any")),
        ],
    )
    .await;
    check_cases(
        only,
        &[
            ("GET", "only.test", "/", &[], Some("l-only")),
            ("GET", "only.test", "/deep/path", &[], Some("l-only")),
            ("GET", "other.test", "/", &[], None),
        ],
    )
    .await;
    // The 404 is the proxy's own, not a backend's.
    let r = h1_get(addr(only), "other.test", "/").await.unwrap();
    assert_eq!(r.status, 404);
    assert!(r.header("x-backend").is_none(), "404 came from a backend");
    assert_eq!(
        echo.seen()
            .iter()
            .filter(|s| s["headers"]["host"][0] == "other.test")
            .count(),
        0
    );
}
