//! Sans-IO decoder for the chunked transfer coding (RFC 9112 §7.1).
//!
//! A byte-driven state machine, so input may arrive split anywhere (down to
//! one byte per call) with identical results. Chunk data is copied in bulk;
//! only the size lines and trailers go byte by byte. As with the head parser,
//! everything is strict: chunk framing is the other half of request smuggling.

use std::fmt;

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
    pub fn status(&self) -> u16 {
        match self {
            ChunkedError::BodyTooLarge => 413,
            _ => 400,
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
        write!(f, "{} ({})", self.reason(), self.status())
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

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
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
