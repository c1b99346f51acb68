//! WebSocket framing as far as a proxy needs it (RFC 6455 §5.2): where each
//! frame's header starts and how long its payload is, so a message over the
//! limit can be stopped before any of it is forwarded, and the close frames
//! Weir itself sends. Payloads are never read, unmasked or copied.

const OPCODE_CONTINUATION: u8 = 0x0;
const OPCODE_CLOSE: u8 = 0x8;
/// Opcodes from here on are control frames (never part of a message).
const FIRST_CONTROL_OPCODE: u8 = 0x8;

/// Close status codes Weir sends (RFC 6455 §7.4.1).
pub mod close_code {
    /// The endpoint is going away (idle timeout, shutdown, the peer's fault).
    pub const GOING_AWAY: u16 = 1001;
    /// A message too big to process.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
}

/// A frame header, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    fin: bool,
    opcode: u8,
    /// Header bytes, mask included.
    len: usize,
    payload: u64,
}

impl Header {
    /// Parses the header at the start of `bytes`; `None` until all of it is there.
    fn parse(bytes: &[u8]) -> Option<Self> {
        let (&first, &second) = (bytes.first()?, bytes.get(1)?);
        let masked = second & 0x80 != 0;
        let (extended, payload) = match second & 0x7f {
            126 => (
                2,
                u64::from(u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?])),
            ),
            127 => {
                let raw: [u8; 8] = bytes.get(2..10)?.try_into().ok()?;
                (8, u64::from_be_bytes(raw))
            }
            short => (0, u64::from(short)),
        };
        let len = 2 + extended + if masked { 4 } else { 0 };
        (bytes.len() >= len).then_some(Self {
            fin: first & 0x80 != 0,
            opcode: first & 0x0f,
            len,
            payload,
        })
    }
}

/// A message that went over the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooBig {
    /// Its size so far, this frame included.
    pub size: u64,
}

/// Where a stream of frames has got to, fed with the bytes as they pass.
#[derive(Debug)]
pub struct FrameReader {
    /// Payload bytes of the current frame not yet seen.
    remaining: u64,
    /// Payload bytes of the data message under way (fragments so far).
    message: u64,
    limit: u64,
}

/// What [`FrameReader::scan`] found in a stretch of bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Scan {
    /// How many bytes from the start may be forwarded: whole frames and
    /// payload, never a header that is not complete yet.
    pub cleared: usize,
    /// The frame whose header starts at `cleared` takes its message over the limit.
    pub too_big: Option<TooBig>,
}

impl FrameReader {
    /// A reader of a stream that starts at a frame boundary, allowing messages
    /// of up to `limit` payload bytes.
    pub fn new(limit: u64) -> Self {
        Self {
            remaining: 0,
            message: 0,
            limit,
        }
    }

    /// Whether the stream stands between frames (so a frame may be sent into it).
    pub fn at_boundary(&self) -> bool {
        self.remaining == 0
    }

    /// Follows the frames in `bytes`, which continue the stream from the last
    /// cleared byte (bytes not cleared before are given again).
    pub fn scan(&mut self, bytes: &[u8]) -> Scan {
        let mut at = 0;
        loop {
            let left = (bytes.len() - at) as u64;
            if self.remaining > 0 {
                let take = self.remaining.min(left);
                self.remaining -= take;
                // `take` is at most what is left of `bytes`, a usize.
                at += take as usize;
            }
            let Some(header) = bytes.get(at..).and_then(Header::parse) else {
                return Scan {
                    cleared: at,
                    too_big: None,
                };
            };
            if header.opcode < FIRST_CONTROL_OPCODE {
                let size = if header.opcode == OPCODE_CONTINUATION {
                    self.message.saturating_add(header.payload)
                } else {
                    header.payload
                };
                if size > self.limit {
                    return Scan {
                        cleared: at,
                        too_big: Some(TooBig { size }),
                    };
                }
                self.message = if header.fin { 0 } else { size };
            }
            at += header.len;
            self.remaining = header.payload;
        }
    }
}

/// A close frame with `code` and `reason` (cut to fit a control frame),
/// masked when it goes to a server (`masked`), as a client's must be.
pub fn close_frame(code: u16, reason: &str, masked: bool) -> Vec<u8> {
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut payload = Vec::with_capacity(2 + cut);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..cut]);
    let mut frame = Vec::with_capacity(6 + payload.len());
    frame.push(0x80 | OPCODE_CLOSE);
    // At most 125: one length byte.
    let len = payload.len() as u8;
    if masked {
        let mask = fastrand::u32(..).to_be_bytes();
        frame.push(0x80 | len);
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    } else {
        frame.push(len);
        frame.extend_from_slice(&payload);
    }
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unmasked frame with `payload` bytes of zeros.
    fn frame(fin: bool, opcode: u8, payload: usize) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload {
            0..=125 => out.push(payload as u8),
            126..=0xffff => {
                out.push(126);
                out.extend_from_slice(&(payload as u16).to_be_bytes());
            }
            _ => {
                out.push(127);
                out.extend_from_slice(&(payload as u64).to_be_bytes());
            }
        }
        out.resize(out.len() + payload, 0);
        out
    }

    #[test]
    fn clears_whole_frames_and_holds_a_split_header() {
        let mut reader = FrameReader::new(1 << 20);
        let mut bytes = frame(true, 0x1, 5);
        bytes.extend_from_slice(&frame(true, 0x2, 70_000)[..3]);
        let scan = reader.scan(&bytes);
        assert_eq!(scan.cleared, 7);
        assert!(reader.at_boundary());
        // The rest of the header arrives with some payload.
        let second = frame(true, 0x2, 70_000);
        let scan = reader.scan(&second[..100]);
        assert_eq!(scan.cleared, 100);
        assert!(!reader.at_boundary());
        let scan = reader.scan(&second[100..]);
        assert_eq!(scan.cleared, second.len() - 100);
        assert!(reader.at_boundary());
    }

    #[test]
    fn stops_at_the_header_of_a_frame_over_the_limit() {
        let mut reader = FrameReader::new(1000);
        let mut bytes = frame(true, 0x1, 1000);
        let first = bytes.len();
        bytes.extend_from_slice(&frame(true, 0x2, 1001));
        let scan = reader.scan(&bytes);
        assert_eq!(scan.cleared, first);
        assert_eq!(scan.too_big, Some(TooBig { size: 1001 }));
    }

    #[test]
    fn counts_a_fragmented_message_across_its_frames_but_not_control_frames() {
        let mut reader = FrameReader::new(1000);
        let mut bytes = frame(false, 0x1, 600);
        bytes.extend_from_slice(&frame(true, 0x9, 100)); // a ping in between
        let before_second = bytes.len();
        bytes.extend_from_slice(&frame(true, 0x0, 401));
        let scan = reader.scan(&bytes);
        assert_eq!(scan.cleared, before_second);
        assert_eq!(scan.too_big, Some(TooBig { size: 1001 }));
        // A finished message does not count towards the next.
        let mut reader = FrameReader::new(1000);
        let mut bytes = frame(false, 0x2, 600);
        bytes.extend_from_slice(&frame(true, 0x0, 400));
        bytes.extend_from_slice(&frame(true, 0x2, 1000));
        assert_eq!(
            reader.scan(&bytes),
            Scan {
                cleared: bytes.len(),
                too_big: None
            }
        );
    }

    #[test]
    fn reads_masked_and_64_bit_lengths() {
        let header = [0x82, 0x80 | 127, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4];
        let parsed = Header::parse(&header).expect("a whole header");
        assert_eq!((parsed.len, parsed.payload), (14, 1 << 32));
        assert_eq!(Header::parse(&header[..13]), None);
    }

    #[test]
    fn builds_close_frames_both_ways() {
        assert_eq!(
            close_frame(1009, "too big", false),
            [&[0x88, 9, 0x03, 0xf1][..], b"too big"].concat()
        );
        let masked = close_frame(1001, "bye", true);
        assert_eq!(masked[..2], [0x88, 0x80 | 5]);
        let mask = &masked[2..6];
        let payload: Vec<u8> = masked[6..]
            .iter()
            .zip(mask.iter().cycle())
            .map(|(b, m)| b ^ m)
            .collect();
        assert_eq!(payload, [&[0x03, 0xe9][..], b"bye"].concat());
    }
}
