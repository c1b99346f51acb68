//! Nodes that share one config through a real `redis-server`, started by
//! each test on a free port: a change on one node reaches the others (by
//! pub/sub, or by the poll when the message is missed), Redis going away
//! loses nothing, and a version that cannot build on a node leaves that node
//! on its config, saying so.

use std::path::PathBuf;
use std::process::{Child, Stdio};

use super::support::weir;
use super::*;

/// The cluster key every node of these tests joins.
const KEY: &str = "test";

/// A `redis-server` on a port of its own, which a test may stop and start
/// again on the same port (empty: it saves nothing).
struct Redis {
    port: u16,
    child: Option<Child>,
}

impl Redis {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut redis = Self { port, child: None };
        redis.restart();
        redis
    }

    /// Starts the server (again) and waits until it answers PING.
    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts (scripts/test installs it)");
        self.child = Some(child);
        within(STEP_TIMEOUT, "redis-server answers PING", || {
            self.connection()
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok()
        });
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn connection(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url())?.get_connection()
    }

    /// The string at `key`.
    fn get(&self, key: &str) -> Option<String> {
        let mut connection = self.connection().expect("redis answers");
        redis::cmd("GET")
            .arg(key)
            .query(&mut connection)
            .expect("GET")
    }

    fn set(&self, key: &str, value: &str) {
        let mut connection = self.connection().expect("redis answers");
        redis::cmd("SET")
            .arg(key)
            .arg(value)
            .query::<()>(&mut connection)
            .expect("SET");
    }

    /// The cluster's newest version and its text.
    fn latest(&self) -> (u64, Option<String>) {
        let version: u64 = self
            .get(&format!("weir:{KEY}:version"))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        (version, self.get(&format!("weir:{KEY}:config:{version}")))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls `done` every 20 ms; fails the test if it is not true within `limit`.
fn within(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A node: `weir run` on its own manifest file `dir/<name>/weir.yaml`
/// (written with `text` first), in the cluster; its admin API's URL.
fn node(dir: &Path, name: &str, text: &str, redis: &Redis) -> (Running, String, PathBuf) {
    let home = dir.join(name);
    std::fs::create_dir_all(&home).expect("node dir");
    let manifest = home.join("weir.yaml");
    std::fs::write(&manifest, text).expect("write manifest");
    let (weir, admin) = start_node(&manifest, redis);
    (weir, admin, manifest)
}

/// A fresh Redis, a test directory named after `name`, and node `a` in it,
/// which seeded the cluster with `with_admin("one")` as version 1.
fn first_node(name: &str) -> (Redis, PathBuf, (Running, String, PathBuf)) {
    let redis = Redis::start();
    let dir = test_dir(name);
    let a = node(&dir, "a", &with_admin("one"), &redis);
    wait_state(&a.1, "synced");
    (redis, dir, a)
}

/// `weir run` on `manifest` as it is, in the cluster; its admin API's URL.
fn start_node(manifest: &Path, redis: &Redis) -> (Running, String) {
    start_node_with(manifest, redis, &[])
}

/// [`start_node`] with more arguments.
fn start_node_with(manifest: &Path, redis: &Redis, args: &[&str]) -> (Running, String) {
    let url = redis.url();
    let mut all = vec!["--cluster", &url, "--cluster-key", KEY];
    all.extend_from_slice(args);
    Running::start_with_admin(manifest, &all)
}

/// `/readyz`: its status and body.
fn readyz(admin: &str) -> (u16, serde_json::Value) {
    let answer = admin_call(admin, None, http::Method::GET, "/readyz", None, None);
    (answer.status.as_u16(), answer.json())
}

/// Waits until the node's `/readyz` reports exactly `expected` as its
/// `cluster` status. A node serves a new version a moment before its status
/// names it, so a test that checks the version waits for the whole status,
/// not only for the state (which may already hold with the old version).
fn wait_cluster(admin: &str, expected: serde_json::Value) {
    within(STEP_TIMEOUT, &format!("cluster status {expected}"), || {
        readyz(admin).1["cluster"] == expected
    });
}

/// Waits until the node's `/readyz` reports `state`; returns its `cluster`.
fn wait_state(admin: &str, state: &str) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    within(STEP_TIMEOUT, &format!("cluster state {state}"), || {
        last = readyz(admin).1["cluster"].clone();
        last["state"] == state
    });
    last
}

/// `PUT /config` with the admin token.
fn put(admin: &str, text: &str) -> weir::control::admin::client::Answer {
    admin_call(
        admin,
        Some(ADMIN_TOKEN),
        http::Method::PUT,
        "/config",
        Some(text),
        None,
    )
}

/// `PUT /config`, which must succeed; the cluster version it became.
fn put_ok(admin: &str, text: &str) -> serde_json::Value {
    let answer = put(admin, text);
    assert_eq!(answer.status, 200, "{}", answer.problem_text());
    answer.json()["cluster_version"].clone()
}

fn file(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn count(weir: &Running, message: &str) -> usize {
    weir.seen.iter().filter(|l| is_message(l, message)).count()
}

#[test]
fn a_change_on_one_node_is_served_by_the_other_within_a_second() {
    let redis = Redis::start();
    let dir = test_dir("cluster-two");
    let (a, a_admin, _) = node(&dir, "a", &with_admin("one"), &redis);
    wait_cluster(
        &a_admin,
        serde_json::json!({"state": "synced", "version": 1}),
    );
    assert_eq!(redis.latest(), (1, Some(with_admin("one"))));

    // B joins with a file of its own: the cluster's config wins. B polls
    // only hourly, so what reaches it within a second came by pub/sub.
    let b_file = dir.join("b/weir.yaml");
    std::fs::create_dir_all(dir.join("b")).expect("node dir");
    std::fs::write(&b_file, with_admin("b-alone")).expect("write manifest");
    let (b, b_admin) = start_node_with(&b_file, &redis, &["--cluster-poll", "1h"]);
    within(STEP_TIMEOUT, "B joins", || readyz(&b_admin).0 == 200);
    wait_cluster(
        &b_admin,
        serde_json::json!({"state": "synced", "version": 1}),
    );
    assert_eq!(b.get("/"), "one");
    assert_eq!(file(&b_file), with_admin("one"));

    // PUT /config on A: B serves it within a second (pub/sub), and writes it.
    assert_eq!(put_ok(&a_admin, &with_admin("two")), 2);
    within(Duration::from_secs(1), "B serves A's change", || {
        b.get("/") == "two"
    });
    within(Duration::from_secs(1), "B's file holds it", || {
        file(&b_file) == with_admin("two")
    });
    assert_eq!(redis.latest(), (2, Some(with_admin("two"))));
    wait_cluster(
        &b_admin,
        serde_json::json!({"state": "synced", "version": 2}),
    );

    // `weir apply` against B: A serves it.
    let next = dir.join("next.yaml");
    std::fs::write(&next, with_admin("three")).expect("write");
    let applied = weir()
        .env("WEIR_ADMIN_URL", &b_admin)
        .env("WEIR_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("WEIR_LOG", "warn")
        .args(["apply", "-f"])
        .arg(&next)
        .output()
        .expect("weir apply runs");
    assert!(applied.status.success());
    within(Duration::from_secs(1), "A serves B's change", || {
        a.get("/") == "three"
    });
    assert_eq!(redis.latest(), (3, Some(with_admin("three"))));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_version_published_without_a_message_is_caught_by_the_poll() {
    let (redis, dir, (a, a_admin, _)) = first_node("cluster-poll");

    // Written straight into Redis, with no PUBLISH: only the poll can see it.
    redis.set(&format!("weir:{KEY}:config:2"), &with_admin("polled"));
    redis.set(&format!("weir:{KEY}:version"), "2");
    within(Duration::from_millis(2500), "A polls version 2", || {
        a.get("/") == "polled"
    });
    within(STEP_TIMEOUT, "A reports version 2", || {
        readyz(&a_admin).1["cluster"] == serde_json::json!({"state": "synced", "version": 2})
    });

    // A node started after the change has missed every message too.
    let (b, b_admin, b_file) = node(&dir, "b", &with_admin("late"), &redis);
    within(STEP_TIMEOUT, "B joins", || readyz(&b_admin).0 == 200);
    assert_eq!(b.get("/"), "polled");
    assert_eq!(file(&b_file), with_admin("polled"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn nodes_serve_while_redis_is_down_and_a_change_made_meanwhile_reaches_the_others_even_across_a_restart()
 {
    let (mut redis, dir, (a, a_admin, a_file)) = first_node("cluster-down");
    let (b, b_admin, b_file) = node(&dir, "b", &with_admin("one"), &redis);
    wait_state(&b_admin, "synced");

    redis.stop();
    for admin in [&a_admin, &b_admin] {
        let cluster = wait_state(admin, "disconnected");
        assert_eq!(cluster["version"], 1);
        assert_eq!(readyz(admin).0, 200, "still ready: it serves its config");
    }
    assert_eq!((a.get("/"), b.get("/")), ("one".into(), "one".into()));

    // A change on A while Redis is down runs on A and waits to be published.
    assert_eq!(
        put_ok(&a_admin, &with_admin("two")),
        serde_json::Value::Null
    );
    assert_eq!(a.get("/"), "two");
    let cluster = readyz(&a_admin).1["cluster"].clone();
    assert_eq!(
        (
            &cluster["state"],
            &cluster["version"],
            &cluster["unpublished"]
        ),
        (&"disconnected".into(), &1.into(), &true.into()),
        "{cluster}"
    );
    assert_eq!(b.get("/"), "one");

    // A restarts while Redis is still down: it knows the change is its own.
    drop(a);
    let (mut a, a_admin) = start_node(&a_file, &redis);
    let cluster = wait_state(&a_admin, "disconnected");
    assert_eq!(
        (&cluster["version"], &cluster["unpublished"]),
        (&1.into(), &true.into()),
        "{cluster}"
    );
    assert_eq!(
        readyz(&a_admin).0,
        200,
        "ready without Redis: it serves its file"
    );
    assert_eq!(a.get("/"), "two");

    // Redis comes back empty: the change is published and reaches B.
    redis.restart();
    within(Duration::from_secs(5), "B serves A's change", || {
        b.get("/") == "two"
    });
    within(Duration::from_secs(1), "B's file holds it", || {
        file(&b_file) == with_admin("two")
    });
    let cluster = wait_state(&a_admin, "synced");
    assert_eq!(cluster.get("unpublished"), None, "{cluster}");
    assert_eq!(redis.latest().1, Some(with_admin("two")));
    assert_eq!(a.get("/"), "two");

    // Logged once when lost and once when found, not once per poll.
    a.wait_for(|l| is_message(l, "cluster: Redis reachable again"));
    assert_eq!(count(&a, "cluster: Redis unreachable"), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The smallest Proxy-Wasm module (the golden manifests' `noop.wat`).
const NOOP: &str =
    "(module (memory (export \"memory\") 1) (func (export \"proxy_abi_version_0_2_1\")))";

#[test]
fn a_version_that_cannot_build_on_a_node_leaves_it_on_its_config_and_says_so() {
    let (redis, dir, (a, a_admin, _)) = first_node("cluster-diverged");
    let (mut b, b_admin, b_file) = node(&dir, "b", &with_admin("one"), &redis);
    wait_state(&b_admin, "synced");

    // A plugin file that only A's disk holds.
    std::fs::write(dir.join("a/noop.wat"), NOOP).expect("write plugin");
    let with_plugin = with_admin("three").replace(
        "routes:",
        "plugins: [{ name: noop, file: noop.wat }]\nroutes:",
    );
    assert_eq!(put_ok(&a_admin, &with_plugin), 2);
    assert_eq!(a.get("/"), "three");

    let cluster = wait_state(&b_admin, "diverged");
    let error = cluster["error"].as_str().unwrap_or_default().to_owned();
    assert_eq!(
        cluster,
        serde_json::json!({"state": "diverged", "version": 1, "latest": 2, "error": error})
    );
    let missing = format!(
        "plugin file `{}` does not exist",
        dir.join("b/noop.wat").display()
    );
    assert!(error.contains(&missing), "{error}");
    assert_eq!(
        readyz(&b_admin).0,
        200,
        "it serves version 1, so it stays ready"
    );
    assert_eq!(b.get("/"), "one");
    assert_eq!(file(&b_file), with_admin("one"));
    let logged = b.wait_for(|l| is_message(l, "cluster: version 2 cannot run on this node"));
    let message = logged["fields"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("noop.wat"), "{message}");

    // The next version that builds everywhere brings B back.
    assert_eq!(put_ok(&a_admin, &with_admin("four")), 3);
    within(Duration::from_secs(2), "B serves version 3", || {
        b.get("/") == "four"
    });
    wait_cluster(
        &b_admin,
        serde_json::json!({"state": "synced", "version": 3}),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_change_that_loses_the_race_to_another_nodes_version_answers_409_and_takes_it() {
    let (redis, dir, (a, a_admin, a_file)) = first_node("cluster-conflict");

    // Another node's version lands in Redis (without a message, so A has
    // not seen it when its own change comes). Should A's poll see it first,
    // A's change is published on top of it (200) and the race is run again.
    for attempt in 1..=5 {
        let (latest, _) = redis.latest();
        let theirs = with_admin(&format!("theirs{attempt}"));
        redis.set(&format!("weir:{KEY}:config:{}", latest + 1), &theirs);
        redis.set(&format!("weir:{KEY}:version"), &(latest + 1).to_string());
        let answer = put(&a_admin, &with_admin(&format!("mine{attempt}")));
        if answer.status == 200 {
            assert_eq!(answer.json()["cluster_version"], latest + 2);
            continue;
        }
        assert_eq!(answer.status, 409, "{}", answer.problem_text());
        assert_eq!(answer.json()["type"], "urn:weir:problem:conflict");
        let detail = answer.json()["detail"].clone();
        assert!(
            detail
                .as_str()
                .unwrap_or_default()
                .contains(&format!("another node published version {} ", latest + 1)),
            "{detail}"
        );
        assert_eq!(a.get("/"), format!("theirs{attempt}"));
        assert_eq!(file(&a_file), theirs);
        assert_eq!(
            redis.latest(),
            (latest + 1, Some(theirs)),
            "nothing overwritten"
        );
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    panic!("A's poll saw the other version first five times in a row");
}
