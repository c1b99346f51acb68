//! The host functions of a native build: each acts on the thread's
//! [`FakeHost`], which the test kit sets up and inspects.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::host::{Buffer, LogLevel, Map, MetricKind, Stream};
use crate::status::{HostError, HostResult};

/// An upstream call a filter made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// Its token (pass it to `TestRequest::answer_call`).
    pub token: u32,
    /// The upstream group called.
    pub upstream: String,
    /// Its headers, pseudo-headers first.
    pub headers: Vec<(String, String)>,
    /// Its body.
    pub body: Vec<u8>,
    /// Its timeout in milliseconds.
    pub timeout_ms: u32,
}

impl Call {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::host::first_value(&self.headers, name)
    }
}

/// A Redis command a filter sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisCall {
    /// Its token (pass it to `TestRequest::answer_redis`).
    pub token: u32,
    /// The Redis service named.
    pub service: String,
    /// The command as sent (RESP).
    pub query: Vec<u8>,
}

/// A local reply a filter sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    /// Its status.
    pub status: u16,
    /// The details the filter gave (Weir's `response.code_details`).
    pub details: String,
    /// Its headers.
    pub headers: Vec<(String, String)>,
    /// Its body.
    pub body: Vec<u8>,
}

impl LocalReply {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::host::first_value(&self.headers, name)
    }

    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }
}

/// What one request holds on the fake host.
#[derive(Debug, Default)]
pub(crate) struct RequestState {
    pub maps: HashMap<Map, Vec<(String, String)>>,
    pub buffers: HashMap<Buffer, Vec<u8>>,
    pub local_reply: Option<LocalReply>,
    pub resumed: Vec<Stream>,
    /// The `weir.consumer` property `weir.consumer_set` wrote.
    pub consumer: Option<Vec<u8>>,
    /// Properties the filter set on this request (its filter state).
    pub properties: HashMap<Vec<String>, Vec<u8>>,
}

/// A consumer the fake host knows, with its credentials in the clear.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestConsumer {
    /// Its name, groups and limits (what plugins are told).
    pub consumer: crate::consumers::Consumer,
    /// Its API keys.
    pub keys: Vec<String>,
    /// Its basic-auth user name (the hash is `consumer.password_hash`).
    pub username: Option<String>,
    /// Its JWT identities: (issuer, subject).
    pub subjects: Vec<(Option<String>, String)>,
}

/// The fake host of one test thread.
#[derive(Debug, Default)]
pub(crate) struct FakeHost {
    pub now_nanos: u64,
    /// The tick period the plugin asked for (0: none).
    pub tick_period_ms: u32,
    pub effective: u32,
    pub requests: HashMap<u32, RequestState>,
    /// Buffers outside any request (configuration, callout answers).
    pub buffers: HashMap<Buffer, Vec<u8>>,
    /// Maps outside any request (callout answers).
    pub maps: HashMap<Map, Vec<(String, String)>>,
    pub properties: HashMap<Vec<String>, Vec<u8>>,
    pub logs: Vec<(LogLevel, String)>,
    pub calls: Vec<Call>,
    pub redis_calls: Vec<RedisCall>,
    pub shared: HashMap<String, (Vec<u8>, u32)>,
    pub metrics: Vec<(MetricKind, String, i64)>,
    pub configuration_errors: Vec<serde_json::Value>,
    pub consumers: Vec<TestConsumer>,
    /// The response cache: the stored head (as `weir.cache_store` got it,
    /// plus `stored_nanos`) and body, by key.
    pub cache: HashMap<String, (serde_json::Value, Vec<u8>)>,
    /// Refresh claims on cache entries: until when, in nanoseconds.
    pub cache_claims: HashMap<String, u64>,
    pub next_token: u32,
    /// Host functions that answer with an error, by name (`"http_call"`).
    pub failing: HashMap<&'static str, HostError>,
}

thread_local! {
    static HOST: RefCell<FakeHost> = RefCell::new(FakeHost::default());
}

/// Runs `f` on the thread's fake host.
pub(crate) fn with<R>(f: impl FnOnce(&mut FakeHost) -> R) -> R {
    HOST.with(|host| f(&mut host.borrow_mut()))
}

/// Replaces the thread's fake host with a fresh one.
pub(crate) fn reset() {
    with(|host| *host = FakeHost::default());
}

/// The error configured for host function `name`, if any.
fn failing(host: &FakeHost, name: &'static str) -> HostResult<()> {
    host.failing.get(name).map_or(Ok(()), |error| Err(*error))
}

impl FakeHost {
    /// Identifies request `id` as consumer `name`, as `weir.consumer_set` does.
    pub(crate) fn set_consumer(&mut self, id: u32, name: &str, anonymous: bool) -> HostResult<()> {
        let found = self.consumers.iter().find(|c| c.consumer.name == name);
        let mut consumer = found.ok_or(HostError::NotFound)?.consumer.clone();
        consumer.password_hash = None;
        consumer.anonymous = anonymous;
        let property =
            serde_json::to_vec(&consumer).map_err(|_| HostError::SerializationFailure)?;
        let request = self.requests.get_mut(&id).ok_or(HostError::BadArgument)?;
        request.consumer = Some(property);
        Ok(())
    }

    fn request(&mut self) -> HostResult<&mut RequestState> {
        self.requests
            .get_mut(&self.effective)
            .ok_or(HostError::BadArgument)
    }

    fn map(&mut self, map: Map) -> HostResult<&mut Vec<(String, String)>> {
        match map {
            Map::CallResponse => Ok(self.maps.entry(map).or_default()),
            _ => self
                .request()?
                .maps
                .get_mut(&map)
                .ok_or(HostError::NotFound),
        }
    }

    fn buffer(&mut self, buffer: Buffer) -> HostResult<&mut Vec<u8>> {
        match buffer {
            Buffer::RequestBody | Buffer::ResponseBody => self
                .request()?
                .buffers
                .get_mut(&buffer)
                .ok_or(HostError::NotFound),
            _ => self.buffers.get_mut(&buffer).ok_or(HostError::NotFound),
        }
    }
}

pub(crate) fn log(level: LogLevel, message: &str) -> HostResult<()> {
    with(|host| host.logs.push((level, message.to_owned())));
    Ok(())
}

pub(crate) fn current_time_nanos() -> HostResult<u64> {
    Ok(with(|host| host.now_nanos))
}

pub(crate) fn set_effective_context(context_id: u32) -> HostResult<()> {
    with(|host| {
        if host.requests.contains_key(&context_id) {
            host.effective = context_id;
            Ok(())
        } else {
            Err(HostError::BadArgument)
        }
    })
}

pub(crate) fn set_tick_period_milliseconds(period: u32) -> HostResult<()> {
    with(|host| host.tick_period_ms = period);
    Ok(())
}

pub(crate) fn get_buffer(buffer: Buffer, start: usize, max: usize) -> HostResult<Option<Vec<u8>>> {
    with(|host| match host.buffer(buffer) {
        Ok(bytes) => {
            let end = start.saturating_add(max).min(bytes.len());
            Ok(Some(bytes.get(start..end).unwrap_or_default().to_vec()))
        }
        Err(HostError::NotFound) => Ok(None),
        Err(error) => Err(error),
    })
}

pub(crate) fn set_buffer(buffer: Buffer, start: usize, size: usize, data: &[u8]) -> HostResult<()> {
    with(|host| {
        let bytes = host.buffer(buffer)?;
        let start = start.min(bytes.len());
        let end = start.saturating_add(size).min(bytes.len());
        bytes.splice(start..end, data.iter().copied());
        Ok(())
    })
}

pub(crate) fn get_map(map: Map) -> HostResult<Vec<(String, String)>> {
    with(|host| host.map(map).cloned())
}

pub(crate) fn get_map_value(map: Map, key: &str) -> HostResult<Option<String>> {
    with(|host| Ok(crate::host::first_value(host.map(map)?, key).map(str::to_owned)))
}

pub(crate) fn add_map_value(map: Map, key: &str, value: &str) -> HostResult<()> {
    with(|host| {
        host.map(map)?
            .push((key.to_ascii_lowercase(), value.to_owned()));
        Ok(())
    })
}

pub(crate) fn replace_map_value(map: Map, key: &str, value: &str) -> HostResult<()> {
    with(|host| {
        let pairs = host.map(map)?;
        pairs.retain(|(k, _)| !k.eq_ignore_ascii_case(key));
        pairs.push((key.to_ascii_lowercase(), value.to_owned()));
        Ok(())
    })
}

pub(crate) fn remove_map_value(map: Map, key: &str) -> HostResult<()> {
    with(|host| {
        host.map(map)?.retain(|(k, _)| !k.eq_ignore_ascii_case(key));
        Ok(())
    })
}

pub(crate) fn get_property(path: &[&str]) -> HostResult<Option<Vec<u8>>> {
    if path == ["weir", "consumer"] {
        return with(|host| Ok(host.request()?.consumer.clone()));
    }
    let path: Vec<String> = path.iter().map(|s| (*s).to_owned()).collect();
    Ok(with(|host| {
        let own = host
            .requests
            .get(&host.effective)
            .and_then(|r| r.properties.get(&path));
        own.or_else(|| host.properties.get(&path)).cloned()
    }))
}

/// Sets a property of the effective request (outside one, of the host).
pub(crate) fn set_property(path: &[&str], value: &[u8]) -> HostResult<()> {
    let path: Vec<String> = path.iter().map(|s| (*s).to_owned()).collect();
    with(|host| match host.requests.get_mut(&host.effective) {
        Some(request) => request.properties.insert(path, value.to_vec()),
        None => host.properties.insert(path, value.to_vec()),
    });
    Ok(())
}

pub(crate) fn send_local_response(
    status: u32,
    details: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> HostResult<()> {
    with(|host| {
        failing(host, "send_local_response")?;
        let request = host.request()?;
        request.local_reply = Some(LocalReply {
            status: u16::try_from(status).map_err(|_| HostError::BadArgument)?,
            details: details.to_owned(),
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            body: body.to_vec(),
        });
        Ok(())
    })
}

pub(crate) fn continue_stream(stream: Stream) -> HostResult<()> {
    with(|host| {
        host.request()?.resumed.push(stream);
        Ok(())
    })
}

/// The next callout token (`4n` for calls, `4n + 3` for Redis, as Envoy and Higress).
fn token(host: &mut FakeHost, kind: u32) -> u32 {
    host.next_token += 1;
    host.next_token * 4 + kind
}

pub(crate) fn http_call(
    upstream: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout_ms: u32,
) -> HostResult<u32> {
    with(|host| {
        failing(host, "http_call")?;
        let token = token(host, 0);
        host.calls.push(Call {
            token,
            upstream: upstream.to_owned(),
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            body: body.to_vec(),
            timeout_ms,
        });
        Ok(token)
    })
}

pub(crate) fn redis_call(service: &str, query: &[u8]) -> HostResult<u32> {
    with(|host| {
        failing(host, "redis_call")?;
        let token = token(host, 3);
        host.redis_calls.push(RedisCall {
            token,
            service: service.to_owned(),
            query: query.to_vec(),
        });
        Ok(token)
    })
}

pub(crate) fn get_shared_data(key: &str) -> HostResult<(Option<Vec<u8>>, u32)> {
    Ok(with(|host| match host.shared.get(key) {
        Some((value, cas)) => (Some(value.clone()), *cas),
        None => (None, 0),
    }))
}

pub(crate) fn set_shared_data(key: &str, value: &[u8], cas: u32) -> HostResult<()> {
    with(|host| {
        let entry = host.shared.entry(key.to_owned()).or_insert((Vec::new(), 0));
        if cas != 0 && entry.1 != 0 && entry.1 != cas {
            return Err(HostError::CasMismatch);
        }
        *entry = (value.to_vec(), entry.1 + 1);
        Ok(())
    })
}

pub(crate) fn define_metric(kind: MetricKind, name: &str) -> HostResult<u32> {
    with(|host| {
        let at = match host.metrics.iter().position(|(_, n, _)| n == name) {
            Some(at) => at,
            None => {
                host.metrics.push((kind, name.to_owned(), 0));
                host.metrics.len() - 1
            }
        };
        u32::try_from(at).map_err(|_| HostError::InternalFailure)
    })
}

pub(crate) fn increment_metric(id: u32, delta: i64) -> HostResult<()> {
    with(|host| {
        let (_, _, value) = host
            .metrics
            .get_mut(id as usize)
            .ok_or(HostError::NotFound)?;
        *value += delta;
        Ok(())
    })
}

pub(crate) fn record_metric(id: u32, sample: u64) -> HostResult<()> {
    with(|host| {
        let (kind, _, value) = host
            .metrics
            .get_mut(id as usize)
            .ok_or(HostError::NotFound)?;
        let sample = i64::try_from(sample).unwrap_or(i64::MAX);
        match kind {
            MetricKind::Counter => *value += sample,
            MetricKind::Gauge | MetricKind::Histogram => *value = sample,
        }
        Ok(())
    })
}

/// Weir's foreign functions the fake host knows: the configuration-error
/// report, shared-data TTLs (accepted, not enforced) and deletion, consumers,
/// and the response cache (in memory, by the fake clock; a Redis tier is not
/// emulated: lookups never pend).
pub(crate) fn call_foreign_function(name: &str, args: &[u8]) -> HostResult<Vec<u8>> {
    if name == "weir.cache_store" {
        return with(|host| host.cache_store(args));
    }
    let args: serde_json::Value =
        serde_json::from_slice(args).map_err(|_| HostError::BadArgument)?;
    with(|host| match name {
        "weir.cache_lookup" => host.cache_lookup(&args),
        "weir.cache_respond" => host.cache_respond(&args),
        "weir.cache_claim_refresh" => host.cache_claim(&args),
        "weir.configuration_error" => {
            host.configuration_errors.push(args);
            Ok(Vec::new())
        }
        "weir.shared_data_set_ttl" | "weir.shared_data_delete" => {
            let key = args["key"].as_str().ok_or(HostError::BadArgument)?;
            if !host.shared.contains_key(key) {
                return Err(HostError::NotFound);
            }
            if name == "weir.shared_data_delete" {
                host.shared.remove(key);
            }
            Ok(Vec::new())
        }
        "weir.consumer_find" => {
            let found = host.consumers.iter().find(|c| holds(c, &args));
            let mut consumer = found.ok_or(HostError::NotFound)?.consumer.clone();
            if args.get("username").is_none() {
                consumer.password_hash = None;
            }
            serde_json::to_vec(&consumer).map_err(|_| HostError::SerializationFailure)
        }
        "weir.consumer_set" => {
            let name = args["name"].as_str().ok_or(HostError::BadArgument)?;
            let anonymous = args["anonymous"].as_bool().unwrap_or(false);
            host.set_consumer(host.effective, name, anonymous)?;
            Ok(Vec::new())
        }
        _ => Err(HostError::NotFound),
    })
}

impl FakeHost {
    /// `weir.cache_store`: the head's length, the head, the body.
    fn cache_store(&mut self, args: &[u8]) -> HostResult<Vec<u8>> {
        let (len, rest) = args
            .split_first_chunk::<4>()
            .ok_or(HostError::BadArgument)?;
        let len = u32::from_le_bytes(*len) as usize;
        let head = rest.get(..len).ok_or(HostError::BadArgument)?;
        let mut head: serde_json::Value =
            serde_json::from_slice(head).map_err(|_| HostError::BadArgument)?;
        let key = head["key"]
            .as_str()
            .ok_or(HostError::BadArgument)?
            .to_owned();
        let body = if head["keep_body"].as_bool() == Some(true) {
            self.live_entry(&key).ok_or(HostError::NotFound)?.1.clone()
        } else {
            rest[len..].to_vec()
        };
        head["stored_nanos"] = self.now_nanos.into();
        self.cache.insert(key, (head, body));
        Ok(Vec::new())
    }

    /// The entry under `key` while its `ttl_ms` lasts on the fake clock.
    fn live_entry(&self, key: &str) -> Option<&(serde_json::Value, Vec<u8>)> {
        let entry = self.cache.get(key)?;
        let stored = entry.0["stored_nanos"].as_u64()?;
        let ttl = entry.0["ttl_ms"].as_u64()?.saturating_mul(1_000_000);
        (self.now_nanos < stored.saturating_add(ttl)).then_some(entry)
    }

    fn cache_lookup(&mut self, args: &serde_json::Value) -> HostResult<Vec<u8>> {
        let key = args["key"].as_str().ok_or(HostError::BadArgument)?;
        let (head, body) = self.live_entry(key).ok_or(HostError::NotFound)?;
        let stored = head["stored_nanos"].as_u64().unwrap_or_default();
        let in_cache_ms = self.now_nanos.saturating_sub(stored) / 1_000_000;
        let fresh = head["fresh_ms"].as_u64().is_some_and(|f| in_cache_ms < f);
        if let Some(extra) = args["serve_fresh"].as_array().filter(|_| fresh) {
            let age = (in_cache_ms + head["age_offset_ms"].as_u64().unwrap_or_default()) / 1000;
            let mut headers = vec![serde_json::json!(["age", age.to_string()])];
            headers.extend(extra.iter().cloned());
            let respond = serde_json::json!({ "key": key, "headers": headers });
            self.cache_respond(&respond)?;
            return Ok(br#"{"served":true}"#.to_vec());
        }
        let found = serde_json::json!({
            "status": head["status"],
            "headers": head["headers"],
            "meta": head["meta"],
            "age_ms": self.now_nanos.saturating_sub(stored) / 1_000_000,
            "size": body.len(),
        });
        serde_json::to_vec(&found).map_err(|_| HostError::SerializationFailure)
    }

    fn cache_respond(&mut self, args: &serde_json::Value) -> HostResult<Vec<u8>> {
        let key = args["key"].as_str().ok_or(HostError::BadArgument)?;
        let (head, body) = self.live_entry(key).ok_or(HostError::NotFound)?.clone();
        let pairs = |v: &serde_json::Value| -> Vec<(String, String)> {
            serde_json::from_value(v.clone()).unwrap_or_default()
        };
        let given = pairs(&args["headers"]);
        let mut headers: Vec<(String, String)> = pairs(&head["headers"])
            .into_iter()
            .filter(|(n, _)| !given.iter().any(|(g, _)| g.eq_ignore_ascii_case(n)))
            .collect();
        headers.extend(given);
        let status = args["status"].as_u64().or(head["status"].as_u64());
        let status = status
            .and_then(|s| u16::try_from(s).ok())
            .ok_or(HostError::BadArgument)?;
        self.request()?.local_reply = Some(LocalReply {
            status,
            details: "cache_hit".into(),
            headers,
            body,
        });
        Ok(Vec::new())
    }

    fn cache_claim(&mut self, args: &serde_json::Value) -> HostResult<Vec<u8>> {
        let key = args["key"].as_str().ok_or(HostError::BadArgument)?;
        let period = args["ms"].as_u64().ok_or(HostError::BadArgument)?;
        self.live_entry(key).ok_or(HostError::NotFound)?;
        let now = self.now_nanos;
        let until = self.cache_claims.entry(key.to_owned()).or_default();
        if *until > now {
            return Err(HostError::CasMismatch);
        }
        *until = now.saturating_add(period.saturating_mul(1_000_000));
        Ok(Vec::new())
    }
}

/// Whether `consumer` holds the credential of a `weir.consumer_find` query.
fn holds(consumer: &TestConsumer, query: &serde_json::Value) -> bool {
    let text = |key: &str| query.get(key).and_then(|v| v.as_str());
    if let Some(name) = text("name") {
        return consumer.consumer.name == name;
    }
    if let Some(key) = text("key") {
        return consumer.keys.iter().any(|k| k == key);
    }
    if let Some(username) = text("username") {
        return consumer.username.as_deref() == Some(username);
    }
    let Some(subject) = query.get("subject") else {
        return false;
    };
    let issuer = subject["issuer"].as_str();
    let sub = subject["subject"].as_str();
    // An identity from that issuer, or one valid from any issuer.
    consumer
        .subjects
        .iter()
        .any(|(i, s)| Some(s.as_str()) == sub && (i.as_deref() == issuer || i.is_none()))
}
