//! The WebSocket benchmark's two ends (`bench/websocket`):
//!
//! ```text
//! weir-ws-bench echo ADDRESS
//! weir-ws-bench load URL CONNECTIONS SECONDS MESSAGE_BYTES
//! ```
//!
//! `echo` serves the suite's WebSocket echo server on ADDRESS until killed.
//! `load` opens CONNECTIONS WebSockets to URL, and on each sends a binary
//! message of MESSAGE_BYTES and waits for its echo, again and again for
//! SECONDS; then it prints one JSON line: echoed messages per second,
//! payload megabytes per second (one way), round-trip p50 and p99 in
//! milliseconds, and errors. Both run on one current-thread runtime, so each
//! takes one core.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use weir_tests::websocket::WsEchoUpstream;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["echo", address] => runtime.block_on(echo(address)),
        ["load", url, connections, seconds, bytes] => runtime.block_on(load(
            url,
            connections.parse().context("CONNECTIONS")?,
            Duration::from_secs(seconds.parse().context("SECONDS")?),
            bytes.parse().context("MESSAGE_BYTES")?,
        )),
        _ => anyhow::bail!(
            "usage: weir-ws-bench echo ADDRESS | load URL CONNECTIONS SECONDS MESSAGE_BYTES"
        ),
    }
}

async fn echo(address: &str) -> anyhow::Result<()> {
    let server = WsEchoUpstream::start_on(address).await?;
    println!("echo server on {}", server.addr);
    std::future::pending::<()>().await;
    Ok(())
}

/// What one connection measured.
#[derive(Default)]
struct Tally {
    messages: u64,
    errors: u64,
    round_trips_us: Vec<u32>,
}

async fn load(url: &str, connections: usize, run: Duration, bytes: usize) -> anyhow::Result<()> {
    let mut sockets = Vec::with_capacity(connections);
    for _ in 0..connections {
        // Nagle's algorithm off, as on every other socket of the run.
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        sockets.push(ws);
    }
    let payload = bytes::Bytes::from(vec![0x5a; bytes]);
    let started = Instant::now();
    let deadline = started + run;
    let tasks: Vec<_> = sockets
        .into_iter()
        .map(|mut ws| {
            let payload = payload.clone();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    if ws.send(Message::Binary(payload.clone())).await.is_err() {
                        tally.errors += 1;
                        break;
                    }
                    match ws.next().await {
                        Some(Ok(Message::Binary(echoed))) if echoed.len() == payload.len() => {
                            tally.messages += 1;
                            let micros = sent.elapsed().as_micros();
                            tally
                                .round_trips_us
                                .push(u32::try_from(micros).unwrap_or(u32::MAX));
                        }
                        _ => {
                            tally.errors += 1;
                            break;
                        }
                    }
                }
                let _ = ws.close(None).await;
                tally
            })
        })
        .collect();
    let mut total = Tally::default();
    for task in tasks {
        let tally = task.await?;
        total.messages += tally.messages;
        total.errors += tally.errors;
        total.round_trips_us.extend(tally.round_trips_us);
    }
    let elapsed = started.elapsed().as_secs_f64();
    total.round_trips_us.sort_unstable();
    let percentile = |p: f64| {
        let n = total.round_trips_us.len();
        if n == 0 {
            return 0.0;
        }
        let at = ((n as f64 * p) as usize).min(n - 1);
        f64::from(total.round_trips_us[at]) / 1000.0
    };
    let rate = total.messages as f64 / elapsed;
    println!(
        "{}",
        serde_json::json!({
            "messages_per_second": rate,
            "megabytes_per_second": rate * bytes as f64 / 1e6,
            "p50_ms": percentile(0.5),
            "p99_ms": percentile(0.99),
            "errors": total.errors,
        })
    );
    Ok(())
}
