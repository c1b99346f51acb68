//! Redis commands as the host's Redis call takes them (RESP arrays of bulk
//! strings) and its replies read back into [`RedisValue`].

/// A Redis reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisValue {
    /// `+OK` and other simple strings.
    Status(String),
    /// An error reply (`-ERR …`), which Redis sends for a failed command.
    Error(String),
    /// An integer.
    Int(i64),
    /// A bulk string.
    Bulk(Vec<u8>),
    /// A null bulk string or array (a missing key).
    Nil,
    /// An array.
    Array(Vec<RedisValue>),
}

impl RedisValue {
    /// The value as text when it is a string (bulk or simple).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Status(text) => Some(text),
            Self::Bulk(bytes) => std::str::from_utf8(bytes).ok(),
            _ => None,
        }
    }

    /// The value as an integer: an integer reply, or a string of digits.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Self::Int(n) => Some(*n),
            _ => self.as_str()?.parse().ok(),
        }
    }
}

/// Encodes a command (`["INCR", "hits"]`) as a RESP array of bulk strings.
pub fn encode<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        let arg = arg.as_ref();
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Encodes a reply as Redis sends it (the test kit answers with this).
pub fn encode_value(value: &RedisValue) -> Vec<u8> {
    match value {
        RedisValue::Status(text) => format!("+{text}\r\n").into_bytes(),
        RedisValue::Error(text) => format!("-{text}\r\n").into_bytes(),
        RedisValue::Int(n) => format!(":{n}\r\n").into_bytes(),
        RedisValue::Nil => b"$-1\r\n".to_vec(),
        RedisValue::Bulk(bytes) => {
            let mut out = format!("${}\r\n", bytes.len()).into_bytes();
            out.extend_from_slice(bytes);
            out.extend_from_slice(b"\r\n");
            out
        }
        RedisValue::Array(items) => {
            let mut out = format!("*{}\r\n", items.len()).into_bytes();
            for item in items {
                out.extend(encode_value(item));
            }
            out
        }
    }
}

/// Most nesting a reply may have (deeper replies are refused, not recursed into).
const MAX_DEPTH: usize = 32;

/// Decodes one whole RESP2 reply; `None` when `bytes` are not exactly one.
pub fn decode(bytes: &[u8]) -> Option<RedisValue> {
    let (value, rest) = value(bytes, 0)?;
    rest.is_empty().then_some(value)
}

fn value(bytes: &[u8], depth: usize) -> Option<(RedisValue, &[u8])> {
    if depth > MAX_DEPTH {
        return None;
    }
    let (&kind, rest) = bytes.split_first()?;
    let (line, rest) = line(rest)?;
    let text = std::str::from_utf8(line).ok()?;
    match kind {
        b'+' => Some((RedisValue::Status(text.to_owned()), rest)),
        b'-' => Some((RedisValue::Error(text.to_owned()), rest)),
        b':' => Some((RedisValue::Int(text.parse().ok()?), rest)),
        b'$' => {
            let len: i64 = text.parse().ok()?;
            if len < 0 {
                return Some((RedisValue::Nil, rest));
            }
            let len = usize::try_from(len).ok()?;
            let body = rest.get(..len)?;
            let after = rest.get(len..)?.strip_prefix(b"\r\n")?;
            Some((RedisValue::Bulk(body.to_vec()), after))
        }
        b'*' => {
            let count: i64 = text.parse().ok()?;
            if count < 0 {
                return Some((RedisValue::Nil, rest));
            }
            let mut items = Vec::new();
            let mut rest = rest;
            for _ in 0..count {
                let (item, after) = value(rest, depth + 1)?;
                items.push(item);
                rest = after;
            }
            Some((RedisValue::Array(items), rest))
        }
        _ => None,
    }
}

/// The bytes before the first CRLF, and those after it.
fn line(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = bytes.windows(2).position(|w| w == b"\r\n")?;
    Some((&bytes[..end], &bytes[end + 2..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_encode_as_arrays_of_bulk_strings() {
        assert_eq!(
            encode(&["GET", "k"]),
            b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n".to_vec()
        );
    }

    #[test]
    fn replies_decode_and_partial_ones_are_refused() {
        assert_eq!(decode(b":7\r\n"), Some(RedisValue::Int(7)));
        assert_eq!(decode(b"$-1\r\n"), Some(RedisValue::Nil));
        assert_eq!(
            decode(b"*2\r\n$2\r\nhi\r\n-ERR no\r\n"),
            Some(RedisValue::Array(vec![
                RedisValue::Bulk(b"hi".to_vec()),
                RedisValue::Error("ERR no".into())
            ]))
        );
        let nested = RedisValue::Array(vec![RedisValue::Int(-3), RedisValue::Nil]);
        assert_eq!(decode(&encode_value(&nested)), Some(nested));
        assert_eq!(decode(b"$5\r\nhi\r\n"), None);
        assert_eq!(decode(b":7\r\n:8\r\n"), None);
        assert_eq!(decode(&b"*1\r\n".repeat(100)), None);
    }
}
