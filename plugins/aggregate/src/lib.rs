//! `aggregate`: answers a route itself by calling several upstream groups
//! at once and merging their JSON answers into one document (request
//! composition).
//!
//! Every call starts when the request's headers arrive, so the answer comes
//! after the slowest call (at most its timeout), not after their sum. Each
//! call's path is a template over the request's path, the named groups of
//! `path_pattern`, its query parameters and headers. An answer counts when
//! it is a 2xx with a JSON body; it is cut down to the `select`ed fields
//! and goes into the document under a key or merged member by member, in
//! the order of the calls.
//!
//! A call that fails (no answer, a timeout, another status, a body that is
//! not JSON) fails the request with 502 `upstream_failed` under
//! `on_partial_failure: fail`, as soon as it fails. Under `partial` the
//! answer has what arrived, the failures under `errors_key` and
//! `x-aggregate-partial: true`, unless the failed call is `required`.

mod answer;
mod config;
mod document;
mod template;

use std::rc::Rc;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};
use weir_sdk::metrics::Counter;
use weir_sdk::{
    CallRequest, CallResponse, ConfigError, Error, Filter, Flow, HostResult, Http, Outcome, Plugin,
    params,
};

use crate::answer::Failure;
use crate::config::{Aggregation, Config, OnFailure};
use crate::template::{Source, Values};

/// The header that marks an answer missing some calls' parts.
const PARTIAL_HEADER: &str = "x-aggregate-partial";

/// The plugin's counters, when the host could define them.
struct Metrics {
    /// Calls that failed before their request was answered.
    call_failures: Option<Counter>,
    /// Answers with some calls' parts missing (`partial`).
    partial_answers: Option<Counter>,
    /// Requests answered 502 because a call failed.
    failed_answers: Option<Counter>,
}

impl Metrics {
    fn define() -> Self {
        Self {
            call_failures: Counter::define("aggregate_call_failures").ok(),
            partial_answers: Counter::define("aggregate_partial_answers").ok(),
            failed_answers: Counter::define("aggregate_failed_answers").ok(),
        }
    }

    fn count(counter: Option<Counter>) {
        if let Some(counter) = counter {
            let _ = counter.increment(1);
        }
    }
}

/// A configured aggregation and its counters.
pub struct Aggregator {
    aggregation: Aggregation,
    metrics: Metrics,
}

impl Plugin for Aggregator {
    const NAME: &'static str = "aggregate";
    type Config = Config;
    type Filter = Fanout;

    fn configure(config: Config) -> Result<Self, ConfigError> {
        Ok(Self {
            aggregation: Aggregation::from_config(config)?,
            metrics: Metrics::define(),
        })
    }

    fn filter(self: &Rc<Self>) -> Fanout {
        Fanout {
            plugin: self.clone(),
            outcomes: Vec::new(),
            pending: 0,
            started: SystemTime::UNIX_EPOCH,
            answered: false,
        }
    }
}

/// One call's part: the members it adds to the document, or its failure.
type Part = Result<Map<String, Value>, Failure>;

/// One request's calls.
pub struct Fanout {
    plugin: Rc<Aggregator>,
    /// Each call's outcome once known, in the order of the calls.
    outcomes: Vec<Option<Part>>,
    /// Calls without an outcome yet.
    pending: usize,
    /// When the calls started (by the host's clock).
    started: SystemTime,
    /// Whether the request was answered; later answers are dropped.
    answered: bool,
}

/// What the request gives the templates.
struct RequestValues {
    /// The path with its query.
    path: String,
    /// The named groups of `path_pattern` that matched.
    captures: Vec<(String, String)>,
    /// The request headers templates read (first values).
    headers: Vec<(String, String)>,
}

impl Values for RequestValues {
    fn get(&self, source: &Source) -> Option<String> {
        let find = |pairs: &[(String, String)], name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        match source {
            Source::Path => Some(
                self.path
                    .split_once('?')
                    .map_or(self.path.as_str(), |(path, _)| path)
                    .to_owned(),
            ),
            Source::Capture(name) => find(&self.captures, name),
            Source::Query(name) => params::query_param(&self.path, name),
            Source::Header(name) => find(&self.headers, name),
        }
    }
}

impl RequestValues {
    /// The request's values; `None` when its path does not match `path_pattern`.
    fn read(http: &Http<'_, Fanout>, aggregation: &Aggregation) -> HostResult<Option<Self>> {
        let path = http.path()?.unwrap_or_default();
        let mut captures = Vec::new();
        if let Some(pattern) = &aggregation.path_pattern {
            let only = path.split_once('?').map_or(path.as_str(), |(p, _)| p);
            let mut groups = pattern.create_captures();
            pattern.captures(only.as_bytes(), &mut groups);
            if !groups.is_match() {
                return Ok(None);
            }
            for name in pattern.group_info().pattern_names(0.into()).flatten() {
                if let Some(span) = groups.get_group_by_name(name) {
                    let value = String::from_utf8_lossy(&only.as_bytes()[span.range()]);
                    captures.push((name.to_owned(), value.into_owned()));
                }
            }
        }
        let mut headers = Vec::with_capacity(aggregation.template_headers.len());
        for name in &aggregation.template_headers {
            if let Some(value) = http.request_header(name)? {
                headers.push((name.clone(), value));
            }
        }
        Ok(Some(Self {
            path,
            captures,
            headers,
        }))
    }
}

impl Fanout {
    /// Starts every call; the request waits for their answers.
    fn start(&mut self, http: &mut Http<'_, Self>, values: &RequestValues) -> Outcome {
        let plugin = self.plugin.clone();
        let aggregation = &plugin.aggregation;
        self.started = http.now()?;
        self.outcomes = vec![None; aggregation.calls.len()];
        self.pending = aggregation.calls.len();
        let forwarded = if aggregation.calls.iter().any(|c| !c.headers.is_empty()) {
            http.request_headers()?
        } else {
            Vec::new()
        };
        let request_id = http.request_id();
        for (i, call) in aggregation.calls.iter().enumerate() {
            let mut request =
                CallRequest::new(&call.method, &call.path.render(values)).timeout(call.timeout);
            for (name, value) in &forwarded {
                if call.headers.contains(name) {
                    request = request.header(name, value);
                }
            }
            if let Some(id) = &request_id
                && !call.headers.iter().any(|h| h == "x-request-id")
            {
                request = request.header("x-request-id", id);
            }
            let sent = http.call(&call.upstream, request, move |this, http, result| {
                this.on_answer(http, i, result)
            });
            if let Err(error) = sent {
                self.settle(i, Err(Failure::NotStarted(error.to_string())));
            }
        }
        self.decide(http)
    }

    /// Call `i`'s answer arrived (or its failure).
    fn on_answer(
        &mut self,
        http: &mut Http<'_, Self>,
        i: usize,
        result: Result<CallResponse, Error>,
    ) -> Outcome {
        if self.answered {
            return Ok(Flow::Pause);
        }
        let plugin = self.plugin.clone();
        let aggregation = &plugin.aggregation;
        let Some(call) = aggregation.calls.get(i) else {
            return Err(Error::msg(format!("an answer to unknown call {i}")));
        };
        let elapsed = http
            .now()?
            .duration_since(self.started)
            .unwrap_or(Duration::ZERO);
        self.settle(i, answer::read(call, result, elapsed));
        self.decide(http)
    }

    /// Records call `i`'s outcome.
    fn settle(&mut self, i: usize, outcome: Part) {
        if let Some(slot) = self.outcomes.get_mut(i)
            && slot.is_none()
        {
            if outcome.is_err() {
                Metrics::count(self.plugin.metrics.call_failures);
            }
            *slot = Some(outcome);
            self.pending -= 1;
        }
    }

    /// Answers once a failure decides the request or every call is done;
    /// otherwise the request goes on waiting.
    fn decide(&mut self, http: &mut Http<'_, Self>) -> Outcome {
        if self.answered {
            return Ok(Flow::Pause);
        }
        let plugin = self.plugin.clone();
        let aggregation = &plugin.aggregation;
        let fatal =
            aggregation.calls.iter().zip(&self.outcomes).find_map(
                |(call, outcome)| match outcome {
                    Some(Err(failure))
                        if aggregation.on_failure == OnFailure::Fail || call.required =>
                    {
                        Some((call, failure))
                    }
                    _ => None,
                },
            );
        if let Some((call, failure)) = fatal {
            self.answered = true;
            Metrics::count(plugin.metrics.failed_answers);
            let message = format!("call `{}` failed: {failure}", call.name);
            http.warn(&message);
            return http.deny(502, "upstream_failed", &message);
        }
        if self.pending > 0 {
            return Ok(Flow::Pause);
        }
        self.answered = true;
        self.respond(http)
    }

    /// Answers with the merged document.
    fn respond(&mut self, http: &mut Http<'_, Self>) -> Outcome {
        let plugin = self.plugin.clone();
        let aggregation = &plugin.aggregation;
        let mut document = Map::new();
        let mut errors = Map::new();
        for (call, outcome) in aggregation
            .calls
            .iter()
            .zip(std::mem::take(&mut self.outcomes))
        {
            match outcome {
                Some(Ok(members)) => document::deep_merge(&mut document, members),
                Some(Err(failure)) => {
                    errors.insert(call.name.clone(), failure.entry());
                }
                None => {}
            }
        }
        let partial = !errors.is_empty();
        if partial {
            Metrics::count(plugin.metrics.partial_answers);
            document.insert(aggregation.errors_key.clone(), Value::Object(errors));
        }
        let body = serde_json::to_vec(&Value::Object(document))
            .map_err(|e| Error::msg(format!("cannot write the document: {e}")))?;
        let mut headers = vec![("content-type", aggregation.content_type.as_str())];
        if partial {
            headers.push((PARTIAL_HEADER, "true"));
        }
        http.respond(aggregation.status, &headers, &body)
    }
}

impl Filter for Fanout {
    fn on_request_headers(&mut self, http: &mut Http<'_, Self>) -> Outcome {
        let plugin = self.plugin.clone();
        let aggregation = &plugin.aggregation;
        match RequestValues::read(http, aggregation)? {
            Some(values) => self.start(http, &values),
            None => http.deny(
                404,
                "no_route",
                "the path does not match the aggregation's path_pattern",
            ),
        }
    }
}

weir_sdk::export!(Aggregator);

#[cfg(test)]
mod tests;
