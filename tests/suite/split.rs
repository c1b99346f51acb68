//! Weighted splits between upstream groups (canaries): shares over many
//! requests, sticky keys, weights changed through the admin API, and what
//! filters see of the group chosen.

use std::collections::HashMap;
use std::sync::Arc;

use weir_tests::{EchoUpstream, TestGateway, http1_client, json};

/// A manifest with upstreams `v1` and `v2` and the route `canary` whose
/// `split`/`sticky` lines are `route` (indented under it), plus `extra` at
/// the top level.
fn manifest(v1: &EchoUpstream, v2: &EchoUpstream, route: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams:
  - {{ name: v1, targets: ["{}"] }}
  - {{ name: v2, targets: ["{}"] }}
routes:
  - name: canary
{route}
{extra}"#,
        v1.addr, v2.addr
    )
}

/// `n` GETs of `/` over `concurrency` keep-alive HTTP/1 connections (more or
/// less: reqwest pools them); every answer must be 200.
async fn send_many(gw: &TestGateway, n: usize, concurrency: usize) -> anyhow::Result<()> {
    let client = http1_client();
    let url = Arc::new(gw.url("main", "/"));
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let (client, url) = (client.clone(), url.clone());
        let share = n / concurrency + usize::from(worker < n % concurrency);
        tasks.push(tokio::spawn(async move {
            for _ in 0..share {
                let response = client.get(url.as_str()).send().await?;
                anyhow::ensure!(response.status() == 200, "{}", response.status());
                response.bytes().await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// The share of `v2`'s hits since the counts `before`, in percent.
fn v2_share(v1: &EchoUpstream, v2: &EchoUpstream, before: (usize, usize)) -> f64 {
    let (one, two) = (v1.hits() - before.0, v2.hits() - before.1);
    100.0 * two as f64 / (one + two) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_gets_its_share_of_ten_thousand_requests() -> anyhow::Result<()> {
    let (v1, v2) = (
        EchoUpstream::start("v1").await?,
        EchoUpstream::start("v2").await?,
    );
    let route = "    split: [{ upstream: v1, weight: 90 }, { upstream: v2, weight: 10 }]";
    let gw = TestGateway::from_yaml(&manifest(&v1, &v2, route, "")).await?;
    send_many(&gw, 10_000, 16).await?;
    assert_eq!(v1.hits() + v2.hits(), 10_000);
    let share = v2_share(&v1, &v2, (0, 0));
    // One standard deviation is 0.3 points here; 3 points is ten of them.
    assert!((7.0..=13.0).contains(&share), "v2 got {share:.2}%, not 10%");
    Ok(())
}

/// The group (`upstream` of the echo) each request with `header: value`
/// reached, for `values`.
async fn groups_by_key(
    gw: &TestGateway,
    client: &reqwest::Client,
    header: &str,
    values: impl Iterator<Item = String>,
) -> anyhow::Result<HashMap<String, String>> {
    let mut groups = HashMap::new();
    for value in values {
        let response = client
            .get(gw.url("main", "/"))
            .header(header, &value)
            .send()
            .await?;
        let group = json(response).await?["upstream"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        groups.insert(value, group);
    }
    Ok(groups)
}

#[tokio::test]
async fn sticky_keys_always_land_on_the_same_group() -> anyhow::Result<()> {
    let (v1, v2) = (
        EchoUpstream::start("v1").await?,
        EchoUpstream::start("v2").await?,
    );
    let route = "    split: [{ upstream: v1, weight: 50 }, { upstream: v2, weight: 50 }]\n    sticky: { header: x-user }";
    let gw = TestGateway::from_yaml(&manifest(&v1, &v2, route, "")).await?;
    let client = http1_client();
    let users = || (0..200).map(|i| format!("user-{i}"));
    let first = groups_by_key(&gw, &client, "x-user", users()).await?;
    for _ in 0..3 {
        assert_eq!(groups_by_key(&gw, &client, "x-user", users()).await?, first);
    }
    let on_v2 = first.values().filter(|g| *g == "v2").count();
    assert!(
        (60..=140).contains(&on_v2),
        "{on_v2} of 200 keys on v2 at 50%"
    );

    // A request without the key is placed at random: both groups see some.
    let before = (v1.hits(), v2.hits());
    send_many(&gw, 200, 4).await?;
    assert!(v1.hits() - before.0 > 40 && v2.hits() - before.1 > 40);
    Ok(())
}

#[tokio::test]
async fn a_cookie_or_the_client_address_keeps_a_client_on_its_group() -> anyhow::Result<()> {
    let (v1, v2) = (
        EchoUpstream::start("v1").await?,
        EchoUpstream::start("v2").await?,
    );
    let split = "    split: [{ upstream: v1, weight: 1 }, { upstream: v2, weight: 1 }]";
    let gw = TestGateway::from_yaml(&manifest(
        &v1,
        &v2,
        &format!("{split}\n    sticky: {{ cookie: session }}"),
        "",
    ))
    .await?;
    let client = http1_client();
    let sessions = || (0..100).map(|i| format!("theme=dark; session=s{i}"));
    let first = groups_by_key(&gw, &client, "cookie", sessions()).await?;
    assert_eq!(
        groups_by_key(&gw, &client, "cookie", sessions()).await?,
        first
    );
    let on_v2 = first.values().filter(|g| *g == "v2").count();
    assert!((25..=75).contains(&on_v2), "{on_v2} of 100 sessions on v2");

    // Every request of this test comes from 127.0.0.1: one group gets all.
    gw.reload(&manifest(
        &v1,
        &v2,
        &format!("{split}\n    sticky: client_ip"),
        "",
    ))?;
    let before = (v1.hits(), v2.hits());
    send_many(&gw, 100, 4).await?;
    let (one, two) = (v1.hits() - before.0, v2.hits() - before.1);
    assert!(
        (one, two) == (100, 0) || (one, two) == (0, 100),
        "{one} and {two}"
    );
    Ok(())
}

#[tokio::test]
async fn filters_see_the_group_the_split_chose() -> anyhow::Result<()> {
    let (v1, v2) = (
        EchoUpstream::start("v1").await?,
        EchoUpstream::start("v2").await?,
    );
    let route = format!(
        "    split: [{{ upstream: v1, weight: 1 }}, {{ upstream: v2, weight: 1 }}]\n    filters: [{{ plugin: props, config: {{ properties_to_request_headers: [cluster_name] }} }}]\nplugins: [{{ name: props, file: \"{}\" }}]",
        weir_tests::test_filter_wasm()
    );
    let gw = TestGateway::from_yaml(&manifest(&v1, &v2, &route, "")).await?;
    let client = http1_client();
    let mut seen = HashMap::new();
    for _ in 0..60 {
        let echoed = json(client.get(gw.url("main", "/")).send().await?).await?;
        let reached = echoed["upstream"].as_str().unwrap_or_default().to_owned();
        assert_eq!(
            echoed["headers"]["x-prop-cluster_name"][0], reached,
            "the filter saw the group the request went to"
        );
        *seen.entry(reached).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "both groups were chosen: {seen:?}");
    Ok(())
}

/// `PUT /routes/canary` on the admin API at `admin` with a split of `v2_weight` to v2.
async fn put_weights(admin: std::net::SocketAddr, v2_weight: u32) -> anyhow::Result<u16> {
    let route = serde_json::json!({
        "split": [
            { "upstream": "v1", "weight": 100 - v2_weight },
            { "upstream": "v2", "weight": v2_weight },
        ],
        "sticky": { "header": "x-user" },
    });
    let response = http1_client()
        .put(format!("http://{admin}/routes/canary"))
        .json(&route)
        .send()
        .await?;
    Ok(response.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_weights_change_through_the_admin_api_without_a_restart() -> anyhow::Result<()> {
    let (v1, v2) = (
        EchoUpstream::start("v1").await?,
        EchoUpstream::start("v2").await?,
    );
    let route = "    upstream: v1";
    let admin = "admin: { address: 127.0.0.1:0 }";
    let mut gw = TestGateway::from_yaml(&manifest(&v1, &v2, route, admin)).await?;
    let admin = gw.serve_admin().await?;
    let client = http1_client();
    let users = || (0..300).map(|i| format!("user-{i}"));

    let mut on_canary_before: Vec<String> = Vec::new();
    for (weight, range) in [(5, 2.0..=8.0), (50, 47.0..=53.0), (100, 100.0..=100.0)] {
        assert_eq!(put_weights(admin, weight).await?, 200, "{weight}%");
        let before = (v1.hits(), v2.hits());
        // Keyless requests spread by weight.
        send_many(&gw, 3_000, 8).await?;
        let share = v2_share(&v1, &v2, before);
        assert!(range.contains(&share), "{share:.2}% at {weight}%");
        // A key that was on the canary stays there as it grows.
        let groups = groups_by_key(&gw, &client, "x-user", users()).await?;
        for user in &on_canary_before {
            assert_eq!(groups[user], "v2", "{user} left the canary at {weight}%");
        }
        on_canary_before = (groups.into_iter())
            .filter_map(|(user, group)| (group == "v2").then_some(user))
            .collect();
    }
    assert_eq!(on_canary_before.len(), 300, "at 100% every key is on v2");

    // The route reads back as it was put, and the manifest file holds it.
    let read = json(
        client
            .get(format!("http://{admin}/routes/canary"))
            .send()
            .await?,
    )
    .await?;
    assert_eq!(
        read["split"][1],
        serde_json::json!({"upstream": "v2", "weight": 100})
    );
    let file = std::fs::read_to_string(gw.dir.path().join("weir.yaml"))?;
    assert!(file.contains("split"), "{file}");

    // A split naming no known group is refused at its place, and the running one stays.
    let refused = http1_client()
        .put(format!("http://{admin}/routes/canary"))
        .json(&serde_json::json!({"split": [{"upstream": "v3", "weight": 1}]}))
        .send()
        .await?;
    assert_eq!(refused.status(), 422);
    let problem = json(refused).await?;
    assert!(
        problem.to_string().contains("unknown upstream `v3`"),
        "{problem}"
    );
    let before = v2.hits();
    send_many(&gw, 20, 2).await?;
    assert_eq!(v2.hits() - before, 20);
    Ok(())
}
