//! What a host call can answer besides OK: the Proxy-Wasm status codes.

/// A host call that did not succeed, with the status the host answered.
///
/// Every host call in weir-sdk returns `Result<_, HostError>`; none panics on
/// an unexpected status, so a host that refuses something fails that call,
/// not the whole VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostError {
    /// The thing asked for does not exist (a header map outside its phase, a key).
    NotFound,
    /// The host refused an argument (an unknown upstream, a bad level).
    BadArgument,
    /// A value could not be serialized.
    SerializationFailure,
    /// A value could not be parsed (e.g. an unknown gRPC service).
    ParseFailure,
    /// The guest passed memory the host could not read.
    InvalidMemoryAccess,
    /// A queue had nothing in it.
    Empty,
    /// A shared-data write lost a compare-and-swap race.
    CasMismatch,
    /// The host failed.
    InternalFailure,
    /// The host does not implement the call (another host than Weir, say).
    Unimplemented,
    /// A status this SDK does not know.
    Other(u32),
}

impl HostError {
    /// The error for host status `code`; `None` for OK (0).
    pub fn from_status(code: u32) -> Option<Self> {
        Some(match code {
            0 => return None,
            1 => Self::NotFound,
            2 => Self::BadArgument,
            3 => Self::SerializationFailure,
            4 => Self::ParseFailure,
            6 => Self::InvalidMemoryAccess,
            7 => Self::Empty,
            8 => Self::CasMismatch,
            10 => Self::InternalFailure,
            12 => Self::Unimplemented,
            other => Self::Other(other),
        })
    }

    /// The status code this error stands for.
    pub fn code(self) -> u32 {
        match self {
            Self::NotFound => 1,
            Self::BadArgument => 2,
            Self::SerializationFailure => 3,
            Self::ParseFailure => 4,
            Self::InvalidMemoryAccess => 6,
            Self::Empty => 7,
            Self::CasMismatch => 8,
            Self::InternalFailure => 10,
            Self::Unimplemented => 12,
            Self::Other(code) => code,
        }
    }
}

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Self::NotFound => "not found",
            Self::BadArgument => "bad argument",
            Self::SerializationFailure => "serialization failure",
            Self::ParseFailure => "parse failure",
            Self::InvalidMemoryAccess => "invalid memory access",
            Self::Empty => "empty",
            Self::CasMismatch => "compare-and-swap mismatch",
            Self::InternalFailure => "internal failure",
            Self::Unimplemented => "unimplemented",
            Self::Other(_) => "unknown status",
        };
        write!(f, "the host answered {name} ({})", self.code())
    }
}

impl std::error::Error for HostError {}

/// The result of a host call.
pub type HostResult<T> = Result<T, HostError>;
