//! The `waf` built-in through the gateway: exact outcomes (an SQL injection
//! refused before the upstream, detect mode, JSON bodies, paranoia levels),
//! and two rates on raw HTTP traffic: a sample of OWASP CRS's regression
//! tests (go-ftw format, `tests/waf/crs/`), each stage replayed at its
//! rule's paranoia level, and honest requests (`tests/waf/benign.jsonl`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use weir_tests::{EchoUpstream, TestGateway, http1_client, json, read_response};

/// The directory of the CRS sample and the honest requests.
const WAF_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/waf");
const BLOCKED: &str = r#"weir_plugin_waf_blocked{plugin="waf"}"#;
const DETECTED: &str = r#"weir_plugin_waf_detected{plugin="waf"}"#;

/// A gateway whose one route (listener `main`) runs the waf with `config`.
async fn gateway(app: &EchoUpstream, config: &str) -> anyhow::Result<TestGateway> {
    TestGateway::from_yaml(&format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: app, targets: ["{}"] }}]
plugins: [{{ name: waf, builtin: waf, vms: 1 }}]
routes: [{{ name: r, upstream: app, filters: [{{ plugin: waf, config: {config} }}] }}]
"#,
        app.addr,
    ))
    .await
}

/// A gateway with listeners `pl1`…`pl4`, each with a route running the waf
/// at that paranoia level, `plain`, whose route has no filter, and `light`,
/// whose route runs a filter that sets one header (the cost of any filter).
async fn levels_gateway(app: &EchoUpstream) -> anyhow::Result<TestGateway> {
    let mut listeners = vec![
        "{ name: plain, address: 127.0.0.1:0 }".to_owned(),
        "{ name: light, address: 127.0.0.1:0 }".to_owned(),
    ];
    let mut routes = vec![
        "  - { name: plain, listeners: [plain], upstream: app }".to_owned(),
        "  - { name: light, listeners: [light], upstream: app, \
         filters: [{ plugin: stamp, config: { request: { set: [[x-stamp, \"1\"]] } } }] }"
            .to_owned(),
    ];
    for level in 1..=4 {
        listeners.push(format!("{{ name: pl{level}, address: 127.0.0.1:0 }}"));
        routes.push(format!(
            "  - {{ name: pl{level}, listeners: [pl{level}], upstream: app, \
             filters: [{{ plugin: waf, config: {{ paranoia_level: {level} }} }}] }}"
        ));
    }
    TestGateway::from_yaml(&format!(
        "apiVersion: weir/v1\nlisteners: [{}]\nupstreams: [{{ name: app, targets: [\"{}\"] }}]\n\
         plugins: [{{ name: waf, builtin: waf, vms: 1 }}, {{ name: stamp, builtin: header-rewrite, vms: 1 }}]\n\
         routes:\n{}\n",
        listeners.join(", "),
        app.addr,
        routes.join("\n"),
    ))
    .await
}

#[tokio::test]
async fn an_sql_injection_in_the_query_is_refused_before_the_upstream() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let gw = gateway(&app, "{}").await?;
    let client = http1_client();
    let refused = client
        .get(gw.url("main", "/items?id=1%27%20OR%20%271%27=%271"))
        .send()
        .await?;
    assert_eq!(refused.status(), 403);
    let request_id = refused.headers()["x-request-id"].to_str()?.to_owned();
    assert_eq!(
        json(refused).await?,
        serde_json::json!({"error": {"status": 403, "code": "waf_blocked",
            "message": "the request was refused by the web application firewall",
            "request_id": request_id}})
    );
    assert_eq!(app.hits(), 0, "the upstream never sees it");

    let honest = client
        .get(gw.url("main", "/search?q=O%27Brien%20%26%20sons"))
        .header("cookie", "session=abc123; theme=dark")
        .send()
        .await?;
    assert_eq!(honest.status(), 200);
    assert_eq!(json(honest).await?["query"], "q=O%27Brien%20%26%20sons");
    assert_eq!(app.hits(), 1);
    assert_eq!(gw.metric(BLOCKED), Some(1));
    assert_eq!(gw.metric(DETECTED), Some(1));
    Ok(())
}

#[tokio::test]
async fn detect_mode_lets_the_attack_through_unchanged() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let gw = gateway(&app, "{ mode: detect }").await?;
    let response = http1_client()
        .get(gw.url("main", "/items?id=1%27%20OR%20%271%27=%271"))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    let echoed = json(response).await?;
    assert_eq!(echoed["query"], "id=1%27%20OR%20%271%27=%271");
    assert!(
        echoed["headers"]
            .as_object()
            .is_some_and(|h| !h.keys().any(|k| k.contains("waf"))),
        "nothing is added to the request: {echoed}"
    );
    assert_eq!(app.hits(), 1);
    assert_eq!(gw.metric(DETECTED), Some(1));
    assert_eq!(gw.metric(BLOCKED), Some(0));
    Ok(())
}

#[tokio::test]
async fn a_json_body_is_inspected_whole_before_it_goes_upstream() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let gw = gateway(&app, "{ max_body_bytes: 4096 }").await?;
    let client = http1_client();
    let post = |body: String| {
        client
            .post(gw.url("main", "/api/comments"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    let attack = post(
        r#"{"post": 7, "comment": {"text": "<img src=x onerror=alert(document.cookie)>"}}"#
            .to_owned(),
    )
    .await?;
    assert_eq!(attack.status(), 403);
    assert_eq!(json(attack).await?["error"]["code"], "waf_blocked");
    assert_eq!(app.hits(), 0);

    let honest = r#"{"post": 7, "comment": {"text": "I'd say <3 -- great post! See https://example.com/a?b=1&c=2"}}"#;
    let passed = post(honest.to_owned()).await?;
    assert_eq!(passed.status(), 200);
    assert_eq!(
        json(passed).await?["body"],
        honest,
        "the body goes on as sent"
    );

    let large = post(format!(r#"{{"text": "{}"}}"#, "a".repeat(5000))).await?;
    assert_eq!(large.status(), 413);
    assert_eq!(json(large).await?["error"]["code"], "waf_body_too_large");
    assert_eq!(app.hits(), 1);
    Ok(())
}

#[tokio::test]
async fn a_paranoia_level_two_rule_refuses_only_at_level_two() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let gw = levels_gateway(&app).await?;
    let client = http1_client();
    // Many SQL special characters in one argument: rule 942430, level 2.
    let path = "/q?filter=((a))%3B%3B%7C%7C((b))%3B%3B%7C%7C((c))";
    assert_eq!(client.get(gw.url("pl1", path)).send().await?.status(), 200);
    let refused = client.get(gw.url("pl2", path)).send().await?;
    assert_eq!(refused.status(), 403);
    assert_eq!(json(refused).await?["error"]["code"], "waf_blocked");
    assert_eq!(app.hits(), 1);
    Ok(())
}

/// A go-ftw test file (CRS's `tests/regression/tests/*/*.yaml`).
#[derive(Deserialize)]
struct FtwFile {
    tests: Vec<FtwTest>,
}

#[derive(Deserialize)]
struct FtwTest {
    stages: Vec<FtwStage>,
}

#[derive(Deserialize)]
struct FtwStage {
    input: FtwInput,
}

/// What go-ftw sends.
#[derive(Deserialize)]
struct FtwInput {
    method: Option<String>,
    uri: Option<String>,
    version: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    data: Option<String>,
    encoded_request: Option<String>,
    autocomplete_headers: Option<String>,
}

impl FtwInput {
    /// The request as go-ftw writes it on the wire: with `Content-Length`
    /// and `Connection: close` added unless `autocomplete_headers` is false.
    /// `None` for a stage given as an encoded raw request.
    fn raw(&self) -> Option<Vec<u8>> {
        if self.encoded_request.is_some() {
            return None;
        }
        let data = self.data.as_deref().unwrap_or_default();
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let autocomplete = self.autocomplete_headers.as_deref() != Some("false");
        Some(raw_request(
            self.method.as_deref().unwrap_or("GET"),
            self.uri.as_deref().unwrap_or("/"),
            self.version.as_deref().unwrap_or("HTTP/1.1"),
            &headers,
            data.as_bytes(),
            autocomplete,
        ))
    }
}

/// One request on the wire; with `autocomplete`, `Content-Length` (for a
/// body) and `Connection: close` are added unless present.
fn raw_request(
    method: &str,
    uri: &str,
    version: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    autocomplete: bool,
) -> Vec<u8> {
    let mut out = format!("{method} {uri} {version}\r\n").into_bytes();
    let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    if autocomplete {
        if !body.is_empty() && !has("content-length") {
            out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
        }
        if !has("connection") {
            out.extend_from_slice(b"Connection: close\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// What became of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// The waf refused it (403 `waf_blocked`).
    Blocked,
    /// It reached the upstream (200 from the echo server).
    Passed,
    /// The gateway refused it before or beside the waf (status; 0: no answer).
    Refused(u16),
}

/// Sends `raw` on a fresh connection to `addr`.
async fn send_raw(addr: SocketAddr, raw: &[u8]) -> Verdict {
    let answer = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(raw).await?;
        read_response(&mut stream, Duration::from_secs(5)).await
    }
    .await;
    let Ok(text) = answer else {
        return Verdict::Refused(0);
    };
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    match status {
        200 => Verdict::Passed,
        403 if text.contains(r#""code":"waf_blocked""#) => Verdict::Blocked,
        other => Verdict::Refused(other),
    }
}

/// One replayable stage of the CRS sample.
struct Stage {
    /// The rule the test is for (its file's name).
    rule: u32,
    /// That rule's paranoia level.
    level: u8,
    raw: Vec<u8>,
}

/// The sample's stages, and how many were given as encoded raw requests
/// (not replayed).
fn crs_sample() -> anyhow::Result<(Vec<Stage>, usize)> {
    let dir = Path::new(WAF_DIR).join("crs");
    let levels: BTreeMap<u32, u8> = std::fs::read_to_string(dir.join("paranoia-levels.txt"))?
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (rule, level) = l.split_once(' ')?;
            Some((rule.parse().ok()?, level.parse().ok()?))
        })
        .collect();
    let mut stages = Vec::new();
    let mut encoded = 0;
    let mut families: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    families.sort();
    for family in families {
        let mut files: Vec<_> = std::fs::read_dir(&family)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        files.sort();
        for file in files {
            let rule: u32 = file
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| anyhow::anyhow!("{} is not named by a rule id", file.display()))?;
            let level = *levels
                .get(&rule)
                .ok_or_else(|| anyhow::anyhow!("no paranoia level for rule {rule}"))?;
            let parsed: FtwFile = serde_saphyr::from_str(&std::fs::read_to_string(&file)?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            for stage in parsed.tests.iter().flat_map(|t| &t.stages) {
                match stage.input.raw() {
                    Some(raw) => stages.push(Stage { rule, level, raw }),
                    None => encoded += 1,
                }
            }
        }
    }
    Ok((stages, encoded))
}

/// One honest request of `benign.jsonl`.
#[derive(Deserialize)]
struct Honest {
    method: String,
    uri: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Honest {
    fn raw(&self) -> Vec<u8> {
        let mut headers: Vec<(&str, &str)> = vec![("Host", "shop.example.com")];
        headers.extend(self.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        raw_request(
            &self.method,
            &self.uri,
            "HTTP/1.1",
            &headers,
            self.body.as_bytes(),
            true,
        )
    }
}

/// The CPU time this process has used (user and system, from
/// `/proc/self/stat`; zero where there is none).
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command (which may hold spaces): state is first,
    // utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<u64>().ok())
        .sum();
    // Linux counts them in USER_HZ, 100 a second.
    Duration::from_millis(ticks * 10)
}

fn percent(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

/// Replays the CRS sample (each stage at its rule's paranoia level, and at
/// level 1) and the honest requests (at levels 1 and 2), prints the rates,
/// and holds them to floors measured when the waf was written.
#[tokio::test]
async fn crs_regression_sample_and_honest_traffic() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let gw = levels_gateway(&app).await?;
    let (stages, encoded) = crs_sample()?;
    assert!(
        stages.len() >= 600,
        "the sample has {} stages",
        stages.len()
    );

    // family -> (detected at the rule's level, detected at level 1, replayed
    // through the waf, refused by the gateway itself)
    let mut families: BTreeMap<u32, [usize; 4]> = BTreeMap::new();
    for stage in &stages {
        let at_level = send_raw(gw.addr(&format!("pl{}", stage.level)), &stage.raw).await;
        let at_one = send_raw(gw.addr("pl1"), &stage.raw).await;
        let counts = families.entry(stage.rule / 1000).or_default();
        match at_level {
            Verdict::Refused(_) => counts[3] += 1,
            verdict => {
                counts[2] += 1;
                counts[0] += usize::from(verdict == Verdict::Blocked);
                counts[1] += usize::from(at_one == Verdict::Blocked);
            }
        }
    }
    let total = families.values().fold([0; 4], |mut sum, c| {
        (0..4).for_each(|i| sum[i] += c[i]);
        sum
    });
    println!(
        "CRS sample: {} stages ({encoded} encoded raw requests not replayed); \
         {} refused by the gateway before the waf",
        stages.len(),
        total[3]
    );
    for (family, [detected, at_one, replayed, refused]) in &families {
        println!(
            "  {family}xxx: {detected}/{replayed} detected at the rule's paranoia level ({:.1}%), \
             {at_one} at level 1 ({:.1}%); {refused} refused by the gateway",
            percent(*detected, *replayed),
            percent(*at_one, *replayed),
        );
    }
    let detection = percent(total[0], total[2]);
    let detection_pl1 = percent(total[1], total[2]);
    println!(
        "  all: {}/{} at the rule's level ({detection:.1}%), {} at level 1 ({detection_pl1:.1}%)",
        total[0], total[2], total[1]
    );

    let honest: Vec<Honest> = std::fs::read_to_string(Path::new(WAF_DIR).join("benign.jsonl"))?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let mut false_positives = [0usize; 2];
    for request in &honest {
        let raw = request.raw();
        for (level, count) in false_positives.iter_mut().enumerate() {
            match send_raw(gw.addr(&format!("pl{}", level + 1)), &raw).await {
                Verdict::Blocked => *count += 1,
                Verdict::Passed => {}
                Verdict::Refused(status) => {
                    anyhow::bail!(
                        "an honest request got {status}: {} {}",
                        request.method,
                        request.uri
                    )
                }
            }
        }
    }
    let fp = [
        percent(false_positives[0], honest.len()),
        percent(false_positives[1], honest.len()),
    ];
    println!(
        "honest requests: {} refused at level 1 ({:.1}%), {} at level 2 ({:.1}%), of {}",
        false_positives[0],
        fp[0],
        false_positives[1],
        fp[1],
        honest.len()
    );

    // What the filter costs a request here: the same honest GET on the plain
    // route, through a light filter and through the waf, in this process's
    // CPU time (the gateway runs in it) and in wall time, both including the
    // client and a debug build of the host; the filters are release wasm.
    let probe = raw_request(
        "GET",
        "/search?q=O%27Reilly%20books&page=2",
        "HTTP/1.1",
        &[
            ("Host", "shop.example.com"),
            (
                "User-Agent",
                "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
            ),
            (
                "Referer",
                "https://www.example.com/products?page=2&sort=price",
            ),
            (
                "Cookie",
                "_ga=GA1.2.1876543210.1715700000; sessionid=8f14e45fceea167a5a36dedd4bea2543",
            ),
        ],
        b"",
        true,
    );
    const ROUNDS: u32 = 300;
    for listener in ["plain", "light", "pl1", "plain", "light", "pl1"] {
        let (cpu, wall) = (process_cpu(), Instant::now());
        for _ in 0..ROUNDS {
            assert_eq!(send_raw(gw.addr(listener), &probe).await, Verdict::Passed);
        }
        println!(
            "{listener}: {} µs CPU, {} µs wall a request",
            process_cpu().saturating_sub(cpu).as_micros() / u128::from(ROUNDS),
            wall.elapsed().as_micros() / u128::from(ROUNDS)
        );
    }

    assert!(
        detection >= DETECTION_FLOOR,
        "detection {detection:.1}% < {DETECTION_FLOOR}%"
    );
    assert!(
        detection_pl1 >= DETECTION_PL1_FLOOR,
        "level 1 detection {detection_pl1:.1}%"
    );
    for family in [941, 942] {
        let [detected, _, replayed, _] = families[&family];
        assert!(
            percent(detected, replayed) >= FAMILY_FLOOR,
            "{family}xxx: {detected}/{replayed}"
        );
    }
    assert!(
        fp[0] <= FALSE_POSITIVE_CEILING,
        "{:.1}% honest requests refused at level 1",
        fp[0]
    );
    Ok(())
}

/// Floors from the rates measured when the waf was written (see the
/// README); a change that lowers one is a regression.
/// Of the stages that reach the waf, refused at their rule's level (93.1%
/// measured: the misses are CRS's chained rules, which the engine leaves
/// out, multipart bodies, and warnings that alone stay under the threshold).
const DETECTION_FLOOR: f64 = 90.0;
/// The same at paranoia level 1, the default (62.3% measured).
const DETECTION_PL1_FLOOR: f64 = 58.0;
/// XSS (941xxx, 99.2% measured) and SQL injection (942xxx, 92.5%), each.
const FAMILY_FLOOR: f64 = 90.0;
/// Honest requests refused at level 1 (1.3% measured: 4 of 310, each a
/// JSON article with a Python `for` loop in a code block, which CRS's rule
/// 932370 reads as a Windows `for` command).
const FALSE_POSITIVE_CEILING: f64 = 2.0;
