//! Route lookup among 10,000 routes (hosts, prefixes, exact paths, header
//! versions), the path and host normalization every request pays before it,
//! and the Proxy-Wasm header-map encoding that crosses the ABI.
//! Run with `cargo bench -p weir --bench router`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use weir::config::model::{HeaderMatch, HostMatch, PathMatch, RouteId, RouteMatch, ValueMatch};
use weir::normalize::{PathOptions, canonical_host, normalize_path};
use weir::router::{RequestView, Router};

/// 10,000 routes over 100 tenants' hosts: versioned prefixes, exact health
/// paths and header-versioned variants.
fn routes() -> Vec<RouteMatch> {
    let mut routes = Vec::with_capacity(10_000);
    for tenant in 0..100 {
        for service in 0..25 {
            let host = vec![HostMatch::Exact(format!("t{tenant}.api.example.com"))];
            routes.push(RouteMatch {
                hosts: host.clone(),
                path: PathMatch::Prefix(format!("/v1/svc{service}")),
                headers: vec![HeaderMatch {
                    name: http::header::HeaderName::from_static("accept-version"),
                    value: ValueMatch::Exact("2".into()),
                }],
                ..RouteMatch::default()
            });
            routes.push(RouteMatch {
                hosts: host.clone(),
                path: PathMatch::Prefix(format!("/v1/svc{service}")),
                ..RouteMatch::default()
            });
            routes.push(RouteMatch {
                hosts: host.clone(),
                path: PathMatch::Exact(format!("/v1/svc{service}/healthz")),
                methods: vec![Method::GET],
                ..RouteMatch::default()
            });
            routes.push(RouteMatch {
                hosts: vec![HostMatch::Suffix(".example.com".into())],
                path: PathMatch::Prefix(format!("/t{tenant}/svc{service}")),
                ..RouteMatch::default()
            });
        }
    }
    routes
}

fn bench(c: &mut Criterion) {
    let routes = routes();
    let router = Router::new(routes.iter().enumerate().map(|(i, m)| (RouteId(i), m)));
    let mut headers = HeaderMap::new();
    headers.insert("accept-version", HeaderValue::from_static("2"));
    headers.insert("user-agent", HeaderValue::from_static("bench"));
    let get = Method::GET;
    let view = |host: &'static str, path: &'static str| RequestView {
        host: Some(host),
        path,
        query: None,
        method: &get,
        headers: &headers,
    };
    let mut group = c.benchmark_group("router_10k_routes");
    let hit = view("t57.api.example.com", "/v1/svc13/users/42");
    assert!(router.find(&hit).is_some());
    group.bench_function("prefix_with_header", |b| {
        b.iter(|| router.find(black_box(&hit)))
    });
    let wildcard = view("shop.example.com", "/t99/svc24/orders");
    assert!(router.find(&wildcard).is_some());
    group.bench_function("wildcard_host", |b| {
        b.iter(|| router.find(black_box(&wildcard)))
    });
    let miss = view("unknown.test", "/nothing/here");
    assert!(router.find(&miss).is_none());
    group.bench_function("miss", |b| b.iter(|| router.find(black_box(&miss))));
    group.finish();

    let options = PathOptions::default();
    let mut group = c.benchmark_group("normalize");
    group.bench_function("clean_path", |b| {
        b.iter(|| normalize_path(black_box("/v1/svc13/users/42"), &options).map(|p| p.len()))
    });
    group.bench_function("dirty_path", |b| {
        b.iter(|| {
            normalize_path(black_box("/v1/./svc13//%75sers/x/../42"), &options).map(|p| p.len())
        })
    });
    group.bench_function("clean_host", |b| {
        b.iter(|| canonical_host(black_box("t57.api.example.com")).map(|h| h.len()))
    });
    group.bench_function("dirty_host", |b| {
        b.iter(|| canonical_host(black_box("T57.Api.Example.com.:8443")).map(|h| h.len()))
    });
    group.finish();

    let pairs: Vec<(Vec<u8>, Vec<u8>)> = [
        (":method", "GET"),
        (":path", "/v1/users/42?expand=orders"),
        (":authority", "api.example.com"),
        (":scheme", "https"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) bench"),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, br"),
        (
            "authorization",
            "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZGEifQ.sig",
        ),
        ("x-request-id", "0b6d0c4e-8f5e-4b6a-9d0c-2f0e1a3b4c5d"),
        ("x-forwarded-for", "203.0.113.9"),
    ]
    .iter()
    .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
    .collect();
    let encoded = weir::wasm::encode_pairs(pairs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
    let mut group = c.benchmark_group("abi_header_map_10_headers");
    group.bench_function("encode", |b| {
        b.iter(|| {
            weir::wasm::encode_pairs(
                black_box(&pairs)
                    .iter()
                    .map(|(k, v)| (k.as_slice(), v.as_slice())),
            )
        })
    });
    group.bench_function("decode", |b| {
        b.iter(|| weir::wasm::decode_pairs(black_box(&encoded)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
