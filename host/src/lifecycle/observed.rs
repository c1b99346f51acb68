//! The request path's side of observation: the [`Record`] a request carries
//! (in its extensions, where the upstream leg finds it), the bodies that
//! count its bytes, and the settling of the record once the response body
//! has been sent, has failed, or was dropped because the client left.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use prometheus_client::metrics::gauge::Gauge;

use crate::body::{Body, BoxError};
use crate::observe::trace::{RequestTrace, Value};
use crate::observe::{Flag, Observer, Record, Tracer};

/// Starts the trace of `request` (continuing its caller's, when it sent a
/// valid `traceparent`) with what is known of it on arrival.
pub fn start_trace<B>(
    tracer: &Tracer,
    request: &mut http::Request<B>,
    conn: &super::Connection,
) -> RequestTrace {
    let mut trace = tracer.start(request.headers_mut());
    let scheme = if conn.tls { "https" } else { "http" };
    trace.attributes.push(("url.scheme", Value::from(scheme)));
    let host = (request.headers().get(http::header::HOST))
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    if let Some(host) = host.and_then(|h| h.parse::<http::uri::Authority>().ok()) {
        trace
            .attributes
            .push(("server.address", Value::from(host.host())));
    }
    if let Some(local) = conn.local {
        trace
            .attributes
            .push(("server.port", Value::Int(local.port().into())));
    }
    let version = match request.version() {
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    };
    trace
        .attributes
        .push(("network.protocol.version", Value::from(version)));
    if let Some(agent) =
        (request.headers().get(http::header::USER_AGENT)).and_then(|v| v.to_str().ok())
    {
        trace
            .attributes
            .push(("user_agent.original", Value::from(agent)));
    }
    trace
}

/// A gauge raised while the guard lives.
pub struct Raised(Gauge);

impl Raised {
    /// Raises `gauge` until the guard drops.
    pub fn new(gauge: Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for Raised {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A request's record waiting to be settled, with its in-flight gauge
/// raised. Dropped unsettled (the request's future was dropped because the
/// client went away before an answer), it settles as a client abort.
pub struct Pending {
    record: Arc<Record>,
    observer: Arc<Observer>,
    active: Option<Raised>,
}

impl Pending {
    /// Starts watching `record`: `active` stays raised until it settles.
    pub fn new(record: Arc<Record>, observer: Arc<Observer>, active: Raised) -> Self {
        Self {
            record,
            observer,
            active: Some(active),
        }
    }

    /// Counts and logs the request, once.
    fn settle(&mut self) {
        if let Some(active) = self.active.take() {
            self.observer.settle(&self.record);
            drop(active);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.active.is_some() {
            self.record.flag(Flag::ClientAbort);
            self.settle();
        }
    }
}

/// A response body that counts what it yields and settles the request's
/// record when it ends, fails, or is dropped unfinished (the client left).
pub struct Settling {
    inner: Body,
    pending: Pending,
    /// The response carries no body whatever its head says (an answer to
    /// `HEAD`, a 1xx, 204 or 304): hyper drops it unread.
    bodiless: bool,
}

impl Settling {
    /// Wraps `inner`, the response of the request `pending` watches.
    pub fn new(inner: Body, pending: Pending, bodiless: bool) -> Self {
        Self {
            inner,
            pending,
            bodiless,
        }
    }
}

impl HttpBody for Settling {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.pending.record.add_bytes_out(data.len());
                }
                if self.inner.is_end_stream() {
                    self.pending.settle();
                }
            }
            Poll::Ready(Some(Err(_))) => {
                // The body broke mid-way: the upstream (or a filter) failed it.
                self.pending.record.flag(Flag::UpstreamFailed);
                self.pending.settle();
            }
            Poll::Ready(None) => self.pending.settle(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Settling {
    fn drop(&mut self) {
        // Dropped before its end: the client went away (or hyper gave up
        // on the connection) before the whole response was sent; `pending`
        // then settles as a client abort.
        if self.bodiless || self.inner.is_end_stream() {
            self.pending.settle();
        }
    }
}

/// A request body that counts the bytes read from the client.
pub struct CountedIn<B> {
    inner: B,
    record: Arc<Record>,
}

impl<B> CountedIn<B> {
    /// Counts what `inner` yields into `record`.
    pub fn new(inner: B, record: Arc<Record>) -> Self {
        Self { inner, record }
    }
}

impl<B> HttpBody for CountedIn<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.record.add_bytes_in(data.len());
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
