//! Thread-per-core: each worker serves its own share of the connections with
//! its own VM of each filter, and a guest stuck on one worker leaves the
//! others serving.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use weir_tests::{
    EchoUpstream, TestGateway, WAT_FILTER_BASICS, http1_client, read_response, test_filter_wasm,
};

/// Sends `GET /` on `stream` and returns the echoed `x-vm` request header:
/// the number of the VM that served the request.
async fn vm_of_next_request(stream: &mut TcpStream) -> anyhow::Result<String> {
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await?;
    let response = read_response(stream, Duration::from_secs(5)).await?;
    anyhow::ensure!(response.starts_with("HTTP/1.1 200"), "{response}");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .unwrap_or_default();
    let echoed: serde_json::Value = serde_json::from_str(body)?;
    echoed["headers"]["x-vm"][0]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no x-vm header echoed: {body}"))
}

#[tokio::test]
async fn connections_spread_over_the_workers_and_each_keeps_its_workers_vm() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    // No `vms`: one VM per worker. The filter numbers its VMs and reports the
    // one that served in `x-vm`.
    let gw = TestGateway::with_workers(
        &format!(
            r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: echo, targets: ["{}"] }}]
plugins: [{{ name: sdk, file: "{}" }}]
routes: [{{ name: r, upstream: echo, filters: [{{ plugin: sdk, config: {{ vm_id_header: x-vm }} }}] }}]
"#,
            up.addr,
            test_filter_wasm()
        ),
        2,
    )
    .await?;
    assert_eq!(gw.workers(), 2);
    let mut served_by: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..24 {
        let mut stream = TcpStream::connect(gw.addr("main")).await?;
        let first = vm_of_next_request(&mut stream).await?;
        for _ in 0..3 {
            assert_eq!(
                vm_of_next_request(&mut stream).await?,
                first,
                "a connection stays on its worker, and so on that worker's VM"
            );
        }
        *served_by.entry(first).or_default() += 1;
    }
    assert_eq!(
        served_by.keys().map(String::as_str).collect::<Vec<_>>(),
        ["1", "2"],
        "both workers (each with its own VM) served connections: {served_by:?}"
    );
    Ok(())
}

/// A filter that spins in `on_request_headers` (until its CPU deadline stops
/// it) on requests with more than 20 headers, and lets others pass.
fn spin_on_many_headers() -> String {
    format!(
        r#"(module
  (memory (export "memory") 1)
{WAT_FILTER_BASICS}  (func (export "proxy_on_request_headers") (param i32) (param $n i32) (param i32) (result i32)
    (if (i32.gt_u (local.get $n) (i32.const 20))
      (then (loop $spin (br $spin))))
    (i32.const 0)))
"#
    )
}

/// What a request on a fresh connection met while another worker was stuck.
enum Probe {
    /// Answered, within this long.
    Served(Duration),
    /// No answer in time: its worker was busy.
    Stalled,
}

/// A request on a fresh connection (so the kernel may pick any worker).
async fn probe(gw: &TestGateway, patience: Duration) -> anyhow::Result<Probe> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(gw.addr("main")).await?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await?;
    Ok(match read_response(&mut stream, patience).await {
        Ok(response) => {
            anyhow::ensure!(response.starts_with("HTTP/1.1 200"), "{response}");
            Probe::Served(started.elapsed())
        }
        Err(_) => Probe::Stalled,
    })
}

#[tokio::test]
async fn a_guest_stuck_on_one_worker_does_not_stall_the_other() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("spin.wat"), spin_on_many_headers())?;
    // Long enough for about ten 300 ms probes: the kernel spreads them over
    // the two workers by their ports, and with four or five all could land
    // on the stuck one (1 in 16).
    let deadline = Duration::from_millis(3000);
    let gw = TestGateway::with_workers_in(
        &format!(
            r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: echo, targets: ["{}"] }}]
plugins:
  - {{ name: spin, file: spin.wat, limits: {{ callback_deadline: {}ms }} }}
routes: [{{ name: r, upstream: echo, filters: [{{ plugin: spin }}] }}]
"#,
            up.addr,
            deadline.as_millis()
        ),
        dir,
        2,
    )
    .await?;
    let started = Instant::now();
    let mut stuck = http1_client().get(gw.url("main", "/"));
    for i in 0..24 {
        stuck = stuck.header(format!("x-h{i}"), "1");
    }
    let stuck = tokio::spawn(stuck.send());
    // While the stuck request holds its worker, probe on fresh connections:
    // the kernel puts some on the stuck worker (they wait) and some on the
    // other, which must answer at once.
    let (mut stalled, mut served_meanwhile) = (0, 0);
    while !stuck.is_finished() {
        match probe(&gw, Duration::from_millis(300)).await? {
            Probe::Stalled => stalled += 1,
            Probe::Served(took) if stalled > 0 && !stuck.is_finished() => {
                assert!(took < deadline / 2, "a probe took {took:?}");
                served_meanwhile += 1;
            }
            Probe::Served(_) => {}
        }
    }
    let stuck = stuck.await??;
    assert_eq!(stuck.status(), 503, "the stuck guest ran into its deadline");
    assert!(started.elapsed() >= deadline, "the guest held its worker");
    assert!(stalled > 0, "some probes landed on the stuck worker");
    assert!(
        served_meanwhile > 0,
        "the other worker served while one was stuck ({stalled} probes stalled)"
    );
    Ok(())
}
