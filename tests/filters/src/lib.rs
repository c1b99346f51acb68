//! A test filter on the public `proxy-wasm` SDK. Its JSON configuration selects
//! the behaviours to exercise, so one module covers header edits, local
//! responses, configuration, body rewrites, pause/resume, properties,
//! callouts (HTTP, Redis and gRPC) and the other host services.

mod grpc;

use std::cell::RefCell;
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use serde::Deserialize;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// What the filter does, from its plugin configuration.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// Request headers to add (appended).
    add_request_headers: Vec<(String, String)>,
    /// Request headers to set (replacing).
    replace_request_headers: Vec<(String, String)>,
    /// Request headers to remove.
    remove_request_headers: Vec<String>,
    /// Copy the first value of request header `.0` into request header `.1`.
    copy_request_header: Option<(String, String)>,
    /// Response headers to add.
    add_response_headers: Vec<(String, String)>,
    /// Answer locally when this request header is present.
    deny_when_header: Option<String>,
    /// Put the raw plugin configuration into this request header.
    config_to_request_header: Option<String>,
    /// Replace every `.0` with `.1` in the whole request body.
    rewrite_request_body: Option<(String, String)>,
    /// Replace every `.0` with `.1` in the whole response body.
    rewrite_response_body: Option<(String, String)>,
    /// Pause request headers; the next tick resumes the request.
    pause_until_tick: bool,
    /// Copy these properties (path segments joined by '.') into `x-prop-<path>` request headers.
    properties_to_request_headers: Vec<String>,
    /// Set `:path` to this.
    set_path: Option<String>,
    /// Write these properties (path segments, value) with `proxy_set_property`
    /// before reading any, reporting each status in `x-set-<first segment>`
    /// when it is not OK.
    set_properties: Vec<(Vec<String>, String)>,
    /// Record every callback in the `x-callbacks` response header.
    trace_callbacks: bool,
    /// Log every callback of the stream in `on_log`.
    log_callbacks: bool,
    /// Ask these upstreams (GET `/check`) before continuing; all must answer 200.
    /// One call continues with its body in `x-auth`; several answer locally
    /// with their bodies joined by `+`.
    callouts: Vec<String>,
    /// Timeout of each callout in milliseconds.
    callout_timeout_ms: u64,
    /// Do not wait for the callouts: continue at once (their answers arrive later).
    callouts_in_background: bool,
    /// Increment the shared-data counter `counter` (with CAS) and report it in `x-count`.
    count_requests: bool,
    /// Increment the counter metric `requests` and report it in `x-metric`.
    count_metric: bool,
    /// Enqueue the request path on shared queue `events`; the root stores the
    /// last dequeued item in shared data `last_event`, reported in `x-last-event`.
    queue_events: bool,
    /// `INCR` this key, then `EXPIRE` it (60 s) on Redis service `redis_service`,
    /// reporting the replies in `x-redis-count` and `x-redis-expire`.
    redis_incr: Option<String>,
    /// The Redis service (as named in the manifest).
    redis_service: String,
    /// Write shared data `.0` = `.1` on every request.
    shared_set: Option<(String, String)>,
    /// Report shared data under this key in `x-shared` (`<none>` when missing).
    shared_get: Option<String>,
    /// Put this VM's number in this request header. Each VM takes the next
    /// number from the shared-data counter `vm_ids` when it is configured, so
    /// responses show which VM served them.
    vm_id_header: Option<String>,
    /// `std::thread::sleep` this many milliseconds in the request-headers
    /// callback (WASI `poll_oneoff` with a clock subscription), then set
    /// `x-slept: yes`.
    sleep_ms: Option<u64>,
    /// A gRPC call or stream (see `grpc::GrpcConfig`): from the request
    /// headers, whose outcome then goes upstream in `x-grpc-*` headers, or
    /// from the root context on a tick.
    grpc: Option<grpc::GrpcConfig>,
    /// Behave as the SDK's `grpc_auth_random` example (calls upstream `grpcbin`).
    grpc_auth_random: bool,
}

thread_local! {
    /// HTTP contexts paused until the next tick.
    static PAUSED: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

#[derive(Default)]
struct Root {
    raw_config: String,
    config: Config,
    queue: Option<u32>,
    /// This VM's number (see `Config::vm_id_header`).
    vm_id: u64,
    /// The root's gRPC call has been made (see `GrpcConfig::on_tick`).
    grpc_started: bool,
    /// The root's call to cancel, and when it started.
    grpc_to_cancel: Option<(u32, std::time::SystemTime)>,
}

impl Root {
    /// The root's gRPC call: made on the first tick, and with `cancel`,
    /// cancelled on the first tick 300 ms later (the server has it by then).
    fn grpc_tick(&mut self, config: &grpc::GrpcConfig) {
        let now = self.get_current_time();
        if !self.grpc_started {
            self.grpc_started = true;
            let outcome = match grpc::call(self, config) {
                Ok(token) => {
                    self.grpc_to_cancel = config.cancel.then_some((token, now));
                    "started".to_owned()
                }
                Err(status) => format!("refused: {status}"),
            };
            let _ = self.set_shared_data("grpc_tick_start", Some(outcome.as_bytes()), None);
            return;
        }
        if let Some((token, at)) = self.grpc_to_cancel
            && now >= at + Duration::from_millis(300)
        {
            self.grpc_to_cancel = None;
            self.cancel_grpc_call(token);
            let _ = self.set_shared_data("grpc_tick_start", Some(b"cancelled"), None);
        }
    }
}

impl Context for Root {
    fn on_grpc_call_response(&mut self, _token: u32, status: u32, size: usize) {
        if self.config.grpc.as_ref().is_some_and(|g| g.cancel) {
            increment_shared_counter("grpc_late");
            return;
        }
        let (status, text) = grpc::outcome(self, status, size);
        let _ = self.set_shared_data(
            "grpc_tick",
            Some(format!("{status}:{text}").as_bytes()),
            None,
        );
    }
}

impl RootContext for Root {
    fn on_vm_start(&mut self, _size: usize) -> bool {
        proxy_wasm::hostcalls::log(LogLevel::Info, "test filter VM started").is_ok()
    }

    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        self.raw_config = String::from_utf8_lossy(&bytes).into_owned();
        match serde_json::from_slice::<Config>(&bytes) {
            Ok(config) => {
                if config.pause_until_tick || config.grpc.as_ref().is_some_and(|g| g.on_tick) {
                    self.set_tick_period(Duration::from_millis(10));
                }
                if config.queue_events {
                    self.queue = Some(self.register_shared_queue("events"));
                }
                if config.vm_id_header.is_some() {
                    self.vm_id = increment_shared_counter("vm_ids");
                }
                if config.count_requests {
                    seed_shared_counter("counter");
                }
                #[cfg(feature = "higress")]
                if config.redis_incr.is_some() && !redis::init(&config.redis_service) {
                    return false;
                }
                self.config = config;
                true
            }
            Err(e) => {
                proxy_wasm::hostcalls::log(LogLevel::Error, &format!("bad config: {e}")).ok();
                false
            }
        }
    }

    fn on_tick(&mut self) {
        if let Some(config) = self.config.grpc.clone().filter(|g| g.on_tick) {
            self.grpc_tick(&config);
        }
        let paused: Vec<u32> = PAUSED.with(|p| p.borrow_mut().drain(..).collect());
        for context_id in paused {
            if proxy_wasm::hostcalls::set_effective_context(context_id).is_ok() {
                let _ = proxy_wasm::hostcalls::set_map_value(
                    proxy_wasm::types::MapType::HttpRequestHeaders,
                    "x-resumed-by",
                    Some("tick"),
                );
                let _ = proxy_wasm::hostcalls::resume_http_request();
            }
        }
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        while let Ok(Some(item)) = self.dequeue_shared_queue(queue_id) {
            let _ = self.set_shared_data("last_event", Some(&item), None);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http {
            context_id,
            config: self.config.clone(),
            raw_config: self.raw_config.clone(),
            vm_id: self.vm_id,
            callbacks: Vec::new(),
            pending_calls: 0,
            call_bodies: Vec::new(),
            grpc_events: Vec::new(),
            grpc_replies: 0,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Http {
    context_id: u32,
    config: Config,
    raw_config: String,
    vm_id: u64,
    callbacks: Vec<&'static str>,
    pending_calls: usize,
    call_bodies: Vec<(u32, String)>,
    /// gRPC callbacks in order, for `x-grpc-events`.
    grpc_events: Vec<String>,
    /// Messages received on the gRPC stream.
    grpc_replies: usize,
}

impl Http {
    /// Records a gRPC callback.
    fn grpc_event(&mut self, event: String) {
        self.grpc_events.push(event);
    }

    /// Hands the gRPC outcome to the upstream and resumes.
    fn grpc_done(&mut self, headers: &[(&str, String)]) {
        let events = self.grpc_events.join(",");
        self.set_http_request_header("x-grpc-events", Some(&events));
        for (name, value) in headers {
            self.set_http_request_header(name, Some(value));
        }
        self.resume_http_request();
    }
}

impl Context for Http {
    fn on_grpc_call_response(&mut self, _token: u32, status: u32, size: usize) {
        if self.config.grpc_auth_random {
            grpc::auth_random_response(self, status);
            return;
        }
        self.grpc_event(format!("call_response:{status}"));
        let (status, text) = grpc::outcome(self, status, size);
        let key = if status == 0 {
            "x-grpc-reply"
        } else {
            "x-grpc-message"
        };
        self.grpc_done(&[("x-grpc-status", status.to_string()), (key, text)]);
    }

    fn on_grpc_stream_initial_metadata(&mut self, _token: u32, headers: u32) {
        let served_by = grpc::text(self.get_grpc_stream_initial_metadata_value("x-served-by"));
        self.grpc_event(format!("initial_metadata:{headers}:{served_by}"));
    }

    fn on_grpc_stream_message(&mut self, token: u32, size: usize) {
        let message = self.get_grpc_stream_message(0, size).unwrap_or_default();
        self.grpc_event(format!("message:{}", grpc::decode(&message)));
        self.grpc_replies += 1;
        let sent = self.config.grpc.as_ref().map_or(0, |g| g.stream.len());
        if self.grpc_replies == sent {
            self.close_grpc_stream(token);
        }
    }

    fn on_grpc_stream_trailing_metadata(&mut self, _token: u32, _trailers: u32) {
        let status = grpc::text(self.get_grpc_stream_trailing_metadata_value("grpc-status"));
        self.grpc_event(format!("trailing_metadata:grpc-status={status}"));
    }

    fn on_grpc_stream_close(&mut self, _token: u32, status: u32) {
        self.grpc_event(format!("close:{status}"));
        self.grpc_done(&[("x-grpc-status", status.to_string())]);
    }

    fn on_http_call_response(
        &mut self,
        token: u32,
        num_headers: usize,
        body_size: usize,
        _: usize,
    ) {
        self.pending_calls = self.pending_calls.saturating_sub(1);
        if num_headers == 0 && self.config.callouts_in_background {
            let _ = self.set_shared_data("background_answer", Some(b"<failed>"), None);
            return;
        }
        if num_headers == 0 {
            // `proxy_get_status` (the SDK calls it for gRPC) says why the call failed.
            let (_, reason) = proxy_wasm::hostcalls::get_grpc_status().unwrap_or((0, None));
            let reason = reason.unwrap_or_default();
            self.send_http_response(
                502,
                vec![("x-callout-failed", "1")],
                Some(format!("callout failed: {reason}").as_bytes()),
            );
            return;
        }
        let status = self
            .get_http_call_response_header(":status")
            .unwrap_or_default();
        let body = self
            .get_http_call_response_body(0, body_size)
            .unwrap_or_default();
        let body = String::from_utf8_lossy(&body).into_owned();
        if status != "200" {
            self.send_http_response(403, vec![("x-denied-by", "callout")], Some(body.as_bytes()));
            return;
        }
        if self.config.callouts_in_background {
            // The request went on long ago: only record that the answer came,
            // and check that continuing a stream that is not paused is harmless.
            let _ = self.set_shared_data("background_answer", Some(body.as_bytes()), None);
            self.resume_http_request();
            return;
        }
        self.call_bodies.push((token, body));
        if self.pending_calls > 0 {
            return;
        }
        if self.call_bodies.len() == 1 {
            let body = self.call_bodies[0].1.clone();
            self.set_http_request_header("x-auth", Some(&body));
            self.resume_http_request();
        } else {
            self.call_bodies.sort();
            let joined: Vec<&str> = self.call_bodies.iter().map(|(_, b)| b.as_str()).collect();
            self.send_http_response(
                200,
                vec![("x-fan-out", "1")],
                Some(joined.join("+").as_bytes()),
            );
        }
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.callbacks.push("request_headers");
        let config = &self.config;
        if let Some(name) = &config.deny_when_header
            && self.get_http_request_header(name).is_some()
        {
            self.send_http_response(
                403,
                vec![
                    ("content-type", "text/plain"),
                    ("x-denied-by", "test-filter"),
                ],
                Some(b"denied by filter"),
            );
            return Action::Pause;
        }
        for (name, value) in &config.add_request_headers {
            self.add_http_request_header(name, value);
        }
        for (name, value) in &config.replace_request_headers {
            self.set_http_request_header(name, Some(value));
        }
        for name in &config.remove_request_headers {
            self.set_http_request_header(name, None);
        }
        if let Some((from, to)) = &config.copy_request_header {
            let value = self
                .get_http_request_header(from)
                .unwrap_or_else(|| "<absent>".into());
            self.set_http_request_header(to, Some(&value));
        }
        if let Some(name) = &config.config_to_request_header {
            self.set_http_request_header(name, Some(&self.raw_config));
        }
        for (path, value) in &config.set_properties {
            let segments: Vec<&str> = path.iter().map(String::as_str).collect();
            if let Err(status) =
                proxy_wasm::hostcalls::set_property(segments, Some(value.as_bytes()))
            {
                let name = format!("x-set-{}", path.first().map_or("", String::as_str));
                self.set_http_request_header(&name, Some(&format!("{status:?}")));
            }
        }
        for path in &config.properties_to_request_headers {
            let segments: Vec<&str> = path.split('.').collect();
            let value = match self.get_property(segments) {
                Some(bytes) => property_text(path, &bytes),
                None => "<none>".to_owned(),
            };
            self.set_http_request_header(&format!("x-prop-{path}"), Some(&value));
        }
        if let Some(path) = &config.set_path {
            self.set_http_request_header(":path", Some(path));
        }
        if let Some(ms) = config.sleep_ms {
            std::thread::sleep(Duration::from_millis(ms));
            self.set_http_request_header("x-slept", Some("yes"));
        }
        if let Some(name) = &config.vm_id_header {
            self.set_http_request_header(name, Some(&self.vm_id.to_string()));
        }
        if config.count_requests {
            let count = increment_shared_counter("counter");
            self.set_http_request_header("x-count", Some(&count.to_string()));
        }
        if let Some((key, value)) = &config.shared_set {
            let _ = self.set_shared_data(key, Some(value.as_bytes()), None);
        }
        if let Some(key) = &config.shared_get {
            let value = self.get_shared_data(key).0;
            let value = value.map_or_else(
                || "<none>".to_owned(),
                |v| String::from_utf8_lossy(&v).into_owned(),
            );
            self.set_http_request_header("x-shared", Some(&value));
        }
        if config.count_metric {
            let value = proxy_wasm::hostcalls::define_metric(
                proxy_wasm::types::MetricType::Counter,
                "requests",
            )
            .and_then(|id| {
                proxy_wasm::hostcalls::increment_metric(id, 1)?;
                proxy_wasm::hostcalls::get_metric(id)
            })
            .map_or_else(|s| format!("error {s:?}"), |v| v.to_string());
            self.set_http_request_header("x-metric", Some(&value));
        }
        if config.queue_events {
            let last = self.get_shared_data("last_event").0;
            let last = last.map_or_else(
                || "<none>".to_owned(),
                |b| String::from_utf8_lossy(&b).into_owned(),
            );
            self.set_http_request_header("x-last-event", Some(&last));
            let path = self.get_http_request_header(":path").unwrap_or_default();
            if let Ok(Some(queue)) = proxy_wasm::hostcalls::resolve_shared_queue("", "events") {
                let _ = self.enqueue_shared_queue(queue, Some(path.as_bytes()));
            }
        }
        #[cfg(feature = "higress")]
        if let Some(key) = &config.redis_incr {
            let service = config.redis_service.clone();
            return match redis::call(&service, &["INCR", key]) {
                Some(token) => {
                    redis::expect(token, self.context_id, redis::Stage::Incr, &service, key);
                    Action::Pause
                }
                None => {
                    self.send_http_response(500, vec![], Some(b"redis call refused"));
                    Action::Pause
                }
            };
        }
        if config.grpc_auth_random {
            return grpc::auth_random_request(self);
        }
        if let Some(mut grpc) = config.grpc.clone().filter(|g| !g.on_tick) {
            if let Some(text) = grpc
                .message_header
                .as_deref()
                .and_then(|name| self.get_http_request_header(name))
            {
                grpc.message = text;
            }
            let started = if grpc.stream.is_empty() {
                grpc::call(self, &grpc)
            } else {
                grpc::open_stream(self, &grpc)
            };
            return match started {
                Ok(_) => Action::Pause,
                Err(status) => {
                    self.set_http_request_header("x-grpc-refused", Some(&status));
                    Action::Continue
                }
            };
        }
        if !config.callouts.is_empty() {
            let timeout = Duration::from_millis(config.callout_timeout_ms.max(1));
            for upstream in config.callouts.clone() {
                let headers = vec![
                    (":method", "GET"),
                    (":path", "/check"),
                    (":authority", "auth"),
                ];
                match self.dispatch_http_call(&upstream, headers, None, vec![], timeout) {
                    Ok(_) => self.pending_calls += 1,
                    Err(status) => {
                        self.send_http_response(
                            500,
                            vec![],
                            Some(format!("dispatch to {upstream} refused: {status:?}").as_bytes()),
                        );
                        return Action::Pause;
                    }
                }
            }
            return Action::Pause;
        }
        if config.pause_until_tick {
            PAUSED.with(|p| p.borrow_mut().push(self.context_id));
            if !config.callouts_in_background {
                return Action::Pause;
            }
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.callbacks.push("request_body");
        let Some((from, to)) = self.config.rewrite_request_body.clone() else {
            return Action::Continue;
        };
        if !end_of_stream {
            return Action::Pause;
        }
        let body = self.get_http_request_body(0, body_size).unwrap_or_default();
        let rewritten = String::from_utf8_lossy(&body).replace(&from, &to);
        self.set_http_request_body(0, body_size, rewritten.as_bytes());
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.callbacks.push("response_headers");
        for (name, value) in &self.config.add_response_headers {
            self.add_http_response_header(name, value);
        }
        if self.config.rewrite_response_body.is_some() {
            self.set_http_response_header("content-length", None);
        }
        if self.config.trace_callbacks {
            let seen = self.callbacks.join(",");
            self.set_http_response_header("x-callbacks", Some(&seen));
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.callbacks.push("response_body");
        let Some((from, to)) = self.config.rewrite_response_body.clone() else {
            return Action::Continue;
        };
        if !end_of_stream {
            return Action::Pause;
        }
        let body = self
            .get_http_response_body(0, body_size)
            .unwrap_or_default();
        let rewritten = String::from_utf8_lossy(&body).replace(&from, &to);
        self.set_http_response_body(0, body_size, rewritten.as_bytes());
        Action::Continue
    }

    fn on_log(&mut self) {
        self.callbacks.push("log");
        if !self.config.log_callbacks {
            return;
        }
        proxy_wasm::hostcalls::log(
            LogLevel::Info,
            &format!(
                "context {} callbacks: {}",
                self.context_id,
                self.callbacks.join(",")
            ),
        )
        .ok();
    }
}

/// Stores 0 in the shared-data counter `key` unless it has a value. VMs start
/// one after another, before traffic, so this runs before any increment: the
/// ABI has no insert-if-absent, and a CAS of 0 on a missing key means "no
/// check", so two first increments racing on a missing key would both win.
fn seed_shared_counter(key: &str) {
    use proxy_wasm::hostcalls::{get_shared_data, set_shared_data};
    if let Ok((None, _)) = get_shared_data(key) {
        let _ = set_shared_data(key, Some(b"0"), None);
    }
}

/// Adds one to the shared-data counter `key` with compare-and-swap; returns the new value.
fn increment_shared_counter(key: &str) -> u64 {
    use proxy_wasm::hostcalls::{get_shared_data, set_shared_data};
    loop {
        let Ok((value, cas)) = get_shared_data(key) else {
            return 0;
        };
        let current = value
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let next = current + 1;
        match set_shared_data(key, Some(next.to_string().as_bytes()), cas) {
            Ok(()) => return next,
            Err(proxy_wasm::types::Status::CasMismatch) => continue,
            Err(_) => return 0,
        }
    }
}

/// Renders a property value as text: strings as they are, 8-byte integers as numbers.
fn property_text(path: &str, bytes: &[u8]) -> String {
    let numeric = path.ends_with(".port") || path == "plugin_root_id_number";
    match (numeric, <[u8; 8]>::try_from(bytes)) {
        (true, Ok(le)) => u64::from_le_bytes(le).to_string(),
        _ => match std::str::from_utf8(bytes) {
            Ok(text) if !text.chars().any(char::is_control) => text.to_owned(),
            // Binary values (a double, a boolean) as hex, so they fit a header.
            _ => bytes.iter().map(|b| format!("{b:02x}")).fold(
                String::from("hex:"),
                |mut out, byte| {
                    out.push_str(&byte);
                    out
                },
            ),
        },
    }
}

/// The Higress Redis extension, which the Rust SDK does not wrap: raw imports
/// and the `proxy_on_redis_call_response` export.
#[cfg(feature = "higress")]
#[allow(unsafe_code)]
mod redis {
    use std::cell::RefCell;
    use std::collections::HashMap;

    use proxy_wasm::types::MapType;

    unsafe extern "C" {
        fn proxy_redis_init(
            name: *const u8,
            name_len: usize,
            user: *const u8,
            user_len: usize,
            password: *const u8,
            password_len: usize,
            timeout_ms: u32,
        ) -> u32;
        fn proxy_redis_call(
            name: *const u8,
            name_len: usize,
            query: *const u8,
            query_len: usize,
            token: *mut u32,
        ) -> u32;
        #[link_name = "proxy_get_buffer_bytes"]
        fn get_buffer_bytes(
            kind: u32,
            start: usize,
            max: usize,
            ptr: *mut *mut u8,
            len: *mut usize,
        ) -> u32;
    }

    /// Which reply a token waits for.
    #[derive(Clone, Copy)]
    pub enum Stage {
        Incr,
        Expire,
    }

    thread_local! {
        static WAITING: RefCell<HashMap<u32, (u32, Stage, String, String)>> = RefCell::new(HashMap::new());
    }

    pub fn init(service: &str) -> bool {
        // SAFETY: pointers and lengths describe live slices.
        unsafe {
            proxy_redis_init(
                service.as_ptr(),
                service.len(),
                [].as_ptr(),
                0,
                [].as_ptr(),
                0,
                1000,
            ) == 0
        }
    }

    /// Sends `args` as a RESP array; the token, or `None` when refused.
    pub fn call(service: &str, args: &[&str]) -> Option<u32> {
        let mut query = format!("*{}\r\n", args.len());
        for arg in args {
            query.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        let mut token = 0u32;
        // SAFETY: pointers and lengths describe live slices; `token` outlives the call.
        let status = unsafe {
            proxy_redis_call(
                service.as_ptr(),
                service.len(),
                query.as_ptr(),
                query.len(),
                &mut token,
            )
        };
        (status == 0).then_some(token)
    }

    pub fn expect(token: u32, context: u32, stage: Stage, service: &str, key: &str) {
        WAITING.with(|w| {
            w.borrow_mut()
                .insert(token, (context, stage, service.to_owned(), key.to_owned()))
        });
    }

    /// The reply in buffer 9.
    fn reply(len: usize) -> String {
        let mut ptr: *mut u8 = std::ptr::null_mut();
        let mut size = 0usize;
        // SAFETY: the host allocates `size` bytes with our allocator and hands them over.
        unsafe {
            if get_buffer_bytes(9, 0, len, &mut ptr, &mut size) != 0 || ptr.is_null() {
                return String::new();
            }
            String::from_utf8_lossy(&Vec::from_raw_parts(ptr, size, size)).into_owned()
        }
    }

    #[unsafe(no_mangle)]
    pub extern "C" fn proxy_on_redis_call_response(
        _root: u32,
        token: u32,
        status: u32,
        len: usize,
    ) {
        let Some((context, stage, service, key)) = WAITING.with(|w| w.borrow_mut().remove(&token))
        else {
            return;
        };
        if proxy_wasm::hostcalls::set_effective_context(context).is_err() {
            return;
        }
        if status != 0 {
            let _ = proxy_wasm::hostcalls::send_http_response(
                503,
                vec![("x-redis", "down")],
                Some(b"redis unavailable"),
            );
            return;
        }
        let value = reply(len).trim().trim_start_matches(':').to_owned();
        match stage {
            Stage::Incr => {
                let _ = proxy_wasm::hostcalls::set_map_value(
                    MapType::HttpRequestHeaders,
                    "x-redis-count",
                    Some(&value),
                );
                match call(&service, &["EXPIRE", &key, "60"]) {
                    Some(next) => expect(next, context, Stage::Expire, &service, &key),
                    None => {
                        let _ = proxy_wasm::hostcalls::resume_http_request();
                    }
                }
            }
            Stage::Expire => {
                let _ = proxy_wasm::hostcalls::set_map_value(
                    MapType::HttpRequestHeaders,
                    "x-redis-expire",
                    Some(&value),
                );
                let _ = proxy_wasm::hostcalls::resume_http_request();
            }
        }
    }
}
