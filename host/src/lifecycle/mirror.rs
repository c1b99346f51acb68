//! Shadow traffic (`mirror`): a copy of a route's request, as it goes
//! upstream (after filters and rewrites), sent fire and forget to another
//! group once its whole body is known. The copy's answer is read and
//! dropped; its failure, slowness or absence never reaches the client.
//!
//! A copy runs in a task of its own with its own timeout; the copies one
//! route holds at once are capped (`max_in_flight`), so a slow mirror cannot
//! pile up memory, and a request over the cap is not copied (counted as
//! dropped). A copy's body is held until the original's has been read:
//! bodies over `max_body_bytes` are not copied (counted as skipped). The
//! copy's `host` gets `-shadow` appended to its name, as Envoy does, so the
//! mirror can tell copies from real traffic.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, request};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::body::{self, Body, BoxError};
use crate::config::model::Mirror as MirrorSettings;
use crate::upstream::{OutgoingBody, UpstreamGroup};

/// How often, at most, dropped copies are logged (with their count).
const WARN_INTERVAL_SECS: u64 = 10;

/// A route's mirror: where copies go and how many may be in flight.
pub struct Mirror {
    group: Arc<UpstreamGroup>,
    settings: MirrorSettings,
    state: Arc<MirrorState>,
}

/// What happened to a route's copies so far (since its mirror was
/// configured as it is).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MirrorCounts {
    /// Copies sent whose answer head arrived.
    pub answered: u64,
    /// Copies sent that failed or timed out.
    pub failed: u64,
    /// Requests not copied because `max_in_flight` copies were in flight.
    pub dropped: u64,
    /// Requests not copied because their body was over `max_body_bytes`,
    /// or broke off.
    pub skipped: u64,
    /// Copies in flight now (waiting for the original's body, or sent).
    pub in_flight: usize,
}

/// The live state of a mirror, kept across config swaps while its settings
/// stay the same.
#[derive(Default)]
struct MirrorState {
    in_flight: AtomicUsize,
    answered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    skipped: AtomicU64,
    /// Unix seconds of the last warning about dropped copies.
    warned_at: AtomicU64,
    /// Drops since that warning.
    unwarned: AtomicU64,
}

impl Mirror {
    /// A mirror sending copies to `group`.
    pub fn new(group: Arc<UpstreamGroup>, settings: MirrorSettings) -> Self {
        Self {
            group,
            settings,
            state: Arc::default(),
        }
    }

    /// Carries `running`'s in-flight count and counters over when it sends
    /// to the same group with the same settings, so a config swap (a canary
    /// weight changed) neither resets the counts nor lifts the cap.
    pub fn take_over(&mut self, running: &Mirror) {
        if self.settings == running.settings && self.group.name() == running.group.name() {
            self.state = running.state.clone();
        }
    }

    /// What happened to its copies so far.
    pub fn counts(&self) -> MirrorCounts {
        let s = &self.state;
        MirrorCounts {
            answered: s.answered.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            skipped: s.skipped.load(Ordering::Relaxed),
            in_flight: s.in_flight.load(Ordering::Relaxed),
        }
    }

    /// A copy of the request with head `parts` (as it goes upstream), when
    /// this request is sampled and a slot is free; its body comes later.
    pub fn sample(&self, parts: &request::Parts) -> Option<Shadow> {
        let percent = self.settings.percent;
        if percent == 0 || (percent < 100 && fastrand::u32(..100) >= percent) {
            return None;
        }
        let Some(slot) = Slot::take(&self.state, self.settings.max_in_flight) else {
            self.dropped();
            return None;
        };
        let mut headers = parts.headers.clone();
        // hyper frames the copy's body itself, and sends it whole: nothing
        // waits for a `100 Continue`.
        headers.remove(header::CONTENT_LENGTH);
        headers.remove(header::TRANSFER_ENCODING);
        headers.remove(header::EXPECT);
        if let Some(host) = headers.get(header::HOST).and_then(shadow_host) {
            headers.insert(header::HOST, host);
        }
        let mut head = Request::new(());
        *head.method_mut() = parts.method.clone();
        *head.uri_mut() = parts.uri.clone();
        *head.headers_mut() = headers;
        Some(Shadow {
            head: head.into_parts().0,
            group: self.group.clone(),
            timeout: self.settings.timeout,
            max_body: self.settings.max_body_bytes,
            slot,
        })
    }

    fn dropped(&self) {
        let s = &self.state;
        s.dropped.fetch_add(1, Ordering::Relaxed);
        s.unwarned.fetch_add(1, Ordering::Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = s.warned_at.load(Ordering::Relaxed);
        if now >= last + WARN_INTERVAL_SECS
            && s.warned_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                mirror = %self.group.name(),
                max_in_flight = self.settings.max_in_flight,
                dropped_since_last_warning = s.unwarned.swap(0, Ordering::Relaxed),
                "mirror copies in flight at the cap; requests go on without a copy"
            );
        }
    }
}

/// `host` with `-shadow` appended to its name (before any port).
fn shadow_host(host: &HeaderValue) -> Option<HeaderValue> {
    let host = host.to_str().ok()?;
    let (name, port) = match host.rfind(':') {
        // `[v6]` alone has a `:` but no port.
        Some(at) if !host[at..].contains(']') => host.split_at(at),
        _ => (host, ""),
    };
    HeaderValue::from_str(&format!("{name}-shadow{port}")).ok()
}

/// One place among a mirror's copies in flight, given back when dropped.
struct Slot(Arc<MirrorState>);

impl Slot {
    fn take(state: &Arc<MirrorState>, cap: usize) -> Option<Self> {
        let taken = state
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < cap).then_some(n + 1)
            });
        taken.is_ok().then(|| Self(state.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A copy waiting for its body.
pub struct Shadow {
    head: request::Parts,
    group: Arc<UpstreamGroup>,
    timeout: std::time::Duration,
    max_body: u64,
    slot: Slot,
}

impl Shadow {
    /// Sends the copy with `body` in a task of its own, unless the body is
    /// over the limit. Call it inside a tokio runtime.
    pub fn send(self, body: Bytes) {
        if body.len() as u64 > self.max_body {
            self.skip();
            return;
        }
        let Self {
            head,
            group,
            timeout,
            slot,
            ..
        } = self;
        let request = Request::from_parts(head, OutgoingBody::Streaming(body::full(body)));
        tokio::spawn(async move {
            let state = &slot.0;
            let exchange = async {
                let response = group.send(request, Some(timeout)).await?;
                let mut answer = response.into_body();
                // Read and dropped, so the pooled connection can be reused.
                while let Some(frame) = answer.frame().await {
                    if frame.is_err() {
                        break;
                    }
                }
                Ok::<_, crate::upstream::UpstreamError>(())
            };
            match tokio::time::timeout(timeout, exchange).await {
                Ok(Ok(())) => state.answered.fetch_add(1, Ordering::Relaxed),
                Ok(Err(error)) => {
                    tracing::debug!(mirror = %group.name(), %error, "mirror copy failed");
                    state.failed.fetch_add(1, Ordering::Relaxed)
                }
                Err(_) => {
                    tracing::debug!(mirror = %group.name(), "mirror copy timed out");
                    state.failed.fetch_add(1, Ordering::Relaxed)
                }
            };
        });
    }

    /// Gives up the copy (its body is too long or broke off).
    fn skip(self) {
        self.slot.0.skipped.fetch_add(1, Ordering::Relaxed);
    }

    /// `body` passed through unchanged, keeping a copy of its data (up to
    /// the limit) that is sent when it ends.
    pub fn tee(self, body: Body) -> Body {
        if body.is_end_stream() {
            self.send(Bytes::new());
            return body;
        }
        let too_long = body
            .size_hint()
            .exact()
            .is_some_and(|len| len > self.max_body);
        if too_long {
            self.skip();
            return body;
        }
        body::boxed(Tee {
            inner: body,
            shadow: Some(self),
            chunks: Vec::new(),
            len: 0,
        })
    }
}

/// A body passed through while its data is kept for a [`Shadow`].
struct Tee {
    inner: Body,
    shadow: Option<Shadow>,
    /// The data so far (each chunk shared with the original, not copied).
    chunks: Vec<Bytes>,
    len: u64,
}

impl Tee {
    /// Sends the copy with the data kept.
    fn finish(&mut self) {
        let Some(shadow) = self.shadow.take() else {
            return;
        };
        let chunks = std::mem::take(&mut self.chunks);
        let body = match chunks.len() {
            0 => Bytes::new(),
            1 => chunks.into_iter().next().unwrap_or_default(),
            _ => {
                let mut whole = bytes::BytesMut::with_capacity(self.len as usize);
                for chunk in chunks {
                    whole.extend_from_slice(&chunk);
                }
                whole.freeze()
            }
        };
        shadow.send(body);
    }
}

impl http_body::Body for Tee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(shadow), Some(data)) = (&this.shadow, frame.data_ref()) {
                    this.len += data.len() as u64;
                    if this.len > shadow.max_body {
                        this.chunks.clear();
                        if let Some(shadow) = this.shadow.take() {
                            shadow.skip();
                        }
                    } else {
                        this.chunks.push(data.clone());
                    }
                }
                // hyper may not poll a body again once it says it has ended.
                if this.inner.is_end_stream() {
                    this.finish();
                }
            }
            Poll::Ready(None) => this.finish(),
            Poll::Ready(Some(Err(_))) => {
                if let Some(shadow) = this.shadow.take() {
                    shadow.skip();
                }
            }
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

impl Drop for Tee {
    fn drop(&mut self) {
        // The original's body was abandoned before its end: nothing to copy.
        if let Some(shadow) = self.shadow.take() {
            shadow.skip();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_the_host_of_a_copy() {
        let shadow = |h: &'static str| {
            shadow_host(&HeaderValue::from_static(h)).map(|v| v.to_str().unwrap_or("").to_owned())
        };
        assert_eq!(shadow("api.test").as_deref(), Some("api.test-shadow"));
        assert_eq!(
            shadow("api.test:8080").as_deref(),
            Some("api.test-shadow:8080")
        );
        assert_eq!(shadow("[::1]:80").as_deref(), Some("[::1]-shadow:80"));
        assert_eq!(shadow("[::1]").as_deref(), Some("[::1]-shadow"));
    }

    #[test]
    fn slots_are_capped_and_given_back() {
        let state = Arc::new(MirrorState::default());
        let first = Slot::take(&state, 2);
        let second = Slot::take(&state, 2);
        assert!(first.is_some() && second.is_some());
        assert!(Slot::take(&state, 2).is_none(), "the cap is 2");
        drop(first);
        assert!(Slot::take(&state, 2).is_some(), "a slot came back");
    }
}
