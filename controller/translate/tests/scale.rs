//! 5,000 routes on one Gateway translate to a config the proxy loads, in route order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use citoroute_config::ProxyConfig;
use citoroute_translate::*;
use serde_json::json;

#[test]
fn five_thousand_routes() {
    let mut s = Snapshot::default();
    s.gateway_classes.push(
        serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
            "metadata": {"name": "citoroute"},
            "spec": {"controllerName": CONTROLLER_NAME}
        }))
        .unwrap(),
    );
    s.gateways.push(
        serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"namespace": "default", "name": "gw"},
            "spec": {"gatewayClassName": "citoroute", "listeners": [
                {"name": "http", "port": 80, "protocol": "HTTP", "allowedRoutes": {"namespaces": {"from": "All"}}}
            ]}
        }))
        .unwrap(),
    );
    for i in 0..100 {
        s.services.push(
            serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"namespace": format!("ns{}", i % 10), "name": format!("svc{i}")},
                "spec": {"ports": [{"name": "http", "port": 8080}]}
            }))
            .unwrap(),
        );
        s.endpoint_slices.push(
            serde_json::from_value(json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"namespace": format!("ns{}", i % 10), "name": format!("svc{i}-1"),
                             "labels": {"kubernetes.io/service-name": format!("svc{i}")}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080}],
                "endpoints": [{"addresses": [format!("10.0.{}.{}", i / 250, i % 250 + 1)]}]
            }))
            .unwrap(),
        );
    }
    for i in 0..5000 {
        let svc = i % 100;
        s.http_routes.push(
            serde_json::from_value(json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                "metadata": {"namespace": format!("ns{}", svc % 10), "name": format!("r{i:05}"),
                             "creationTimestamp": format!("2026-01-01T{:02}:{:02}:{:02}Z", i / 3600, i / 60 % 60, i % 60)},
                "spec": {
                    "parentRefs": [{"name": "gw", "namespace": "default"}],
                    "hostnames": [format!("h{i}.example.com")],
                    "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": format!("/p{i}")}}],
                               "backendRefs": [{"name": format!("svc{svc}"), "port": 8080}]}]
                }
            }))
            .unwrap(),
        );
    }
    let t = translate(&s);
    let cfg = &t.proxies[&("default".to_string(), "gw".to_string())];
    assert_eq!(cfg.http_routes.len(), 5000);
    assert_eq!(cfg.backends.len(), 100);
    assert_eq!(cfg.http_routes[0].name, "ns0/r00000");
    assert_eq!(cfg.http_routes[4999].name, "ns9/r04999");
    assert_eq!(
        t.gateway_statuses.values().next().unwrap().listeners[0].attached_routes,
        5000
    );
    let text = cfg.to_toml().unwrap();
    assert_eq!(&ProxyConfig::from_toml(&text).unwrap(), cfg);
    // 5,000 routes ship in one ConfigMap: compressed, far under a part's limit.
    let gz = citoroute_config::compress(text.as_bytes());
    println!(
        "5,000 routes: {} bytes of TOML, {} compressed",
        text.len(),
        gz.len()
    );
    assert!(
        gz.len() < citoroute_config::configmap::MAX_PART_BYTES / 2,
        "{}",
        gz.len()
    );
}
