//! The admin API's entity endpoints on the real `weir` binary: routes,
//! upstreams and plugins put, replaced and deleted one at a time while the
//! gateway serves, each change applied as a whole manifest (rejected whole,
//! with its place in the manifest), plugin modules uploaded as versions and
//! rolled back, built-in plugins named and replaced by uploads, and the live
//! state of an upstream's targets.

mod support;

use std::io::{Read, Write};

use bytes::Bytes;
use http::Method;
use support::{
    ADMIN_TOKEN, READER_TOKEN, Running, admin_call, admin_cli, admin_send, test_dir, with_admin_api,
};

/// An upstream that answers every request with `backend <path>`.
fn backend() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().map_while(Result::ok) {
            let mut head = [0u8; 4096];
            let read = stream.read(&mut head).unwrap_or(0);
            let text = String::from_utf8_lossy(&head[..read]);
            let path = text.split(' ').nth(1).unwrap_or("?").to_owned();
            let body = format!("backend {path}");
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    address
}

/// A manifest with an upstream `backend` at `upstream`, a route `home`
/// answering `home` on `/`, and the admin API.
fn manifest(upstream: &str) -> String {
    with_admin_api(&format!(
        "apiVersion: weir/v1\n\
         # A comment that an entity edit does not keep.\n\
         listeners: [{{ name: main, address: 127.0.0.1:0 }}]\n\
         upstreams: [{{ name: backend, targets: [\"{upstream}\"] }}]\n\
         routes:\n  \
           - {{ name: home, match: {{ path: {{ exact: / }} }}, respond: {{ body: home }} }}\n"
    ))
}

/// Starts `weir run` on `manifest(upstream)` in its own directory.
fn start(name: &str, upstream: &str) -> (Running, String, std::path::PathBuf) {
    let dir = test_dir(name);
    let path = dir.join("weir.yaml");
    std::fs::write(&path, manifest(upstream)).expect("write manifest");
    let (weir, url) = Running::start_with_admin(&path, &["--watch", "false"]);
    (weir, url, dir)
}

/// The version an answer's `ETag` names.
fn etag(answer: &weir::control::admin::client::Answer) -> String {
    answer
        .headers
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .trim_matches('"')
        .to_owned()
}

/// `pick` of each item of the JSON list `list`.
fn each<T>(list: &serde_json::Value, pick: impl Fn(&serde_json::Value) -> T) -> Vec<T> {
    list.as_array().into_iter().flatten().map(pick).collect()
}

/// An admin call with the admin token.
fn call(
    url: &str,
    method: Method,
    path: &str,
    body: Option<&str>,
) -> weir::control::admin::client::Answer {
    admin_call(url, Some(ADMIN_TOKEN), method, path, body, None)
}

#[test]
fn routes_are_added_replaced_and_deleted_while_traffic_flows() {
    let (weir, url, dir) = start("entities-routes", &backend());
    assert_eq!(weir.fetch("/orders/1").0, 404);

    let before = call(&url, Method::GET, "/config", None);
    let added = call(
        &url,
        Method::PUT,
        "/routes/orders",
        Some(r#"{"match": {"path": {"prefix": "/orders"}}, "upstream": "backend"}"#),
    );
    assert_eq!(added.status, 201, "{}", added.problem_text());
    assert_eq!(
        added.json(),
        serde_json::json!({"name": "orders", "match": {"path": {"prefix": "/orders"}}, "upstream": "backend"})
    );
    assert_ne!(etag(&added), etag(&before));
    assert!(etag(&added).starts_with("2-"), "{}", etag(&added));
    assert_eq!(weir.get("/orders/1"), "backend /orders/1");
    assert_eq!(weir.get("/"), "home");

    let listed = call(&url, Method::GET, "/routes", None);
    assert_eq!(listed.status, 200);
    let names = each(&listed.json(), |r| r["name"].clone());
    assert_eq!(names, ["home", "orders"], "appended, in manifest order");
    assert_eq!(etag(&listed), etag(&added));

    // Replaced in place; YAML bodies are accepted too.
    let replaced = call(
        &url,
        Method::PUT,
        "/routes/orders",
        Some("name: orders\nmatch: { path: { prefix: /orders } }\nrespond: { body: replaced }\n"),
    );
    assert_eq!(replaced.status, 200, "{}", replaced.problem_text());
    assert_eq!(weir.get("/orders/1"), "replaced");
    let again = call(
        &url,
        Method::PUT,
        "/routes/orders",
        Some(r#"{"match": {"path": {"prefix": "/orders"}}, "respond": {"body": "replaced"}}"#),
    );
    assert_eq!(again.status, 200, "{}", again.problem_text());
    assert_eq!(
        etag(&again),
        etag(&replaced),
        "the same route changes nothing"
    );
    let one = call(&url, Method::GET, "/routes/orders", None);
    assert_eq!(one.status, 200);
    assert_eq!(one.json()["respond"]["body"], "replaced");

    // The file holds what runs, as YAML written by Weir.
    let written = std::fs::read_to_string(dir.join("weir.yaml")).expect("read manifest");
    assert!(!written.contains("# A comment"), "{written}");
    assert_eq!(
        weir::config::document(&written),
        weir::config::document(&String::from_utf8_lossy(
            &call(&url, Method::GET, "/config?format=yaml", None).body
        ))
    );
    assert_eq!(
        weir::config::document(&written).map(|d| d["routes"][1]["respond"]["body"].clone()),
        Some("replaced".into())
    );

    let deleted = call(&url, Method::DELETE, "/routes/orders", None);
    assert_eq!(deleted.status, 204, "{}", deleted.problem_text());
    assert!(deleted.body.is_empty());
    assert_eq!(weir.fetch("/orders/1").0, 404);
    let gone = call(&url, Method::GET, "/routes/orders", None);
    assert_eq!(gone.status, 404);
    assert_eq!(gone.json()["type"], "urn:weir:problem:not-found");
    assert_eq!(
        gone.json()["detail"],
        "the config has no route named `orders`"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_edit_that_breaks_a_reference_is_rejected_whole_with_its_place() {
    let (weir, url, dir) = start("entities-reference", &backend());
    let added = call(
        &url,
        Method::PUT,
        "/routes/orders",
        Some("{ match: { path: { prefix: /orders } }, upstream: backend }"),
    );
    assert_eq!(added.status, 201, "{}", added.problem_text());
    let file = std::fs::read_to_string(dir.join("weir.yaml")).expect("read manifest");

    let refused = call(&url, Method::DELETE, "/upstreams/backend", None);
    assert_eq!(refused.status, 422, "{}", refused.problem_text());
    let problem = refused.json();
    assert_eq!(problem["type"], "urn:weir:problem:invalid-config");
    let pointers = each(&problem["errors"], |e| e["pointer"].clone());
    assert_eq!(pointers, ["/routes/1/upstream"], "{problem:#}");
    assert_eq!(
        weir.get("/orders/7"),
        "backend /orders/7",
        "nothing changed"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("weir.yaml")).ok(),
        Some(file),
        "the file stays"
    );
    assert_eq!(
        call(&url, Method::GET, "/upstreams/backend", None).status,
        200
    );

    // A body naming another entity than its path.
    let mismatch = call(
        &url,
        Method::PUT,
        "/upstreams/backend",
        Some("{ name: other, targets: [\"127.0.0.1:1\"] }"),
    );
    assert_eq!(mismatch.status, 400);
    assert_eq!(mismatch.json()["type"], "urn:weir:problem:bad-body");

    for (method, path) in [
        (Method::GET, "/routes/nowhere"),
        (Method::DELETE, "/routes/nowhere"),
        (Method::GET, "/upstreams/nowhere"),
        (Method::DELETE, "/plugins/nowhere"),
        (Method::GET, "/upstreams/nowhere/targets"),
    ] {
        let missing = call(&url, method.clone(), path, None);
        assert_eq!(missing.status, 404, "{method} {path}");
        assert_eq!(missing.json()["type"], "urn:weir:problem:not-found");
        assert_eq!(missing.json()["title"], "No such entity", "{method} {path}");
    }
    assert_eq!(
        call(&url, Method::GET, "/routes/a/b", None).json()["title"],
        "No such endpoint"
    );
    assert_eq!(call(&url, Method::POST, "/routes", None).status, 405);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn read_only_tokens_may_not_change_entities_and_stale_versions_are_refused() {
    let (weir, url, dir) = start("entities-roles", &backend());
    let route = "{ match: { path: { prefix: /r } }, respond: { body: r } }";
    let wasm = Some((Bytes::from_static(b"\0asm\x01\0\0\0"), "application/wasm"));
    for (method, path, body) in [
        (
            Method::PUT,
            "/routes/r",
            Some((Bytes::from(route), "application/yaml")),
        ),
        (Method::DELETE, "/routes/home", None),
        (
            Method::PUT,
            "/upstreams/u",
            Some((
                Bytes::from("{ targets: [\"127.0.0.1:1\"] }"),
                "application/yaml",
            )),
        ),
        (Method::DELETE, "/upstreams/backend", None),
        (Method::PUT, "/plugins/p", wasm.clone()),
        (Method::DELETE, "/plugins/p", None),
        (Method::POST, "/plugins/p/rollback", None),
    ] {
        let refused = admin_send(&url, Some(READER_TOKEN), method.clone(), path, body, None);
        assert_eq!(refused.status, 403, "{method} {path}");
        assert_eq!(refused.json()["type"], "urn:weir:problem:forbidden");
    }
    assert_eq!(
        admin_call(&url, Some(READER_TOKEN), Method::GET, "/routes", None, None).status,
        200
    );
    assert_eq!(
        admin_call(&url, None, Method::GET, "/routes", None, None).status,
        401
    );

    let read = call(&url, Method::GET, "/routes/home", None);
    let version = etag(&read);
    let put = |if_match: &str| {
        admin_call(
            &url,
            Some(ADMIN_TOKEN),
            Method::PUT,
            "/routes/r",
            Some(route),
            Some(if_match),
        )
    };
    let applied = put(&version);
    assert_eq!(applied.status, 201, "{}", applied.problem_text());
    assert_eq!(weir.get("/r"), "r");
    let stale = put(&version);
    assert_eq!(stale.status, 412);
    assert_eq!(stale.json()["type"], "urn:weir:problem:version-mismatch");
    let deleted = admin_call(
        &url,
        Some(ADMIN_TOKEN),
        Method::DELETE,
        "/routes/r",
        None,
        Some(&version),
    );
    assert_eq!(deleted.status, 412);
    assert_eq!(weir.get("/r"), "r", "nothing changed");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn upstream_targets_show_their_live_state() {
    let (_weir, url, dir) = start("entities-targets", "127.0.0.1:9");
    let put = call(
        &url,
        Method::PUT,
        "/upstreams/pair",
        Some("{ targets: [\"127.0.0.1:7\", { address: \"127.0.0.1:8\", weight: 3 }] }"),
    );
    assert_eq!(put.status, 201, "{}", put.problem_text());
    let targets = call(&url, Method::GET, "/upstreams/pair/targets", None);
    assert_eq!(targets.status, 200);
    assert_eq!(
        targets.json(),
        serde_json::json!([
            {"address": "127.0.0.1:7", "weight": 1, "in_flight": 0, "health": "unchecked", "ejections": 0},
            {"address": "127.0.0.1:8", "weight": 3, "in_flight": 0, "health": "unchecked", "ejections": 0},
        ])
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A filter that answers every request itself with `body`.
fn answering_filter(body: &str) -> Bytes {
    let wat = format!(
        r#"(module
            (import "env" "proxy_send_local_response"
                (func $reply (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (data (i32.const 64) "{body}")
            (data (i32.const 32) "\00\00\00\00")
            (func (export "proxy_abi_version_0_2_1"))
            (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
                (drop (call $reply (i32.const 200) (i32.const 0) (i32.const 0)
                    (i32.const 64) (i32.const {len}) (i32.const 32) (i32.const 4) (i32.const -1)))
                (i32.const 1)))"#,
        len = body.len()
    );
    Bytes::from(wat::parse_str(wat).expect("the test filter assembles"))
}

/// Adds route `greet` (`/greet`) whose filter is plugin `greeter`.
fn route_through_greeter(url: &str) {
    let routed = call(
        url,
        Method::PUT,
        "/routes/greet",
        Some(
            "{ match: { path: { prefix: /greet } }, upstream: backend, filters: [{ plugin: greeter }] }",
        ),
    );
    assert_eq!(routed.status, 201, "{}", routed.problem_text());
}

#[test]
fn plugin_uploads_run_as_versions_and_roll_back() {
    let (weir, url, dir) = start("entities-plugins", &backend());
    let upload = |module: Bytes| {
        admin_send(
            &url,
            Some(ADMIN_TOKEN),
            Method::PUT,
            "/plugins/greeter",
            Some((module, "application/wasm")),
            None,
        )
    };
    let first = upload(answering_filter("v1"));
    assert_eq!(first.status, 201, "{}", first.problem_text());
    assert_eq!(first.json()["plugin"], "greeter");
    assert_eq!(first.json()["version"]["version"], 1);
    assert_eq!(
        call(&url, Method::GET, "/plugins/greeter", None).json(),
        serde_json::json!({"name": "greeter", "file": ".weir/plugins/greeter/1.wasm"})
    );
    route_through_greeter(&url);
    assert_eq!(weir.get("/greet"), "v1");

    let second = upload(answering_filter("v2"));
    assert_eq!(second.status, 201, "{}", second.problem_text());
    assert_eq!(second.json()["version"]["version"], 2);
    assert_eq!(weir.get("/greet"), "v2");

    // Not Wasm: rejected whole, with the reason; version 2 keeps running.
    let garbage = upload(Bytes::from_static(b"this is not a wasm module"));
    assert_eq!(garbage.status, 422, "{}", garbage.problem_text());
    assert_eq!(garbage.json()["type"], "urn:weir:problem:build-failed");
    let errors = garbage.json()["errors"].clone();
    assert_eq!(errors.as_array().map(Vec::len), Some(1), "{errors}");
    let detail = errors[0]["detail"].as_str().unwrap_or_default().to_owned();
    assert!(
        detail.starts_with("plugin `greeter`: not a valid Wasm module"),
        "{detail}"
    );
    assert_eq!(
        errors[0]["pointer"], "/plugins/0/name",
        "the reason points at the plugin in the manifest"
    );
    assert_eq!(weir.get("/greet"), "v2");

    // An import Weir lacks, and a filter that refuses its configuration.
    let missing_import = wat::parse_str(
        r#"(module (import "env" "proxy_teleport" (func)) (memory (export "memory") 1)
            (func (export "proxy_abi_version_0_2_1")))"#,
    )
    .expect("assembles");
    let refused = upload(Bytes::from(missing_import));
    assert_eq!(refused.status, 422, "{}", refused.problem_text());
    assert!(
        refused.problem_text().contains("proxy_teleport"),
        "{}",
        refused.problem_text()
    );
    let refuses_config = wat::parse_str(
        r#"(module (memory (export "memory") 1)
            (func (export "proxy_abi_version_0_2_1"))
            (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 0)))"#,
    )
    .expect("assembles");
    let refused = upload(Bytes::from(refuses_config));
    assert_eq!(refused.status, 422, "{}", refused.problem_text());
    assert!(
        refused
            .problem_text()
            .contains("proxy_on_configure rejected the configuration"),
        "{}",
        refused.problem_text()
    );
    assert_eq!(weir.get("/greet"), "v2");

    let versions = call(&url, Method::GET, "/plugins/greeter/versions", None);
    assert_eq!(versions.status, 200);
    let listed = each(&versions.json(), |v| {
        (v["version"].clone(), v["running"].clone())
    });
    assert_eq!(
        listed,
        [(1.into(), false.into()), (2.into(), true.into())],
        "rejected uploads leave no version"
    );
    let v1 = answering_filter("v1");
    assert_eq!(versions.json()[0]["size"], v1.len());
    let digest: String = <sha2::Sha256 as sha2::Digest>::digest(&v1)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(versions.json()[0]["sha256"], digest);

    let rolled = call(&url, Method::POST, "/plugins/greeter/rollback", None);
    assert_eq!(rolled.status, 200, "{}", rolled.problem_text());
    assert_eq!(
        rolled.json(),
        serde_json::json!({"previous": 2, "version": 1})
    );
    assert_eq!(weir.get("/greet"), "v1");
    let nothing_before = call(&url, Method::POST, "/plugins/greeter/rollback", None);
    assert_eq!(
        nothing_before.status,
        409,
        "{}",
        nothing_before.problem_text()
    );
    let forward = call(
        &url,
        Method::POST,
        "/plugins/greeter/rollback?version=2",
        None,
    );
    assert_eq!(forward.status, 200, "{}", forward.problem_text());
    assert_eq!(weir.get("/greet"), "v2");
    for (query, status) in [("?version=9", 404), ("?version=x", 400)] {
        let path = format!("/plugins/greeter/rollback{query}");
        assert_eq!(
            call(&url, Method::POST, &path, None).status,
            status,
            "{path}"
        );
    }
    assert_eq!(
        call(&url, Method::GET, "/plugins/nobody/versions", None).status,
        404
    );

    // A stale If-Match refuses the upload, and leaves no version behind.
    let stale = admin_send(
        &url,
        Some(ADMIN_TOKEN),
        Method::PUT,
        "/plugins/greeter",
        Some((answering_filter("v3"), "application/wasm")),
        Some("1-000000000000"),
    );
    assert_eq!(stale.status, 412, "{}", stale.problem_text());
    let versions = call(&url, Method::GET, "/plugins/greeter/versions", None);
    assert_eq!(each(&versions.json(), |v| v["version"].clone()), [1, 2]);
    assert_eq!(weir.get("/greet"), "v2");
    println!(
        "{}",
        std::fs::read_to_string(dir.join("weir.yaml")).unwrap_or_default()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_builtin_plugin_is_put_listed_and_replaced_by_an_upload() {
    let (weir, url, dir) = start("entities-builtin", &backend());
    let builtins = call(&url, Method::GET, "/builtins", None).json();
    assert_eq!(
        each(&builtins, |b| b["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
        .join(", "),
        weir::builtins::names()
    );
    let jwt = builtins
        .as_array()
        .and_then(|all| all.iter().find(|b| b["name"] == "jwt-auth"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        jwt["schema"]["properties"]["jwks"]["required"],
        serde_json::json!(["upstream"])
    );
    assert_eq!(
        jwt["size"],
        weir::builtins::find("jwt-auth").map_or(0, |b| b.module.len())
    );
    let put =
        |name: &str, body: &str| call(&url, Method::PUT, &format!("/plugins/{name}"), Some(body));
    let added = put("greeter", r#"{"builtin": "header-rewrite"}"#);
    assert_eq!(added.status, 201, "{}", added.problem_text());
    assert_eq!(
        call(&url, Method::GET, "/plugins", None).json(),
        serde_json::json!([{"name": "greeter", "builtin": "header-rewrite"}])
    );
    route_through_greeter(&url);
    assert_eq!(weir.get("/greet"), "backend /greet", "the built-in runs");

    // An unknown built-in: its place, and the names there are.
    let unknown = put("ghost", r#"{"builtin": "no-such-plugin"}"#);
    assert_eq!(unknown.status, 422, "{}", unknown.problem_text());
    let errors = unknown.json()["errors"].clone();
    assert_eq!(errors[0]["pointer"], "/plugins/1/builtin");
    assert_eq!(
        errors[0]["detail"],
        format!(
            "unknown built-in plugin `no-such-plugin`; this Weir has: {}",
            weir::builtins::names()
        )
    );
    let both = put("greeter", r#"{"builtin": "jwt-auth", "file": "x.wasm"}"#);
    assert_eq!(both.status, 422, "{}", both.problem_text());

    // An upload replaces the built-in with a file version, and a PUT goes back.
    let uploaded = admin_send(
        &url,
        Some(ADMIN_TOKEN),
        Method::PUT,
        "/plugins/greeter",
        Some((answering_filter("v1"), "application/wasm")),
        None,
    );
    assert_eq!(uploaded.status, 201, "{}", uploaded.problem_text());
    assert_eq!(
        call(&url, Method::GET, "/plugins/greeter", None).json(),
        serde_json::json!({"name": "greeter", "file": ".weir/plugins/greeter/1.wasm"})
    );
    assert_eq!(weir.get("/greet"), "v1");
    let back = put("greeter", r#"{"builtin": "header-rewrite"}"#);
    assert_eq!(back.status, 200, "{}", back.problem_text());
    assert_eq!(weir.get("/greet"), "backend /greet");
    let written = std::fs::read_to_string(dir.join("weir.yaml")).unwrap_or_default();
    assert!(written.contains("builtin: header-rewrite"), "{written}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn weir_plugins_and_weir_admin_list_drive_the_admin_api() {
    let (weir_run, url, dir) = start("entities-cli", &backend());
    let cli = |args: &[&str]| admin_cli(&url, args);
    let stdout = |output: &std::process::Output| {
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let module = dir.join("greeter.wasm");
    for body in ["one", "two"] {
        std::fs::write(&module, answering_filter(body)).expect("write module");
        let pushed = cli(&[
            "plugins",
            "push",
            "greeter",
            module.to_str().unwrap_or_default(),
        ]);
        assert!(stdout(&pushed).contains("greeter"), "names the plugin");
    }
    route_through_greeter(&url);
    assert_eq!(weir_run.get("/greet"), "two");

    let versions = stdout(&cli(&["plugins", "versions", "greeter"]));
    let lines: Vec<&str> = versions.lines().collect();
    assert_eq!(lines.len(), 3, "a header and two versions:\n{versions}");
    assert!(lines[1].starts_with("1 "), "{versions}");
    assert!(
        lines[2].starts_with("2 ") && lines[2].ends_with('*'),
        "{versions}"
    );

    stdout(&cli(&["plugins", "rollback", "greeter"]));
    assert_eq!(weir_run.get("/greet"), "one");

    let routes: serde_json::Value =
        serde_json::from_str(&stdout(&cli(&["admin", "routes"]))).expect("JSON");
    assert_eq!(routes[1]["name"], "greet");
    let upstreams: serde_json::Value =
        serde_json::from_str(&stdout(&cli(&["admin", "upstreams"]))).expect("JSON");
    assert_eq!(upstreams[0]["name"], "backend");
    let plugins: serde_json::Value =
        serde_json::from_str(&stdout(&cli(&["admin", "plugins"]))).expect("JSON");
    assert_eq!(plugins[0]["file"], ".weir/plugins/greeter/1.wasm");

    let garbage = dir.join("garbage.wasm");
    std::fs::write(&garbage, b"garbage").expect("write");
    let refused = cli(&[
        "plugins",
        "push",
        "greeter",
        garbage.to_str().unwrap_or_default(),
    ]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("(422)"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A CA written to `dir` as `<stem>-ca.pem`, able to issue leaf certificates.
struct Authority {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: std::path::PathBuf,
}

impl Authority {
    fn new(dir: &std::path::Path, stem: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{stem} CA"));
        let key = rcgen::KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        let pem = dir.join(format!("{stem}-ca.pem"));
        std::fs::write(&pem, cert.pem()).expect("write CA");
        Self {
            issuer: rcgen::Issuer::new(params, key),
            pem,
        }
    }

    /// A certificate for `names`, written as `<stem>.crt` and `<stem>.key`.
    fn issue(
        &self,
        dir: &std::path::Path,
        stem: &str,
        names: &[&str],
    ) -> (std::path::PathBuf, std::path::PathBuf) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let params = rcgen::CertificateParams::new(names).expect("leaf params");
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        let (cert_path, key_path) = (
            dir.join(format!("{stem}.crt")),
            dir.join(format!("{stem}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).expect("write certificate");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        (cert_path, key_path)
    }
}

/// The error chain of `error`, one cause after another, for assertions on
/// what failed underneath.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

#[test]
fn mutual_tls_admits_only_client_certificates_the_client_ca_issued() {
    use weir::control::admin::client::{ClientTls, Endpoint, call};
    let dir = test_dir("admin-mtls");
    let ours = Authority::new(&dir, "ours");
    let theirs = Authority::new(&dir, "theirs");
    ours.issue(&dir, "admin", &["localhost"]);
    let (client_cert, client_key) = ours.issue(&dir, "operator", &["operator"]);
    let (stranger_cert, stranger_key) = theirs.issue(&dir, "stranger", &["stranger"]);
    let manifest = format!(
        "{}  tls: {{ cert: admin.crt, key: admin.key, client_ca: ours-ca.pem }}\n",
        manifest(&backend())
    );
    let path = dir.join("weir.yaml");
    std::fs::write(&path, manifest).expect("write manifest");
    let (mut weir, plain_url) = Running::start_with_admin(&path, &["--watch", "false"]);
    let https_url = plain_url.replace("http://127.0.0.1", "https://localhost");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let routes = |url: &str, cert: Option<(&std::path::Path, &std::path::Path)>| {
        let endpoint = Endpoint {
            url: url.to_owned(),
            token: Some(support::ADMIN_TOKEN.to_owned()),
            tls: ClientTls {
                ca: Some(ours.pem.clone()),
                cert: cert.map(|(c, _)| c.to_path_buf()),
                key: cert.map(|(_, k)| k.to_path_buf()),
            },
        };
        runtime.block_on(call(&endpoint, Method::GET, "/routes", None, None))
    };

    let admitted = routes(&https_url, Some((&client_cert, &client_key))).expect("admitted");
    assert_eq!(admitted.status, 200);
    assert_eq!(admitted.json()[0]["name"], "home");

    let without = routes(&https_url, None).expect_err("no client certificate");
    assert!(
        chain(&without).contains("CertificateRequired"),
        "{}",
        chain(&without)
    );
    let stranger = routes(&https_url, Some((&stranger_cert, &stranger_key)))
        .expect_err("a certificate another CA issued");
    assert!(
        chain(&stranger).contains("UnknownCA"),
        "{}",
        chain(&stranger)
    );
    let plaintext = routes(&plain_url, Some((&client_cert, &client_key)))
        .expect_err("plain HTTP to a TLS listener");
    assert!(
        matches!(
            plaintext,
            weir::control::admin::client::ClientError::Http(_)
        ),
        "the listener closes a connection that does not start with a TLS handshake: {plaintext}"
    );
    weir.wait_for(|l| support::is_message(l, "admin API: TLS handshake refused"));

    // The CLI speaks TLS with the same settings.
    let cli = |cert: &[&str]| {
        let mut args = vec!["admin", "routes", "--admin-ca"];
        let ca = ours.pem.to_string_lossy().into_owned();
        args.push(&ca);
        args.extend_from_slice(cert);
        admin_cli(&https_url, &args)
    };
    let (cert, key) = (
        client_cert.to_string_lossy().into_owned(),
        client_key.to_string_lossy().into_owned(),
    );
    let listed = cli(&["--admin-cert", &cert, "--admin-key", &key]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(String::from_utf8_lossy(&listed.stdout).contains("\"home\""));
    let refused = cli(&[]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("CertificateRequired"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn consumers_are_put_read_and_deleted_and_their_keys_work_at_once() {
    let (weir, url, dir) = start("entities-consumers", &backend());
    let added = call(
        &url,
        Method::PUT,
        "/plugins/keys",
        Some(r#"{"builtin": "key-auth"}"#),
    );
    assert_eq!(added.status, 201, "{}", added.problem_text());
    let routed = call(
        &url,
        Method::PUT,
        "/routes/private",
        Some(
            "{ match: { path: { prefix: /private } }, upstream: backend, \
             filters: [{ plugin: keys, config: { sources: [{ query: key }] } }] }",
        ),
    );
    assert_eq!(routed.status, 201, "{}", routed.problem_text());
    assert_eq!(weir.fetch("/private?key=k-ada").0, 401, "no consumer yet");

    let digest: String = weir::config::token_digest(b"k-ada")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let ada = format!(r#"{{"groups": ["staff"], "api_keys": ["sha256:{digest}"]}}"#);
    let put = call(&url, Method::PUT, "/consumers/ada", Some(&ada));
    assert_eq!(put.status, 201, "{}", put.problem_text());
    assert_eq!(
        weir.get("/private?key=k-ada"),
        "backend /private",
        "the key works at once and stays at the gateway"
    );
    assert_eq!(
        call(&url, Method::GET, "/consumers/ada", None).json(),
        serde_json::json!({"name": "ada", "groups": ["staff"], "api_keys": [format!("sha256:{digest}")]})
    );

    // The same key for another consumer: refused whole, with its place.
    let bob = format!(r#"{{"api_keys": ["sha256:{digest}"]}}"#);
    let clash = call(&url, Method::PUT, "/consumers/bob", Some(&bob));
    assert_eq!(clash.status, 422);
    assert!(
        clash
            .problem_text()
            .contains("consumer `bob` has the same API key as consumer `ada`"),
        "{}",
        clash.problem_text()
    );
    let clear = call(
        &url,
        Method::PUT,
        "/consumers/bob",
        Some(r#"{"api_keys": ["k-bob"]}"#),
    );
    assert_eq!(clear.status, 422, "a key in the clear is refused");
    assert_eq!(
        each(&call(&url, Method::GET, "/consumers", None).json(), |c| {
            c["name"].clone()
        }),
        ["ada"]
    );

    let deleted = call(&url, Method::DELETE, "/consumers/ada", None);
    assert_eq!(deleted.status, 204, "{}", deleted.problem_text());
    assert_eq!(
        weir.fetch("/private?key=k-ada").0,
        401,
        "the key stopped working"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
