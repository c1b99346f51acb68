//! Target health: passive outlier ejection (a killed, hanging, resetting or
//! failing target), active health checks, `no_healthy_upstream`, and
//! consistent hashing when targets change.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Mutex;
use weir_tests::{Backend, Behaviour, TestGateway, eventually, http1_client, json};

fn manifest(upstream: &str) -> String {
    format!(
        "apiVersion: weir/v1\nlisteners: [{{ name: main, address: 127.0.0.1:0 }}]\n\
         upstreams:\n  - {upstream}\nroutes: [{{ name: all, upstream: pool }}]\n"
    )
}

fn health_of(gw: &TestGateway, target: &Backend) -> &'static str {
    let address = target.addr.to_string();
    gw.target_health("pool")
        .into_iter()
        .find(|(a, _)| *a == address)
        .map_or("absent", |(_, h)| h)
}

/// What the load saw: each answer's status and body, and when.
#[derive(Default)]
struct Seen {
    answers: Vec<(u16, String, bool)>,
}

#[tokio::test]
async fn a_killed_target_is_ejected_within_the_threshold_and_serves_again_once_back()
-> anyhow::Result<()> {
    let (a, b, c) = (
        Backend::start("a").await?,
        Backend::start("b").await?,
        Backend::start("c").await?,
    );
    let gw = TestGateway::from_yaml(&manifest(&format!(
        r#"{{ name: pool, targets: ["{}", "{}", "{}"], health: {{ passive: {{ failures: 3, ejection: 2s }} }} }}"#,
        a.addr, b.addr, c.addr
    )))
    .await?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (stop, ejected) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    const CLIENTS: usize = 4;
    let mut load = Vec::new();
    for _ in 0..CLIENTS {
        let (seen, stop, ejected) = (seen.clone(), stop.clone(), ejected.clone());
        let (client, url) = (http1_client(), gw.url("main", "/"));
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let after_ejection = ejected.load(Ordering::SeqCst);
                let (status, body) = match client.get(&url).send().await {
                    Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
                    Err(e) => (0, e.to_string()),
                };
                seen.lock()
                    .await
                    .answers
                    .push((status, body, after_ejection));
            }
        }));
    }
    assert!(eventually(Duration::from_secs(10), async || c.hits() >= 50).await);
    c.kill();
    assert!(
        eventually(Duration::from_secs(10), async || health_of(&gw, &c)
            == "ejected")
        .await,
        "the killed target is ejected"
    );
    ejected.store(true, Ordering::SeqCst);
    // Load goes on while it is out: every request lands on a or b.
    let (a_then, b_then) = (a.hits(), b.hits());
    assert!(
        eventually(Duration::from_secs(10), async || {
            a.hits() + b.hits() >= a_then + b_then + 200
        })
        .await
    );
    c.revive().await?;
    let c_then = c.hits();
    assert!(
        eventually(Duration::from_secs(10), async || c.hits() >= c_then + 20).await,
        "the revived target takes requests again once its ejection ends"
    );
    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await?;
    }
    let seen = seen.lock().await;
    let failed: Vec<_> = seen.answers.iter().filter(|(s, ..)| *s != 200).collect();
    let total = seen.answers.len();
    println!(
        "kill one of three targets under load ({CLIENTS} clients): {} of {total} requests failed ({:.2}%)",
        failed.len(),
        failed.len() as f64 * 100.0 / total as f64
    );
    // The failures are the killed target's: the three that eject it, plus
    // at most one in flight per client when it died.
    assert!(failed.len() <= 3 + CLIENTS, "failed: {failed:?}");
    assert!(failed.iter().all(|(s, ..)| *s == 502), "failed: {failed:?}");
    assert!(
        failed.iter().all(|(.., after)| !after),
        "nothing fails once it is ejected: {failed:?}"
    );
    // Every answer came whole from a target.
    assert!(
        seen.answers
            .iter()
            .filter(|(s, ..)| *s == 200)
            .all(|(_, body, _)| ["a", "b", "c"].contains(&body.as_str()))
    );
    Ok(())
}

#[tokio::test]
async fn hanging_resetting_and_failing_targets_are_ejected_after_their_failures()
-> anyhow::Result<()> {
    let cases = [
        (Behaviour::Hang, 504, "upstream_timeout"),
        (Behaviour::Reset, 502, "upstream_failed"),
        (Behaviour::Fail, 503, ""),
    ];
    for (behaviour, status, code) in cases {
        let broken = Backend::start("broken").await?;
        broken.behave(behaviour);
        let good = Backend::start("good").await?;
        let gw = TestGateway::from_yaml(&manifest(&format!(
            r#"{{ name: pool, targets: ["{}", "{}"], timeouts: {{ request: 300ms }}, health: {{ passive: {{ failures: 2, ejection: 1m }} }} }}"#,
            broken.addr, good.addr
        )))
        .await?;
        let client = http1_client();
        let mut failures = 0;
        for _ in 0..20 {
            let response = client.get(gw.url("main", "/")).send().await?;
            if response.status() == 200 {
                assert_eq!(response.text().await?, "good");
                continue;
            }
            failures += 1;
            assert_eq!(response.status(), status, "{behaviour:?}");
            if !code.is_empty() {
                assert_eq!(
                    json(response).await?["error"]["code"],
                    code,
                    "{behaviour:?}"
                );
            }
        }
        // Round robin alternates: the broken target fails twice, then is out.
        assert_eq!(failures, 2, "{behaviour:?}");
        assert_eq!(health_of(&gw, &broken), "ejected", "{behaviour:?}");
        assert_eq!(good.hits(), 18, "{behaviour:?}");
    }
    Ok(())
}

#[tokio::test]
async fn active_checks_take_targets_out_and_back_and_none_left_is_a_503() -> anyhow::Result<()> {
    let (a, b) = (Backend::start("a").await?, Backend::start("b").await?);
    let gw = TestGateway::from_yaml(&manifest(&format!(
        r#"{{ name: pool, targets: ["{}", "{}"], health: {{ active: {{ path: /healthz, interval: 50ms, timeout: 1s, healthy: 2, unhealthy: 2, statuses: [200] }} }} }}"#,
        a.addr, b.addr
    )))
    .await?;
    let client = http1_client();
    assert!(
        eventually(Duration::from_secs(5), async || a.probes() >= 2
            && b.probes() >= 2)
        .await
    );
    assert_eq!(health_of(&gw, &a), "healthy");

    a.set_health(500);
    assert!(
        eventually(Duration::from_secs(5), async || health_of(&gw, &a)
            == "unhealthy")
        .await
    );
    for _ in 0..10 {
        let response = client.get(gw.url("main", "/")).send().await?;
        assert_eq!(response.text().await?, "b");
    }

    b.set_health(204);
    assert!(
        eventually(Duration::from_secs(5), async || health_of(&gw, &b)
            == "unhealthy")
        .await
    );
    let response = client.get(gw.url("main", "/")).send().await?;
    assert_eq!(response.status(), 503);
    let body = json(response).await?;
    assert_eq!(body["error"]["code"], "no_healthy_upstream");
    assert_eq!(
        body["error"]["message"],
        "upstream `pool` has no healthy target"
    );

    a.set_health(200);
    assert!(
        eventually(Duration::from_secs(5), async || health_of(&gw, &a)
            == "healthy")
        .await
    );
    let a_then = a.hits();
    for _ in 0..4 {
        let response = client.get(gw.url("main", "/")).send().await?;
        assert_eq!(response.text().await?, "a");
    }
    assert_eq!(a.hits(), a_then + 4);
    Ok(())
}

#[tokio::test]
async fn a_tcp_check_sees_a_killed_target() -> anyhow::Result<()> {
    let (a, b) = (Backend::start("a").await?, Backend::start("b").await?);
    let gw = TestGateway::from_yaml(&manifest(&format!(
        r#"{{ name: pool, targets: ["{}", "{}"], health: {{ active: {{ type: tcp, interval: 50ms, unhealthy: 1 }} }} }}"#,
        a.addr, b.addr
    )))
    .await?;
    a.kill();
    assert!(
        eventually(Duration::from_secs(5), async || health_of(&gw, &a)
            == "unhealthy")
        .await
    );
    // A TCP check sends no request.
    assert_eq!(a.probes() + b.probes(), 0);
    let client = http1_client();
    for _ in 0..6 {
        let response = client.get(gw.url("main", "/")).send().await?;
        assert_eq!(response.text().await?, "b");
    }
    Ok(())
}

#[tokio::test]
async fn consistent_hashing_keeps_keys_and_moves_only_the_new_targets_share() -> anyhow::Result<()>
{
    let mut backends = Vec::new();
    for name in ["a", "b", "c", "d"] {
        backends.push(Backend::start(name).await?);
    }
    let targets = |n: usize| {
        backends[..n]
            .iter()
            .map(|b| format!("\"{}\"", b.addr))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let upstream = |n: usize| {
        format!(
            "{{ name: pool, targets: [{}], lb: consistent_hash, hash_on: {{ header: x-user }} }}",
            targets(n)
        )
    };
    let gw = TestGateway::from_yaml(&manifest(&upstream(3))).await?;
    let client = http1_client();
    let owners = async |keys: std::ops::Range<usize>| -> anyhow::Result<Vec<String>> {
        let mut owners = Vec::new();
        for key in keys {
            let response = client
                .get(gw.url("main", "/"))
                .header("x-user", format!("user-{key}"))
                .send()
                .await?;
            owners.push(response.text().await?);
        }
        Ok(owners)
    };
    const KEYS: usize = 400;
    let before = owners(0..KEYS).await?;
    assert_eq!(owners(0..KEYS).await?, before, "a key stays on its target");
    assert!(
        ["a", "b", "c"]
            .iter()
            .all(|t| before.iter().any(|o| o == t))
    );

    gw.reload(&manifest(&upstream(4)))?;
    let after = owners(0..KEYS).await?;
    let moved: Vec<_> = before.iter().zip(&after).filter(|(b, a)| b != a).collect();
    assert!(
        moved.iter().all(|(_, to)| *to == "d"),
        "moved only to the new target: {moved:?}"
    );
    assert!(
        (KEYS * 15 / 100..KEYS * 35 / 100).contains(&moved.len()),
        "the new target took about a quarter: {} of {KEYS}",
        moved.len()
    );
    // A request without the key still gets an answer.
    let response = client.get(gw.url("main", "/")).send().await?;
    assert_eq!(response.status(), 200);
    Ok(())
}
