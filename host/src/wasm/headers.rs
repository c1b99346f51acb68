//! Header maps as filters see them: pseudo-headers first (`:method`, `:path`,
//! `:authority`, `:scheme` or `:status`), then the regular headers; and which
//! maps a filter may read or change in the current phase.

use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::abi::Status;
use super::abi::caps::MAP_ENTRIES;
use super::stream::{Phase, StreamData};

/// The maps of the ABI's map-type enum that Weir serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapType {
    /// 0.
    RequestHeaders,
    /// 1.
    RequestTrailers,
    /// 2.
    ResponseHeaders,
    /// 3.
    ResponseTrailers,
}

impl MapType {
    /// The map for an ABI number; other maps (gRPC, call responses) are not HTTP-stream maps.
    pub fn from_abi(n: i32) -> Option<Self> {
        match n {
            0 => Some(Self::RequestHeaders),
            1 => Some(Self::RequestTrailers),
            2 => Some(Self::ResponseHeaders),
            3 => Some(Self::ResponseTrailers),
            _ => None,
        }
    }
}

/// One name/value pair as bytes.
pub type Pair = (Vec<u8>, Vec<u8>);

impl StreamData {
    /// Every pair of `map`, pseudo-headers first; `None` when the map does not exist now.
    pub fn pairs(&self, map: MapType) -> Option<Vec<Pair>> {
        let mut pairs = Vec::new();
        let headers = match map {
            MapType::RequestHeaders => {
                let r = &self.request;
                for (k, v) in [
                    (":method", &r.method),
                    (":path", &r.path),
                    (":authority", &r.authority),
                    (":scheme", &r.scheme),
                ] {
                    pairs.push((k.as_bytes().to_vec(), v.as_bytes().to_vec()));
                }
                &r.headers
            }
            MapType::ResponseHeaders => {
                let r = self.response.as_ref()?;
                pairs.push((b":status".to_vec(), r.status.to_string().into_bytes()));
                &r.headers
            }
            MapType::RequestTrailers => self.request_trailers.as_ref()?,
            MapType::ResponseTrailers => self.response_trailers.as_ref()?,
        };
        pairs.extend(
            headers
                .iter()
                .map(|(k, v)| (k.as_str().as_bytes().to_vec(), v.as_bytes().to_vec())),
        );
        Some(pairs)
    }

    /// The first value of `key` (any case) in `map`.
    pub fn value(&self, map: MapType, key: &[u8]) -> Option<HeaderValue> {
        if key.starts_with(b":") {
            return self.pseudo(map, &key.to_ascii_lowercase())?;
        }
        let key = std::str::from_utf8(key).ok()?;
        self.headers(map)?.get(key).cloned()
    }

    /// Appends a value.
    pub fn add(&mut self, map: MapType, key: &[u8], value: &[u8]) -> Result<(), Status> {
        self.edit(map, key, Some(value), false)
    }

    /// Makes `value` the only value.
    pub fn replace(&mut self, map: MapType, key: &[u8], value: &[u8]) -> Result<(), Status> {
        self.edit(map, key, Some(value), true)
    }

    /// Removes every value (a missing key is fine).
    pub fn remove(&mut self, map: MapType, key: &[u8]) -> Result<(), Status> {
        self.edit(map, key, None, true)
    }

    /// Replaces the whole map with `pairs` (pseudo-headers among them set the head).
    pub fn set_pairs(&mut self, map: MapType, pairs: &[Pair]) -> Result<(), Status> {
        self.writable(map)?;
        if let Some(headers) = self.headers_mut(map) {
            headers.clear();
        }
        for (k, v) in pairs {
            self.edit(map, k, Some(v), false)?;
        }
        Ok(())
    }

    fn edit(
        &mut self,
        map: MapType,
        key: &[u8],
        value: Option<&[u8]>,
        replace: bool,
    ) -> Result<(), Status> {
        self.writable(map)?;
        if key.starts_with(b":") {
            return self.set_pseudo(map, &key.to_ascii_lowercase(), value);
        }
        // `HeaderName` lowercases the name itself.
        let name = HeaderName::from_bytes(key).map_err(|_| Status::BadArgument)?;
        let headers = self.headers_mut(map).ok_or(Status::NotFound)?;
        match value {
            None => {
                headers.remove(&name);
            }
            Some(v) => {
                let value = HeaderValue::from_bytes(v).map_err(|_| Status::BadArgument)?;
                if !replace && headers.len() >= MAP_ENTRIES {
                    return Err(Status::BadArgument);
                }
                if replace {
                    headers.insert(name, value);
                } else {
                    headers.append(name, value);
                }
            }
        }
        Ok(())
    }

    /// Whether `map` may change now: heads until they are sent, trailers while they exist.
    fn writable(&self, map: MapType) -> Result<(), Status> {
        let ok = match map {
            MapType::RequestHeaders => !self.request_sent,
            MapType::ResponseHeaders => self.response.is_some() && !self.response_sent,
            MapType::RequestTrailers => {
                self.request_trailers.is_some() && self.phase == Phase::RequestTrailers
            }
            MapType::ResponseTrailers => {
                self.response_trailers.is_some() && self.phase == Phase::ResponseTrailers
            }
        };
        if ok { Ok(()) } else { Err(Status::BadArgument) }
    }

    fn headers(&self, map: MapType) -> Option<&HeaderMap> {
        match map {
            MapType::RequestHeaders => Some(&self.request.headers),
            MapType::ResponseHeaders => self.response.as_ref().map(|r| &r.headers),
            MapType::RequestTrailers => self.request_trailers.as_ref(),
            MapType::ResponseTrailers => self.response_trailers.as_ref(),
        }
    }

    fn headers_mut(&mut self, map: MapType) -> Option<&mut HeaderMap> {
        match map {
            MapType::RequestHeaders => Some(&mut self.request.headers),
            MapType::ResponseHeaders => self.response.as_mut().map(|r| &mut r.headers),
            MapType::RequestTrailers => self.request_trailers.as_mut(),
            MapType::ResponseTrailers => self.response_trailers.as_mut(),
        }
    }

    /// `Some(value)` when `key` (lowercase) is a pseudo-header of `map`.
    fn pseudo(&self, map: MapType, key: &[u8]) -> Option<Option<HeaderValue>> {
        let r = &self.request;
        let text = match (map, key) {
            (MapType::RequestHeaders, b":method") => &r.method,
            (MapType::RequestHeaders, b":path") => &r.path,
            (MapType::RequestHeaders, b":authority") => &r.authority,
            (MapType::RequestHeaders, b":scheme") => &r.scheme,
            (MapType::ResponseHeaders, b":status") => {
                return Some(self.response.as_ref().map(|r| HeaderValue::from(r.status)));
            }
            _ => return None,
        };
        Some(HeaderValue::from_str(text).ok())
    }

    fn set_pseudo(&mut self, map: MapType, key: &[u8], value: Option<&[u8]>) -> Result<(), Status> {
        let text = || -> Result<String, Status> {
            let v = value.ok_or(Status::BadArgument)?;
            String::from_utf8(v.to_vec()).map_err(|_| Status::BadArgument)
        };
        match (map, key) {
            (MapType::RequestHeaders, b":method") => self.request.method = text()?,
            (MapType::RequestHeaders, b":path") => self.request.path = text()?,
            (MapType::RequestHeaders, b":authority") => self.request.authority = text()?,
            (MapType::RequestHeaders, b":scheme") => self.request.scheme = text()?,
            (MapType::ResponseHeaders, b":status") => {
                let status: u16 = text()?.parse().map_err(|_| Status::BadArgument)?;
                if let Some(r) = self.response.as_mut() {
                    r.status = status;
                }
            }
            _ => return Err(Status::BadArgument),
        }
        Ok(())
    }
}
