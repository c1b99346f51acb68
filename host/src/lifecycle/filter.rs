//! The `HttpFilter` trait: what the request lifecycle asks of every filter,
//! native or Proxy-Wasm.
//!
//! A filter is started once per request ([`HttpFilter::start`]) and gets one
//! call per phase on the [`FilterRun`] it returns, in Envoy's order: request
//! headers → body (per chunk) → trailers → response headers → body →
//! trailers → [`FilterRun::finish`] once the response has been sent in full
//! (or failed). Every phase defaults to letting the request pass, so a filter
//! implements only the phases it cares about. Filters read and change the
//! exchange ([`StreamData`]), answer locally by setting its `local_reply`, and
//! may pause a headers phase until they wake the stream.

use std::sync::Arc;

use crate::error::HttpError;
use crate::exchange::{Resume, StreamData};

/// The exchange as a phase sees it: `None` only while a paused Proxy-Wasm
/// filter holds it (its VM keeps it for root callbacks).
pub type Lent = Option<Box<StreamData>>;

/// Why a filter could not serve a request; its status and code become the answer
/// when the filter fails closed.
pub type FilterFailure = Box<dyn HttpError>;

/// What a filter tells the chain after a phase.
#[derive(Debug)]
pub enum Flow {
    /// Go on to the next filter.
    Continue,
    /// Headers phases: stop here until `resume` is woken, then call
    /// [`FilterRun::resume`] and go on with the next filter.
    Pause(Arc<Resume>),
    /// Body phases: hold this body (and what follows) until a later chunk or
    /// the end, bounded by the body limit.
    Buffer,
}

/// What a failure of the filter does to the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// Answer with the failure's status and code.
    Closed,
    /// Skip the filter for the rest of the request (logged).
    Open,
}

/// A filter of a route's chain.
pub trait HttpFilter: Send + Sync + 'static {
    /// The filter's name, as errors and logs show it.
    fn name(&self) -> &str;

    /// What a failure of this filter does to the request.
    fn fail_mode(&self) -> FailMode;

    /// Starts this filter's part of one request. `data` is lent for the call.
    fn start(&self, data: &mut Lent) -> Result<Box<dyn FilterRun>, FilterFailure>;
}

/// One filter's part of one request: a method per phase, each defaulting to
/// [`Flow::Continue`].
#[allow(unused_variables, reason = "the defaults ignore their arguments")]
pub trait FilterRun: Send {
    /// The request head arrived (`end_of_stream`: there is no body).
    fn on_request_headers(
        &mut self,
        data: &mut Lent,
        end_of_stream: bool,
    ) -> Result<Flow, FilterFailure> {
        Ok(Flow::Continue)
    }

    /// A request body chunk is in `data.body`.
    fn on_request_body(
        &mut self,
        data: &mut Lent,
        end_of_stream: bool,
    ) -> Result<Flow, FilterFailure> {
        Ok(Flow::Continue)
    }

    /// The request trailers are in `data.request_trailers`.
    fn on_request_trailers(&mut self, data: &mut Lent) -> Result<Flow, FilterFailure> {
        Ok(Flow::Continue)
    }

    /// The response head is in `data.response`.
    fn on_response_headers(
        &mut self,
        data: &mut Lent,
        end_of_stream: bool,
    ) -> Result<Flow, FilterFailure> {
        Ok(Flow::Continue)
    }

    /// A response body chunk is in `data.body`.
    fn on_response_body(
        &mut self,
        data: &mut Lent,
        end_of_stream: bool,
    ) -> Result<Flow, FilterFailure> {
        Ok(Flow::Continue)
    }

    /// The response trailers are in `data.response_trailers`.
    fn on_response_trailers(&mut self, data: &mut Lent) -> Result<Flow, FilterFailure> {
        Ok(Flow::Continue)
    }

    /// A pause this filter asked for ended (woken or timed out): hand the
    /// exchange back if the filter kept it.
    fn resume(&mut self, data: &mut Lent) -> Result<(), FilterFailure> {
        Ok(())
    }

    /// The exchange is over (the response body was sent or failed): log,
    /// account, release. Called once; failures here are the filter's own
    /// business and never change the response.
    fn finish(&mut self, data: &mut Lent) {}
}
