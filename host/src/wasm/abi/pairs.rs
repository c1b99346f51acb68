//! The Proxy-Wasm map encoding: `u32 N | N × (u32 key_len, u32 value_len) |
//! key 0x00 value 0x00 …`, all integers little-endian.

/// One name/value pair.
pub type Pair = (Vec<u8>, Vec<u8>);

/// Most pairs a map from the guest may hold.
const MAX_PAIRS: usize = 1024;

/// Encodes pairs.
pub fn encode<'a, I>(pairs: I) -> Vec<u8>
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
    I::IntoIter: Clone,
{
    let pairs = pairs.into_iter();
    let count = pairs.clone().count();
    let data_len: usize = pairs.clone().map(|(k, v)| k.len() + v.len() + 2).sum();
    let mut out = Vec::with_capacity(4 + count * 8 + data_len);
    out.extend_from_slice(&(count as u32).to_le_bytes());
    for (k, v) in pairs.clone() {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

/// Decodes pairs; `None` when the bytes are not a well-formed map.
pub fn decode(bytes: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let u32_at = |at: usize| -> Option<usize> {
        let b = bytes.get(at..at + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let count = u32_at(0)?;
    if count > MAX_PAIRS {
        return None;
    }
    let mut sizes = Vec::with_capacity(count);
    for i in 0..count {
        sizes.push((u32_at(4 + i * 8)?, u32_at(8 + i * 8)?));
    }
    let mut at = 4 + count * 8;
    let mut pairs = Vec::with_capacity(count);
    for (klen, vlen) in sizes {
        let key = bytes.get(at..at + klen)?.to_vec();
        at += klen;
        (bytes.get(at) == Some(&0)).then_some(())?;
        at += 1;
        let value = bytes.get(at..at + vlen)?.to_vec();
        at += vlen;
        (bytes.get(at) == Some(&0)).then_some(())?;
        at += 1;
        pairs.push((key, value));
    }
    (at == bytes.len()).then_some(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_documented_example() {
        let bytes = encode([(b":method".as_slice(), b"GET".as_slice())]);
        assert_eq!(
            bytes,
            [
                1, 0, 0, 0, 7, 0, 0, 0, 3, 0, 0, 0, b':', b'm', b'e', b't', b'h', b'o', b'd', 0,
                b'G', b'E', b'T', 0
            ]
        );
    }

    #[test]
    fn round_trips_and_rejects_malformed_maps() {
        let pairs = [
            (b"a".as_slice(), b"1".as_slice()),
            (b"bb".as_slice(), b"".as_slice()),
        ];
        let bytes = encode(pairs);
        let decoded = decode(&bytes).expect("well formed");
        assert_eq!(
            decoded,
            vec![(b"a".to_vec(), b"1".to_vec()), (b"bb".to_vec(), vec![])]
        );
        assert_eq!(decode(&bytes[..bytes.len() - 1]), None);
        let mut extra = bytes.clone();
        extra.push(7);
        assert_eq!(decode(&extra), None);
        assert_eq!(decode(&[]), Some(vec![]));
    }
}
