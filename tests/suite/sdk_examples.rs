//! The proxy-wasm Rust SDK's own example filters (`tests/sdk-examples`, tag
//! v0.2.5, unmodified), each run through the gateway configured as its
//! `envoy.yaml` configures Envoy: the same plugin name, configuration and
//! cluster names, with a local server in place of each cluster. Each test
//! checks what the example's README documents (answers, headers, log lines).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use weir_tests::{
    TestGateway, WAT_FILTER_BASICS, capture_logs_of, captured_logs, eventually, h2c_client,
    http1_client, sdk_example_wasm, serve,
};

/// A plugin entry for example `example` under Envoy's plugin `name`. Envoy's
/// configs set no `root_id`, so the root id is empty as there.
fn example_plugin(name: &str, example: &str) -> String {
    format!(
        r#"{{ name: {name}, file: "{}", vms: 1, root_id: "" }}"#,
        sdk_example_wasm(example)
    )
}

/// A gateway with one listener, `main`, as in the examples' `envoy.yaml`:
/// `upstreams` (a YAML flow list), `plugins` and `routes` (YAML block list
/// items), with each `(file, text)` of `files` written next to the manifest.
async fn example_gateway(
    upstreams: &str,
    plugins: &[String],
    routes: &str,
    files: &[(&str, &str)],
) -> anyhow::Result<TestGateway> {
    let dir = tempfile::tempdir()?;
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text)?;
    }
    let plugins: String = plugins.iter().map(|p| format!("  - {p}\n")).collect();
    let yaml = format!(
        "apiVersion: weir/v1\n\
         listeners: [{{ name: main, address: 127.0.0.1:0 }}]\n\
         upstreams: {upstreams}\n\
         plugins:\n{plugins}\
         routes:\n{routes}"
    );
    TestGateway::from_yaml_in(&yaml, dir).await
}

/// Route `r` (a YAML block list item): `body` as a fixed 200 answer (an
/// Envoy `direct_response`, written in YAML's double quotes), behind `filters`
/// (a YAML flow list).
fn respond_route(body: &str, filters: &str) -> String {
    format!("  - {{ name: r, respond: {{ status: 200, body: {body:?} }}, filters: {filters} }}\n")
}

/// The messages plugin `plugin` logged that contain `needle`.
fn logged(plugin: &str, needle: &str) -> Vec<String> {
    let field = format!(" plugin=\"{plugin}\"");
    captured_logs(&field)
        .into_iter()
        .filter_map(|line| {
            let (_, message) = line.split_once("weir::plugin: ")?;
            // The fields follow the message: the plugin, then the stream's
            // route, request id and trace id when it logs for a request.
            Some(message.split_once(&field)?.0.to_owned())
        })
        .filter(|message| message.contains(needle))
        .collect()
}

/// Waits until plugin `plugin` has logged `count` lines containing `needle`.
async fn logs_eventually(plugin: &str, needle: &str, count: usize, timeout: Duration) -> bool {
    eventually(timeout, async || logged(plugin, needle).len() >= count).await
}

/// `hello_world`, run by Envoy as a singleton service (no HTTP filter); Weir
/// runs root contexts as filters only, so it is a filter on a route nobody
/// calls. README: logs `Hello, World!`, then every 5 s `It's <time>, your
/// lucky number is <n>.`
#[tokio::test]
async fn hello_world_logs_hello_then_the_time_and_a_lucky_number_every_5s() -> anyhow::Result<()> {
    capture_logs_of("hello_world");
    let started = Instant::now();
    let _gw = example_gateway(
        "[]",
        &[example_plugin("hello_world", "hello_world")],
        "  - { name: r, respond: { status: 204 }, filters: [{ plugin: hello_world }] }\n",
        &[],
    )
    .await?;
    assert!(
        logs_eventually("hello_world", "Hello, World!", 1, Duration::from_secs(5)).await,
        "on_vm_start logs Hello, World!"
    );
    let lucky = "your lucky number is";
    assert!(logs_eventually("hello_world", lucky, 2, Duration::from_secs(15)).await);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(9),
        "two ticks 5 s apart take 10 s, not {elapsed:?}"
    );
    for line in logged("hello_world", lucky) {
        let (time, number) = tick_message(&line)
            .unwrap_or_else(|| panic!("not `It's <time> UTC, {lucky} <n>.`: {line}"));
        let now = unix_seconds(SystemTime::now());
        assert!(
            now.abs_diff(time) < 60,
            "the time logged is the time now: {line}"
        );
        assert!(number.parse::<u8>().is_ok(), "a byte: {line}");
    }
    Ok(())
}

/// From `… It's 2022-11-22 03:39:17.849616 UTC, your lucky number is 41. …`,
/// the time (Unix seconds) and the number.
fn tick_message(line: &str) -> Option<(u64, &str)> {
    let rest = &line[line.find("It's ")? + 5..];
    let (time, rest) = rest.split_once(" UTC, your lucky number is ")?;
    let number = &rest[..rest.find('.')?];
    let (date, clock) = time.split_once(' ')?;
    let mut date = date.split('-').map(str::parse::<u64>);
    let (year, month, day) = (date.next()?.ok()?, date.next()?.ok()?, date.next()?.ok()?);
    let mut clock = clock.split(['.', ':']).map(str::parse::<u64>);
    let (h, m, s) = (
        clock.next()?.ok()?,
        clock.next()?.ok()?,
        clock.next()?.ok()?,
    );
    Some((
        days_from_civil(year, month, day)? * 86_400 + h * 3600 + m * 60 + s,
        number,
    ))
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (Howard
/// Hinnant's `days_from_civil`), for dates from 1970.
fn days_from_civil(year: u64, month: u64, day: u64) -> Option<u64> {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).checked_sub(719_468)
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// httpbin as the examples use it: `/bytes/<n>` answers `n` bytes (all
/// `byte`, where httpbin's are random) and `/headers` the request's headers as
/// `{"headers": {…}}`. Records each request's path and host.
struct Httpbin {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<(String, String)>>>,
    task: JoinHandle<()>,
}

impl Httpbin {
    async fn start(byte: u8) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = serve(listener, move |req: Request<hyper::body::Incoming>| {
            let log = log.clone();
            async move { httpbin(&req, byte, &log) }
        });
        Ok(Self { addr, seen, task })
    }

    /// `(path, host)` of each request so far.
    fn seen(&self) -> Vec<(String, String)> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for Httpbin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn httpbin<B>(
    req: &Request<B>,
    byte: u8,
    seen: &Mutex<Vec<(String, String)>>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let host = req
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if let Ok(mut seen) = seen.lock() {
        seen.push((path.clone(), host));
    }
    let body = match path.strip_prefix("/bytes/").map(str::parse::<usize>) {
        Some(Ok(n)) => Bytes::from(vec![byte; n]),
        _ if path == "/headers" => {
            let headers: serde_json::Map<String, serde_json::Value> = req
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
                .collect();
            Bytes::from(serde_json::json!({ "headers": headers }).to_string())
        }
        _ => {
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = hyper::StatusCode::NOT_FOUND;
            return response;
        }
    };
    Response::new(Full::new(body))
}

/// A gateway configured as `http_auth_random`'s `envoy.yaml`: every request
/// goes to cluster `httpbin`, behind the example's filter.
async fn auth_random_gateway(httpbin: &Httpbin) -> anyhow::Result<TestGateway> {
    example_gateway(
        &format!(r#"[{{ name: httpbin, targets: ["{}"] }}]"#, httpbin.addr),
        &[example_plugin("http_auth_random", "http_auth_random")],
        "  - { name: r, upstream: httpbin, filters: [{ plugin: http_auth_random }] }\n",
        &[],
    )
    .await
}

/// `http_auth_random`: each request first calls `httpbin` (`GET /bytes/1`,
/// authority `httpbin.org`); an even byte lets it through to `/headers` with
/// `Powered-By: proxy-wasm` added to the answer and logs `Access granted.`,
/// an odd one answers 403 `Access forbidden.` and logs so. The two cases run
/// one after the other, as they share the plugin's log lines.
#[tokio::test]
async fn http_auth_random_lets_through_on_an_even_byte_and_forbids_on_an_odd_one()
-> anyhow::Result<()> {
    capture_logs_of("http_auth_random");
    let even = Httpbin::start(2).await?;
    let gw = auth_random_gateway(&even).await?;
    let response = http1_client()
        .get(gw.url("main", "/headers"))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["powered-by"], "proxy-wasm");
    let body: serde_json::Value = response.json().await?;
    assert!(
        body["headers"]["host"].is_string(),
        "httpbin's /headers: {body}"
    );
    assert_eq!(
        even.seen(),
        [
            ("/bytes/1".to_owned(), "httpbin.org".to_owned()),
            ("/headers".to_owned(), gw.addr("main").to_string()),
        ],
        "the callout, then the request itself"
    );
    assert!(
        logs_eventually(
            "http_auth_random",
            "Access granted.",
            1,
            Duration::from_secs(5)
        )
        .await
    );
    assert!(logged("http_auth_random", "Access forbidden.").is_empty());

    let odd = Httpbin::start(1).await?;
    let gw = auth_random_gateway(&odd).await?;
    let response = http1_client()
        .get(gw.url("main", "/headers"))
        .send()
        .await?;
    assert_eq!(response.status(), 403);
    assert_eq!(response.headers()["powered-by"], "proxy-wasm");
    assert_eq!(response.text().await?, "Access forbidden.\n");
    assert_eq!(
        odd.seen(),
        [("/bytes/1".to_owned(), "httpbin.org".to_owned())],
        "only the callout reached httpbin"
    );
    assert!(
        logs_eventually(
            "http_auth_random",
            "Access forbidden.",
            1,
            Duration::from_secs(5)
        )
        .await
    );
    assert_eq!(logged("http_auth_random", "Access granted.").len(), 1);
    Ok(())
}

/// `http_body`'s `envoy.yaml`: two direct responses, behind the example's filter.
#[tokio::test]
async fn http_body_redacts_a_response_that_mentions_a_secret() -> anyhow::Result<()> {
    let gw = example_gateway(
        "[]",
        &[example_plugin("http_body", "http_body")],
        r#"  - name: secret
    match: { path: { prefix: /secret } }
    respond: { status: 200, body: "This secret message should not be read by anyone.\n" }
    filters: [{ plugin: http_body }]
  - name: hello
    respond: { status: 200, body: "Everyone may read this message.\n" }
    filters: [{ plugin: http_body }]
"#,
        &[],
    )
    .await?;
    let client = http1_client();
    let response = client.get(gw.url("main", "/hello")).send().await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await?, "Everyone may read this message.\n");

    let response = client.get(gw.url("main", "/secret")).send().await?;
    assert_eq!(response.status(), 200);
    let redacted = "Original message body (50 bytes) redacted.\n";
    assert_eq!(
        response
            .headers()
            .get("content-length")
            .map(|v| v.as_bytes()),
        Some(redacted.len().to_string().as_bytes()),
        "the filter removed the old length; the new one is the new body's"
    );
    assert_eq!(response.text().await?, redacted);
    Ok(())
}

/// `http_config`'s `envoy.yaml`: its configuration is a `StringValue`, and the
/// route a direct response.
#[tokio::test]
async fn http_config_adds_its_configuration_as_a_response_header() -> anyhow::Result<()> {
    let secret = "The secret to life is meaningless unless you discover it yourself";
    let gw = example_gateway(
        "[]",
        &[example_plugin("http_config", "http_config")],
        &respond_route(
            "Inspect the HTTP header: custom-header.\n",
            &format!("[{{ plugin: http_config, config: {secret} }}]"),
        ),
        &[],
    )
    .await?;
    let response = http1_client().get(gw.url("main", "/hello")).send().await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["custom-header"], secret);
    assert_eq!(response.headers()["content-length"], "40");
    assert_eq!(
        response.text().await?,
        "Inspect the HTTP header: custom-header.\n"
    );
    Ok(())
}

/// `http_headers`' `envoy.yaml`: a direct response behind the example's
/// filter. README: `/hello` is answered by the filter itself, which logs each
/// request header (`#<context> -> name: value`), each response header (`<-`)
/// and `#<context> completed.`
#[tokio::test]
async fn http_headers_answers_hello_and_logs_both_header_maps() -> anyhow::Result<()> {
    capture_logs_of("http_headers");
    let gw = example_gateway(
        "[]",
        &[example_plugin("http_headers", "http_headers")],
        &respond_route(
            "Request /hello and be welcomed!\n",
            "[{ plugin: http_headers }]",
        ),
        &[],
    )
    .await?;
    let client = http1_client();
    let response = client.get(gw.url("main", "/hello")).send().await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["hello"], "World");
    assert_eq!(response.headers()["powered-by"], "proxy-wasm");
    assert_eq!(response.text().await?, "Hello, World!\n");
    // The first HTTP context of the VM is #2, as in the README (#1 is the root).
    let authority = gw.addr("main").to_string();
    let expected = [
        format!("#2 -> :authority: {authority}"),
        "#2 -> :path: /hello".to_owned(),
        "#2 -> :method: GET".to_owned(),
        "#2 -> :scheme: http".to_owned(),
        "#2 <- :status: 200".to_owned(),
        "#2 <- hello: World".to_owned(),
        "#2 <- powered-by: proxy-wasm".to_owned(),
        "#2 <- content-length: 14".to_owned(),
        "#2 completed.".to_owned(),
    ];
    assert!(
        logs_eventually("http_headers", "#2 completed.", 1, Duration::from_secs(5)).await,
        "on_log ran: {:?}",
        logged("http_headers", "#")
    );
    for line in &expected {
        let all = logged("http_headers", "#2 ");
        assert_eq!(
            all.iter().filter(|message| *message == line).count(),
            1,
            "logged once: {line}; all: {all:?}"
        );
    }

    let response = client.get(gw.url("main", "/other")).send().await?;
    assert_eq!(response.text().await?, "Request /hello and be welcomed!\n");
    assert!(
        logs_eventually("http_headers", "#3 completed.", 1, Duration::from_secs(5)).await,
        "the next request is #3 and ends too"
    );
    assert_eq!(logged("http_headers", "#3 -> :path: /other").len(), 1);
    assert_eq!(logged("http_headers", "#3 <- :status: 200").len(), 1);
    Ok(())
}

/// Stands in for `envoy_filter_metadata`'s Lua filter: sets dynamic metadata
/// `envoy.filters.http.lua` / `uppercased-custom-metadata` to the request's
/// `x-custom-metadata` header, upper-cased, by setting the property the
/// example reads (`metadata.filter_metadata.envoy.filters.http.lua.
/// uppercased-custom-metadata`). Without the header it sets nothing.
fn lua_stand_in_wat() -> String {
    format!(
        r#"(module
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_property" (func $set (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "x-custom-metadata")
  (data (i32.const 128) "metadata\00filter_metadata\00envoy.filters.http.lua\00uppercased-custom-metadata")
{WAT_FILTER_BASICS}  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (local $p i32) (local $end i32) (local $c i32)
    (if (call $get (i32.const 0) (i32.const 64) (i32.const 17) (i32.const 0) (i32.const 4))
      (then (return (i32.const 0))))
    (local.set $p (i32.load (i32.const 0)))
    (local.set $end (i32.add (local.get $p) (i32.load (i32.const 4))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $c (i32.load8_u (local.get $p)))
        (if (i32.and (i32.ge_u (local.get $c) (i32.const 97)) (i32.le_u (local.get $c) (i32.const 122)))
          (then (i32.store8 (local.get $p) (i32.sub (local.get $c) (i32.const 32)))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $next)))
    (if (call $set (i32.const 128) (i32.const 74) (i32.load (i32.const 0)) (i32.load (i32.const 4)))
      (then unreachable))
    (i32.const 0)))
"#
    )
}

/// `envoy_filter_metadata`'s `envoy.yaml`: a Lua filter, then the example, in
/// front of a direct response. README: with `x-custom-metadata: some-value`
/// the example answers itself, with the upper-cased value in a header and the
/// body; without it the direct response goes through. The example reads
/// dynamic metadata another filter wrote (not route metadata): on Weir an
/// earlier filter writes it with `proxy_set_property`, and later filters of
/// the request read it back.
#[tokio::test]
async fn envoy_filter_metadata_answers_with_the_metadata_an_earlier_filter_set()
-> anyhow::Result<()> {
    let gw = example_gateway(
        "[]",
        &[
            "{ name: lua, file: lua.wat, vms: 1 }".to_owned(),
            example_plugin("envoy_metadata_filter", "envoy_filter_metadata"),
        ],
        &respond_route(
            "Welcome, set the `x-custom-metadata` header to change the response!\n",
            "[{ plugin: lua }, { plugin: envoy_metadata_filter }]",
        ),
        &[("lua.wat", &lua_stand_in_wat())],
    )
    .await?;
    let client = http1_client();
    let response = client.get(gw.url("main", "/")).send().await?;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await?,
        "Welcome, set the `x-custom-metadata` header to change the response!\n"
    );

    let response = client
        .get(gw.url("main", "/"))
        .header("x-custom-metadata", "some-value")
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["uppercased-metadata"], "SOME-VALUE");
    assert_eq!(response.headers()["powered-by"], "proxy-wasm");
    assert_eq!(
        response.text().await?,
        "Custom response with Envoy metadata: \"SOME-VALUE\"\n"
    );
    Ok(())
}

/// A gRPC length-prefixed message (uncompressed).
fn grpc_frame(message: &[u8]) -> Bytes {
    let mut frame = vec![0];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    Bytes::from(frame)
}

/// grpcbin and the example's `hello.HelloService`, over h2c:
/// `grpcbin.GRPCBin/RandomError` answers with gRPC status `status` (an empty
/// message and status 0, or a trailers-only answer; grpcbin's status is
/// random), and
/// `hello.HelloService/SayHello` with `{reply: "hello Rust"}`. Counts the
/// calls of each.
async fn grpcbin(
    status: u8,
    calls: Arc<Mutex<Vec<String>>>,
) -> anyhow::Result<(std::net::SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = serve(listener, move |req: Request<hyper::body::Incoming>| {
        let calls = calls.clone();
        async move {
            let path = req.uri().path().to_owned();
            if let Ok(mut calls) = calls.lock() {
                calls.push(path.clone());
            }
            let reply = match path.as_str() {
                "/hello.HelloService/SayHello" => {
                    // HelloResponse { reply (1): "hello Rust" }
                    let message = [&[0x0a, 10][..], b"hello Rust"].concat();
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                    Full::new(grpc_frame(&message))
                        .with_trailers(async move { Some(Ok(trailers)) })
                        .boxed()
                }
                // grpcbin's `Empty` reply: one empty message, then the status.
                "/grpcbin.GRPCBin/RandomError" if status == 0 => {
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                    Full::new(grpc_frame(&[]))
                        .with_trailers(async move { Some(Ok(trailers)) })
                        .boxed()
                }
                _ => Full::new(Bytes::new()).boxed(),
            };
            let mut response = Response::new(reply);
            response.headers_mut().insert(
                "content-type",
                http::HeaderValue::from_static("application/grpc"),
            );
            if path == "/grpcbin.GRPCBin/RandomError" && status != 0 {
                response
                    .headers_mut()
                    .insert("grpc-status", http::HeaderValue::from(u16::from(status)));
            }
            response
        }
    });
    Ok((addr, task))
}

/// A gateway configured as `grpc_auth_random`'s `envoy.yaml`: every request
/// goes to cluster `grpcbin` (at `addr`), behind the example's filter.
async fn grpc_auth_gateway(addr: std::net::SocketAddr) -> anyhow::Result<TestGateway> {
    example_gateway(
        &format!(r#"[{{ name: grpcbin, targets: ["{addr}"] }}]"#),
        &[example_plugin("grpc_auth_random", "grpc_auth_random")],
        "  - { name: r, upstream: grpcbin, filters: [{ plugin: grpc_auth_random }] }\n",
        &[],
    )
    .await
}

/// `grpc_auth_random`'s `envoy.yaml`: everything goes to cluster `grpcbin`
/// (h2), behind the example's filter. README: a gRPC call is let through when
/// `grpcbin.GRPCBin/RandomError` answers an even status (`Access granted.`),
/// and answered `ABORTED` / `Aborted by Proxy-Wasm!` with `Powered-By:
/// proxy-wasm` on an odd one (`Access forbidden.`); a client that is not gRPC
/// gets 503 `Service accessible only to gRPC clients.`
#[tokio::test]
async fn grpc_auth_random_decides_on_the_status_of_its_grpc_callout() -> anyhow::Result<()> {
    capture_logs_of("grpc_auth_random");
    let say_hello = |gw: &TestGateway| {
        h2c_client()
            .post(gw.url("main", "/hello.HelloService/SayHello"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            // HelloRequest { greeting (1): "Rust" }
            .body(grpc_frame(&[&[0x0a, 4][..], b"Rust"].concat()))
            .send()
    };
    for (status, granted) in [(0u8, true), (3, false)] {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let (addr, task) = grpcbin(status, calls.clone()).await?;
        let gw = grpc_auth_gateway(addr).await?;
        let response = say_hello(&gw).await?;
        let seen = calls.lock().map(|c| c.clone()).unwrap_or_default();
        assert_eq!(
            seen.first().map(String::as_str),
            Some("/grpcbin.GRPCBin/RandomError")
        );
        if granted {
            // The filter lets the call on; the test below follows it to the service.
            assert!(
                logs_eventually(
                    "grpc_auth_random",
                    "Access granted.",
                    1,
                    Duration::from_secs(5)
                )
                .await
            );
        } else {
            assert_eq!(response.status(), 200);
            assert_eq!(response.headers()["powered-by"], "proxy-wasm");
            assert_eq!(seen.len(), 1, "no call past the filter: {seen:?}");
            assert_eq!(response.headers()["grpc-status"], "10", "ABORTED");
            assert_eq!(response.headers()["grpc-message"], "Aborted by Proxy-Wasm!");
            assert!(
                logs_eventually(
                    "grpc_auth_random",
                    "Access forbidden.",
                    1,
                    Duration::from_secs(5)
                )
                .await
            );
        }
        task.abort();
    }

    let calls = Arc::new(Mutex::new(Vec::new()));
    let (addr, task) = grpcbin(0, calls.clone()).await?;
    let gw = grpc_auth_gateway(addr).await?;
    let response = http1_client().get(gw.url("main", "/")).send().await?;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["powered-by"], "proxy-wasm");
    assert_eq!(
        response.text().await?,
        "Service accessible only to gRPC clients.\n"
    );
    assert!(calls.lock().is_ok_and(|c| c.is_empty()), "no callout");
    task.abort();
    Ok(())
}

/// The granted half of `grpc_auth_random`'s README: the gRPC call itself
/// reaches `hello.HelloService` and its answer comes back.
#[tokio::test]
async fn grpc_auth_random_forwards_a_granted_call_to_the_service() -> anyhow::Result<()> {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let (addr, task) = grpcbin(0, calls.clone()).await?;
    let gw = grpc_auth_gateway(addr).await?;
    let response = h2c_client()
        .post(gw.url("main", "/hello.HelloService/SayHello"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(grpc_frame(&[&[0x0a, 4][..], b"Rust"].concat()))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["powered-by"], "proxy-wasm");
    let body = response.bytes().await?;
    assert!(
        body.windows(10).any(|w| w == b"hello Rust"),
        "the service's reply: {body:?}"
    );
    let seen = calls.lock().map(|c| c.clone()).unwrap_or_default();
    assert_eq!(
        seen,
        [
            "/grpcbin.GRPCBin/RandomError",
            "/hello.HelloService/SayHello"
        ]
    );
    task.abort();
    Ok(())
}
