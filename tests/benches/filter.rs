//! What one light Proxy-Wasm filter costs a request: binding the stream to a
//! VM, request and response header callbacks (the filter reads two headers and
//! adds one), and on_log/on_done/on_delete — against the same request with
//! an empty chain; what the rate-limit built-in costs a request with a
//! limit on this node (one key in shared data, updated with compare-and-swap);
//! and what starting a VM costs (instantiation, start-up, `on_vm_start`,
//! `on_configure`) with the module already compiled.
//! Run with `cargo bench -p weir-tests --bench filter`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue};
use weir::exchange::{RequestHead, ResponseHead, StreamInfo};
use weir::filters::ProxyWasmFilter;
use weir::lifecycle::{Chain, Direction, FailMode, HttpFilter, Step};
use weir::wasm::{FilterInstance, FilterSettings, PluginLimits, Runtime};

fn request_head() -> RequestHead {
    let mut headers = HeaderMap::new();
    headers.insert("user-agent", HeaderValue::from_static("bench/1.0"));
    headers.insert("accept", HeaderValue::from_static("*/*"));
    headers.insert("x-request-id", HeaderValue::from_static("bench"));
    RequestHead {
        method: "GET".into(),
        path: "/v1/users/7".into(),
        authority: "api.example.com".into(),
        scheme: "http".into(),
        headers,
    }
}

fn info() -> Arc<StreamInfo> {
    Arc::new(StreamInfo {
        route_name: "bench".into(),
        upstream_name: Some("users".into()),
        upstream_hosts: Arc::from(["127.0.0.1:8080".to_owned()]),
        request_id: "bench".into(),
        source: "127.0.0.1:40000".parse().expect("address"),
        destination: None,
        tls: false,
        sni: None,
        protocol: "HTTP/1.1",
        start_unix_nanos: 0,
        route_metadata: Default::default(),
        cluster_metadata: None,
    })
}

/// One request's filter work, headers only (the common case for a policy filter).
fn one_request(chain: &Chain, info: &Arc<StreamInfo>) {
    let mut run = chain.start(info.clone(), request_head()).expect("bind");
    let step = run
        .headers(Direction::Request, true, 0)
        .expect("request headers");
    assert!(matches!(step, Step::Continue));
    run.set_response(ResponseHead {
        status: 200,
        headers: HeaderMap::new(),
        details: "via_upstream".into(),
    });
    let step = run
        .headers(Direction::Response, true, 0)
        .expect("response headers");
    assert!(matches!(step, Step::Continue));
    black_box(run.data().map(|d| d.request.headers.len()));
    // Dropping the run calls on_log, on_done and on_delete.
}

/// The filter `light` with `configuration`.
fn settings(configuration: Bytes) -> FilterSettings {
    FilterSettings {
        root_id: "light".into(),
        configuration,
    }
}

fn bench(c: &mut Criterion) {
    let runtime = Runtime::new(None).expect("runtime");
    let wasm = std::fs::read(weir_tests::test_filter_wasm()).expect("test filter built");
    let limits = PluginLimits {
        memory_bytes: 64 << 20,
        callback_deadline: Duration::from_millis(100),
        quotas: weir::services::quota::Quotas::default(),
    };
    let plugin = runtime
        .load("light", "light", &wasm, limits, Bytes::new())
        .expect("load");
    let config = Bytes::from_static(
        br#"{"deny_when_header":"x-deny","copy_request_header":["user-agent","x-ua"]}"#,
    );
    let services = weir::services::Services::standalone();
    let instance = FilterInstance::new(plugin, settings(config), 1, services).expect("start");
    let filter: Arc<dyn HttpFilter> = Arc::new(ProxyWasmFilter::new(instance, FailMode::Closed));
    let info = info();

    let empty = Chain::default();
    let one = Chain::new(vec![filter.clone()]);
    let three = Chain::new(vec![filter.clone(), filter.clone(), filter]);

    let mut group = c.benchmark_group("vm");
    group.bench_function("start_one_vm_with_configure", |b| {
        b.iter(|| {
            let services = weir::services::Services::standalone();
            let plugin = runtime
                .load("light", "light", &wasm, limits, Bytes::new())
                .expect("load (cached module)");
            let config = Bytes::from_static(br#"{"add_request_headers":[["x-filtered","1"]]}"#);
            FilterInstance::new(plugin, settings(config), 1, services).expect("start")
        })
    });
    group.finish();

    // rate-limit on this node, never refusing: one key (route and
    // user-agent), one limit, then two limits of a sliding window.
    let rate_limit = |config: &'static [u8]| -> Chain {
        let wasm = std::fs::read(weir_tests::plugin_wasm("rate-limit")).expect("built-in built");
        let plugin = runtime
            .load("limit", "limit", &wasm, limits, Bytes::new())
            .expect("load");
        let settings = FilterSettings {
            root_id: "limit".into(),
            configuration: Bytes::from_static(config),
        };
        let services = weir::services::Services::standalone();
        let instance = FilterInstance::new(plugin, settings, 1, services).expect("start");
        Chain::new(vec![Arc::new(ProxyWasmFilter::new(
            instance,
            FailMode::Closed,
        ))])
    };
    let gcra = rate_limit(
        br#"{"limits": [{"requests": 1000000000, "per": "1s"}], "key": ["route", "header:user-agent"]}"#,
    );
    let windows = rate_limit(
        br#"{"algorithm": "sliding_window", "limits": [{"requests": 1000000000, "per": "1s"}, {"requests": 1000000000, "per": "1h"}], "key": ["route", "header:user-agent"]}"#,
    );

    let mut group = c.benchmark_group("pipeline");
    group.bench_function("empty", |b| b.iter(|| one_request(&empty, &info)));
    group.bench_function("rate_limit_local_gcra", |b| {
        b.iter(|| one_request(&gcra, &info))
    });
    group.bench_function("rate_limit_local_two_sliding_windows", |b| {
        b.iter(|| one_request(&windows, &info))
    });
    group.bench_function("one_light_filter", |b| b.iter(|| one_request(&one, &info)));
    group.bench_function("three_light_filters", |b| {
        b.iter(|| one_request(&three, &info))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
