//! Gateway API hostname semantics, shared by the controller (status, attachment) and the proxy
//! (routing), so both sides agree on what a wildcard covers.

/// Whether `pattern` (`foo.com` or `*.foo.com`) covers the concrete `host`. A wildcard covers one
/// or more labels: `*.foo.com` covers `a.foo.com` and `a.b.foo.com`, not `foo.com`.
pub fn covers(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => host.len() > suffix.len() && ends_with_ignore_case(host, suffix),
        None => pattern.eq_ignore_ascii_case(host),
    }
}

fn ends_with_ignore_case(s: &str, suffix: &str) -> bool {
    s.len() >= suffix.len()
        && s.as_bytes()[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

/// The hostnames a route serves on a listener: the intersection of the listener's hostname
/// (None = any) with the route's hostnames (empty = any). `None` means no hostname intersects,
/// so the route does not attach; `Some(vec![])` means any hostname.
pub fn intersect(listener: Option<&str>, route: &[String]) -> Option<Vec<String>> {
    let Some(l) = listener else {
        return Some(route.to_vec());
    };
    if route.is_empty() {
        return Some(vec![l.to_string()]);
    }
    let mut out = Vec::new();
    for r in route {
        if covers(l, r) || l.eq_ignore_ascii_case(r) {
            out.push(r.clone());
        } else if covers(r, l) {
            out.push(l.to_string());
        } else if let (Some(ls), Some(rs)) = (l.strip_prefix("*."), r.strip_prefix("*."))
            && (covers(&format!("*.{ls}"), rs) || covers(&format!("*.{rs}"), ls))
        {
            // Two wildcards: the narrower one is the intersection.
            out.push(if ls.len() >= rs.len() {
                l.to_string()
            } else {
                r.clone()
            });
        }
    }
    out.dedup();
    if out.is_empty() { None } else { Some(out) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_covers_one_or_more_labels() {
        assert!(covers("*.example.com", "foo.example.com"));
        assert!(covers("*.example.com", "a.b.example.com"));
        assert!(!covers("*.example.com", "example.com"));
        assert!(!covers("*.example.com", "fooexample.com"));
        assert!(covers("Example.com", "example.COM"));
        assert!(!covers("example.com", "foo.example.com"));
    }

    #[test]
    fn intersection_follows_the_spec_examples() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(intersect(None, &s(&["a.com"])), Some(s(&["a.com"])));
        assert_eq!(intersect(Some("a.com"), &[]), Some(s(&["a.com"])));
        assert_eq!(
            intersect(Some("*.example.com"), &s(&["foo.example.com", "other.org"])),
            Some(s(&["foo.example.com"]))
        );
        assert_eq!(
            intersect(Some("foo.example.com"), &s(&["*.example.com"])),
            Some(s(&["foo.example.com"]))
        );
        assert_eq!(
            intersect(Some("*.example.com"), &s(&["*.foo.example.com"])),
            Some(s(&["*.foo.example.com"]))
        );
        assert_eq!(
            intersect(Some("*.foo.example.com"), &s(&["*.example.com"])),
            Some(s(&["*.foo.example.com"]))
        );
        assert_eq!(intersect(Some("a.com"), &s(&["b.com"])), None);
        assert_eq!(intersect(Some("*.a.com"), &s(&["*.b.com"])), None);
    }
}
