//! The example filters of `examples/filters`: one small filter written in
//! each language, each run through the gateway and held to the same
//! behaviour, the one `examples/filters/README.md` documents.

use weir_tests::{
    EchoUpstream, TestGateway, capture_logs_of, captured_logs, example_filter_wasm, http1_client,
};

/// One test per language (its directory under `examples/filters`), each
/// calling [`behaves_as_documented`].
macro_rules! languages {
    ($($test:ident => $language:literal,)*) => {$(
        #[tokio::test]
        async fn $test() -> anyhow::Result<()> {
            behaves_as_documented($language).await
        }
    )*};
}

languages! {
    rust_weir_sdk_example_greets_and_forbids => "rust-weir-sdk",
    rust_proxy_wasm_example_greets_and_forbids => "rust-proxy-wasm",
    go_example_greets_and_forbids => "go",
    assemblyscript_example_greets_and_forbids => "assemblyscript",
    c_example_greets_and_forbids => "c",
    zig_example_greets_and_forbids => "zig",
}

/// A gateway whose one route forwards to `upstream` through the example of
/// `language`, configured with `config` (JSON text, passed as it is inside
/// YAML single quotes, so without a `'`).
async fn gateway(
    language: &str,
    upstream: &EchoUpstream,
    config: &str,
) -> anyhow::Result<TestGateway> {
    TestGateway::from_yaml(&format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: app, targets: ["{addr}"] }}]
plugins:
  - {{ name: hello-{language}, file: "{file}" }}
routes:
  - {{ name: all, upstream: app, filters: [{{ plugin: hello-{language}, config: '{config}' }}] }}
"#,
        addr = upstream.addr,
        file = example_filter_wasm(language),
    ))
    .await
}

/// What every example does: it logs its greeting when configured, puts it in
/// `x-hello` on every response, answers `/forbidden` itself with 403 and
/// Weir's JSON error body (naming the request's id), passes everything else
/// on, and refuses a configuration whose greeting is not a string.
async fn behaves_as_documented(language: &str) -> anyhow::Result<()> {
    let plugin = format!("hello-{language}");
    capture_logs_of(&plugin);
    let upstream = EchoUpstream::start("app").await?;
    // Escapes and a member to skip, so each parser reads real JSON.
    let config = format!(
        r#"{{"note": [1, -2.5e3, {{"nested": true}}, null, "x"], "greeting": "hello from {language} \"\u00e9\""}}"#
    );
    let greeting = format!("hello from {language} \"é\"");
    let gw = gateway(language, &upstream, &config).await?;
    let client = http1_client();

    let logged = captured_logs(&format!("configured greeting: {greeting}"));
    assert!(
        logged
            .iter()
            .any(|line| line.contains(&format!("plugin=\"{plugin}\""))),
        "{language}: on_configure logs the greeting: {logged:?}"
    );

    let ok = client.get(gw.url("main", "/hello?to=you")).send().await?;
    assert_eq!(ok.status(), 200, "{language}: other paths pass");
    assert_eq!(
        ok.headers().get("x-hello").map(|v| v.as_bytes()),
        Some(greeting.as_bytes()),
        "{language}: x-hello on a proxied answer"
    );
    assert_eq!(upstream.hits(), 1);

    for path in ["/forbidden", "/forbidden?x=1"] {
        let denied = client.get(gw.url("main", path)).send().await?;
        assert_eq!(denied.status(), 403, "{language}: {path} is forbidden");
        let header = |name: &str| {
            denied
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        assert_eq!(
            header("content-type").as_deref(),
            Some("application/json"),
            "{language}"
        );
        let id = header("x-request-id").unwrap_or_default();
        assert!(!id.is_empty(), "{language}: Weir names the request");
        assert_eq!(
            denied.headers().get("x-hello").map(|v| v.as_bytes()),
            Some(greeting.as_bytes()),
            "{language}: the filter's own answer passes its response phase too"
        );
        assert_eq!(
            denied.text().await?,
            format!(
                r#"{{"error":{{"status":403,"code":"forbidden","message":"this path is forbidden","request_id":"{id}"}}}}"#
            ),
            "{language}: Weir's error body, naming the request"
        );
    }

    // A client's own id, with characters JSON must escape.
    let id = "req \"7\" \\ <&>\tend";
    let denied = client
        .get(gw.url("main", "/forbidden"))
        .header("x-request-id", id)
        .send()
        .await?;
    assert_eq!(denied.status(), 403, "{language}");
    let body: serde_json::Value = serde_json::from_str(&denied.text().await?)?;
    assert_eq!(
        body["error"]["request_id"], id,
        "{language}: the id, escaped"
    );
    assert_eq!(
        upstream.hits(),
        1,
        "{language}: the upstream never saw /forbidden"
    );

    for path in ["/forbiddenx", "/forbidden/x", "/allowed/forbidden"] {
        let passed = client.get(gw.url("main", path)).send().await?;
        assert_eq!(passed.status(), 200, "{language}: {path} is not /forbidden");
    }
    assert_eq!(upstream.hits(), 4);

    // null, not a string: encoding/json alone would take it for "no greeting".
    let Err(refused) = gateway(language, &upstream, r#"{"greeting": null}"#).await else {
        panic!("{language}: a greeting that is not a string is refused");
    };
    // weir-sdk names the field and why; the other filters only say no.
    let expected = if language == "rust-weir-sdk" {
        "its configuration is refused at /greeting: invalid type: null, expected a string"
    } else {
        "proxy_on_configure rejected the configuration"
    };
    assert!(
        format!("{refused:#}").contains(expected),
        "{language}: refused by the filter: {refused:#}"
    );
    Ok(())
}
