//! Redis for filters: the asynchronous Redis-call extension Higress added to
//! Proxy-Wasm (`proxy_redis_init`, `proxy_redis_call` → `proxy_on_redis_call_response`).
//! Each named service of the manifest gets one multiplexed connection manager
//! (reconnecting, with bounded timeouts). A guest's command arrives as RESP,
//! read by the `redis` crate's parser; replies go back to it as RESP2.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use redis::Value;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Mutex;

/// A named Redis service from the manifest.
#[derive(Debug, Clone)]
pub struct RedisService {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// Connect and per-command timeout.
    pub timeout: Duration,
}

/// Why a call could not be made.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RedisCallError {
    /// No service has that name.
    #[error("unknown Redis service `{0}`")]
    UnknownService(String),
    /// The query is not a RESP array of bulk strings.
    #[error("the query is not a RESP array of bulk strings")]
    BadQuery,
}

/// A Redis call in flight: resolves to the raw RESP reply, or `Err` when the
/// server could not be reached in time (the ABI's "network error").
pub type PendingRedisCall = Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send>>;

struct Client {
    service: RedisService,
    manager: Mutex<Option<ConnectionManager>>,
}

/// Every Redis service of the gateway.
#[derive(Default)]
pub struct RedisServices {
    clients: HashMap<String, std::sync::Arc<Client>>,
}

impl RedisServices {
    /// Services by name (connections open lazily, on first use).
    pub fn new(services: impl IntoIterator<Item = (String, RedisService)>) -> Self {
        Self {
            clients: services
                .into_iter()
                .map(|(name, service)| {
                    let client = Client {
                        service,
                        manager: Mutex::new(None),
                    };
                    (name, std::sync::Arc::new(client))
                })
                .collect(),
        }
    }

    /// Whether a service named `name` exists.
    pub fn has(&self, name: &str) -> bool {
        self.clients.contains_key(name)
    }

    /// The URL of service `name`.
    pub fn url(&self, name: &str) -> Option<String> {
        self.clients.get(name).map(|c| c.service.url.clone())
    }

    /// Starts `query` (raw RESP) on service `name`.
    pub fn call(&self, name: &str, query: &[u8]) -> Result<PendingRedisCall, RedisCallError> {
        let args = parse_command(query).ok_or(RedisCallError::BadQuery)?;
        self.command(name, args)
    }

    /// Starts the command `args` on service `name`; resolves to the raw RESP reply.
    pub fn command(
        &self,
        name: &str,
        args: Vec<Vec<u8>>,
    ) -> Result<PendingRedisCall, RedisCallError> {
        let client = self
            .clients
            .get(name)
            .cloned()
            .ok_or_else(|| RedisCallError::UnknownService(name.to_owned()))?;
        Ok(Box::pin(async move {
            let timeout = client.service.timeout;
            let work = async {
                let mut manager = client.connection().await?;
                let mut command = redis::Cmd::new();
                for arg in &args {
                    command.arg(arg.as_slice());
                }
                match command.query_async::<Value>(&mut manager).await {
                    Ok(value) => Ok(encode(&value)),
                    Err(e) if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() => {
                        Err(e.to_string())
                    }
                    Err(e) => Ok(format!("-{}\r\n", single_line(&e.to_string())).into_bytes()),
                }
            };
            match tokio::time::timeout(timeout, work).await {
                Ok(result) => result,
                Err(_) => Err(format!(
                    "Redis did not answer within {}ms",
                    timeout.as_millis()
                )),
            }
        }))
    }
}

impl Client {
    /// The connection manager, opened on first use (and retried after a failure).
    async fn connection(&self) -> Result<ConnectionManager, String> {
        let mut slot = self.manager.lock().await;
        if let Some(manager) = slot.as_ref() {
            return Ok(manager.clone());
        }
        let client = redis::Client::open(self.service.url.as_str()).map_err(|e| e.to_string())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.service.timeout))
            .set_response_timeout(Some(self.service.timeout))
            .set_number_of_retries(1);
        let manager = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| e.to_string())?;
        *slot = Some(manager.clone());
        Ok(manager)
    }
}

fn single_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

/// The most arguments a guest's command may have.
const MAX_ARGS: usize = 1024;

/// Reads a guest's query: exactly one RESP array of bulk strings, nothing
/// after it. Uses the `redis` crate's parser, so arguments are binary-safe (a
/// bulk string may hold `\r\n` or NUL).
pub fn parse_command(query: &[u8]) -> Option<Vec<Vec<u8>>> {
    let Ok(Value::Array(items)) = redis::parse_redis_value(query) else {
        return None;
    };
    if items.is_empty() || items.len() > MAX_ARGS {
        return None;
    }
    let args = items
        .into_iter()
        .map(|item| match item {
            Value::BulkString(bytes) => Some(bytes),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    // The parser stops after one value; a query is that value and nothing more,
    // which holds when it is exactly the canonical encoding of its arguments.
    let mut canonical = redis::Cmd::new();
    for arg in &args {
        canonical.arg(arg.as_slice());
    }
    (canonical.get_packed_command() == query).then_some(args)
}

/// The value of a RESP bulk-string reply; `None` for nil, anything else, or bytes that are not RESP.
pub fn bulk_string(reply: &[u8]) -> Option<Vec<u8>> {
    match redis::parse_redis_value(reply) {
        Ok(Value::BulkString(bytes)) => Some(bytes),
        _ => None,
    }
}

/// Encodes a reply as RESP2 (maps and sets become arrays, doubles bulk strings).
pub fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_value(&mut out, value);
    out
}

fn write_value(out: &mut Vec<u8>, value: &Value) {
    let bulk = |out: &mut Vec<u8>, bytes: &[u8]| {
        out.extend_from_slice(format!("${}\r\n", bytes.len()).as_bytes());
        out.extend_from_slice(bytes);
        out.extend_from_slice(b"\r\n");
    };
    let array = |out: &mut Vec<u8>, items: &[&Value]| {
        out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
        for item in items {
            write_value(out, item);
        }
    };
    match value {
        Value::Nil => out.extend_from_slice(b"$-1\r\n"),
        Value::Int(n) => out.extend_from_slice(format!(":{n}\r\n").as_bytes()),
        Value::BulkString(bytes) => bulk(out, bytes),
        Value::Array(items) | Value::Set(items) => array(out, &items.iter().collect::<Vec<_>>()),
        Value::Push { data, .. } => array(out, &data.iter().collect::<Vec<_>>()),
        Value::Map(pairs) => {
            let flat: Vec<&Value> = pairs.iter().flat_map(|(k, v)| [k, v]).collect();
            array(out, &flat);
        }
        Value::Attribute { data, .. } => write_value(out, data),
        Value::SimpleString(s) => {
            out.extend_from_slice(format!("+{}\r\n", single_line(s)).as_bytes())
        }
        Value::Okay => out.extend_from_slice(b"+OK\r\n"),
        Value::Double(d) => bulk(out, d.to_string().as_bytes()),
        Value::Boolean(b) => out.extend_from_slice(if *b { b":1\r\n" } else { b":0\r\n" }),
        Value::VerbatimString { text, .. } => bulk(out, text.as_bytes()),
        Value::BigNumber(n) => bulk(out, n),
        Value::ServerError(e) => {
            out.extend_from_slice(format!("-{}\r\n", single_line(&e.to_string())).as_bytes())
        }
        _ => out.extend_from_slice(b"$-1\r\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_resp_commands() {
        let args = parse_command(b"*2\r\n$4\r\nINCR\r\n$3\r\nk:1\r\n").expect("valid");
        assert_eq!(args, vec![b"INCR".to_vec(), b"k:1".to_vec()]);
        assert_eq!(parse_command(b"*2\r\n$4\r\nINCR\r\n"), None);
        assert_eq!(parse_command(b"*1\r\n$5\r\nINCR\r\n"), None);
        assert_eq!(parse_command(b"PING\r\n"), None);
        assert_eq!(parse_command(b"*0\r\n"), None);
        assert_eq!(
            parse_command(b"*1\r\n:1\r\n"),
            None,
            "integers are not arguments"
        );
        assert_eq!(
            parse_command(b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n"),
            None,
            "one command per call"
        );
    }

    #[test]
    fn keeps_crlf_and_nul_inside_arguments() {
        let query = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$6\r\na\r\nb\0c\r\n";
        let args = parse_command(query).expect("valid");
        assert_eq!(
            args,
            vec![b"SET".to_vec(), b"k".to_vec(), b"a\r\nb\0c".to_vec()]
        );
    }

    #[test]
    fn reads_bulk_string_replies_only() {
        assert_eq!(bulk_string(b"$5\r\nhe\r\no\r\n"), Some(b"he\r\no".to_vec()));
        assert_eq!(bulk_string(b"$-1\r\n"), None);
        assert_eq!(bulk_string(b":1\r\n"), None);
        assert_eq!(bulk_string(b"$5\r\nhe"), None);
    }

    #[test]
    fn encodes_replies_as_resp() {
        assert_eq!(encode(&Value::Int(5)), b":5\r\n");
        assert_eq!(encode(&Value::Okay), b"+OK\r\n");
        assert_eq!(encode(&Value::Nil), b"$-1\r\n");
        let nested = Value::Array(vec![Value::BulkString(b"a".to_vec()), Value::Int(1)]);
        assert_eq!(encode(&nested), b"*2\r\n$1\r\na\r\n:1\r\n");
    }
}
