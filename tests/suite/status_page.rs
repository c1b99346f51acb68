//! The admin listener's status page: `/ui` and `/status` behind the admin
//! tokens (bearer, or Basic with the token as password, which a browser
//! prompts for), and the page itself in a real headless chromium: it loads
//! without errors, shows the running routes, targets and plugins, follows a
//! reload, and charts the traffic.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use serde_json::Value;
use weir_tests::browser::Browser;
use weir_tests::{FixedUpstream, TestGateway, eventually, http1_client};

const TOKEN: &str = "dashboard-reader-token";

/// Generous: the sampler and the page both work in 5 s steps, and the
/// machine is small and busy.
const PATIENCE: Duration = Duration::from_secs(45);

fn manifest(ok: SocketAddr, failing: SocketAddr, more_routes: &str) -> String {
    let digest = weir_tests::sha256_hex(TOKEN);
    format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams:
  - {{ name: pool, targets: ["{ok}"], health: {{ active: {{ path: /healthz, interval: 100ms }} }} }}
  - {{ name: failing, targets: ["{failing}"] }}
plugins:
  - {{ name: stamp, builtin: header-rewrite }}
routes:
  - name: api
    match: {{ path: {{ prefix: /api }} }}
    upstream: pool
    filters: [{{ plugin: stamp, config: {{ request: {{ set: [[x-env, prod]] }} }} }}]
  - {{ name: broken, match: {{ path: {{ prefix: /broken }} }}, upstream: failing }}
{more_routes}admin:
  address: 127.0.0.1:0
  tokens: [{{ name: dashboards, role: read-only, sha256: "{digest}" }}]
"#
    )
}

fn basic(user: &str, password: &str) -> String {
    let pair = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// Every `WWW-Authenticate` value of `response`.
fn challenges(response: &reqwest::Response) -> Vec<String> {
    (response.headers().get_all("www-authenticate").iter())
        .map(|v| v.to_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn the_page_and_its_status_need_a_read_token_as_bearer_or_basic_password()
-> anyhow::Result<()> {
    let ok = FixedUpstream::start(200, "fine", Duration::ZERO).await?;
    let failing = FixedUpstream::start(503, "down", Duration::ZERO).await?;
    let mut gw = TestGateway::from_yaml(&manifest(ok.addr, failing.addr, "")).await?;
    let admin = gw.serve_admin().await?;
    let client = http1_client();
    let get = |path: &str| client.get(format!("http://{admin}{path}"));

    let anonymous = get("/ui").send().await?;
    assert_eq!(anonymous.status(), 401);
    let offered = challenges(&anonymous);
    assert!(
        offered
            .iter()
            .any(|c| c.starts_with(r#"Basic realm="weir admin""#)),
        "{offered:?}"
    );
    let wrong = get("/ui")
        .header("authorization", basic("ops", "not-the-token"))
        .send()
        .await?;
    assert_eq!(wrong.status(), 401);

    let page = get("/ui")
        .header("authorization", basic("anyone", TOKEN))
        .send()
        .await?;
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let policy = page.headers()["content-security-policy"]
        .to_str()?
        .to_owned();
    assert!(
        policy.starts_with("default-src 'none'; script-src 'self'"),
        "{policy}"
    );
    let html = page.text().await?;
    assert!(
        html.contains(r#"<script src="/ui/app.js"></script>"#),
        "{html}"
    );
    for (path, content_type) in [
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/style.css", "text/css; charset=utf-8"),
    ] {
        let asset = get(path).bearer_auth(TOKEN).send().await?;
        assert_eq!(asset.status(), 200, "{path}");
        assert_eq!(asset.headers()["content-type"], content_type, "{path}");
        assert_eq!(get(path).send().await?.status(), 401, "{path}");
    }
    assert_eq!(
        get("/ui/missing.js")
            .bearer_auth(TOKEN)
            .send()
            .await?
            .status(),
        404
    );

    let root = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?
        .get(format!("http://{admin}/"))
        .send()
        .await?;
    assert_eq!(root.status(), 302);
    assert_eq!(root.headers()["location"], "/ui");

    let refused = get("/status").send().await?;
    assert_eq!(refused.status(), 401);
    let offered = challenges(&refused);
    assert!(
        offered.iter().any(|c| c.starts_with("Bearer ")),
        "{offered:?}"
    );
    assert!(
        offered.iter().any(|c| c.starts_with("Basic ")),
        "{offered:?}"
    );
    for authorization in [format!("Bearer {TOKEN}"), basic("", TOKEN)] {
        let status = get("/status")
            .header("authorization", &authorization)
            .send()
            .await?;
        assert_eq!(status.status(), 200, "{authorization}");
        let status: Value = status.json().await?;
        assert_eq!(status["generation"], 1);
        let routes: Vec<&str> = (status["routes"].as_array().into_iter().flatten())
            .filter_map(|r| r["name"].as_str())
            .collect();
        assert_eq!(routes, ["api", "broken"]);
        assert_eq!(status["routes"][0]["filters"], serde_json::json!(["stamp"]));
        assert_eq!(
            status["routes"][0]["upstreams"],
            serde_json::json!(["pool"])
        );
        assert_eq!(status["upstreams"][1]["name"], "pool");
        assert_eq!(
            status["upstreams"][1]["targets"][0]["address"],
            ok.addr.to_string()
        );
        let stamp = &status["plugins"][0];
        assert_eq!(stamp["name"], "stamp");
        assert_eq!(stamp["filters"], 1);
        assert!(stamp["vms"].as_u64() >= Some(1), "{stamp}");
        assert!(stamp["memory_bytes"].as_u64() >= Some(65_536), "{stamp}");
    }
    // Basic works on the rest of the API too, and the token's role still counts.
    let config = get("/config")
        .header("authorization", basic("ops", TOKEN))
        .send()
        .await?;
    assert_eq!(config.status(), 200);
    let change = client
        .put(format!("http://{admin}/routes/api"))
        .header("authorization", basic("ops", TOKEN))
        .body("{}")
        .send()
        .await?;
    assert_eq!(change.status(), 403);
    gw.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn status_counts_each_routes_requests_and_5xx_exactly_across_a_reload() -> anyhow::Result<()>
{
    let ok = FixedUpstream::start(200, "fine", Duration::ZERO).await?;
    let failing = FixedUpstream::start(503, "down", Duration::ZERO).await?;
    let mut gw = TestGateway::from_yaml(&manifest(ok.addr, failing.addr, "")).await?;
    let admin = gw.serve_admin().await?;
    let client = http1_client();
    for _ in 0..7 {
        assert_eq!(
            client.get(gw.url("main", "/api/x")).send().await?.status(),
            200
        );
    }
    for _ in 0..3 {
        assert_eq!(
            client.get(gw.url("main", "/broken")).send().await?.status(),
            503
        );
    }
    let more = "  - { name: added, match: { path: { prefix: /added } }, upstream: pool }\n";
    assert_eq!(gw.reload(&manifest(ok.addr, failing.addr, more))?, 2);
    assert_eq!(
        client.get(gw.url("main", "/api/y")).send().await?.status(),
        200
    );
    let status: Value = client
        .get(format!("http://{admin}/status"))
        .bearer_auth(TOKEN)
        .send()
        .await?
        .json()
        .await?;
    let totals: Vec<(String, u64, u64)> = (status["routes"].as_array().into_iter().flatten())
        .map(|r| {
            let name = r["name"].as_str().unwrap_or_default().to_owned();
            (
                name,
                r["requests"].as_u64().unwrap_or(0),
                r["errors"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        totals,
        [
            ("api".to_owned(), 8, 0),
            ("broken".to_owned(), 3, 3),
            ("added".to_owned(), 0, 0)
        ]
    );
    assert_eq!(status["generation"], 2);
    let reload = &status["reloads"][0];
    assert_eq!(reload["generation"], 2);
    assert_eq!(reload["outcome"], "applied");
    assert_eq!(reload["cause"], "reload");
    gw.shutdown().await;
    Ok(())
}

/// The page's text content of every element `selector` matches.
async fn texts(page: &weir_tests::browser::Page, selector: &str) -> anyhow::Result<Vec<String>> {
    let found = page
        .evaluate(&format!(
            "Array.from(document.querySelectorAll({selector:?})).map(e => e.textContent)"
        ))
        .await?;
    Ok(serde_json::from_value(found)?)
}

#[tokio::test]
async fn the_page_shows_the_running_config_follows_a_reload_and_charts_traffic()
-> anyhow::Result<()> {
    let ok = FixedUpstream::start(200, "fine", Duration::ZERO).await?;
    let failing = FixedUpstream::start(503, "down", Duration::ZERO).await?;
    let mut gw = TestGateway::from_yaml(&manifest(ok.addr, failing.addr, "")).await?;
    let admin = gw.serve_admin().await?;
    let browser = Browser::start().await?;
    let page = browser.page();
    // As a user would: the page's 401 makes the browser ask, the token is
    // typed in as the password.
    page.answer_auth_with("ops", TOKEN).await?;
    page.navigate(&format!("http://{admin}/ui")).await?;
    assert!(
        page.auth_challenges() >= 1,
        "the browser was asked for credentials"
    );
    let loaded = eventually(PATIENCE, async || {
        (page
            .evaluate("Number(document.body.dataset.loads || 0) >= 1")
            .await)
            .is_ok_and(|v| v == true)
    })
    .await;
    assert!(
        loaded,
        "the page read /status; problems: {:?}",
        page.problems()
    );

    assert_eq!(
        texts(page, "#routes td[data-route]").await?,
        ["api", "broken"]
    );
    assert_eq!(texts(page, "#generation").await?, ["generation 1"]);
    let target = ok.addr.to_string();
    let healthy = eventually(PATIENCE, async || {
        texts(page, &format!("#upstreams td[data-target='{target}']"))
            .await
            .is_ok_and(|t| t == ["healthy"])
    })
    .await;
    assert!(healthy, "the pool's target shows as healthy");
    let plugins = texts(page, "#plugins td:first-child").await?;
    assert_eq!(plugins, ["stamp"]);

    let client = http1_client();
    for _ in 0..20 {
        assert_eq!(
            client.get(gw.url("main", "/api/x")).send().await?.status(),
            200
        );
    }
    for _ in 0..5 {
        assert_eq!(
            client.get(gw.url("main", "/broken")).send().await?.status(),
            503
        );
    }
    let charted = eventually(PATIENCE, async || {
        let read = page
            .evaluate(
                "['requests-chart', 'errors-chart'].map(id => { \
                   const svg = document.querySelector('#' + id + ' svg'); \
                   return [Number(svg.dataset.points), Number(svg.dataset.max)]; })",
            )
            .await;
        read.is_ok_and(|v| {
            let max = |i: usize| v[i][1].as_f64().unwrap_or(0.0);
            v[0][0].as_u64() > Some(0) && max(0) > 0.0 && max(1) > 0.0
        })
    })
    .await;
    assert!(
        charted,
        "both charts show the traffic; problems: {:?}",
        page.problems()
    );
    let drawn = texts(page, "#requests-chart polyline").await?.len();
    assert!(drawn >= 2, "a line per route: {drawn}");

    let more = "  - { name: added, match: { path: { prefix: /added } }, upstream: pool }\n";
    assert_eq!(gw.reload(&manifest(ok.addr, failing.addr, more))?, 2);
    let followed = eventually(PATIENCE, async || {
        texts(page, "#routes td[data-route]")
            .await
            .is_ok_and(|r| r == ["api", "broken", "added"])
    })
    .await;
    assert!(
        followed,
        "the page shows the new route after its own refresh"
    );
    assert_eq!(texts(page, "#generation").await?, ["generation 2"]);
    let reload = texts(page, "#reloads tbody tr:first-child td").await?;
    assert_eq!(reload[1..4], ["2", "applied", "reload"]);

    if let Some(path) = std::env::var_os("WEIR_STATUS_SCREENSHOT") {
        page.screenshot(std::path::Path::new(&path), 1200, 1100)
            .await?;
    }
    assert_eq!(page.problems(), Vec::<String>::new());
    gw.shutdown().await;
    Ok(())
}
