//! Shadow traffic: every request copied to a mirror with its method, path
//! and body, a sampled share, bodies over the limit not copied, and mirrors
//! that are down or hang while every client request is served as before.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Response;
use tokio::net::TcpListener;
use weir::lifecycle::MirrorCounts;
use weir_tests::{EchoUpstream, FixedUpstream, TestGateway, eventually, http1_client, json};

/// What a mirror received of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Copy {
    method: String,
    path: String,
    host: String,
    body: Bytes,
}

/// An upstream that keeps every request it receives.
struct Recorder {
    addr: std::net::SocketAddr,
    copies: Arc<Mutex<Vec<Copy>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let copies = Arc::new(Mutex::new(Vec::new()));
        let kept = copies.clone();
        let task = weir_tests::serve(listener, move |req: hyper::Request<_>| {
            let kept = kept.clone();
            async move {
                let method = req.method().to_string();
                let path = req.uri().to_string();
                let host = req
                    .headers()
                    .get("host")
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let body = req.into_body().collect().await.map(|b| b.to_bytes());
                let copy = Copy {
                    method,
                    path,
                    host,
                    body: body.unwrap_or_default(),
                };
                kept.lock().map(|mut c| c.push(copy)).ok();
                Response::new(Full::new(Bytes::from_static(b"from the mirror")))
            }
        });
        Ok(Self { addr, copies, task })
    }

    fn copies(&self) -> Vec<Copy> {
        self.copies.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A gateway whose route `shadowed` forwards to `main` and mirrors to
/// `mirror` with `settings` (YAML mapping fields after `upstream`).
async fn gateway(
    main: &EchoUpstream,
    mirror: std::net::SocketAddr,
    settings: &str,
) -> anyhow::Result<TestGateway> {
    TestGateway::from_yaml(&format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams:
  - {{ name: main, targets: ["{}"] }}
  - {{ name: shadow, targets: ["{mirror}"], timeouts: {{ connect: 500ms }} }}
routes:
  - name: shadowed
    upstream: main
    mirror: {{ upstream: shadow{settings} }}
"#,
        main.addr
    ))
    .await
}

fn counts(gw: &TestGateway) -> MirrorCounts {
    gw.gateway()
        .mirror_counts("shadowed")
        .expect("the route has a mirror")
}

#[tokio::test]
async fn a_mirror_receives_a_copy_of_every_request() -> anyhow::Result<()> {
    let main = EchoUpstream::start("main").await?;
    let mirror = Recorder::start().await?;
    let gw = gateway(&main, mirror.addr, ", max_body_bytes: 1MiB").await?;
    let client = http1_client();
    let host = gw.addr("main").to_string();
    // A body larger than what is read ahead before forwarding: copied as it streams.
    let streamed: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let requests = [
        ("GET", "/items?page=2", Bytes::new()),
        ("POST", "/items", Bytes::from_static(b"{\"name\":\"new\"}")),
        ("PUT", "/items/7", Bytes::from_static(b"replaced")),
        ("DELETE", "/items/7", Bytes::new()),
    ];
    for (method, path, body) in &requests {
        let response = client
            .request(method.parse()?, format!("http://{host}{path}"))
            .body(body.clone())
            .send()
            .await?;
        assert_eq!(response.status(), 200);
        let echoed = json(response).await?;
        assert_eq!(
            echoed["upstream"], "main",
            "the client gets the main answer"
        );
    }
    let response = client
        .post(format!("http://{host}/upload"))
        .body(streamed.clone())
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    assert_eq!(
        json(response).await?["body"].as_str().map(str::len),
        Some(300_000)
    );

    let arrived = eventually(Duration::from_secs(10), async || mirror.copies().len() == 5).await;
    assert!(arrived, "{} copies", mirror.copies().len());
    let mut copies = mirror.copies();
    copies.sort_by(|a, b| (&a.path, &a.method).cmp(&(&b.path, &b.method)));
    let shadow_host = format!("127.0.0.1-shadow:{}", gw.addr("main").port());
    let mut expected: Vec<Copy> = requests
        .iter()
        .map(|(method, path, body)| Copy {
            method: (*method).to_owned(),
            path: (*path).to_owned(),
            host: shadow_host.clone(),
            body: body.clone(),
        })
        .collect();
    expected.push(Copy {
        method: "POST".to_owned(),
        path: "/upload".to_owned(),
        host: shadow_host.clone(),
        body: Bytes::from(streamed),
    });
    expected.sort_by(|a, b| (&a.path, &a.method).cmp(&(&b.path, &b.method)));
    assert_eq!(copies, expected);
    assert!(
        eventually(Duration::from_secs(5), async || counts(&gw).answered == 5).await,
        "{:?}",
        counts(&gw)
    );
    assert_eq!(main.hits(), 5);
    Ok(())
}

#[tokio::test]
async fn copies_a_sample_and_skips_bodies_over_the_limit() -> anyhow::Result<()> {
    let main = EchoUpstream::start("main").await?;
    let mirror = Recorder::start().await?;
    let gw = gateway(&main, mirror.addr, ", percent: 25, max_body_bytes: 100").await?;
    let client = http1_client();
    for _ in 0..400 {
        let response = client.get(gw.url("main", "/sampled")).send().await?;
        assert_eq!(response.status(), 200);
    }
    assert!(
        eventually(Duration::from_secs(10), async || counts(&gw).in_flight == 0).await,
        "{:?}",
        counts(&gw)
    );
    let copied = mirror.copies().len();
    // 100 expected; one standard deviation is 8.7.
    assert!((60..=140).contains(&copied), "{copied} of 400 at 25%");

    // With every request sampled, one over the body limit is not copied.
    let gw = gateway(&main, mirror.addr, ", max_body_bytes: 100").await?;
    let response = client
        .post(gw.url("main", "/big"))
        .body(vec![b'x'; 101])
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    assert_eq!(
        json(response).await?["body"].as_str().map(str::len),
        Some(101)
    );
    let response = client
        .post(gw.url("main", "/small"))
        .body(vec![b'x'; 100])
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    assert!(
        eventually(Duration::from_secs(10), async || counts(&gw).answered == 1).await,
        "{:?}",
        counts(&gw)
    );
    assert_eq!(counts(&gw).skipped, 1);
    assert!(mirror.copies().iter().all(|c| c.path != "/big"));
    Ok(())
}

#[tokio::test]
async fn a_mirror_that_is_down_never_touches_the_client() -> anyhow::Result<()> {
    let main = EchoUpstream::start("main").await?;
    let gw = gateway(&main, weir_tests::dead_address().await?, "").await?;
    let client = http1_client();
    for i in 0..100 {
        let response = client
            .post(gw.url("main", "/orders"))
            .body(format!("order {i}"))
            .send()
            .await?;
        assert_eq!(response.status(), 200);
        assert_eq!(json(response).await?["body"], format!("order {i}"));
    }
    assert!(
        eventually(Duration::from_secs(10), async || counts(&gw).failed == 100).await,
        "{:?}",
        counts(&gw)
    );
    assert_eq!(main.hits(), 100);
    Ok(())
}

#[tokio::test]
async fn a_mirror_that_hangs_neither_slows_the_client_nor_piles_up() -> anyhow::Result<()> {
    let main = EchoUpstream::start("main").await?;
    // Answers after a minute: every copy waits out its own 30s timeout.
    let hanging = FixedUpstream::start(200, "late", Duration::from_secs(60)).await?;
    let gw = gateway(&main, hanging.addr, ", timeout: 30s, max_in_flight: 8").await?;
    let client = http1_client();
    let started = Instant::now();
    for _ in 0..100 {
        let sent = Instant::now();
        let response = client.get(gw.url("main", "/fast")).send().await?;
        assert_eq!(response.status(), 200);
        assert_eq!(json(response).await?["upstream"], "main");
        // Generous for a loaded machine; waiting on the mirror would take 30 s.
        assert!(
            sent.elapsed() < Duration::from_secs(5),
            "{:?}",
            sent.elapsed()
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    // Eight copies hang; the other 92 requests went on without one.
    let settled = eventually(Duration::from_secs(10), async || hanging.hits() == 8).await;
    assert!(settled, "{} copies reached the mirror", hanging.hits());
    let counts = counts(&gw);
    assert_eq!(
        (counts.in_flight, counts.dropped, counts.answered),
        (8, 92, 0),
        "{counts:?}"
    );
    Ok(())
}
