//! The `cache` built-in through the real gateway, against an origin the test
//! steers (version, `Cache-Control`, `ETag`, delay) and counts: hits that
//! never reach it, revalidation with a 304, stale-while-revalidate with one
//! refresh under concurrent requests, purges through the real admin API, and
//! two nodes sharing entries and purges through a real `redis-server`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use tokio::net::TcpListener;
use weir_tests::{RedisServer, TestGateway, eventually, http1_client, serve};

/// The admin token of these tests' manifests.
const ADMIN_TOKEN: &str = "cache-admin-token";

/// How the origin answers.
struct Behaviour {
    version: u32,
    cache_control: &'static str,
    etag: bool,
    delay: Duration,
}

/// An origin whose answers the test changes: `v<version> <path>`, with the
/// `Cache-Control` and (optionally) `ETag: "v<version>"` of the moment, and
/// a 304 to an `If-None-Match` naming the current version.
struct Origin {
    addr: SocketAddr,
    behaviour: Arc<Mutex<Behaviour>>,
    hits: Arc<AtomicUsize>,
    not_modified: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Origin {
    async fn start(cache_control: &'static str, etag: bool) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let behaviour = Arc::new(Mutex::new(Behaviour {
            version: 1,
            cache_control,
            etag,
            delay: Duration::ZERO,
        }));
        let hits = Arc::new(AtomicUsize::new(0));
        let not_modified = Arc::new(AtomicUsize::new(0));
        let (b, h, n) = (behaviour.clone(), hits.clone(), not_modified.clone());
        let task = serve(listener, move |request| {
            let (behaviour, hits, not_modified) = (b.clone(), h.clone(), n.clone());
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                let (version, cache_control, etag, delay) = {
                    let b = behaviour.lock().unwrap_or_else(|e| e.into_inner());
                    (b.version, b.cache_control, b.etag, b.delay)
                };
                tokio::time::sleep(delay).await;
                let tag = format!("\"v{version}\"");
                let unchanged = etag
                    && request
                        .headers()
                        .get("if-none-match")
                        .is_some_and(|v| v.as_bytes() == tag.as_bytes());
                let body = if unchanged {
                    not_modified.fetch_add(1, Ordering::SeqCst);
                    Bytes::new()
                } else {
                    let path = request
                        .uri()
                        .path_and_query()
                        .map(|p| p.as_str())
                        .unwrap_or("/");
                    Bytes::from(format!("v{version} {path}"))
                };
                let mut builder = Response::builder()
                    .status(if unchanged { 304 } else { 200 })
                    .header("cache-control", cache_control)
                    .header("content-type", "text/plain");
                if etag {
                    builder = builder.header("etag", tag);
                }
                builder
                    .body(Full::new(body))
                    .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
            }
        });
        Ok(Self {
            addr,
            behaviour,
            hits,
            not_modified,
            task,
        })
    }

    fn change(&self, change: impl FnOnce(&mut Behaviour)) {
        change(&mut self.behaviour.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A manifest with routes `shop` (`/items`) and `blog` (`/posts`) to the
/// origin through the cache configured `config`, with `extra` top-level
/// sections, and the admin API.
fn manifest(origin: &Origin, config: &str, extra: &str) -> String {
    let digest = weir_tests::sha256_hex(ADMIN_TOKEN);
    format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: origin, targets: ["{addr}"] }}]
plugins: [{{ name: cache, builtin: cache }}]
routes:
  - {{ name: shop, match: {{ path: {{ prefix: /items }} }}, upstream: origin, filters: [{{ plugin: cache, config: {config} }}] }}
  - {{ name: blog, match: {{ path: {{ prefix: /posts }} }}, upstream: origin, filters: [{{ plugin: cache, config: {config} }}] }}
admin:
  address: 127.0.0.1:0
  tokens: [{{ name: ops, role: admin, sha256: "{digest}" }}]
{extra}"#,
        addr = origin.addr,
    )
}

/// One answer: status, `x-cache`, `age`, body.
#[derive(Debug)]
struct Answer {
    status: u16,
    cache: String,
    age: Option<String>,
    length: Option<String>,
    body: String,
}

async fn fetch(
    gw: &TestGateway,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Answer> {
    fetch_url(gw.url("main", path), method, headers).await
}

/// [`fetch`] of a whole URL, with `Host: shop.example`.
async fn fetch_url(url: String, method: &str, headers: &[(&str, &str)]) -> anyhow::Result<Answer> {
    let client = http1_client();
    let mut request = client
        .request(method.parse()?, url)
        .header("host", "shop.example");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await?;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (status, cache, age, length) = (
        response.status().as_u16(),
        header("x-cache").unwrap_or_default(),
        header("age"),
        header("content-length"),
    );
    Ok(Answer {
        status,
        cache,
        age,
        length,
        body: response.text().await?,
    })
}

async fn get(gw: &TestGateway, path: &str) -> anyhow::Result<Answer> {
    fetch(gw, "GET", path, &[]).await
}

/// An admin call with the admin token (or none): status and JSON body.
async fn purge(
    admin: SocketAddr,
    query: &str,
    token: Option<&str>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let mut request = http1_client().delete(format!("http://{admin}/cache{query}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or_default()))
}

/// Asks for `path` until `x-cache` says `wanted` (the entry ages meanwhile);
/// that answer.
async fn until_cache_says(gw: &TestGateway, path: &str, wanted: &str) -> anyhow::Result<Answer> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = get(gw, path).await?;
        if answer.cache == wanted || Instant::now() > deadline {
            return Ok(answer);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_hits_skip_the_upstream_and_stale_entries_are_revalidated() -> anyhow::Result<()> {
    // Fresh for 2 s: room for the first five requests on a slow machine.
    let origin = Origin::start("max-age=2", true).await?;
    let gw = TestGateway::from_yaml(&manifest(&origin, "{}", "")).await?;

    let first = get(&gw, "/items?page=1").await?;
    assert_eq!(
        (first.status, first.cache.as_str(), first.body.as_str()),
        (200, "MISS", "v1 /items?page=1")
    );
    let hit = get(&gw, "/items?page=1").await?;
    assert_eq!(
        (hit.status, hit.cache.as_str(), hit.body.as_str()),
        (200, "HIT", "v1 /items?page=1")
    );
    let age: u64 = hit.age.as_deref().unwrap_or("none").parse()?;
    assert!(age < 2, "a fresh hit's age, in seconds: {age}");
    let head = fetch(&gw, "HEAD", "/items?page=1", &[]).await?;
    assert_eq!(
        (head.status, head.cache.as_str(), head.body.as_str()),
        (200, "HIT", "")
    );
    assert_eq!(
        head.length.as_deref(),
        Some("16"),
        "HEAD says the GET body's length"
    );
    let other = get(&gw, "/items?page=2").await?;
    assert_eq!(other.cache, "MISS", "another query is another entry");
    let not_modified = fetch(&gw, "GET", "/items?page=1", &[("if-none-match", "\"v1\"")]).await?;
    assert_eq!(
        (
            not_modified.status,
            not_modified.cache.as_str(),
            not_modified.body.as_str()
        ),
        (304, "HIT", "")
    );
    assert_eq!(
        origin.hits(),
        2,
        "hits and the 304 never reached the origin"
    );

    // Stale after two seconds: the request goes upstream with the ETag, the
    // origin says 304, and the stored body is served, fresh again.
    let revalidated = until_cache_says(&gw, "/items?page=1", "REVALIDATED").await?;
    assert_eq!(
        (
            revalidated.status,
            revalidated.cache.as_str(),
            revalidated.body.as_str()
        ),
        (200, "REVALIDATED", "v1 /items?page=1")
    );
    assert_eq!(origin.not_modified.load(Ordering::SeqCst), 1);
    assert_eq!(get(&gw, "/items?page=1").await?.cache, "HIT");

    // A new version: the next revalidation gets it whole.
    origin.change(|b| b.version = 2);
    let changed = until_cache_says(&gw, "/items?page=1", "MISS").await?;
    assert_eq!(
        (changed.status, changed.body.as_str()),
        (200, "v2 /items?page=1")
    );
    let hit = get(&gw, "/items?page=1").await?;
    assert_eq!(
        (hit.cache.as_str(), hit.body.as_str()),
        ("HIT", "v2 /items?page=1")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_store_answers_and_other_methods_always_reach_the_upstream() -> anyhow::Result<()> {
    let origin = Origin::start("no-store", false).await?;
    let gw = TestGateway::from_yaml(&manifest(&origin, "{}", "")).await?;
    for _ in 0..3 {
        assert_eq!(get(&gw, "/items/1").await?.cache, "MISS");
    }
    let post = fetch(&gw, "POST", "/items/1", &[]).await?;
    assert_eq!((post.status, post.cache.as_str()), (200, "BYPASS"));
    assert_eq!(origin.hits(), 4);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_answers_at_once_and_refreshes_once() -> anyhow::Result<()> {
    let origin = Origin::start("max-age=1, stale-while-revalidate=30", false).await?;
    let gw = TestGateway::from_yaml(&manifest(&origin, "{}", "")).await?;
    assert_eq!(get(&gw, "/items/feed").await?.cache, "MISS");

    // The refresh will take 3 s and bring version 2.
    origin.change(|b| {
        b.version = 2;
        b.delay = Duration::from_secs(3);
    });
    let first_stale = until_cache_says(&gw, "/items/feed", "STALE").await?;
    assert_eq!(first_stale.body, "v1 /items/feed");
    let started = Instant::now();
    let mut burst = tokio::task::JoinSet::new();
    for _ in 0..20 {
        burst.spawn(fetch_url(gw.url("main", "/items/feed"), "GET", &[]));
    }
    let answers = burst.join_all().await;
    let took = started.elapsed();
    for answer in answers {
        let answer = answer?;
        assert_eq!(
            (answer.status, answer.cache.as_str(), answer.body.as_str()),
            (200, "STALE", "v1 /items/feed")
        );
    }
    assert!(
        took < Duration::from_millis(2_500),
        "stale answers do not wait for the refresh: {took:?}"
    );

    let refreshed = until_cache_says(&gw, "/items/feed", "HIT").await?;
    assert_eq!(refreshed.body, "v2 /items/feed");
    assert_eq!(
        origin.hits(),
        2,
        "one miss and exactly one refresh for 21 stale answers"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_by_key_route_and_prefix_through_the_admin_api() -> anyhow::Result<()> {
    let origin = Origin::start("max-age=300", false).await?;
    let mut gw = TestGateway::from_yaml(&manifest(&origin, "{}", "")).await?;
    let admin = gw.serve_admin().await?;
    for path in ["/items/1", "/items/2", "/posts/1"] {
        assert_eq!(get(&gw, path).await?.cache, "MISS");
        assert_eq!(get(&gw, path).await?.cache, "HIT");
    }

    assert_eq!(
        purge(admin, "?route=shop", None).await?.0,
        401,
        "purging needs the admin token"
    );
    let (status, problem) = purge(admin, "", Some(ADMIN_TOKEN)).await?;
    assert_eq!(
        (status, problem["type"].as_str()),
        (400, Some("urn:weir:problem:bad-request"))
    );

    let key = "?key=shop%20GET%20shop.example%2Fitems%2F1";
    assert_eq!(
        purge(admin, key, Some(ADMIN_TOKEN)).await?,
        (
            200,
            serde_json::json!({"purged": {"memory": 1, "redis": 0}})
        )
    );
    assert_eq!(get(&gw, "/items/1").await?.cache, "MISS");
    assert_eq!(get(&gw, "/items/2").await?.cache, "HIT");

    let (status, purged) = purge(admin, "?route=shop", Some(ADMIN_TOKEN)).await?;
    assert_eq!(
        (status, &purged["purged"]["memory"]),
        (200, &serde_json::json!(2))
    );
    assert_eq!(get(&gw, "/items/2").await?.cache, "MISS");
    assert_eq!(
        get(&gw, "/posts/1").await?.cache,
        "HIT",
        "another route's entries stay"
    );

    let (status, purged) = purge(admin, "?prefix=blog%20", Some(ADMIN_TOKEN)).await?;
    assert_eq!(
        (status, &purged["purged"]["memory"]),
        (200, &serde_json::json!(1))
    );
    assert_eq!(get(&gw, "/posts/1").await?.cache, "MISS");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_entries_and_purges_through_redis() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let origin = Origin::start("max-age=300", false).await?;
    let extra = format!(
        "redis: [{{ name: shared, url: \"redis://{}\" }}]\n",
        redis.addr
    );
    let yaml = manifest(&origin, "{ redis: { service: shared } }", &extra);
    let mut a = TestGateway::from_yaml(&yaml).await?;
    let b = TestGateway::from_yaml(&yaml).await?;
    let admin = a.serve_admin().await?;

    assert_eq!(get(&a, "/items/1").await?.cache, "MISS");
    // The write to Redis is in the background: node B asks once it is there.
    let key = "weir:cache:cache:shop GET shop.example/items/1";
    assert!(
        eventually(Duration::from_secs(5), async || {
            redis
                .command(&["EXISTS", key])
                .await
                .is_ok_and(|n| n == ":1")
        })
        .await,
        "node A wrote its entry to Redis"
    );
    let from_b = get(&b, "/items/1").await?;
    assert_eq!(
        (from_b.cache.as_str(), from_b.body.as_str()),
        ("HIT", "v1 /items/1")
    );
    assert_eq!(origin.hits(), 1, "one upstream request for both nodes");

    // Each node listens for purges from its first use of the service.
    assert!(
        eventually(Duration::from_secs(5), async || {
            redis
                .subscribers("weir:cache:purge")
                .await
                .is_ok_and(|n| n == 2)
        })
        .await,
        "both nodes listen for purges"
    );
    origin.change(|b| b.version = 2);
    let (status, purged) = purge(admin, "?route=shop", Some(ADMIN_TOKEN)).await?;
    assert_eq!(
        (status, &purged["purged"]["redis"]),
        (200, &serde_json::json!(1))
    );
    // Node B hears of the purge on Redis's channel and drops its copy.
    assert!(
        eventually(Duration::from_secs(5), async || {
            get(&b, "/items/1")
                .await
                .is_ok_and(|answer| answer.body == "v2 /items/1")
        })
        .await,
        "node B's memory copy went with the purge"
    );
    Ok(())
}
