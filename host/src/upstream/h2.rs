//! One shared HTTP/2 connection (prior knowledge, cleartext) to one target,
//! for gRPC callouts.
//!
//! HTTP/2 multiplexes, so one connection per target carries every callout to
//! it: it is opened by the first exchange and opened again once the target
//! (or the worker whose runtime ran it) closed it. Knows no gRPC: it sends a
//! request and returns the response head.

use std::sync::Mutex;
use std::time::Duration;

use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::SendError;
use crate::body::Body;

/// The HTTP/2 connection to one target.
pub struct H2Connection {
    target: Authority,
    connect_timeout: Duration,
    sender: Mutex<Option<SendRequest<Body>>>,
}

impl H2Connection {
    /// A connection to `target` (`host:port`), opened on first use.
    pub fn new(target: Authority, connect_timeout: Duration) -> Self {
        Self {
            target,
            connect_timeout,
            sender: Mutex::new(None),
        }
    }

    /// The target's authority.
    pub fn target(&self) -> &Authority {
        &self.target
    }

    /// Sends `request` on the connection (opening it if needed) and waits for
    /// the response head.
    pub async fn send(&self, request: Request<Body>) -> Result<Response<Incoming>, SendError> {
        let mut sender = match self.open_sender() {
            Some(sender) => sender,
            None => {
                let sender = self.connect().await?;
                *self.lock() = Some(sender.clone());
                sender
            }
        };
        sender.ready().await?;
        Ok(sender.send_request(request).await?)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<SendRequest<Body>>> {
        // The slot stays consistent even if a holder panicked.
        self.sender
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The shared sender, unless there is none or its connection closed.
    fn open_sender(&self) -> Option<SendRequest<Body>> {
        let mut slot = self.lock();
        if slot.as_ref().is_some_and(SendRequest::is_closed) {
            *slot = None;
        }
        slot.clone()
    }

    /// Opens a connection and spawns its task on the current runtime.
    async fn connect(&self) -> Result<SendRequest<Body>, SendError> {
        let stream = super::pool::connect_tcp(&self.target, self.connect_timeout).await?;
        let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(SendError::Exchange)?;
        let target = self.target.clone();
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%target, %error, "upstream HTTP/2 connection ended with an error");
            }
        });
        Ok(sender)
    }
}
