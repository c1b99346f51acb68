//! The decoding and normalising transformations CRS rules apply to a value
//! before matching (ModSecurity's `t:` actions), on bytes: a decoded value
//! need not be UTF-8. Each follows ModSecurity's non-strict behaviour: an
//! invalid escape is kept as it is. Depends on nothing else in the crate.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// One transformation (`t:<name>` in CRS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Transform {
    /// `%XX`, `%uXXXX` and `+` decoded.
    UrlDecodeUni,
    /// Each multi-byte UTF-8 character written as `%uXXXX`.
    Utf8ToUnicode,
    /// `&#DD;`, `&#xHH;`, `&quot;`, `&amp;`, `&lt;`, `&gt;`, `&nbsp;` decoded.
    HtmlEntityDecode,
    /// JavaScript escapes (`\uXXXX`, `\xHH`, octal, `\n`, …) decoded.
    JsDecode,
    /// CSS escapes (`\HHHHHH`, `\<char>`) decoded.
    CssDecode,
    /// ANSI C escapes (`\n`, `\xHH`, `\0oo`, …) decoded.
    EscapeSeqDecode,
    /// Base64 decoded (up to the first character outside the alphabet).
    Base64Decode,
    /// ASCII letters lower-cased.
    Lowercase,
    /// NUL bytes removed.
    RemoveNulls,
    /// Whitespace (and NBSP) removed.
    RemoveWhitespace,
    /// Runs of whitespace (and NBSP) made one space.
    CompressWhitespace,
    /// C comments (`/* … */`, also unterminated) made one space.
    ReplaceComments,
    /// Comment markers (`/*`, `*/`, `--`, `#`) removed.
    RemoveCommentsChar,
    /// A command line normalised: quotes, `\` and `^` removed, `,` `;` and
    /// whitespace made one space, no space before `/` or `(`, lower case.
    CmdLine,
    /// `//`, `/./` and `/../` resolved.
    NormalizePath,
    /// `\` made `/`, then [`NormalizePath`](Self::NormalizePath).
    NormalizePathWin,
}

impl Transform {
    /// `input` transformed; `None` when that leaves it as it is (checked
    /// cheaply first: most honest values have nothing to decode).
    pub(crate) fn apply(self, input: &[u8]) -> Option<Vec<u8>> {
        let has = |bytes: &[u8]| input.iter().any(|b| bytes.contains(b));
        let may_change = match self {
            Self::UrlDecodeUni => has(b"%+"),
            Self::Utf8ToUnicode => !input.is_ascii(),
            Self::HtmlEntityDecode => has(b"&"),
            Self::JsDecode | Self::CssDecode | Self::EscapeSeqDecode => has(b"\\"),
            Self::Lowercase => input.iter().any(u8::is_ascii_uppercase),
            Self::RemoveNulls => has(b"\0"),
            Self::ReplaceComments => has(b"*"),
            Self::RemoveCommentsChar => has(b"*-#"),
            Self::NormalizePath => has(b"/."),
            Self::NormalizePathWin => has(b"/.\\"),
            Self::Base64Decode
            | Self::RemoveWhitespace
            | Self::CompressWhitespace
            | Self::CmdLine => true,
        };
        if !may_change {
            return None;
        }
        let output = self.transform(input);
        (output != input).then_some(output)
    }

    fn transform(self, input: &[u8]) -> Vec<u8> {
        match self {
            Self::UrlDecodeUni => url_decode(input),
            Self::Utf8ToUnicode => utf8_to_unicode(input),
            Self::HtmlEntityDecode => html_entity_decode(input),
            Self::JsDecode => js_decode(input),
            Self::CssDecode => css_decode(input),
            Self::EscapeSeqDecode => escape_seq_decode(input),
            Self::Base64Decode => base64_decode(input),
            Self::Lowercase => input.to_ascii_lowercase(),
            Self::RemoveNulls => input.iter().copied().filter(|&b| b != 0).collect(),
            Self::RemoveWhitespace => input.iter().copied().filter(|&b| !is_space(b)).collect(),
            Self::CompressWhitespace => compress_whitespace(input),
            Self::ReplaceComments => replace_comments(input),
            Self::RemoveCommentsChar => remove_comments_char(input),
            Self::CmdLine => cmd_line(input),
            Self::NormalizePath => normalize_path(input),
            Self::NormalizePathWin => {
                let slashed: Vec<u8> = input
                    .iter()
                    .map(|&b| if b == b'\\' { b'/' } else { b })
                    .collect();
                normalize_path(&slashed)
            }
        }
    }
}

/// The transformation chains of a rule set, as a tree: a chain is a node
/// whose ancestors are its prefixes, so rules that share a prefix share its
/// results. Node 0 is the value itself.
#[derive(Debug, Default)]
pub(crate) struct Chains {
    /// Node `i + 1`: its parent node and the transformation applied to it.
    nodes: Vec<(usize, Transform)>,
}

impl Chains {
    /// The nodes of `chain`'s stages: the value itself (0), then after each
    /// transformation.
    pub(crate) fn intern(&mut self, chain: &[Transform]) -> Vec<usize> {
        let mut stages = vec![0];
        let mut at = 0;
        for transform in chain {
            at = match self.nodes.iter().position(|n| *n == (at, *transform)) {
                Some(i) => i + 1,
                None => {
                    self.nodes.push((at, *transform));
                    self.nodes.len()
                }
            };
            stages.push(at);
        }
        stages
    }

    /// How many nodes there are, the value itself included.
    fn len(&self) -> usize {
        self.nodes.len() + 1
    }
}

/// A variable's value at a node.
#[derive(Debug, Clone)]
enum Slot {
    /// Not computed yet.
    Unknown,
    /// The same as at this node: the nearest ancestor that changed it, or 0.
    Same(usize),
    /// Changed by the node's transformation.
    Changed(Vec<u8>),
}

/// One request's transformed values, each computed on first use.
pub(crate) struct Transformed<'c> {
    chains: &'c Chains,
    /// Variable `v`'s value at node `n` is at `v * chains.len() + n`.
    values: Vec<Slot>,
}

impl<'c> Transformed<'c> {
    /// Room for `variables` variables' values at every node of `chains`.
    pub(crate) fn new(chains: &'c Chains, variables: usize) -> Self {
        Self {
            chains,
            values: vec![Slot::Unknown; variables * chains.len()],
        }
    }

    /// Variable `variable` (whose value is `raw`) at node `node`.
    pub(crate) fn get<'a>(&'a mut self, variable: usize, raw: &'a [u8], node: usize) -> &'a [u8] {
        let source = self.at(variable, raw, node).unwrap_or(node);
        self.changed(variable, source).unwrap_or(raw)
    }

    /// Variable `variable` at node `node` when the node changed it (node 0,
    /// the value itself, counts as changed); `None` when it is its parent's.
    pub(crate) fn distinct<'a>(
        &'a mut self,
        variable: usize,
        raw: &'a [u8],
        node: usize,
    ) -> Option<&'a [u8]> {
        match self.at(variable, raw, node) {
            Some(_) => None,
            None => Some(self.changed(variable, node).unwrap_or(raw)),
        }
    }

    /// Computes the slot of `variable` at `node`; when the node changed
    /// nothing, the node whose value it has (an ancestor that changed it, or 0).
    fn at(&mut self, variable: usize, raw: &[u8], node: usize) -> Option<usize> {
        let &(parent, transform) = self.chains.nodes.get(node.checked_sub(1)?)?;
        let slot = variable * self.chains.len() + node;
        if matches!(self.values[slot], Slot::Unknown) {
            let source = self.at(variable, raw, parent).unwrap_or(parent);
            let input = self.changed(variable, source).unwrap_or(raw);
            self.values[slot] = match transform.apply(input) {
                Some(value) => Slot::Changed(value),
                None => Slot::Same(source),
            };
        }
        match self.values[slot] {
            Slot::Same(source) => Some(source),
            Slot::Unknown | Slot::Changed(_) => None,
        }
    }

    /// The value `node` made of `variable`'s, if it changed it.
    fn changed(&self, variable: usize, node: usize) -> Option<&[u8]> {
        match self.values.get(variable * self.chains.len() + node)? {
            Slot::Changed(value) => Some(value),
            Slot::Unknown | Slot::Same(_) => None,
        }
    }
}

/// Whitespace as ModSecurity sees it: C's `isspace` and NBSP.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c | 0xa0)
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// The byte of two hex digits at `input[at..at + 2]`.
fn hex_byte(input: &[u8], at: usize) -> Option<u8> {
    let hi = hex(*input.get(at)?)?;
    let lo = hex(*input.get(at + 1)?)?;
    Some(hi << 4 | lo)
}

/// The byte ModSecurity makes of a `%uXXXX`/`\uXXXX` escape whose four hex
/// digits start at `input[at]`: the low byte, with full-width ASCII
/// (U+FF01–U+FF5E) mapped to ASCII.
fn unicode_byte(input: &[u8], at: usize) -> Option<u8> {
    let high = hex_byte(input, at)?;
    let low = hex_byte(input, at + 2)?;
    Some(if high == 0xff && low > 0 && low < 0x5f {
        low + 0x20
    } else {
        low
    })
}

fn url_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'%' if matches!(input.get(i + 1), Some(b'u' | b'U')) => {
                match unicode_byte(input, i + 2) {
                    Some(b) => {
                        out.push(b);
                        i += 6;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'%' => match hex_byte(input, i + 1) {
                Some(b) => {
                    out.push(b);
                    i += 3;
                }
                None => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

fn utf8_to_unicode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    for chunk in input.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_ascii() {
                out.push(c as u8);
            } else {
                out.extend_from_slice(format!("%u{:04x}", u32::from(c)).as_bytes());
            }
        }
        out.extend_from_slice(chunk.invalid());
    }
    out
}

fn html_entity_decode(input: &[u8]) -> Vec<u8> {
    const NAMED: [(&[u8], u8); 5] = [
        (b"quot", b'"'),
        (b"amp", b'&'),
        (b"lt", b'<'),
        (b"gt", b'>'),
        (b"nbsp", 0xa0),
    ];
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] != b'&' {
            out.push(input[i]);
            i += 1;
            continue;
        }
        let rest = &input[i + 1..];
        let decoded = if let Some(number) = rest.strip_prefix(b"#") {
            let (radix, digits_at) = match number.first() {
                Some(b'x' | b'X') => (16, 1),
                _ => (10, 0),
            };
            let digits = number[digits_at..]
                .iter()
                .take_while(|b| (**b as char).is_digit(radix))
                .count();
            (digits > 0).then(|| {
                let text = &number[digits_at..digits_at + digits];
                let value = text.iter().fold(0u32, |v, b| {
                    v.wrapping_mul(radix)
                        .wrapping_add((*b as char).to_digit(radix).unwrap_or(0))
                });
                (value.to_le_bytes()[0], 1 + digits_at + digits)
            })
        } else {
            NAMED.iter().find_map(|(name, byte)| {
                let matches =
                    rest.len() >= name.len() && rest[..name.len()].eq_ignore_ascii_case(name);
                matches.then_some((*byte, name.len()))
            })
        };
        match decoded {
            Some((byte, used)) => {
                out.push(byte);
                i += 1 + used;
                if input.get(i) == Some(&b';') {
                    i += 1;
                }
            }
            None => {
                out.push(b'&');
                i += 1;
            }
        }
    }
    out
}

/// The byte of one-letter escape `c` (`\n`, …) shared by JS and C.
fn simple_escape(c: u8) -> Option<u8> {
    Some(match c {
        b'a' => 0x07,
        b'b' => 0x08,
        b'f' => 0x0c,
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        b'v' => 0x0b,
        b'\\' | b'?' | b'\'' | b'"' => c,
        _ => return None,
    })
}

/// An octal escape's byte and length (1–3 digits) at `input[at..]`.
fn octal(input: &[u8], at: usize) -> Option<(u8, usize)> {
    let digits = input[at..]
        .iter()
        .take(3)
        .take_while(|b| (b'0'..=b'7').contains(*b))
        .count();
    let value = input[at..at + digits]
        .iter()
        .fold(0u32, |v, b| v * 8 + u32::from(b - b'0'));
    (digits > 0).then(|| (value.to_le_bytes()[0], digits))
}

fn js_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] != b'\\' || i + 1 >= input.len() {
            out.push(input[i]);
            i += 1;
            continue;
        }
        let next = input[i + 1];
        if next == b'u'
            && let Some(b) = unicode_byte(input, i + 2)
        {
            out.push(b);
            i += 6;
        } else if next == b'x'
            && let Some(b) = hex_byte(input, i + 2)
        {
            out.push(b);
            i += 4;
        } else if let Some((b, len)) = octal(input, i + 1) {
            out.push(b);
            i += 1 + len;
        } else {
            out.push(simple_escape(next).unwrap_or(next));
            i += 2;
        }
    }
    out
}

fn css_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] != b'\\' {
            out.push(input[i]);
            i += 1;
            continue;
        }
        let digits = input[i + 1..]
            .iter()
            .take(6)
            .take_while(|b| b.is_ascii_hexdigit())
            .count();
        if digits > 0 {
            let text = &input[i + 1..i + 1 + digits];
            let low = if digits == 1 {
                hex(text[0]).unwrap_or(0)
            } else {
                hex_byte(text, digits - 2).unwrap_or(0)
            };
            let full_width = digits >= 4
                && text[digits - 4..digits - 2].eq_ignore_ascii_case(b"ff")
                && low > 0
                && low < 0x5f;
            out.push(if full_width { low + 0x20 } else { low });
            i += 1 + digits;
            if input.get(i).is_some_and(|b| is_space(*b)) {
                i += 1;
            }
        } else {
            match input.get(i + 1) {
                Some(b'\n') | None => {}
                Some(&c) => out.push(c),
            }
            i += 2;
        }
    }
    out
}

fn escape_seq_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] != b'\\' || i + 1 >= input.len() {
            out.push(input[i]);
            i += 1;
            continue;
        }
        let next = input[i + 1];
        if let Some(b) = simple_escape(next) {
            out.push(b);
            i += 2;
        } else if next == b'x'
            && let Some(b) = hex_byte(input, i + 2)
        {
            out.push(b);
            i += 4;
        } else if let Some((b, len)) = octal(input, i + 1) {
            out.push(b);
            i += 1 + len;
        } else {
            out.extend_from_slice(&[b'\\', next]);
            i += 2;
        }
    }
    out
}

fn base64_decode(input: &[u8]) -> Vec<u8> {
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let valid = input
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/'))
        .count();
    // A last group of one character decodes to nothing.
    let usable = valid - usize::from(valid % 4 == 1);
    LENIENT.decode(&input[..usable]).unwrap_or_default()
}

fn compress_whitespace(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut in_space = false;
    for &b in input {
        if is_space(b) {
            if !in_space {
                out.push(b' ');
            }
            in_space = true;
        } else {
            out.push(b);
            in_space = false;
        }
    }
    out
}

fn replace_comments(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i..].starts_with(b"/*") {
            out.push(b' ');
            match input[i + 2..].windows(2).position(|w| w == b"*/") {
                Some(end) => i += 2 + end + 2,
                None => break,
            }
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    out
}

fn remove_comments_char(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let rest = &input[i..];
        if rest.starts_with(b"/*") || rest.starts_with(b"*/") || rest.starts_with(b"--") {
            i += 2;
        } else if rest[0] == b'#' {
            i += 1;
        } else {
            out.push(rest[0]);
            i += 1;
        }
    }
    out
}

fn cmd_line(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut space = false;
    for &b in input {
        match b {
            b'"' | b'\'' | b'\\' | b'^' => {}
            b' ' | b',' | b';' | b'\t' | b'\r' | b'\n' => {
                if !space {
                    out.push(b' ');
                    space = true;
                }
            }
            b'/' | b'(' => {
                if space {
                    out.pop();
                }
                space = false;
                out.push(b);
            }
            _ => {
                out.push(b.to_ascii_lowercase());
                space = false;
            }
        }
    }
    out
}

fn normalize_path(input: &[u8]) -> Vec<u8> {
    if input.is_empty() {
        return Vec::new();
    }
    let absolute = input[0] == b'/';
    let last = input.rsplit(|b| *b == b'/').next().unwrap_or_default();
    let trailing = input.ends_with(b"/") || last == b"." || last == b"..";
    let mut segments: Vec<&[u8]> = Vec::new();
    for segment in input.split(|b| *b == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => {
                if segments.last().is_some_and(|s| *s != b"..") {
                    segments.pop();
                } else if !absolute {
                    segments.push(segment);
                }
            }
            _ => segments.push(segment),
        }
    }
    let mut out = Vec::with_capacity(input.len());
    if absolute {
        out.push(b'/');
    }
    out.extend_from_slice(&segments.join(&b'/'));
    if trailing && !segments.is_empty() {
        out.push(b'/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::Transform::*;
    use super::*;

    fn t(transform: Transform, input: &str) -> Vec<u8> {
        transform
            .apply(input.as_bytes())
            .unwrap_or_else(|| input.as_bytes().to_vec())
    }

    #[test]
    fn url_decoding_keeps_invalid_escapes_and_maps_full_width() {
        assert_eq!(t(UrlDecodeUni, "a%27+b%zz%"), b"a' b%zz%");
        assert_eq!(t(UrlDecodeUni, "%u0027%uff1c%u00e9"), b"'<\xe9");
        assert_eq!(t(Utf8ToUnicode, "é<"), b"%u00e9<");
    }

    #[test]
    fn entity_and_escape_decoders_follow_modsecurity() {
        assert_eq!(
            t(HtmlEntityDecode, "&lt;script&gt;&#x61;&#98&QUOT;&bogus;"),
            b"<script>ab\"&bogus;"
        );
        assert_eq!(t(JsDecode, r"\u0061\x62\143\n\q"), b"abc\nq");
        assert_eq!(t(CssDecode, r"\6a \61vascript\:"), b"javascript:");
        assert_eq!(t(EscapeSeqDecode, r"\x41\101\n\q"), b"AA\n\\q");
        assert_eq!(t(Base64Decode, "PHNjcmlwdD4=!rest"), b"<script>");
    }

    #[test]
    fn chains_share_their_prefixes_and_results() {
        let mut chains = Chains::default();
        let first = chains.intern(&[UrlDecodeUni, Lowercase]);
        let second = chains.intern(&[UrlDecodeUni, RemoveNulls]);
        assert_eq!(first, [0, 1, 2]);
        assert_eq!(second, [0, 1, 3]);
        assert_eq!(chains.intern(&[]), [0]);
        let mut values = Transformed::new(&chains, 1);
        assert_eq!(values.get(0, b"A%00B", 2), b"a\0b");
        assert_eq!(values.get(0, b"A%00B", 3), b"AB");
        assert_eq!(values.get(0, b"A%00B", 0), b"A%00B");
        let mut values = Transformed::new(&chains, 1);
        assert_eq!(values.distinct(0, b"ab", 0), Some(&b"ab"[..]));
        assert_eq!(values.distinct(0, b"ab", 2), None, "nothing to lower-case");
        assert_eq!(values.get(0, b"ab", 2), b"ab");
    }

    #[test]
    fn normalisers_follow_modsecurity() {
        assert_eq!(t(CompressWhitespace, "a \t\n b"), b"a b");
        assert_eq!(t(RemoveWhitespace, "u n i o n"), b"union");
        assert_eq!(t(ReplaceComments, "un/**/ion/* open"), b"un ion ");
        assert_eq!(t(RemoveCommentsChar, "a/*b*/c--d#e"), b"abcde");
        assert_eq!(t(CmdLine, "C^a\"t ,/ETC/passwd ("), b"cat/etc/passwd(");
        assert_eq!(t(NormalizePath, "/a//b/./c/../../etc/"), b"/a/etc/");
        assert_eq!(t(NormalizePath, "../../etc/passwd"), b"../../etc/passwd");
        assert_eq!(t(NormalizePathWin, r"\a\..\b"), b"/b");
    }
}
