//! The rate-limit built-in across nodes: two gateways sharing one real
//! `redis-server`, loaded from the test with thousands of requests over
//! several keys; the allowed counts against the limit for each mode and
//! algorithm, the Redis round trips they took, and Redis stopped or hung
//! mid-run for the fail modes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use weir_tests::{EchoUpstream, RedisServer, TestGateway, http1_client, json};

/// The plugin's count of Redis commands it sent, on one node.
const CALLS: &str = r#"weir_plugin_rate_limit_redis_calls{plugin="limit"}"#;

/// A gateway ("node") with two workers, Redis service `cache` (with
/// `timeout`) and rate-limit as plugin `limit` (two VMs per worker) on
/// `routes` (YAML flow sequence of routes using `filters`-ready configs).
async fn node(
    app: &EchoUpstream,
    redis: &RedisServer,
    timeout: &str,
    routes: &str,
) -> anyhow::Result<TestGateway> {
    TestGateway::with_workers(
        &format!(
            r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: app, targets: ["{}"] }}]
redis: [{{ name: cache, url: "redis://{}", timeout: {timeout} }}]
# Limits are under test, not CPU deadlines, which a loaded machine may trip.
plugins: [{{ name: limit, builtin: rate-limit, vms: 2, limits: {{ callback_deadline: 2s }} }}]
routes: {routes}
"#,
            app.addr, redis.addr
        ),
        2,
    )
    .await
}

/// One route, `/`, limited with `config`.
fn one_route(config: &str) -> String {
    format!("[{{ name: r, upstream: app, filters: [{{ plugin: limit, config: {config} }}] }}]")
}

/// One request of a load.
#[derive(Debug, Clone)]
struct Sent {
    /// A worker's first request to a node, opening its connection (its own
    /// key, `connection`): counted as sent, not as part of the load.
    warm: bool,
    path: &'static str,
    key: usize,
    status: u16,
    /// The error code of a JSON error answer.
    code: Option<String>,
    started: Instant,
    took: Duration,
}

/// What a load sends: paths to spread requests over, keys, and when to stop.
struct Load {
    paths: &'static [&'static str],
    /// Keys are `<names>-0`, `<names>-1`, ….
    names: &'static str,
    keys: usize,
    /// Stop after this many requests…
    total: usize,
    /// …or after this long, whichever comes first.
    for_at_most: Option<Duration>,
    concurrency: usize,
}

/// Sends `load` to `nodes` in turn (request i to node i mod n, path and key
/// round-robin too), `concurrency` at a time, each worker on a keep-alive
/// connection of its own, with `x-api-key: <names>-<k>`. The workers open
/// their connections first (one request to each node with a key of their
/// own, not recorded) and start together, so that the load's first
/// requests do not wait for connections.
async fn run(nodes: &[&TestGateway], load: Load) -> anyhow::Result<Vec<Sent>> {
    let bases: Arc<Vec<String>> = Arc::new(nodes.iter().map(|n| n.url("main", "")).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(tokio::sync::Barrier::new(load.concurrency));
    let load = Arc::new(load);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..load.concurrency {
        let (bases, next, load, start) = (bases.clone(), next.clone(), load.clone(), start.clone());
        workers.spawn(async move {
            let client = http1_client();
            let mut sent = Vec::new();
            for base in bases.iter() {
                let path = load.paths[0];
                let started = Instant::now();
                let warm = client
                    .get(format!("{base}{path}"))
                    .header("x-api-key", "connection")
                    .send()
                    .await?;
                sent.push(Sent {
                    warm: true,
                    path,
                    key: usize::MAX,
                    status: warm.status().as_u16(),
                    code: None,
                    started,
                    took: started.elapsed(),
                });
                warm.bytes().await?;
            }
            start.wait().await;
            let until = load.for_at_most.map(|d| Instant::now() + d);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= load.total || until.is_some_and(|t| Instant::now() >= t) {
                    return anyhow::Ok(sent);
                }
                let base = &bases[i % bases.len()];
                let path = load.paths[(i / bases.len()) % load.paths.len()];
                let key = (i / (bases.len() * load.paths.len())) % load.keys;
                let started = Instant::now();
                let response = client
                    .get(format!("{base}{path}"))
                    .header("x-api-key", format!("{}-{key}", load.names))
                    .send()
                    .await?;
                let status = response.status().as_u16();
                let code = if status == 200 {
                    None
                } else {
                    json(response).await?["error"]["code"]
                        .as_str()
                        .map(str::to_owned)
                };
                sent.push(Sent {
                    warm: false,
                    path,
                    key,
                    status,
                    code,
                    started,
                    took: started.elapsed(),
                });
            }
        });
    }
    let mut all = Vec::new();
    while let Some(done) = workers.join_next().await {
        all.extend(done??);
    }
    Ok(all)
}

/// From the first request's start to the last one's end: when the load's
/// decisions were made.
fn window(sent: &[Sent]) -> Duration {
    let load = || sent.iter().filter(|s| !s.warm);
    let first = load().map(|s| s.started).min();
    let last = load().map(|s| s.started + s.took).max();
    match (first, last) {
        (Some(first), Some(last)) => last - first,
        _ => Duration::ZERO,
    }
}

/// Warms both nodes up (their VMs, the script in Redis) with a few requests
/// of a key of their own, then resets Redis's statistics: the measured load
/// starts on a warm gateway.
async fn warm_up(nodes: &[&TestGateway], redis: &RedisServer) -> anyhow::Result<()> {
    let load = Load {
        paths: &["/"],
        names: "warm",
        keys: 1,
        total: 64,
        for_at_most: None,
        concurrency: 16,
    };
    run(nodes, load).await?;
    assert_eq!(redis.command(&["CONFIG", "RESETSTAT"]).await?, "+OK");
    Ok(())
}

/// Round trips Redis counted since its statistics were reset: the script's
/// runs by SHA-1 and in full.
async fn round_trips(redis: &RedisServer) -> anyhow::Result<u64> {
    Ok(redis.command_calls("evalsha").await? + redis.command_calls("eval").await?)
}

/// One measured scenario, as BENCHMARKS.md shows it.
struct Row {
    mode: &'static str,
    algorithm: &'static str,
    limit: String,
    sent: usize,
    allowed: usize,
    expected: f64,
    round_trips: u64,
    seconds: f64,
}

impl Row {
    fn print(&self) {
        let overshoot = (self.allowed as f64 - self.expected) / self.expected * 100.0;
        println!(
            "| {} | {} | {} | {} | {} | {:.0} | {:+.2}% | {:.1} | {:.1} s |",
            self.mode,
            self.algorithm,
            self.limit,
            self.sent,
            self.allowed,
            self.expected,
            overshoot,
            self.round_trips as f64 * 1000.0 / self.sent as f64,
            self.seconds
        );
    }
}

fn print_header() {
    println!(
        "| mode | algorithm | limit (per key) | requests sent | allowed | the limit's most | over (+) / under (−) | Redis round trips per 1,000 requests | run |"
    );
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|");
}

/// Permits a leased node takes at once.
const LEASE: usize = 10;

/// Keys of the accuracy load.
const KEYS: usize = 4;
/// Requests allowed per key in the hour.
const LIMIT: usize = 200;
/// Requests sent per key: four times the limit.
const PER_KEY: usize = 4 * LIMIT;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_hold_one_limit_through_redis_in_both_modes_and_algorithms() -> anyhow::Result<()>
{
    let redis = RedisServer::start().await?;
    let app = EchoUpstream::start("app").await?;
    let mut rows = Vec::new();
    for mode in ["exact", "leased"] {
        for algorithm in ["gcra", "sliding_window"] {
            let lease = if mode == "leased" {
                format!(", lease: {LEASE}")
            } else {
                String::new()
            };
            let config = format!(
                "{{ algorithm: {algorithm}, limits: [{{ requests: {LIMIT}, per: 1h }}], key: header:x-api-key, redis: {{ service: cache, mode: {mode}{lease}, prefix: \"{mode}-{algorithm}:\" }} }}"
            );
            let a = node(&app, &redis, "1s", &one_route(&config)).await?;
            let b = node(&app, &redis, "1s", &one_route(&config)).await?;
            warm_up(&[&a, &b], &redis).await?;
            let counted_before = a.metric(CALLS).unwrap_or(0) + b.metric(CALLS).unwrap_or(0);
            let started = Instant::now();
            let sent = run(
                &[&a, &b],
                Load {
                    paths: &["/"],
                    names: "key",
                    keys: KEYS,
                    total: KEYS * PER_KEY,
                    for_at_most: None,
                    concurrency: 16,
                },
            )
            .await?;
            let seconds = started.elapsed().as_secs_f64();
            let decided = window(&sent).as_secs_f64();
            let trips = round_trips(&redis).await?;
            let counted =
                a.metric(CALLS).unwrap_or(0) + b.metric(CALLS).unwrap_or(0) - counted_before;
            assert_eq!(
                counted as u64, trips,
                "{mode}/{algorithm}: the plugin counts every command Redis ran"
            );
            // A GCRA bucket refills over the run: LIMIT per hour.
            let refill = if algorithm == "gcra" {
                LIMIT as f64 * decided / 3600.0
            } else {
                0.0
            };
            let most = (LIMIT as f64 + refill).floor();
            for key in 0..KEYS {
                let of_key: Vec<&Sent> = sent.iter().filter(|s| s.key == key).collect();
                let allowed = of_key.iter().filter(|s| s.status == 200).count();
                let limited = of_key
                    .iter()
                    .filter(|s| s.status == 429 && s.code.as_deref() == Some("rate_limited"))
                    .count();
                assert_eq!(
                    allowed + limited,
                    PER_KEY,
                    "{mode}/{algorithm}: only 200 and 429"
                );
                assert!(
                    allowed as f64 <= most,
                    "{mode}/{algorithm}: key {key} got {allowed} of at most {most}"
                );
                assert!(
                    allowed as f64 >= 0.99 * LIMIT as f64,
                    "{mode}/{algorithm}: key {key} got only {allowed} of {LIMIT}"
                );
            }
            let clients = redis.info("clients").await?;
            assert!(
                clients.contains("connected_clients:3\r\n"),
                "one pipelined connection per node (and this one): {clients}"
            );
            rows.push(Row {
                mode,
                algorithm,
                limit: format!("{LIMIT}/1h"),
                sent: sent.len(),
                allowed: sent.iter().filter(|s| !s.warm && s.status == 200).count(),
                expected: most * KEYS as f64,
                round_trips: trips,
                seconds,
            });
        }
    }
    print_header();
    for row in &rows {
        row.print();
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_hold_a_refilling_limit_through_redis() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let app = EchoUpstream::start("app").await?;
    let (rate, keys) = (50.0, 2);
    let mut rows = Vec::new();
    for mode in ["exact", "leased"] {
        let lease = if mode == "leased" {
            format!(", lease: {LEASE}")
        } else {
            String::new()
        };
        let config = format!(
            "{{ limits: [{{ requests: {rate}, per: 1s }}], key: header:x-api-key, redis: {{ service: cache, mode: {mode}{lease}, prefix: \"refill-{mode}:\" }} }}"
        );
        let a = node(&app, &redis, "1s", &one_route(&config)).await?;
        let b = node(&app, &redis, "1s", &one_route(&config)).await?;
        warm_up(&[&a, &b], &redis).await?;
        let started = Instant::now();
        let sent = run(
            &[&a, &b],
            Load {
                paths: &["/"],
                names: "key",
                keys,
                total: usize::MAX,
                for_at_most: Some(Duration::from_secs(5)),
                concurrency: 16,
            },
        )
        .await?;
        let seconds = started.elapsed().as_secs_f64();
        // Burst (= requests) at once, then `rate` a second: every decision
        // was made between the first request's start and the last one's end.
        let most = (rate + rate * window(&sent).as_secs_f64()).floor();
        for key in 0..keys {
            let allowed = sent
                .iter()
                .filter(|s| s.key == key && s.status == 200)
                .count();
            assert!(
                allowed as f64 <= most,
                "{mode}: key {key} got {allowed} of at most {most}"
            );
            // Exact mode wastes nothing; a leased run can end with permits
            // unused: those its nodes hold, and those a refused node waits
            // for (two leases' worth) — never more than 2·(nodes + 1) leases.
            let least = match mode {
                "exact" => 0.98 * most,
                _ => most - (2 * (2 + 1) * LEASE) as f64,
            };
            assert!(
                allowed as f64 >= least,
                "{mode}: key {key} got only {allowed} of {most}"
            );
        }
        assert!(sent.iter().all(|s| s.status == 200 || s.status == 429));
        rows.push(Row {
            mode,
            algorithm: "gcra",
            limit: format!("{rate}/1s"),
            sent: sent.len(),
            allowed: sent.iter().filter(|s| !s.warm && s.status == 200).count(),
            expected: most * keys as f64,
            round_trips: round_trips(&redis).await?,
            seconds,
        });
    }
    print_header();
    for row in &rows {
        row.print();
    }
    Ok(())
}

/// How Redis fails mid-run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// Killed: connections refused.
    Stopped,
    /// Frozen: connections open, nothing answered.
    Hung,
}

/// The Redis service's timeout in the fail-mode runs.
const TIMEOUT: Duration = Duration::from_millis(300);

/// Two nodes, routes `/open` (fail_open) and `/closed` (fail_closed), each
/// with 10 requests per 2 s per key (5 a second), under a load far above
/// that; Redis fails 1 s into it.
async fn fail_mid_run(mode: &str, failure: Failure) -> anyhow::Result<()> {
    let mut redis = RedisServer::start().await?;
    let app = EchoUpstream::start("app").await?;
    let lease = if mode == "leased" { ", lease: 2" } else { "" };
    let route = |name: &str, on_error: &str| {
        format!(
            "{{ name: {name}, match: {{ path: {{ prefix: /{name} }} }}, upstream: app, filters: [{{ plugin: limit, config: {{ limits: [{{ requests: 10, per: 2s }}], key: [route, \"header:x-api-key\"], redis: {{ service: cache, mode: {mode}{lease}, on_error: {on_error} }} }} }}] }}"
        )
    };
    let routes = format!(
        "[{}, {}]",
        route("open", "fail_open"),
        route("closed", "fail_closed")
    );
    let timeout = format!("{}ms", TIMEOUT.as_millis());
    let a = node(&app, &redis, &timeout, &routes).await?;
    let b = node(&app, &redis, &timeout, &routes).await?;
    let paths: &'static [&'static str] = &["/open", "/closed"];
    let nodes = [&a, &b];
    let load = run(
        &nodes,
        Load {
            paths,
            names: "key",
            keys: 1,
            total: usize::MAX,
            for_at_most: Some(Duration::from_millis(3_500)),
            concurrency: 8,
        },
    );
    let fail = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        // The moment the failure begins, not when stopping returns: a request
        // can see the dead connection while the process is still being reaped.
        let failing_from = Instant::now();
        match failure {
            Failure::Stopped => redis.stop(),
            Failure::Hung => redis.pause()?,
        }
        anyhow::Ok(failing_from)
    };
    let (sent, failed_at) = tokio::join!(load, fail);
    let (mut sent, failed_at) = (sent?, failed_at?);
    sent.retain(|s| !s.warm);

    let slowest = sent.iter().map(|s| s.took).max().unwrap_or_default();
    assert!(
        slowest < TIMEOUT + Duration::from_secs(1),
        "{mode}/{failure:?}: every request decided within the timeout, the slowest took {slowest:?}"
    );
    // Before the failure Redis decides: some pass, the rest get 429. A
    // leased node serves the permits it holds and repeats Redis's last
    // refusal until the permits are due back (two leases' worth: 0.8 s here);
    // after that, the fail mode decides.
    let settled = failed_at + Duration::from_millis(1_200);
    let mut before = [0, 0];
    let mut after = [0, 0];
    for s in &sent {
        let expected: &[(u16, Option<&str>)] = if s.started + s.took < failed_at {
            &[(200, None), (429, Some("rate_limited"))]
        } else if s.started < settled {
            &[
                (200, None),
                (429, Some("rate_limited")),
                (503, Some("rate_limit_unavailable")),
            ]
        } else if s.path == "/open" {
            &[(200, None)]
        } else {
            &[(503, Some("rate_limit_unavailable"))]
        };
        assert!(
            expected.contains(&(s.status, s.code.as_deref())),
            "{mode}/{failure:?} {} at {:?} after the failure: {} {:?}",
            s.path,
            s.started.checked_duration_since(failed_at),
            s.status,
            s.code
        );
        if s.started + s.took < failed_at {
            before[usize::from(s.status == 429)] += 1;
        }
        if s.started >= settled {
            after[usize::from(s.path == "/closed")] += 1;
        }
    }
    assert!(
        before[0] > 0 && before[1] > 0,
        "{mode}/{failure:?}: the limit held before the failure: {before:?} passed/limited"
    );
    assert!(
        after[0] > 10 && after[1] > 10,
        "{mode}/{failure:?}: enough requests after the failure: {after:?}"
    );
    println!(
        "{mode}/{failure:?}: {} requests, {} after the failure settled, slowest {slowest:?}",
        sent.len(),
        after[0] + after[1]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_mode_fails_open_or_closed_when_redis_stops() -> anyhow::Result<()> {
    fail_mid_run("exact", Failure::Stopped).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leased_mode_fails_open_or_closed_when_redis_stops() -> anyhow::Result<()> {
    fail_mid_run("leased", Failure::Stopped).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_mode_decides_within_the_timeout_when_redis_hangs() -> anyhow::Result<()> {
    fail_mid_run("exact", Failure::Hung).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leased_mode_decides_within_the_timeout_when_redis_hangs() -> anyhow::Result<()> {
    fail_mid_run("leased", Failure::Hung).await
}
