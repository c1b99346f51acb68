//! A WebSocket echo server (tokio-tungstenite) for the suite and the
//! WebSocket benchmark, and client helpers.
//!
//! The server echoes every text and binary message. tungstenite answers
//! pings itself, with the ping's payload. A text message `close:CODE:REASON`
//! makes it close with that code and reason; a request for a path starting
//! `/refuse` is answered `200 not a websocket` instead of `101` (and not
//! recorded). It records
//! every close frame it receives and the headers of every handshake.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// What the echo server saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Each close frame received: its code and reason (`None`: no payload).
    pub closes: Vec<Option<(u16, String)>>,
    /// Each handshake's headers, names lower case.
    pub handshakes: Vec<Vec<(String, String)>>,
}

/// A WebSocket echo server on a free loopback port.
pub struct WsEchoUpstream {
    /// Its address.
    pub addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    task: JoinHandle<()>,
}

impl WsEchoUpstream {
    /// Starts one on `127.0.0.1:0`.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_on("127.0.0.1:0").await
    }

    /// Starts one on `address`.
    pub async fn start_on(address: &str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(address).await?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let task_seen = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(echo(stream, task_seen.clone()));
            }
        });
        Ok(Self { addr, seen, task })
    }

    /// The close frames received so far.
    pub fn closes(&self) -> Vec<Option<(u16, String)>> {
        self.seen().closes.clone()
    }

    /// The headers of every handshake so far.
    pub fn handshakes(&self) -> Vec<Vec<(String, String)>> {
        self.seen().handshakes.clone()
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for WsEchoUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether the request waiting on `stream` is for a path under `/refuse`.
async fn refused(stream: &TcpStream) -> bool {
    const LINE: &[u8] = b"GET /refuse";
    let mut head = [0u8; LINE.len()];
    loop {
        match stream.peek(&mut head).await {
            Ok(n) if n == LINE.len() || n == 0 => return head[..n] == *LINE,
            Ok(_) => tokio::task::yield_now().await,
            Err(_) => return false,
        }
    }
}

async fn echo(stream: TcpStream, seen: Arc<Mutex<Seen>>) {
    let record = seen.clone();
    #[allow(
        clippy::result_large_err,
        reason = "tungstenite's handshake callback has this signature"
    )]
    let callback = move |request: &Request, response: Response| {
        let headers = request
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        if let Ok(mut seen) = record.lock() {
            seen.handshakes.push(headers);
        }
        Ok::<_, ErrorResponse>(response)
    };
    // tungstenite answers a refused handshake only with an error status.
    if refused(&stream).await {
        let mut stream = stream;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 15\r\n\r\nnot a websocket")
            .await;
        let _ = stream.shutdown().await;
        // Read the rest of the request, so closing does not reset the answer.
        let _ = stream.read(&mut [0u8; 4096]).await;
        return;
    }
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    while let Some(Ok(message)) = ws.next().await {
        let reply = match message {
            Message::Text(text) => match text.strip_prefix("close:") {
                Some(rest) => {
                    let (code, reason) = rest.split_once(':').unwrap_or((rest, ""));
                    let frame = CloseFrame {
                        code: CloseCode::from(code.parse::<u16>().unwrap_or(1000)),
                        reason: Utf8Bytes::from(reason.to_owned()),
                    };
                    Message::Close(Some(frame))
                }
                None => Message::Text(text),
            },
            Message::Binary(bytes) => Message::Binary(bytes),
            Message::Close(frame) => {
                let close = frame.map(|f| (u16::from(f.code), f.reason.as_str().to_owned()));
                if let Ok(mut seen) = seen.lock() {
                    seen.closes.push(close);
                }
                // tungstenite answers the close; drive it out.
                let _ = ws.flush().await;
                continue;
            }
            Message::Ping(_) => {
                // tungstenite queued the pong; send it now.
                let _ = ws.flush().await;
                continue;
            }
            Message::Pong(_) | Message::Frame(_) => continue,
        };
        if ws.send(reply).await.is_err() {
            return;
        }
    }
}
