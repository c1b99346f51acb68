//! Service discovery: upstream groups that follow a DNS name, a file, etcd,
//! Consul and Eureka as their answers change, without dropping a request.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use weir_tests::{
    ConsulInstance, ConsulServer, DnsServer, EchoUpstream, EtcdServer, EurekaServer, TestGateway,
    capture_logs_containing, captured_logs, eventually, http1_client, json,
};

/// How long a change may take to reach the gateway on a loaded machine.
const FOLLOW: Duration = Duration::from_secs(15);

/// Which echo upstream answered `requests` GETs, by name.
async fn answered_by(gw: &TestGateway, requests: usize) -> anyhow::Result<Vec<String>> {
    let client = http1_client();
    let mut names = Vec::with_capacity(requests);
    for _ in 0..requests {
        let response = client.get(gw.url("main", "/")).send().await?;
        anyhow::ensure!(response.status() == 200, "status {}", response.status());
        let body = json(response).await?;
        names.push(body["upstream"].as_str().unwrap_or_default().to_owned());
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// Waits until group `pool` has exactly `addresses` (sorted) as its targets.
async fn follows(gw: &TestGateway, addresses: &[SocketAddr]) -> bool {
    let mut want: Vec<String> = addresses.iter().map(ToString::to_string).collect();
    want.sort();
    let seen = eventually(FOLLOW, async || gw.target_addresses("pool") == want).await;
    if !seen {
        eprintln!(
            "wanted {want:?}, the group has {:?}",
            gw.target_addresses("pool")
        );
    }
    seen
}

/// A gateway whose one route, `all`, goes to the group `pool`, found by
/// `discovery` (a YAML flow mapping).
async fn discovering(discovery: &str) -> anyhow::Result<TestGateway> {
    TestGateway::from_yaml(&format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: pool, discovery: {discovery} }}]
routes: [{{ name: all, upstream: pool }}]
"#
    ))
    .await
}

/// Two echo upstreams on the same port of 127.0.0.1 and 127.0.0.2 (what a
/// name's A records can tell apart).
async fn two_loopback_echoes() -> anyhow::Result<(EchoUpstream, EchoUpstream)> {
    for _ in 0..20 {
        let first = EchoUpstream::start("first").await?;
        let second_addr = SocketAddr::from(([127, 0, 0, 2], first.addr.port()));
        if let Ok(second) = EchoUpstream::start_at("second", second_addr).await {
            return Ok((first, second));
        }
    }
    anyhow::bail!("no port free on both 127.0.0.1 and 127.0.0.2")
}

#[tokio::test]
async fn follows_a_names_address_records_as_they_change() -> anyhow::Result<()> {
    let dns = DnsServer::start().await?;
    let (first, second) = two_loopback_echoes().await?;
    let port = first.addr.port();
    dns.set_a("api", &[Ipv4Addr::new(127, 0, 0, 1)], 1).await?;
    capture_logs_containing("upstream=dns-pool");
    // A 30s interval: only the records' one-second TTL can explain a quick follow.
    let gw = discovering(&format!(
        r#"{{ dns: {{ name: api.weir.test, port: {port}, nameserver: "{}", interval: 30s, min_interval: 100ms }} }}"#,
        dns.addr,
    ))
    .await?;
    assert!(follows(&gw, &[first.addr]).await);
    assert_eq!(answered_by(&gw, 4).await?, ["first"]);

    dns.set_a(
        "api",
        &[Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2)],
        1,
    )
    .await?;
    assert!(follows(&gw, &[first.addr, second.addr]).await);
    assert_eq!(answered_by(&gw, 4).await?, ["first", "second"]);

    dns.set_a("api", &[Ipv4Addr::new(127, 0, 0, 2)], 1).await?;
    assert!(follows(&gw, &[second.addr]).await);
    assert_eq!(answered_by(&gw, 4).await?, ["second"]);
    Ok(())
}

#[tokio::test]
async fn a_name_without_records_keeps_the_last_targets() -> anyhow::Result<()> {
    let dns = DnsServer::start().await?;
    let up = EchoUpstream::start("kept").await?;
    dns.set_a("gone", &[Ipv4Addr::LOCALHOST], 1).await?;
    capture_logs_containing("gone.weir.test");
    let gw = discovering(&format!(
        r#"{{ dns: {{ name: gone.weir.test, port: {}, nameserver: "{}", min_interval: 100ms }} }}"#,
        up.addr.port(),
        dns.addr,
    ))
    .await?;
    assert!(follows(&gw, &[up.addr]).await);
    dns.set_a("gone", &[], 1).await?;
    let logged = eventually(FOLLOW, async || {
        captured_logs("gone.weir.test")
            .iter()
            .any(|l| l.contains("discovery failed") && l.contains("no targets"))
    })
    .await;
    assert!(
        logged,
        "the empty answer is logged: {:?}",
        captured_logs("gone.weir.test")
    );
    assert_eq!(gw.target_addresses("pool"), [up.addr.to_string()]);
    assert_eq!(answered_by(&gw, 2).await?, ["kept"]);
    Ok(())
}

#[tokio::test]
async fn srv_records_give_ports_and_weights_of_the_lowest_priority() -> anyhow::Result<()> {
    let dns = DnsServer::start().await?;
    let light = EchoUpstream::start("light").await?;
    let heavy = EchoUpstream::start("heavy").await?;
    let backup = EchoUpstream::start("backup").await?;
    dns.set_a("host", &[Ipv4Addr::LOCALHOST], 1).await?;
    let (l, h, b) = (light.addr.port(), heavy.addr.port(), backup.addr.port());
    dns.set_srv(
        "_http._tcp.api",
        &[(10, 1, l, "host"), (10, 3, h, "host"), (20, 1, b, "host")],
        1,
    )
    .await?;
    let gw = discovering(&format!(
        r#"{{ dns: {{ name: _http._tcp.api.weir.test, type: srv, nameserver: "{}", min_interval: 100ms }} }}"#,
        dns.addr,
    ))
    .await?;
    assert!(follows(&gw, &[light.addr, heavy.addr]).await);
    let client = http1_client();
    for _ in 0..40 {
        assert_eq!(client.get(gw.url("main", "/")).send().await?.status(), 200);
    }
    assert_eq!((light.hits(), heavy.hits(), backup.hits()), (10, 30, 0));

    // The first priority gone, the backup takes over.
    dns.set_srv("_http._tcp.api", &[(20, 1, b, "host")], 1)
        .await?;
    assert!(follows(&gw, &[backup.addr]).await);
    assert_eq!(answered_by(&gw, 3).await?, ["backup"]);
    Ok(())
}

/// Writes `text` to `path` as a careful writer does: a new file renamed over it.
fn replace_file(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    let staged = path.with_extension("new");
    std::fs::write(&staged, text)?;
    std::fs::rename(&staged, path)?;
    Ok(())
}

#[tokio::test]
async fn a_watched_file_of_targets_is_followed_and_a_broken_one_ignored() -> anyhow::Result<()> {
    let a = EchoUpstream::start("a").await?;
    let b = EchoUpstream::start("b").await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("targets.yaml");
    std::fs::write(&file, format!("- \"{}\"\n", a.addr))?;
    capture_logs_containing("targets.yaml");
    let gw = TestGateway::from_yaml_in(
        r#"apiVersion: weir/v1
listeners: [{ name: main, address: 127.0.0.1:0 }]
upstreams:
  - name: pool
    discovery: { file: { path: targets.yaml } }
routes: [{ name: all, upstream: pool }]
"#,
        dir,
    )
    .await?;
    assert!(follows(&gw, &[a.addr]).await);

    replace_file(
        &file,
        &format!(
            "- \"{}\"\n- {{ address: \"{}\", weight: 2 }}\n",
            a.addr, b.addr
        ),
    )?;
    assert!(follows(&gw, &[a.addr, b.addr]).await);

    // Written in place with a bad second entry: logged with its place, ignored.
    std::fs::write(&file, format!("- \"{}\"\n- nowhere\n", a.addr))?;
    let logged = eventually(FOLLOW, async || {
        captured_logs("targets.yaml")
            .iter()
            .any(|l| l.contains("2:3: target `nowhere` must be `host:port`"))
    })
    .await;
    assert!(
        logged,
        "the broken file is logged: {:?}",
        captured_logs("targets.yaml")
    );
    let mut both = vec![a.addr.to_string(), b.addr.to_string()];
    both.sort();
    assert_eq!(
        gw.target_addresses("pool"),
        both,
        "the last good targets stay"
    );

    replace_file(&file, &format!("[\"{}\"]", b.addr))?;
    assert!(follows(&gw, &[b.addr]).await);
    assert_eq!(answered_by(&gw, 3).await?, ["b"]);

    // An explicit empty list empties the group.
    replace_file(&file, "[]")?;
    assert!(follows(&gw, &[]).await);
    let response = http1_client().get(gw.url("main", "/")).send().await?;
    assert_eq!(response.status(), 503);
    assert_eq!(
        json(response).await?["error"]["code"],
        "no_healthy_upstream"
    );
    Ok(())
}

/// Requests sent in a loop by `workers` tasks until stopped; what they saw.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<std::sync::Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(url: String, workers: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tasks = (0..workers)
            .map(|_| {
                let (stop, ok, failed, url) =
                    (stop.clone(), ok.clone(), failed.clone(), url.clone());
                tokio::spawn(async move {
                    let client = http1_client();
                    while !stop.load(Ordering::Relaxed) {
                        let outcome = match client.get(&url).send().await {
                            Ok(r) if r.status() == 200 => {
                                r.bytes().await.map(drop).map_err(|e| e.to_string())
                            }
                            Ok(r) => Err(format!("status {}", r.status())),
                            Err(e) => Err(e.to_string()),
                        };
                        match outcome {
                            Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                            Err(e) => {
                                if let Ok(mut f) = failed.lock() {
                                    f.push(e);
                                }
                                0
                            }
                        };
                    }
                })
            })
            .collect();
        Self {
            stop,
            ok,
            failed,
            tasks,
        }
    }

    /// Stops the load; the requests that succeeded and the failures.
    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
        let failed = self.failed.lock().map(|f| f.clone()).unwrap_or_default();
        (self.ok.load(Ordering::Relaxed), failed)
    }
}

#[tokio::test]
async fn etcd_keys_added_and_removed_under_load_drop_no_request() -> anyhow::Result<()> {
    let etcd = EtcdServer::start().await?;
    let a = EchoUpstream::start("a").await?;
    let b = EchoUpstream::start("b").await?;
    let c = EchoUpstream::start("c").await?;
    etcd.put("/services/api/a", &a.addr.to_string()).await?;
    etcd.put("/services/api/bad", "nowhere").await?;
    let gw = discovering(&format!(
        r#"{{ etcd: {{ endpoints: ["{}"], prefix: /services/api/ }} }}"#,
        etcd.endpoint,
    ))
    .await?;
    assert!(follows(&gw, &[a.addr]).await, "the bad key is skipped");

    let load = Load::start(gw.url("main", "/"), 6);
    let served = |n: usize| {
        let load_ok = load.ok.clone();
        async move {
            let start = load_ok.load(Ordering::Relaxed);
            eventually(FOLLOW, async || {
                load_ok.load(Ordering::Relaxed) >= start + n
            })
            .await
        }
    };
    assert!(served(50).await);
    etcd.put(
        "/services/api/b",
        &format!(r#"{{"address": "{}", "weight": 2}}"#, b.addr),
    )
    .await?;
    assert!(follows(&gw, &[a.addr, b.addr]).await);
    assert!(served(50).await);
    etcd.put("/services/api/c", &c.addr.to_string()).await?;
    assert!(follows(&gw, &[a.addr, b.addr, c.addr]).await);
    assert!(served(50).await);
    etcd.delete("/services/api/a").await?;
    assert!(follows(&gw, &[b.addr, c.addr]).await);
    let a_hits_after_removal = a.hits();
    assert!(served(50).await);
    etcd.delete("/services/api/b").await?;
    assert!(follows(&gw, &[c.addr]).await);
    assert!(served(50).await);
    let a_hits_while_out = a.hits();
    etcd.put("/services/api/a", &a.addr.to_string()).await?;
    assert!(follows(&gw, &[a.addr, c.addr]).await);
    assert!(served(50).await);
    let (ok, failed) = load.finish().await;

    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        ok + failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(
        b.hits() > 0 && c.hits() > 0,
        "each target took requests while it was in"
    );
    // While `a` was out no new request went to it: at most the six in
    // flight when its removal was applied reached it after.
    assert!(
        a_hits_while_out <= a_hits_after_removal + 6,
        "{} requests reached `a` while it was out",
        a_hits_while_out - a_hits_after_removal
    );
    assert!(
        a.hits() > a_hits_while_out,
        "`a` serves again after its return"
    );
    eprintln!("etcd under load: {ok} requests, none failed");
    Ok(())
}

#[tokio::test]
async fn etcd_watch_reconnects_after_the_cluster_restarts() -> anyhow::Result<()> {
    let mut etcd = EtcdServer::start().await?;
    let a = EchoUpstream::start("a").await?;
    let b = EchoUpstream::start("b").await?;
    etcd.put("/restart/a", &a.addr.to_string()).await?;
    let gw = discovering(&format!(
        r#"{{ etcd: {{ endpoints: ["{}"], prefix: /restart/, timeout: 1s }} }}"#,
        etcd.endpoint,
    ))
    .await?;
    assert!(follows(&gw, &[a.addr]).await);
    etcd.stop();
    // While etcd is down the group keeps its targets and serves.
    assert_eq!(answered_by(&gw, 3).await?, ["a"]);
    etcd.restart().await?;
    etcd.put("/restart/b", &b.addr.to_string()).await?;
    assert!(follows(&gw, &[a.addr, b.addr]).await, "the watch came back");
    Ok(())
}

#[tokio::test]
async fn consul_blocking_queries_follow_a_service() -> anyhow::Result<()> {
    let consul = ConsulServer::start().await?;
    let a = EchoUpstream::start("a").await?;
    let b = EchoUpstream::start("b").await?;
    let instance = |addr, passing, weight| ConsulInstance {
        addr,
        passing,
        weight,
    };
    consul.set(
        "api",
        vec![instance(a.addr, true, 1), instance(b.addr, false, 1)],
    );
    let gw = discovering(&format!(
        r#"{{ consul: {{ address: "http://{}", service: api, wait: 60s }} }}"#,
        consul.addr,
    ))
    .await?;
    assert!(follows(&gw, &[a.addr]).await, "only passing instances");
    assert!(
        eventually(FOLLOW, async || consul.queries().1 >= 1).await,
        "the next query blocks"
    );

    consul.set(
        "api",
        vec![instance(a.addr, true, 1), instance(b.addr, true, 3)],
    );
    assert!(follows(&gw, &[a.addr, b.addr]).await);
    let client = http1_client();
    let before = (a.hits(), b.hits());
    for _ in 0..40 {
        assert_eq!(client.get(gw.url("main", "/")).send().await?.status(), 200);
    }
    assert_eq!(
        (a.hits() - before.0, b.hits() - before.1),
        (10, 30),
        "Weights.Passing"
    );

    consul.set("api", vec![instance(b.addr, true, 1)]);
    assert!(follows(&gw, &[b.addr]).await);
    // Three changes, each answered to a waiting query: no polling.
    let (queries, blocking) = consul.queries();
    assert!(queries <= 5, "{queries} queries for three changes");
    assert!(blocking >= 3, "{blocking} of them blocking");

    // A service with no instance left empties the group.
    consul.set("api", Vec::new());
    assert!(follows(&gw, &[]).await);
    Ok(())
}

#[tokio::test]
async fn eureka_deltas_are_applied_and_a_disagreeing_hash_refetches() -> anyhow::Result<()> {
    let eureka = EurekaServer::start().await?;
    let a = EchoUpstream::start("a").await?;
    let b = EchoUpstream::start("b").await?;
    let c = EchoUpstream::start("c").await?;
    let other = EchoUpstream::start("other").await?;
    eureka.register("API", "a", a.addr, "UP", false);
    eureka.register("OTHER", "x", other.addr, "UP", false);
    let gw = discovering(&format!(
        r#"{{ eureka: {{ address: "http://{}/eureka", app: api, interval: 200ms }} }}"#,
        eureka.addr,
    ))
    .await?;
    assert!(
        follows(&gw, &[a.addr]).await,
        "only the application's instances"
    );

    eureka.register("API", "b", b.addr, "UP", false);
    assert!(follows(&gw, &[a.addr, b.addr]).await, "ADDED");
    eureka.register("API", "a", a.addr, "DOWN", false);
    assert!(follows(&gw, &[b.addr]).await, "MODIFIED to DOWN");
    eureka.cancel("API", "b");
    eureka.register("API", "c", c.addr, "UP", false);
    assert!(follows(&gw, &[c.addr]).await, "DELETED");
    assert_eq!(eureka.fetches().0, 1, "deltas only after the first fetch");

    // A change the deltas never showed: the hash disagrees, the registry is fetched again.
    eureka.register("API", "b", b.addr, "UP", true);
    assert!(follows(&gw, &[b.addr, c.addr]).await);
    assert_eq!(eureka.fetches().0, 2);
    assert!(eureka.fetches().1 >= 4);
    assert_eq!(answered_by(&gw, 4).await?, ["b", "c"]);
    Ok(())
}

#[tokio::test]
async fn static_targets_serve_until_the_first_answer_and_reloads_keep_discovered_ones()
-> anyhow::Result<()> {
    let a = EchoUpstream::start("a").await?;
    let b = EchoUpstream::start("b").await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("targets.json");
    let manifest = |retries: u32| {
        format!(
            r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams:
  - name: pool
    targets: ["{}"]
    retries: {retries}
    discovery: {{ file: {{ path: targets.json }} }}
routes: [{{ name: all, upstream: pool }}]
"#,
            a.addr
        )
    };
    // No file yet: the static target serves.
    let gw = TestGateway::from_yaml_in(&manifest(0), dir).await?;
    assert_eq!(gw.target_addresses("pool"), [a.addr.to_string()]);
    assert_eq!(answered_by(&gw, 2).await?, ["a"]);
    replace_file(&file, &format!("[\"{}\"]", b.addr))?;
    assert!(follows(&gw, &[b.addr]).await);

    // A reload that changes the group keeps what discovery found.
    gw.reload(&manifest(1))?;
    assert_eq!(gw.target_addresses("pool"), [b.addr.to_string()]);
    assert_eq!(answered_by(&gw, 2).await?, ["b"]);
    Ok(())
}
