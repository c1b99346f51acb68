//! A Proxy-Wasm filter instance as an [`HttpFilter`]: each phase is one ABI
//! callback on the VM the request is bound to, with the exchange lent to it.
//!
//! The ABI's raw answers become [`Flow`]s here and nowhere else: a headers
//! callback that stops iteration pauses the stream, with the exchange parked
//! in the VM (so root callbacks, such as a callout's answer, can still edit it
//! through `proxy_set_effective_context`); a body callback that stops buffers.

use std::sync::Arc;

use http::StatusCode;

use crate::error::{Fault, HttpError};
use crate::exchange::StreamData;
use crate::lifecycle::{FailMode, FilterFailure, FilterRun, Flow, HttpFilter, Lent};
use crate::wasm::{Callback, FilterError, FilterInstance, FilterStream};

/// `Continue` and `ContinueAndEndStream` of the ABI's `FilterHeadersStatus`.
const HEADERS_CONTINUE: [i32; 2] = [0, 2];
/// `Continue` of the ABI's `FilterDataStatus`.
const DATA_CONTINUE: i32 = 0;

impl HttpError for FilterError {
    fn status(&self) -> StatusCode {
        StatusCode::SERVICE_UNAVAILABLE
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Failed { .. } => "plugin_failed",
            Self::Unavailable { .. } => "plugin_unavailable",
        }
    }

    fn fault(&self) -> Fault {
        Fault::Internal
    }
}

/// A Proxy-Wasm filter instance in a chain.
pub struct ProxyWasmFilter {
    instance: Arc<FilterInstance>,
    fail_mode: FailMode,
}

impl ProxyWasmFilter {
    /// Wraps `instance`; `fail_mode` decides what its failures do to a request.
    pub fn new(instance: Arc<FilterInstance>, fail_mode: FailMode) -> Self {
        Self {
            instance,
            fail_mode,
        }
    }
}

impl HttpFilter for ProxyWasmFilter {
    fn name(&self) -> &str {
        self.instance.plugin_name()
    }

    fn fail_mode(&self) -> FailMode {
        self.fail_mode
    }

    fn start(&self, data: &mut Lent) -> Result<Box<dyn FilterRun>, FilterFailure> {
        let Some(lent) = data.take() else {
            return Err(missing_data(&self.instance));
        };
        let (back, bound) = self.instance.bind(lent);
        *data = Some(back);
        match bound {
            Ok(stream) => Ok(Box::new(WasmRun { stream })),
            Err(error) => Err(Box::new(error)),
        }
    }
}

/// The failure of a call made while a paused filter still holds the exchange.
fn missing_data(instance: &FilterInstance) -> FilterFailure {
    Box::new(FilterError::Failed {
        plugin: instance.plugin_name().to_owned(),
        reason: "the stream data was not available".into(),
    })
}

/// One request's HTTP context in one VM.
struct WasmRun {
    stream: FilterStream,
}

impl WasmRun {
    /// Runs `callback` with the exchange lent to the VM; the raw action it returned.
    fn callback(&self, data: &mut Lent, callback: Callback) -> Result<i32, FilterFailure> {
        let Some(lent) = data.take() else {
            return Err(missing_data(self.stream.instance()));
        };
        let (back, result) = self.stream.call(lent, callback);
        *data = back;
        result.map_err(|e| Box::new(e) as FilterFailure)
    }

    /// A headers callback: continue, or pause with the exchange parked in the VM.
    fn headers(&self, data: &mut Lent, callback: Callback) -> Result<Flow, FilterFailure> {
        let Some(lent) = data.take() else {
            return Err(missing_data(self.stream.instance()));
        };
        let resume = lent.resume.clone();
        // A pause parks the exchange in the VM before the VM is let go (see
        // `call_then_park_if`). A local reply or a reset ends the phase
        // instead: the chain acts on it.
        let pauses = |action: i32, lent: &StreamData| {
            !HEADERS_CONTINUE.contains(&action) && lent.local_reply.is_none() && !lent.closed
        };
        let (back, result) = self.stream.call_then_park_if(lent, callback, pauses);
        let parked = back.is_none();
        *data = back;
        result.map_err(|e| Box::new(e) as FilterFailure)?;
        Ok(if parked {
            Flow::Pause(resume)
        } else {
            Flow::Continue
        })
    }

    /// A trailers callback: its action is not read (trailers end the stream).
    fn trailers(&self, data: &mut Lent, callback: Callback) -> Result<Flow, FilterFailure> {
        self.callback(data, callback)?;
        Ok(Flow::Continue)
    }

    /// A body callback: anything but `Continue` holds the body.
    fn body(&self, data: &mut Lent, callback: Callback) -> Result<Flow, FilterFailure> {
        match self.callback(data, callback)? {
            DATA_CONTINUE => Ok(Flow::Continue),
            _ => Ok(Flow::Buffer),
        }
    }
}

/// The number of trailers `which` picks from the exchange.
fn trailer_count(data: &Lent, which: fn(&StreamData) -> Option<&http::HeaderMap>) -> usize {
    data.as_deref()
        .and_then(which)
        .map_or(0, http::HeaderMap::len)
}

/// Header and body counts the ABI's callbacks carry.
fn counts(data: &Lent) -> (usize, usize, usize) {
    data.as_ref().map_or((0, 0, 0), |d| {
        (
            d.request.headers.len() + 4,
            d.response.as_ref().map_or(0, |r| r.headers.len() + 1),
            d.body.len(),
        )
    })
}

impl FilterRun for WasmRun {
    fn on_request_headers(
        &mut self,
        data: &mut Lent,
        end_of_stream: bool,
    ) -> Result<Flow, FilterFailure> {
        let headers = counts(data).0;
        self.headers(
            data,
            Callback::RequestHeaders {
                headers,
                end_of_stream,
            },
        )
    }

    fn on_request_body(
        &mut self,
        data: &mut Lent,
        end_of_stream: bool,
    ) -> Result<Flow, FilterFailure> {
        let buffered = counts(data).2;
        self.body(
            data,
            Callback::RequestBody {
                buffered,
                end_of_stream,
            },
        )
    }

    fn on_request_trailers(&mut self, data: &mut Lent) -> Result<Flow, FilterFailure> {
        let trailers = trailer_count(data, |d| d.request_trailers.as_ref());
        self.trailers(data, Callback::RequestTrailers { trailers })
    }

    fn on_response_headers(
        &mut self,
        data: &mut Lent,
        end_of_stream: bool,
    ) -> Result<Flow, FilterFailure> {
        let headers = counts(data).1;
        self.headers(
            data,
            Callback::ResponseHeaders {
                headers,
                end_of_stream,
            },
        )
    }

    fn on_response_body(
        &mut self,
        data: &mut Lent,
        end_of_stream: bool,
    ) -> Result<Flow, FilterFailure> {
        let buffered = counts(data).2;
        self.body(
            data,
            Callback::ResponseBody {
                buffered,
                end_of_stream,
            },
        )
    }

    fn on_response_trailers(&mut self, data: &mut Lent) -> Result<Flow, FilterFailure> {
        let trailers = trailer_count(data, |d| d.response_trailers.as_ref());
        self.trailers(data, Callback::ResponseTrailers { trailers })
    }

    fn resume(&mut self, data: &mut Lent) -> Result<(), FilterFailure> {
        match self.stream.unpark() {
            Ok(lent) => {
                *data = Some(lent);
                Ok(())
            }
            Err(Some((lent, error))) => {
                *data = Some(lent);
                Err(Box::new(error))
            }
            Err(None) => Err(Box::new(FilterError::Failed {
                plugin: self.stream.instance().plugin_name().to_owned(),
                reason: "the paused stream was lost with its VM".into(),
            })),
        }
    }

    fn finish(&mut self, data: &mut Lent) {
        // A failure is logged where the VM is replaced; the response is already out.
        for callback in [Callback::Log, Callback::Done, Callback::Delete] {
            if self.callback(data, callback).is_err() {
                break;
            }
        }
    }
}
