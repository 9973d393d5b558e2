//! Sans-IO decoder for the chunked transfer coding (RFC 9112 §7.1).
//!
//! A byte-driven state machine, so input may arrive split anywhere (down to
//! one byte per call) with identical results. Chunk data is copied in bulk;
//! only the size lines and trailers go byte by byte. As with the head parser,
//! everything is strict: chunk framing is the other half of request smuggling.

use std::fmt;

use super::status::Status;

use super::parse::is_tchar;

/// Bounds on what a client may make us process for one chunked body.
#[derive(Clone, Debug)]
pub struct ChunkedLimits {
    /// Total decoded body bytes.
    pub max_body: u64,
    /// Trailer section, counted from the end of the last-chunk line through
    /// the final CRLF.
    pub max_trailer_bytes: usize,
    /// One chunk-size line including extensions and CRLF.
    pub max_line: usize,
}

impl Default for ChunkedLimits {
    fn default() -> Self {
        ChunkedLimits {
            max_body: 1 << 20,
            max_trailer_bytes: 8192,
            max_line: 4096,
        }
    }
}

/// Why a chunked body was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkedError {
    /// Chunk size missing or containing a non-hex byte (sign, space, "0x"...).
    BadChunkSize,
    /// More than 16 hex digits, which could not fit in a u64.
    ChunkSizeOverflow,
    /// A malformed `;name[=value]` chunk extension.
    BadExtension,
    /// A chunk-size line longer than `max_line`.
    LineTooLong,
    /// A CR not followed by LF, or an LF not preceded by CR.
    BadLineEnding,
    /// Chunk data not followed by exactly CRLF.
    MissingDataCrlf,
    /// The decoded body would exceed `max_body` (413).
    BodyTooLarge,
    /// A malformed trailer field line.
    BadTrailer,
    /// The trailer section is longer than `max_trailer_bytes`.
    TrailerTooLarge,
}

impl ChunkedError {
    /// The response status this error should produce.
    pub fn status(&self) -> Status {
        match self {
            ChunkedError::BodyTooLarge => Status::CONTENT_TOO_LARGE,
            _ => Status::BAD_REQUEST,
        }
    }

    /// Short human text for the error response body.
    pub fn reason(&self) -> &'static str {
        match self {
            ChunkedError::BadChunkSize => "invalid chunk size",
            ChunkedError::ChunkSizeOverflow => "chunk size too large",
            ChunkedError::BadExtension => "invalid chunk extension",
            ChunkedError::LineTooLong => "chunk-size line too long",
            ChunkedError::BadLineEnding => "line not terminated by CRLF",
            ChunkedError::MissingDataCrlf => "chunk data not followed by CRLF",
            ChunkedError::BodyTooLarge => "request body too large",
            ChunkedError::BadTrailer => "invalid trailer field",
            ChunkedError::TrailerTooLarge => "trailer section too large",
        }
    }
}

impl fmt::Display for ChunkedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.reason(), self.status().as_u16())
    }
}

impl std::error::Error for ChunkedError {}

/// Whether the whole body, trailers and final CRLF included, has been seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    NeedMore,
    Done,
}

/// Where we are inside `*( BWS ";" BWS name [ BWS "=" BWS value ] )`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ext {
    /// Between extensions: BWS, then ';' or (if no BWS was seen) CRLF.
    Separator {
        after_space: bool,
    },
    BeforeName,
    Name,
    AfterName,
    BeforeValue,
    Token,
    Quoted,
    QuotedEscape,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size; `digits` counts those seen so far.
    Size {
        digits: u8,
    },
    Ext(Ext),
    /// CR seen at the end of a chunk-size line.
    SizeLf,
    /// `remaining` data bytes of the current chunk are still to come.
    Data,
    DataCr,
    DataLf,
    /// Start of a trailer line, or of the final CRLF.
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    FinalLf,
    Done,
    /// Sticky, so a caller that ignores an error cannot resynchronise on
    /// attacker-chosen bytes.
    Failed(ChunkedError),
}

/// Decodes one chunked body. Make a new one per message.
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    limits: ChunkedLimits,
    state: State,
    /// Size of the chunk being read, then bytes of it still to copy.
    remaining: u64,
    body_len: u64,
    line_len: usize,
    trailer_len: usize,
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// qdtext (RFC 9110 §5.6.4): everything visible or obs-text except '"' and '\'.
fn is_qdtext(b: u8) -> bool {
    matches!(b, b'\t' | b' ' | 0x21 | 0x23..=0x5B | 0x5D..=0x7E | 0x80..=0xFF)
}

/// What may follow a backslash in a quoted-string.
fn is_quoted_pair_char(b: u8) -> bool {
    matches!(b, b'\t' | b' ' | 0x21..=0x7E | 0x80..=0xFF)
}

fn is_field_value_byte(b: u8) -> bool {
    matches!(b, b'\t' | b' ' | 0x21..=0x7E | 0x80..=0xFF)
}

impl ChunkedDecoder {
    pub fn new(limits: ChunkedLimits) -> Self {
        ChunkedDecoder {
            limits,
            state: State::Size { digits: 0 },
            remaining: 0,
            body_len: 0,
            line_len: 0,
            trailer_len: 0,
        }
    }

    /// Decoded body bytes so far.
    pub fn body_len(&self) -> u64 {
        self.body_len
    }

    /// Decodes as much of `input` as possible, appending body bytes to `out`.
    /// Returns bytes of input consumed and whether the body (incl. trailers
    /// and final CRLF) is complete. Once done, consumption stops right after
    /// the final CRLF: what follows belongs to the next pipelined request.
    /// Works when input arrives one byte at a time.
    pub fn decode(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(usize, Progress), ChunkedError> {
        let mut i = 0;
        loop {
            match self.state {
                State::Done => return Ok((i, Progress::Done)),
                State::Failed(e) => return Err(e),
                State::Data => {
                    let available = input.len() - i;
                    if available == 0 {
                        return Ok((i, Progress::NeedMore));
                    }
                    // Bounded by `available`, so the cast cannot truncate.
                    let take = self.remaining.min(available as u64) as usize;
                    out.extend_from_slice(&input[i..i + take]);
                    i += take;
                    self.remaining -= take as u64;
                    self.body_len += take as u64;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                }
                _ => {
                    let Some(&b) = input.get(i) else {
                        return Ok((i, Progress::NeedMore));
                    };
                    i += 1;
                    if let Err(e) = self.step(b) {
                        self.state = State::Failed(e);
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Advances the byte-level states by one byte.
    fn step(&mut self, b: u8) -> Result<(), ChunkedError> {
        match self.state {
            State::Size { .. } | State::Ext(_) | State::SizeLf => {
                self.line_len += 1;
                if self.line_len > self.limits.max_line {
                    return Err(ChunkedError::LineTooLong);
                }
            }
            State::TrailerStart
            | State::TrailerName
            | State::TrailerValue
            | State::TrailerLf
            | State::FinalLf => {
                self.trailer_len += 1;
                if self.trailer_len > self.limits.max_trailer_bytes {
                    return Err(ChunkedError::TrailerTooLarge);
                }
            }
            _ => {}
        }

        self.state = match self.state {
            State::Size { digits } => match b {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    if digits == 16 {
                        return Err(ChunkedError::ChunkSizeOverflow);
                    }
                    // Sixteen hex digits always fit, so no overflow check.
                    self.remaining = self.remaining << 4 | u64::from(hex_value(b));
                    // Reject an oversized chunk as soon as its size shows it.
                    if self.remaining > self.limits.max_body - self.body_len {
                        return Err(ChunkedError::BodyTooLarge);
                    }
                    State::Size { digits: digits + 1 }
                }
                _ if digits == 0 => return Err(ChunkedError::BadChunkSize),
                b'\r' => State::SizeLf,
                b';' => State::Ext(Ext::BeforeName),
                b' ' | b'\t' => State::Ext(Ext::Separator { after_space: true }),
                b'\n' => return Err(ChunkedError::BadLineEnding),
                _ => return Err(ChunkedError::BadChunkSize),
            },
            State::Ext(ext) => self.step_ext(ext, b)?,
            State::SizeLf => {
                if b != b'\n' {
                    return Err(ChunkedError::BadLineEnding);
                }
                self.line_len = 0;
                if self.remaining == 0 {
                    State::TrailerStart
                } else {
                    State::Data
                }
            }
            State::DataCr if b == b'\r' => State::DataLf,
            State::DataLf if b == b'\n' => State::Size { digits: 0 },
            State::DataCr | State::DataLf => return Err(ChunkedError::MissingDataCrlf),
            State::TrailerStart => match b {
                b'\r' => State::FinalLf,
                b'\n' => return Err(ChunkedError::BadLineEnding),
                _ if is_tchar(b) => State::TrailerName,
                _ => return Err(ChunkedError::BadTrailer),
            },
            State::TrailerName => match b {
                b':' => State::TrailerValue,
                _ if is_tchar(b) => State::TrailerName,
                _ => return Err(ChunkedError::BadTrailer),
            },
            State::TrailerValue => match b {
                b'\r' => State::TrailerLf,
                b'\n' => return Err(ChunkedError::BadLineEnding),
                _ if is_field_value_byte(b) => State::TrailerValue,
                _ => return Err(ChunkedError::BadTrailer),
            },
            State::TrailerLf if b == b'\n' => State::TrailerStart,
            State::FinalLf if b == b'\n' => State::Done,
            State::TrailerLf | State::FinalLf => return Err(ChunkedError::BadLineEnding),
            // `decode` handles these without calling us.
            State::Data | State::Done | State::Failed(_) => unreachable!(),
        };
        Ok(())
    }

    fn step_ext(&mut self, ext: Ext, b: u8) -> Result<State, ChunkedError> {
        let next = match (ext, b) {
            // A CR ends the line only where the grammar allows the line to
            // end: after a name or value, never after trailing whitespace.
            (Ext::Separator { after_space: false } | Ext::Name | Ext::Token, b'\r') => {
                return Ok(State::SizeLf)
            }
            (_, b'\n') => return Err(ChunkedError::BadLineEnding),
            (Ext::Separator { .. }, b' ' | b'\t') => Ext::Separator { after_space: true },
            (Ext::Separator { .. } | Ext::Name | Ext::AfterName | Ext::Token, b';') => {
                Ext::BeforeName
            }
            (Ext::BeforeName, _) if is_ows(b) => Ext::BeforeName,
            (Ext::BeforeName | Ext::Name, _) if is_tchar(b) => Ext::Name,
            (Ext::Name | Ext::AfterName, _) if is_ows(b) => Ext::AfterName,
            (Ext::Name | Ext::AfterName, b'=') => Ext::BeforeValue,
            (Ext::BeforeValue, _) if is_ows(b) => Ext::BeforeValue,
            (Ext::BeforeValue, b'"') => Ext::Quoted,
            (Ext::BeforeValue | Ext::Token, _) if is_tchar(b) => Ext::Token,
            (Ext::Token, _) if is_ows(b) => Ext::Separator { after_space: true },
            (Ext::Quoted, b'"') => Ext::Separator { after_space: false },
            (Ext::Quoted, b'\\') => Ext::QuotedEscape,
            (Ext::Quoted, _) if is_qdtext(b) => Ext::Quoted,
            (Ext::QuotedEscape, _) if is_quoted_pair_char(b) => Ext::Quoted,
            _ => return Err(ChunkedError::BadExtension),
        };
        Ok(State::Ext(next))
    }
}

fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ChunkedLimits {
        ChunkedLimits::default()
    }

    /// Whole input in one call: (body, consumed, progress) or the error.
    fn decode_all(
        input: &[u8],
        limits: ChunkedLimits,
    ) -> Result<(Vec<u8>, usize, Progress), ChunkedError> {
        let mut d = ChunkedDecoder::new(limits);
        let mut out = Vec::new();
        let (n, p) = d.decode(input, &mut out)?;
        assert_eq!(d.body_len(), out.len() as u64);
        Ok((out, n, p))
    }

    /// The same input fed in pieces of `step` bytes (the last call gets
    /// whatever is left). Stops feeding once done, like a real caller.
    fn decode_split(
        input: &[u8],
        step: usize,
        limits: ChunkedLimits,
    ) -> Result<(Vec<u8>, usize, Progress), ChunkedError> {
        let mut d = ChunkedDecoder::new(limits);
        let mut out = Vec::new();
        let mut consumed = 0;
        let mut progress = Progress::NeedMore;
        while consumed < input.len() && progress == Progress::NeedMore {
            let piece = &input[consumed..(consumed + step).min(input.len())];
            let (n, p) = d.decode(piece, &mut out)?;
            assert!(n <= piece.len());
            // Everything offered is consumed unless the body ended inside it.
            if p == Progress::NeedMore {
                assert_eq!(n, piece.len());
            }
            consumed += n;
            progress = p;
        }
        Ok((out, consumed, progress))
    }

    fn assert_same_for_all_splits(
        input: &[u8],
        limits: ChunkedLimits,
    ) -> Result<(Vec<u8>, usize, Progress), ChunkedError> {
        let whole = decode_all(input, limits.clone());
        for step in [1, 2, 3, 5, 7, 16] {
            assert_eq!(
                decode_split(input, step, limits.clone()),
                whole,
                "step {step} on {:?}",
                String::from_utf8_lossy(input)
            );
        }
        whole
    }

    fn body(input: &[u8]) -> Vec<u8> {
        match assert_same_for_all_splits(input, limits()) {
            Ok((out, n, Progress::Done)) => {
                assert_eq!(n, input.len(), "consumed");
                out
            }
            other => panic!(
                "expected a complete body for {:?}, got {other:?}",
                String::from_utf8_lossy(input)
            ),
        }
    }

    fn err(input: &[u8]) -> ChunkedError {
        err_with(input, limits())
    }

    fn err_with(input: &[u8], limits: ChunkedLimits) -> ChunkedError {
        match assert_same_for_all_splits(input, limits) {
            Err(e) => e,
            other => panic!(
                "expected an error for {:?}, got {other:?}",
                String::from_utf8_lossy(input)
            ),
        }
    }

    #[test]
    fn simple_bodies() {
        assert_eq!(body(b"0\r\n\r\n"), b"");
        assert_eq!(body(b"5\r\nhello\r\n0\r\n\r\n"), b"hello");
        assert_eq!(
            body(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            b"hello world"
        );
        assert_eq!(
            body(b"A\r\n0123456789\r\na\r\nabcdefghij\r\n000\r\n\r\n"),
            b"0123456789abcdefghij"
        );
        // Data may contain anything, CRLF included.
        assert_eq!(body(b"4\r\n\r\n\r\n\r\n0\r\n\r\n"), b"\r\n\r\n");
        assert_eq!(
            body(b"0000000000000010\r\n0123456789abcdef\r\n0\r\n\r\n"),
            b"0123456789abcdef"
        );
    }

    #[test]
    fn large_chunk_in_pieces() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let mut input = format!("{:x}\r\n", data.len()).into_bytes();
        input.extend_from_slice(&data);
        input.extend_from_slice(b"\r\n0\r\n\r\n");
        assert_eq!(body(&input), data);
    }

    #[test]
    fn extensions_are_ignored() {
        for ext in [
            ";a",
            ";a=b",
            ";a=b;c",
            ";name=\"quoted value\"",
            ";q=\"esc\\\"aped\\\\\"",
            " ;a=b",
            "\t; a = b",
            "; a ; b = \"x\" ;c",
            ";a=\"\"",
            ";a=\"caf\u{e9}\"",
            ";!#$%&'*+-.^_`|~=!#$%&'*+-.^_`|~",
        ] {
            let input = format!("3{ext}\r\nabc\r\n0{ext}\r\n\r\n");
            assert_eq!(body(input.as_bytes()), b"abc", "{ext:?}");
        }
    }

    #[test]
    fn bad_extensions() {
        for ext in [
            ";",
            ";=b",
            ";a=",
            ";a=b c",
            ";a=\"unterminated",
            ";a b",
            ";a=b ",
            ";a ",
            " ",
            "\t",
            ";a=\"x\"y",
            ";a=\"x\" ",
            ";a=(b)",
            ";a@b",
            ";a=\"\x01\"",
            ";a=\"\\\x01\"",
            ";a=b\x7f",
            ",a",
        ] {
            let input = format!("3{ext}\r\nabc\r\n0\r\n\r\n");
            let e = err(input.as_bytes());
            assert!(
                matches!(e, ChunkedError::BadExtension | ChunkedError::BadChunkSize),
                "{ext:?} gave {e:?}"
            );
            assert_eq!(e.status(), 400);
        }
        assert_eq!(
            err(b"3;a=\"x\r\nabc\r\n0\r\n\r\n"),
            ChunkedError::BadExtension
        );
        assert_eq!(err(b"3;a\nabc\r\n0\r\n\r\n"), ChunkedError::BadLineEnding);
    }

    #[test]
    fn trailers_are_validated_and_discarded() {
        assert_eq!(
            body(b"3\r\nabc\r\n0\r\nX-Sum: 123\r\nX-Other:\tv a l\r\n\r\n"),
            b"abc"
        );
        assert_eq!(body(b"0\r\nEmpty:\r\n\r\n"), b"");
        assert_eq!(body(b"0\r\nObs: caf\xc3\xa9\r\n\r\n"), b"");
        use ChunkedError::*;
        assert_eq!(err(b"0\r\nNo-Colon\r\n\r\n"), BadTrailer);
        assert_eq!(err(b"0\r\nBad Name: v\r\n\r\n"), BadTrailer);
        assert_eq!(err(b"0\r\n: v\r\n\r\n"), BadTrailer);
        assert_eq!(err(b"0\r\nA: b\r\n folded\r\n\r\n"), BadTrailer);
        assert_eq!(err(b"0\r\nA: b\0c\r\n\r\n"), BadTrailer);
        assert_eq!(err(b"0\r\nA: b\x7f\r\n\r\n"), BadTrailer);
        assert_eq!(err(b"0\r\nA: b\rc\r\n\r\n"), BadLineEnding);
        assert_eq!(err(b"0\r\nA: b\n\r\n"), BadLineEnding);
        assert_eq!(err(b"0\r\n\n"), BadLineEnding);
        assert_eq!(err(b"0\r\n\rX"), BadLineEnding);
    }

    #[test]
    fn bad_sizes() {
        use ChunkedError::*;
        for input in [
            &b"\r\nabc\r\n0\r\n\r\n"[..],
            b"g\r\n",
            b"-3\r\nabc\r\n0\r\n\r\n",
            b"+3\r\nabc\r\n0\r\n\r\n",
            b"0x3\r\nabc\r\n0\r\n\r\n",
            b" 3\r\nabc\r\n0\r\n\r\n",
            b"3x\r\nabc\r\n0\r\n\r\n",
            b";a\r\n",
        ] {
            assert_eq!(
                err(input),
                BadChunkSize,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let big = ChunkedLimits {
            max_body: u64::MAX,
            ..limits()
        };
        assert_eq!(
            err_with(b"00000000000000001\r\n", big.clone()),
            ChunkSizeOverflow
        );
        assert_eq!(
            err_with(b"10000000000000000\r\n", big.clone()),
            ChunkSizeOverflow
        );
        // Sixteen digits are fine, even all f.
        let mut d = ChunkedDecoder::new(big);
        assert_eq!(
            d.decode(b"ffffffffffffffff\r\nab", &mut Vec::new()),
            Ok((20, Progress::NeedMore))
        );
        assert_eq!(err(b"3\nabc\r\n0\r\n\r\n"), BadLineEnding);
        assert_eq!(err(b"3\rabc\r\n0\r\n\r\n"), BadLineEnding);
    }

    #[test]
    fn data_must_be_followed_by_crlf() {
        use ChunkedError::*;
        assert_eq!(err(b"3\r\nabcd\r\n0\r\n\r\n"), MissingDataCrlf);
        assert_eq!(err(b"3\r\nabc\n0\r\n\r\n"), MissingDataCrlf);
        assert_eq!(err(b"3\r\nabc\r0\r\n\r\n"), MissingDataCrlf);
        assert_eq!(err(b"3\r\nabc0\r\n\r\n"), MissingDataCrlf);
        assert_eq!(MissingDataCrlf.status(), 400);
    }

    #[test]
    fn max_body() {
        let l = ChunkedLimits {
            max_body: 10,
            ..limits()
        };
        let ok = b"5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n";
        assert!(matches!(
            assert_same_for_all_splits(ok, l.clone()),
            Ok((_, _, Progress::Done))
        ));
        assert_eq!(
            err_with(b"5\r\nhello\r\n6\r\nworld!\r\n0\r\n\r\n", l.clone()),
            ChunkedError::BodyTooLarge
        );
        assert_eq!(err_with(b"b\r\n", l.clone()), ChunkedError::BodyTooLarge);
        // Rejected from the size line alone, before any of the data arrives.
        let mut d = ChunkedDecoder::new(l);
        assert_eq!(
            d.decode(b"ffffffff", &mut Vec::new()),
            Err(ChunkedError::BodyTooLarge)
        );
        assert_eq!(ChunkedError::BodyTooLarge.status(), 413);
        assert_eq!(err(b"100001\r\n"), ChunkedError::BodyTooLarge);
    }

    #[test]
    fn max_line() {
        let l = ChunkedLimits {
            max_line: 10,
            ..limits()
        };
        // "3;abcdef\r\n" is exactly ten bytes.
        let ok = b"3;abcdef\r\nabc\r\n0\r\n\r\n";
        assert!(matches!(
            assert_same_for_all_splits(ok, l.clone()),
            Ok((_, _, Progress::Done))
        ));
        assert_eq!(
            err_with(b"3;abcdefg\r\nabc\r\n0\r\n\r\n", l.clone()),
            ChunkedError::LineTooLong
        );
        // Bounded while partial: an endless extension is cut off.
        let endless = [b"3;".as_slice(), &[b'a'; 100]].concat();
        assert_eq!(err_with(&endless, l.clone()), ChunkedError::LineTooLong);
        // Leading zeros count too.
        assert_eq!(err_with(b"00000000003\r\n", l), ChunkedError::LineTooLong);
    }

    #[test]
    fn max_trailer_bytes() {
        let l = ChunkedLimits {
            max_trailer_bytes: 10,
            ..limits()
        };
        // "A: 12345\r\n" is ten bytes; the final CRLF makes twelve.
        assert_eq!(
            err_with(b"0\r\nA: 12345\r\n\r\n", l.clone()),
            ChunkedError::TrailerTooLarge
        );
        assert!(matches!(
            assert_same_for_all_splits(b"0\r\nA: 123\r\n\r\n", l.clone()),
            Ok((_, _, Progress::Done))
        ));
        let endless = [b"0\r\nA: ".as_slice(), &[b'v'; 100]].concat();
        assert_eq!(err_with(&endless, l), ChunkedError::TrailerTooLarge);
    }

    #[test]
    fn pipelined_remainder_is_not_consumed() {
        let input = b"3\r\nabc\r\n0\r\nT: v\r\n\r\nGET / HTTP/1.1\r\n";
        let end = input.len() - b"GET / HTTP/1.1\r\n".len();
        let (out, n, p) = assert_same_for_all_splits(input, limits()).unwrap();
        assert_eq!((out.as_slice(), n, p), (&b"abc"[..], end, Progress::Done));
        // Once done, further input is left alone.
        let mut d = ChunkedDecoder::new(limits());
        let mut out = Vec::new();
        assert_eq!(d.decode(input, &mut out), Ok((end, Progress::Done)));
        assert_eq!(d.decode(b"more", &mut out), Ok((0, Progress::Done)));
        assert_eq!(d.decode(b"", &mut out), Ok((0, Progress::Done)));
    }

    #[test]
    fn partial_input_needs_more() {
        let input = b"5;x=y\r\nhello\r\n0\r\nT: v\r\n\r\n";
        for n in 0..input.len() {
            let mut d = ChunkedDecoder::new(limits());
            assert_eq!(
                d.decode(&input[..n], &mut Vec::new()),
                Ok((n, Progress::NeedMore)),
                "prefix {n}"
            );
        }
    }

    #[test]
    fn errors_are_sticky() {
        let mut d = ChunkedDecoder::new(limits());
        let mut out = Vec::new();
        assert_eq!(d.decode(b"z", &mut out), Err(ChunkedError::BadChunkSize));
        assert_eq!(
            d.decode(b"0\r\n\r\n", &mut out),
            Err(ChunkedError::BadChunkSize)
        );
        let e = ChunkedError::BodyTooLarge;
        assert_eq!(e.to_string(), "request body too large (413)");
        let _: &dyn std::error::Error = &e;
    }

    /// Random valid bodies with random extensions and trailers, checked
    /// against the data they were built from, under random splits; then
    /// random corruptions of them must not panic.
    #[test]
    fn randomized() {
        let mut state: u64 = 0x853C_49E6_748F_EA9B;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..2000 {
            let mut input = Vec::new();
            let mut expected = Vec::new();
            for _ in 0..next() % 4 {
                let len = (next() % 40 + 1) as usize;
                let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                input.extend_from_slice(format!("{len:x}").as_bytes());
                if next() % 3 == 0 {
                    input.extend_from_slice(b" ; ext=\"v\\\"\" ;e2");
                }
                input.extend_from_slice(b"\r\n");
                input.extend_from_slice(&data);
                input.extend_from_slice(b"\r\n");
                expected.extend_from_slice(&data);
            }
            input.extend_from_slice(b"0\r\n");
            if next() % 2 == 0 {
                input.extend_from_slice(b"Trailer-Field: some value\r\n");
            }
            input.extend_from_slice(b"\r\n");
            assert_eq!(body(&input), expected);

            let mut bad = input.clone();
            for _ in 0..1 + next() % 3 {
                let at = (next() % bad.len() as u64) as usize;
                const NASTY: &[u8] = b"\r\n;= \"\\0aZ\x00\xff";
                bad[at] = NASTY[(next() % NASTY.len() as u64) as usize];
            }
            let whole = decode_all(&bad, limits());
            for step in [1, 3] {
                assert_eq!(decode_split(&bad, step, limits()), whole);
            }
        }
    }
}
