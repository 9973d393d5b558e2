//! HTTP/1.x request-head parser: sans-IO and zero-copy.
//!
//! The parser is deliberately strict (RFC 9112 with none of the lenient
//! "robustness" allowances): every byte of the head is checked, because any
//! disagreement with a proxy in front of us about where a message ends is a
//! request-smuggling hole. It is also *online*: the answer for a buffer only
//! depends on the bytes needed to reach it, so a prefix of an acceptable head
//! is always `Partial`, and a prefix of a rejected head is `Partial` or the
//! same error. The size limits are enforced while the head is still partial,
//! so a caller that keeps feeding bytes can never grow its buffer unbounded.
//!
//! Speed comes from scanning 16 bytes per step (SSE2, which every x86_64 CPU
//! has; SWAR elsewhere), from finding each line's end in one scan with the
//! field name checked alongside rather than before it, and from touching the
//! semantics (framing, Host, Connection) only for the few names that matter.

use std::fmt;

use super::status::Status;

/// The protocol versions we speak; anything else is rejected in the parser.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// One header field line, borrowed from the request buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'b> {
    /// A validated token, so always ASCII; case is as sent.
    pub name: &'b str,
    /// With surrounding whitespace removed. May contain obs-text (>= 0x80),
    /// which is why it is bytes and not `str`.
    pub value: &'b [u8],
}

impl Header<'_> {
    /// Filler for the caller-provided header array.
    pub const EMPTY: Header<'static> = Header {
        name: "",
        value: b"",
    };
}

/// How the message body is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

/// Bounds on what a client may make us buffer before the head is complete.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Request line including its CRLF (414 beyond it; default 8 KiB).
    pub max_request_line: usize,
    /// Whole head: request line, header lines and the final CRLF (431
    /// beyond it; default 16 KiB).
    pub max_head_bytes: usize,
    /// Header field lines; the effective bound is also the caller's array
    /// size (431 beyond it; default 64).
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_line: 8192,
            max_head_bytes: 16384,
            max_headers: 64,
        }
    }
}

/// A parsed request head. Everything borrows from the input buffer (`'b`)
/// except the header list, which lives in the caller's array (`'h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHead<'b, 'h> {
    pub method: &'b str,
    pub target: &'b str,
    pub version: Version,
    pub headers: &'h [Header<'b>],
    pub framing: BodyFraming,
    pub keep_alive: bool,
    pub expect_continue: bool,
    /// Bytes consumed up to and including the final CRLF; the body (or the
    /// next pipelined request) starts here.
    pub head_len: usize,
    /// Where the target's first '?' is (`target.len()` when it has none),
    /// found by the same scan that found the target's end: a second search
    /// of the target cost about 80 instructions per request.
    query_at: usize,
}

impl<'b> RequestHead<'b, '_> {
    /// First header with this name, compared ASCII case-insensitively.
    pub fn header(&self, name: &str) -> Option<&'b [u8]> {
        self.headers
            .iter()
            .find(|h| h.name.len() == name.len() && h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// The target up to (not including) the first '?'. An absolute-form
    /// target (`http://host/path`, which a server must accept: RFC 9112
    /// §3.2.2) gives its path, `/` when it has none.
    #[inline]
    pub fn path(&self) -> &'b str {
        let path = match self.query_at() {
            Some(q) => &self.target[..q],
            None => self.target,
        };
        if path.starts_with('/') {
            return path;
        }
        not_origin_form_path(path)
    }

    /// The target after the first '?', if there is one (possibly empty).
    pub fn query(&self) -> Option<&'b str> {
        self.query_at().map(|q| &self.target[q + 1..])
    }

    /// Where the target's first '?' is.
    #[inline]
    fn query_at(&self) -> Option<usize> {
        (self.query_at < self.target.len()).then_some(self.query_at)
    }
}

/// The path to route for a target not in origin form: an absolute-form
/// target's path, `/` when it has none; anything else (`*`) as it is.
#[cold]
fn not_origin_form_path(path: &str) -> &str {
    match absolute_form_path(path) {
        Some("") => "/",
        Some(p) => p,
        None => path,
    }
}

/// The path of an absolute-form target (`scheme://authority/path`), empty
/// if it has none; `None` if `target` is not in absolute form.
fn absolute_form_path(target: &str) -> Option<&str> {
    let (scheme, rest) = target.split_once("://")?;
    let scheme_ok = scheme.as_bytes().first()?.is_ascii_alphabetic()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !scheme_ok {
        return None;
    }
    Some(rest.find('/').map_or("", |i| &rest[i..]))
}

/// Outcome of a parse that did not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed<T> {
    Complete(T),
    /// Valid so far and within limits; call again with more bytes.
    Partial,
}

/// Why a head was rejected. Each variant maps to one response status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Method empty, not a token, or not followed by exactly one SP.
    BadMethod,
    /// Target empty, containing a byte outside 0x21..=0x7E, or not followed
    /// by exactly one SP.
    BadTarget,
    /// The version field is not of the form `HTTP/d.d` followed by CRLF.
    BadVersion,
    /// A well-formed version other than 1.0 and 1.1 (505).
    VersionNotSupported,
    /// A CR not followed by LF, or an LF not preceded by CR.
    BadLineEnding,
    /// No CRLF within `max_request_line` bytes (414).
    RequestLineTooLong,
    /// Head not complete within `max_head_bytes` (431).
    HeadTooLarge,
    /// More header lines than `max_headers` or the caller's array (431).
    TooManyHeaders,
    /// Header name empty or containing a non-token byte, or no colon.
    BadHeaderName,
    /// SP or HTAB between a header name and its colon.
    WhitespaceBeforeColon,
    /// A header line starting with SP or HTAB (obsolete line folding).
    ObsoleteLineFolding,
    /// A control byte (other than HTAB) or DEL in a header value.
    BadHeaderValue,
    /// Content-Length not 1*DIGIT or larger than u64.
    BadContentLength,
    /// Content-Length given more than once, even with equal values.
    DuplicateContentLength,
    /// Both Transfer-Encoding and Content-Length.
    ContentLengthWithTransferEncoding,
    /// Transfer-Encoding in an HTTP/1.0 request, which cannot carry it.
    TransferEncodingInHttp10,
    /// Transfer-Encoding given more than once.
    DuplicateTransferEncoding,
    /// A Transfer-Encoding other than exactly `chunked` (501).
    UnsupportedTransferEncoding,
    /// An HTTP/1.1 request without a Host header.
    MissingHost,
    /// More than one Host header (any version).
    DuplicateHost,
}

impl ParseError {
    /// The response status this error should produce.
    pub fn status(&self) -> Status {
        match self {
            ParseError::VersionNotSupported => Status::HTTP_VERSION_NOT_SUPPORTED,
            ParseError::RequestLineTooLong => Status::URI_TOO_LONG,
            ParseError::HeadTooLarge | ParseError::TooManyHeaders => {
                Status::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            ParseError::UnsupportedTransferEncoding => Status::NOT_IMPLEMENTED,
            _ => Status::BAD_REQUEST,
        }
    }

    /// Short human text for the error response body.
    pub fn reason(&self) -> &'static str {
        match self {
            ParseError::BadMethod => "invalid method",
            ParseError::BadTarget => "invalid request target",
            ParseError::BadVersion => "invalid HTTP version",
            ParseError::VersionNotSupported => "HTTP version not supported",
            ParseError::BadLineEnding => "line not terminated by CRLF",
            ParseError::RequestLineTooLong => "request line too long",
            ParseError::HeadTooLarge => "request header section too large",
            ParseError::TooManyHeaders => "too many header fields",
            ParseError::BadHeaderName => "invalid header field name",
            ParseError::WhitespaceBeforeColon => "whitespace before colon in header field",
            ParseError::ObsoleteLineFolding => "obsolete line folding in header field",
            ParseError::BadHeaderValue => "invalid byte in header field value",
            ParseError::BadContentLength => "invalid Content-Length",
            ParseError::DuplicateContentLength => "multiple Content-Length fields",
            ParseError::ContentLengthWithTransferEncoding => {
                "both Transfer-Encoding and Content-Length"
            }
            ParseError::TransferEncodingInHttp10 => "Transfer-Encoding in an HTTP/1.0 request",
            ParseError::DuplicateTransferEncoding => "multiple Transfer-Encoding fields",
            ParseError::UnsupportedTransferEncoding => "unsupported Transfer-Encoding",
            ParseError::MissingHost => "missing Host header",
            ParseError::DuplicateHost => "multiple Host fields",
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.reason(), self.status().as_u16())
    }
}

impl std::error::Error for ParseError {}

/// RFC 9110 tchar: ALPHA / DIGIT and ``!#$%&'*+-.^_`|~``.
static TCHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let specials = b"!#$%&'*+-.^_`|~";
    let mut i = 0;
    while i < specials.len() {
        table[specials[i] as usize] = true;
        i += 1;
    }
    table
};

/// Also used by the chunked decoder for extension and trailer names.
#[inline(always)]
pub(crate) fn is_tchar(b: u8) -> bool {
    TCHAR[b as usize]
}

/// Only ever called on slices whose every byte passed `is_tchar` or the
/// 0x21..=0x7E target check, so going through UTF-8 validation again would
/// be pure cost on the hot path.
#[inline(always)]
fn ascii_str(b: &[u8]) -> &str {
    debug_assert!(b.is_ascii());
    // SAFETY: callers pass only bytes already checked to be ASCII (see above),
    // and ASCII is valid UTF-8.
    unsafe { std::str::from_utf8_unchecked(b) }
}

// Byte classes for `find_stop`, as const-generic parameters so each scanner
// is compiled with its own test inlined.

/// Stops at controls (HTAB included, the caller steps over it) and DEL: the
/// bytes that may not appear in a field line.
const VALUE: u8 = 0;
/// Stops at anything that is not a tchar.
const TOKEN: u8 = 1;
/// Stops at anything outside 0x21..=0x7E (request-target bytes).
const TARGET: u8 = 2;

#[inline(always)]
fn is_stop<const CLASS: u8>(b: u8) -> bool {
    match CLASS {
        VALUE => b < 0x20 || b == 0x7F,
        TOKEN => !is_tchar(b),
        _ => !(0x21..=0x7E).contains(&b),
    }
}

/// Index of the first byte at or after `i` that is a stop byte of `CLASS`,
/// or `buf.len()`. This is where the parser spends most of its time, so it
/// looks at 16 bytes per step where it can.
#[inline(always)]
fn find_stop<const CLASS: u8>(buf: &[u8], i: usize) -> usize {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    // SAFETY: `sse2::find_stop` only requires SSE2, and this line is only
    // compiled when the target enables it (as every x86_64 target does: it
    // is part of the baseline), so every CPU the binary runs on has it.
    return unsafe { sse2::find_stop::<CLASS>(buf, i) };
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    return find_stop_swar::<CLASS>(buf, i);
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod sse2 {
    use super::{TOKEN, VALUE};
    use std::arch::x86_64::*;

    /// Bytes of `v` in `lo..=hi` (unsigned).
    #[target_feature(enable = "sse2")]
    #[inline]
    fn in_range(v: __m128i, lo: u8, hi: u8) -> __m128i {
        let d = _mm_sub_epi8(v, _mm_set1_epi8(lo as i8));
        _mm_cmpeq_epi8(_mm_min_epu8(d, _mm_set1_epi8((hi - lo) as i8)), d)
    }

    #[target_feature(enable = "sse2")]
    #[inline]
    fn equal(v: __m128i, b: u8) -> __m128i {
        _mm_cmpeq_epi8(v, _mm_set1_epi8(b as i8))
    }

    #[target_feature(enable = "sse2")]
    #[inline]
    fn non_ascii(v: __m128i) -> __m128i {
        _mm_cmplt_epi8(v, _mm_setzero_si128())
    }

    #[target_feature(enable = "sse2")]
    #[inline]
    pub(super) fn find_stop<const CLASS: u8>(buf: &[u8], mut i: usize) -> usize {
        while let Some(chunk) = buf.get(i..i + 16) {
            let lo = i64::from_le_bytes(chunk[..8].try_into().unwrap());
            let hi = i64::from_le_bytes(chunk[8..].try_into().unwrap());
            let v = _mm_set_epi64x(hi, lo);
            let stop = match CLASS {
                VALUE => _mm_or_si128(in_range(v, 0x00, 0x1F), equal(v, 0x7F)),
                // The complement of tchar, as ranges: controls and SP, '"',
                // '(' to ')', ',', '/', ':' to '@', '[' to ']', '{', '}', DEL
                // and non-ASCII.
                TOKEN => _mm_or_si128(
                    _mm_or_si128(
                        _mm_or_si128(in_range(v, 0x00, 0x20), equal(v, b'"')),
                        _mm_or_si128(in_range(v, b'(', b')'), equal(v, b',')),
                    ),
                    _mm_or_si128(
                        _mm_or_si128(
                            _mm_or_si128(equal(v, b'/'), in_range(v, b':', b'@')),
                            _mm_or_si128(in_range(v, b'[', b']'), equal(v, b'{')),
                        ),
                        _mm_or_si128(_mm_or_si128(equal(v, b'}'), equal(v, 0x7F)), non_ascii(v)),
                    ),
                ),
                _ => _mm_or_si128(
                    _mm_or_si128(in_range(v, 0x00, 0x20), equal(v, 0x7F)),
                    non_ascii(v),
                ),
            };
            let mask = _mm_movemask_epi8(stop) as u32;
            if mask != 0 {
                return i + mask.trailing_zeros() as usize;
            }
            i += 16;
        }
        super::find_stop_swar::<CLASS>(buf, i)
    }

    /// `super::find_target_end` 16 bytes per step: the '?' test is one
    /// more compare on the chunk the stop test loaded.
    #[target_feature(enable = "sse2")]
    #[inline]
    pub(super) fn find_target_end(buf: &[u8], mut i: usize) -> (usize, usize) {
        let mut query = None;
        while let Some(chunk) = buf.get(i..i + 16) {
            let lo = i64::from_le_bytes(chunk[..8].try_into().unwrap());
            let hi = i64::from_le_bytes(chunk[8..].try_into().unwrap());
            let v = _mm_set_epi64x(hi, lo);
            let stop = _mm_or_si128(
                _mm_or_si128(in_range(v, 0x00, 0x20), equal(v, 0x7F)),
                non_ascii(v),
            );
            let stop = _mm_movemask_epi8(stop) as u32;
            let marks = _mm_movemask_epi8(equal(v, b'?')) as u32;
            if query.is_none() && marks != 0 {
                let at = marks.trailing_zeros();
                // A '?' after the stop is not the target's.
                if stop == 0 || at < stop.trailing_zeros() {
                    query = Some(i + at as usize);
                }
            }
            if stop != 0 {
                let end = i + stop.trailing_zeros() as usize;
                return (end, query.unwrap_or(end));
            }
            i += 16;
        }
        super::find_target_end_bytes(buf, i, query)
    }
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// High bit set in every byte of `w` below `n` (n <= 0x80). Bytes above the
/// lowest flagged one may be flagged spuriously (borrow propagation), which is
/// harmless: only the lowest flag is used, and words are loaded
/// little-endian, so the lowest flag is the first such byte in memory.
#[inline(always)]
fn bytes_below(w: u64, n: u8) -> u64 {
    w.wrapping_sub(LO * n as u64) & !w & HI
}

/// High bit set in every byte of `w` equal to `v` (same caveat as above).
#[inline(always)]
fn bytes_equal(w: u64, v: u8) -> u64 {
    bytes_below(w ^ (LO * v as u64), 1)
}

/// High bit set in every byte of `w` that is 0x7F or above (exact).
#[inline(always)]
fn bytes_from_7f(w: u64) -> u64 {
    (((w & !HI).wrapping_add(LO)) | w) & HI
}

/// Portable `find_stop`: a word at a time where the class is a few ranges,
/// a byte at a time for tokens (tchar is too irregular for SWAR to pay).
/// Also finishes the last few bytes for the SSE2 version.
#[inline(always)]
fn find_stop_swar<const CLASS: u8>(buf: &[u8], mut i: usize) -> usize {
    if CLASS != TOKEN {
        while let Some(chunk) = buf.get(i..i + 8) {
            let w = u64::from_le_bytes(chunk.try_into().unwrap());
            let mask = match CLASS {
                VALUE => bytes_below(w, 0x20) | bytes_equal(w, 0x7F),
                _ => bytes_below(w, 0x21) | bytes_from_7f(w),
            };
            if mask != 0 {
                return i + (mask.trailing_zeros() >> 3) as usize;
            }
            i += 8;
        }
    }
    while i < buf.len() && !is_stop::<CLASS>(buf[i]) {
        i += 1;
    }
    i
}

/// `find_stop::<TARGET>(buf, i)`, and with it the index of the first '?'
/// before that stop (the stop itself when there is none): the path's end,
/// found in the same pass.
#[inline(always)]
fn find_target_end(buf: &[u8], i: usize) -> (usize, usize) {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    // SAFETY: as for `find_stop`: SSE2 is part of the x86_64 baseline.
    return unsafe { sse2::find_target_end(buf, i) };
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    return find_target_end_bytes(buf, i, None);
}

/// Portable `find_target_end`, from `i` with the '?' already found before
/// it, if any (also the tail of the SSE2 version).
#[inline(always)]
fn find_target_end_bytes(buf: &[u8], mut i: usize, mut query: Option<usize>) -> (usize, usize) {
    while i < buf.len() && !is_stop::<TARGET>(buf[i]) {
        if buf[i] == b'?' && query.is_none() {
            query = Some(i);
        }
        i += 1;
    }
    (i, query.unwrap_or(i))
}

/// Index of the first byte at or after `i` that may not appear in a field
/// line, or `buf.len()`.
#[inline(always)]
fn value_end(buf: &[u8], mut i: usize) -> usize {
    loop {
        i = find_stop::<VALUE>(buf, i);
        // HTAB is the one control byte allowed; it is rare, so resuming the
        // scan after it is cheaper than testing for it in every chunk.
        if buf.get(i) != Some(&b'\t') {
            return i;
        }
        i += 1;
    }
}

/// ASCII case-insensitive equality with a lowercase constant. Setting the
/// case bit (0x20) in the input only where the constant has a letter is exact,
/// and with the constant known after inlining this becomes a handful of
/// branch-free ALU ops, where `eq_ignore_ascii_case` lowercases both sides
/// byte by byte and branches on each pair.
#[inline(always)]
fn eq_lowercase(input: &[u8], lower: &[u8]) -> bool {
    debug_assert!(!lower.iter().any(u8::is_ascii_uppercase));
    input.len() == lower.len()
        && input.iter().zip(lower).fold(0u8, |acc, (&a, &l)| {
            let case_bit = if l.is_ascii_lowercase() { 0x20 } else { 0 };
            acc | ((a | case_bit) ^ l)
        }) == 0
}

/// Strips SP/HTAB from both ends.
#[inline(always)]
fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Scans a Connection list once for the two tokens we act on. The common
/// value is a single token, so compare lengths before bytes.
#[inline]
fn connection_tokens(value: &[u8]) -> (bool, bool) {
    // Nearly every client sends exactly one of these; skip the list walk.
    match value.len() {
        10 if eq_lowercase(value, b"keep-alive") => return (false, true),
        5 if eq_lowercase(value, b"close") => return (true, false),
        _ => {}
    }
    let (mut close, mut keep_alive) = (false, false);
    for token in value.split(|&b| b == b',') {
        let token = trim_ows(token);
        match token.len() {
            5 => close |= eq_lowercase(token, b"close"),
            10 => keep_alive |= eq_lowercase(token, b"keep-alive"),
            _ => {}
        }
    }
    (close, keep_alive)
}

fn parse_content_length(v: &[u8]) -> Result<u64, ParseError> {
    if v.is_empty() {
        return Err(ParseError::BadContentLength);
    }
    let mut n: u64 = 0;
    for &b in v {
        if !b.is_ascii_digit() {
            return Err(ParseError::BadContentLength);
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .ok_or(ParseError::BadContentLength)?;
    }
    Ok(n)
}

const HTTP_11: u64 = u64::from_le_bytes(*b"HTTP/1.1");
const HTTP_10: u64 = u64::from_le_bytes(*b"HTTP/1.0");

/// Classifies a version field (plus CRLF) that is not "HTTP/1.x\r\n".
#[cold]
fn bad_version(field: &[u8]) -> ParseError {
    match (field[8], field[9]) {
        (b'\r', b'\n') => {}
        (b'\r' | b'\n', _) => return ParseError::BadLineEnding,
        _ => return ParseError::BadVersion,
    }
    match field[..8] {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            ParseError::VersionNotSupported
        }
        _ => ParseError::BadVersion,
    }
}

/// The request line ran out of bytes: either more may come, or a limit cut
/// the window we scan and the line can no longer fit.
#[cold]
fn line_starved<T>(
    line_len: usize,
    head_len: usize,
    limits: &Limits,
) -> Result<Parsed<T>, ParseError> {
    if line_len == limits.max_request_line {
        Err(ParseError::RequestLineTooLong)
    } else {
        head_starved(head_len, limits)
    }
}

#[cold]
fn head_starved<T>(head_len: usize, limits: &Limits) -> Result<Parsed<T>, ParseError> {
    if head_len == limits.max_head_bytes {
        Err(ParseError::HeadTooLarge)
    } else {
        Ok(Parsed::Partial)
    }
}

/// What the header loop remembers about the fields that decide framing and
/// connection handling, so the semantic checks run once at the end.
#[derive(Default)]
struct Special<'b> {
    hosts: u32,
    content_lengths: u32,
    content_length: &'b [u8],
    transfer_encodings: u32,
    transfer_encoding: &'b [u8],
    close: bool,
    keep_alive: bool,
    expect_continue: bool,
}

impl<'b> Special<'b> {
    #[inline(always)]
    fn note(&mut self, name: &[u8], value: &'b [u8]) {
        match name.len() {
            4 if eq_lowercase(name, b"host") => self.hosts += 1,
            6 if eq_lowercase(name, b"expect") => {
                self.expect_continue |= eq_lowercase(value, b"100-continue");
            }
            10 if eq_lowercase(name, b"connection") => {
                let (close, keep_alive) = connection_tokens(value);
                self.close |= close;
                self.keep_alive |= keep_alive;
            }
            14 if eq_lowercase(name, b"content-length") => {
                self.content_lengths += 1;
                self.content_length = value;
            }
            17 if eq_lowercase(name, b"transfer-encoding") => {
                self.transfer_encodings += 1;
                self.transfer_encoding = value;
            }
            _ => {}
        }
    }

    fn framing(&self, version: Version) -> Result<BodyFraming, ParseError> {
        if self.transfer_encodings > 0 {
            if version == Version::Http10 {
                return Err(ParseError::TransferEncodingInHttp10);
            }
            if self.transfer_encodings > 1 {
                return Err(ParseError::DuplicateTransferEncoding);
            }
            if self.content_lengths > 0 {
                return Err(ParseError::ContentLengthWithTransferEncoding);
            }
            if !eq_lowercase(self.transfer_encoding, b"chunked") {
                return Err(ParseError::UnsupportedTransferEncoding);
            }
            Ok(BodyFraming::Chunked)
        } else if self.content_lengths > 0 {
            if self.content_lengths > 1 {
                return Err(ParseError::DuplicateContentLength);
            }
            parse_content_length(self.content_length).map(BodyFraming::Length)
        } else {
            Ok(BodyFraming::None)
        }
    }
}

/// Parses a request head from the start of `buf`, storing header fields in
/// `headers`. Bytes after the head (body, pipelined requests) are ignored.
pub fn parse_request<'b, 'h>(
    buf: &'b [u8],
    headers: &'h mut [Header<'b>],
    limits: &Limits,
) -> Result<Parsed<RequestHead<'b, 'h>>, ParseError> {
    // Scanning only within these windows is what enforces the limits while
    // partial, and keeps the result independent of bytes beyond them.
    let head = &buf[..buf.len().min(limits.max_head_bytes)];
    let line = &head[..head.len().min(limits.max_request_line)];

    // Method. Most requests are GETs, and the first four bytes settle that.
    let i = if line.len() >= 4 && line[..4] == *b"GET " {
        3
    } else {
        find_stop::<TOKEN>(line, 0)
    };
    if i == line.len() {
        return line_starved(line.len(), head.len(), limits);
    }
    if i == 0 || line[i] != b' ' {
        return Err(ParseError::BadMethod);
    }
    let method = ascii_str(&line[..i]);

    // Target.
    let t = i + 1;
    let (i, query) = find_target_end(line, t);
    if i == line.len() {
        return line_starved(line.len(), head.len(), limits);
    }
    if i == t || line[i] != b' ' {
        return Err(ParseError::BadTarget);
    }
    let target = ascii_str(&line[t..i]);

    // Version and CRLF: fixed width, so wait for all ten bytes.
    let v = i + 1;
    let Some(field) = line.get(v..v + 10) else {
        return line_starved(line.len(), head.len(), limits);
    };
    let version = match (
        u64::from_le_bytes(field[..8].try_into().unwrap()),
        &field[8..],
    ) {
        (HTTP_11, b"\r\n") => Version::Http11,
        (HTTP_10, b"\r\n") => Version::Http10,
        _ => return Err(bad_version(field)),
    };

    // Header field lines.
    let max_headers = limits.max_headers.min(headers.len());
    let headers = &mut headers[..max_headers];
    let mut count = 0;
    let mut special = Special::default();
    let mut pos = v + 10;
    let head_len = loop {
        let Some(&first) = head.get(pos) else {
            return head_starved(head.len(), limits);
        };
        if first == b'\r' {
            match head.get(pos + 1) {
                Some(b'\n') => break pos + 2,
                Some(_) => return Err(ParseError::BadLineEnding),
                None => return head_starved(head.len(), limits),
            }
        }
        // `>=` rather than `==` lets the compiler drop the bounds check on
        // the store below.
        if count >= headers.len() {
            return Err(ParseError::TooManyHeaders);
        }

        // Every byte of a well-formed field line (token, colon, OWS, value)
        // is a value byte, so one scan finds the end of the line. The name
        // is then found within it independently of that scan, which keeps
        // the name off the critical path from one line to the next.
        let end = value_end(head, pos);
        let line = &head[pos..end];
        // The token scan runs on `head`, not `line`, so it gets whole
        // 16-byte chunks; it stops by `end` anyway unless that is the end of
        // the buffer, hence the clamp.
        let colon = find_stop::<TOKEN>(head, pos).min(end) - pos;
        let stop = head.get(pos + colon).copied();
        if stop != Some(b':') || colon == 0 {
            return match stop {
                None => head_starved(head.len(), limits),
                Some(b' ' | b'\t') if colon == 0 => Err(ParseError::ObsoleteLineFolding),
                Some(b' ' | b'\t') => Err(ParseError::WhitespaceBeforeColon),
                Some(b'\n') => Err(ParseError::BadLineEnding),
                Some(_) => Err(ParseError::BadHeaderName),
            };
        }
        let name = &line[..colon];

        match head.get(end) {
            Some(b'\r') => {}
            Some(b'\n') => return Err(ParseError::BadLineEnding),
            Some(_) => return Err(ParseError::BadHeaderValue),
            None => return head_starved(head.len(), limits),
        }
        match head.get(end + 1) {
            Some(b'\n') => {}
            Some(_) => return Err(ParseError::BadLineEnding),
            None => return head_starved(head.len(), limits),
        }
        let value = trim_ows(&line[colon + 1..]);
        special.note(name, value);
        headers[count] = Header {
            name: ascii_str(name),
            value,
        };
        count += 1;
        pos = end + 2;
    };

    let framing = special.framing(version)?;
    if special.hosts > 1 {
        return Err(ParseError::DuplicateHost);
    }
    if special.hosts == 0 && version == Version::Http11 {
        return Err(ParseError::MissingHost);
    }
    let keep_alive = match version {
        Version::Http11 => !special.close,
        Version::Http10 => special.keep_alive && !special.close,
    };

    Ok(Parsed::Complete(RequestHead {
        method,
        target,
        version,
        headers: &headers[..count],
        framing,
        keep_alive,
        expect_continue: special.expect_continue,
        head_len,
        query_at: query - t,
    }))
}

/// Index just past the first "\r\n\r\n" in `buf`, searching from `from`
/// (callers pass the previous buffer length minus 3 so a slow client costs
/// O(n), not O(n^2)).
pub fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    // Look for the final LF and check the three bytes before it: LFs are
    // sparse in a head, and memchr on a single byte is the fastest search.
    let start = from.saturating_add(3).min(buf.len());
    memchr::memchr_iter(b'\n', &buf[start..])
        .map(|p| start + p)
        .find(|&lf| &buf[lf - 3..lf] == b"\r\n\r")
        .map(|lf| lf + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TECHEMPOWER: &[u8] = b"GET /plaintext HTTP/1.1\r\nHost: localhost:8080\r\nAccept: text/plain,text/html;q=0.9,application/xhtml+xml;q=0.9,application/xml;q=0.8,*/*;q=0.7\r\nConnection: keep-alive\r\n\r\n";

    const POST: &[u8] = b"POST /submit?x=1&y=2 HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\nContent-Type: text/plain\r\nX-Tab:\tvalue\twith\ttabs\t \r\nX-Obs: caf\xc3\xa9 \xff\r\n\r\nhello";

    const CHUNKED: &[u8] = b"PUT /up HTTP/1.1\r\nhost: h\r\ntransfer-encoding: Chunked\r\nexpect: 100-Continue\r\n\r\n";

    const HTTP10: &[u8] = b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n";

    const VALID: &[&[u8]] = &[TECHEMPOWER, POST, CHUNKED, HTTP10];

    fn parse(buf: &[u8]) -> Result<Parsed<RequestHead<'_, '_>>, ParseError> {
        parse_with(buf, &Limits::default())
    }

    /// Leaks the header array so the result can outlive the call; fine in tests.
    fn parse_with<'b>(
        buf: &'b [u8],
        limits: &Limits,
    ) -> Result<Parsed<RequestHead<'b, 'b>>, ParseError> {
        let headers: &'b mut [Header<'b>] = Box::leak(vec![Header::EMPTY; 64].into_boxed_slice());
        parse_request(buf, headers, limits)
    }

    fn complete(buf: &[u8]) -> RequestHead<'_, '_> {
        match parse(buf) {
            Ok(Parsed::Complete(h)) => h,
            other => panic!("expected a complete head, got {other:?}"),
        }
    }

    fn err(buf: &[u8]) -> ParseError {
        match parse(buf) {
            Err(e) => e,
            other => panic!(
                "expected an error for {:?}, got {other:?}",
                String::from_utf8_lossy(buf)
            ),
        }
    }

    fn assert_err(buf: &[u8], expected: ParseError, status: u16) {
        let e = err(buf);
        assert_eq!(e, expected, "{:?}", String::from_utf8_lossy(buf));
        assert_eq!(e.status(), status);
    }

    fn req(headers: &str) -> Vec<u8> {
        format!("GET / HTTP/1.1\r\n{headers}\r\n").into_bytes()
    }

    #[test]
    fn techempower_request() {
        let h = complete(TECHEMPOWER);
        assert_eq!(h.method, "GET");
        assert_eq!(h.target, "/plaintext");
        assert_eq!(h.path(), "/plaintext");
        assert_eq!(h.query(), None);
        assert_eq!(h.version, Version::Http11);
        assert_eq!(h.headers.len(), 3);
        assert_eq!(
            h.headers[0],
            Header {
                name: "Host",
                value: b"localhost:8080"
            }
        );
        assert_eq!(h.header("host"), Some(&b"localhost:8080"[..]));
        assert_eq!(h.header("CONNECTION"), Some(&b"keep-alive"[..]));
        assert_eq!(h.header("connectio"), None);
        assert_eq!(h.framing, BodyFraming::None);
        assert!(h.keep_alive);
        assert!(!h.expect_continue);
        assert_eq!(h.head_len, TECHEMPOWER.len());
    }

    #[test]
    fn post_with_body_tabs_and_obs_text() {
        let h = complete(POST);
        assert_eq!(h.method, "POST");
        assert_eq!(h.path(), "/submit");
        assert_eq!(h.query(), Some("x=1&y=2"));
        assert_eq!(h.framing, BodyFraming::Length(5));
        assert_eq!(h.header("x-tab"), Some(&b"value\twith\ttabs"[..]));
        assert_eq!(h.header("x-obs"), Some(&b"caf\xc3\xa9 \xff"[..]));
        assert_eq!(&POST[h.head_len..], b"hello");
    }

    #[test]
    fn chunked_and_expect() {
        let h = complete(CHUNKED);
        assert_eq!(h.framing, BodyFraming::Chunked);
        assert!(h.expect_continue);
        assert!(h.keep_alive);
    }

    #[test]
    fn query_edge_cases() {
        let h = complete(b"GET /a?b?c HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(h.path(), "/a");
        assert_eq!(h.query(), Some("b?c"));
        let h = complete(b"GET /a? HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(h.query(), Some(""));
        let h = complete(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(h.path(), "*");
    }

    #[test]
    fn absolute_form_targets_give_their_path() {
        let h =
            complete(b"GET http://example.com/plaintext?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n");
        assert_eq!(h.path(), "/plaintext");
        assert_eq!(h.query(), Some("x=1"));
        let h = complete(b"GET HTTPS://example.com:8443 HTTP/1.1\r\nHost: example.com\r\n\r\n");
        assert_eq!(h.path(), "/");
        let h = complete(b"GET http://u@example.com/a/b HTTP/1.1\r\nHost: example.com\r\n\r\n");
        assert_eq!(h.path(), "/a/b");
        // Not absolute form: left as it is (and routed nowhere).
        let h = complete(b"GET 1http://x/y HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(h.path(), "1http://x/y");
    }

    #[test]
    fn value_whitespace_is_trimmed() {
        let r = req("Host: x\r\nA:   \t  spaced out \t \r\nB:\r\nC: \t \r\n");
        let h = complete(&r);
        assert_eq!(h.header("a"), Some(&b"spaced out"[..]));
        assert_eq!(h.header("b"), Some(&b""[..]));
        assert_eq!(h.header("c"), Some(&b""[..]));
        // Long values exercise the eight-byte path, tabs included.
        let long = format!("Host: x\r\nL: {}\t{}\r\n", "a".repeat(37), "b".repeat(29));
        let r = req(&long);
        let h = complete(&r);
        assert_eq!(h.header("l").unwrap().len(), 37 + 1 + 29);
    }

    #[test]
    fn keep_alive_rules() {
        let ka = |r: &[u8]| complete(r).keep_alive;
        assert!(ka(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(!ka(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ));
        assert!(!ka(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade , CLOSE\r\n\r\n"
        ));
        assert!(ka(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: closed\r\n\r\n"
        ));
        assert!(!ka(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: a\r\nconnection: close\r\n\r\n"
        ));
        assert!(!ka(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(ka(HTTP10));
        assert!(ka(
            b"GET / HTTP/1.0\r\nConnection: foo,\tkeep-alive \r\n\r\n"
        ));
        assert!(!ka(
            b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"
        ));
        assert!(!ka(b"GET / HTTP/1.0\r\nConnection: keep-alives\r\n\r\n"));
    }

    #[test]
    fn expect_continue_rules() {
        assert!(complete(&req("Host: x\r\nExpect:  100-continue \r\n")).expect_continue);
        assert!(!complete(&req("Host: x\r\nExpect: 100-continued\r\n")).expect_continue);
        assert!(!complete(&req("Host: x\r\n")).expect_continue);
    }

    #[test]
    fn http10_without_host_is_fine() {
        let h = complete(b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(h.version, Version::Http10);
        assert!(h.headers.is_empty());
        assert_eq!(h.head_len, 18);
    }

    #[test]
    fn request_line_errors() {
        use ParseError::*;
        assert_err(b"GE(T / HTTP/1.1\r\nHost: x\r\n\r\n", BadMethod, 400);
        assert_err(b" GET / HTTP/1.1\r\nHost: x\r\n\r\n", BadMethod, 400);
        assert_err(b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", BadMethod, 400);
        assert_err(b"GET\t/ HTTP/1.1\r\nHost: x\r\n\r\n", BadMethod, 400);
        assert_err(b"GET\r\n\r\n", BadMethod, 400);
        assert_err(b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", BadTarget, 400);
        assert_err(b"GET /a\x7fb HTTP/1.1\r\nHost: x\r\n\r\n", BadTarget, 400);
        assert_err(
            b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n",
            BadTarget,
            400,
        );
        assert_err(b"GET /a\0 HTTP/1.1\r\nHost: x\r\n\r\n", BadTarget, 400);
        assert_err(b"GET /a\tb HTTP/1.1\r\nHost: x\r\n\r\n", BadTarget, 400);
        assert_err(b"GET /\r\n\r\n", BadTarget, 400);
        assert_err(b"GET /a\rb HTTP/1.1\r\nHost: x\r\n\r\n", BadTarget, 400);
        assert_err(
            b"GET /very/long/path/with/no\x01/ctl HTTP/1.1\r\n\r\n",
            BadTarget,
            400,
        );
        assert_err(b"GET / HTTP/1.1 \r\nHost: x\r\n\r\n", BadVersion, 400);
        assert_err(b"GET /  HTTP/1.1\r\nHost: x\r\n\r\n", BadVersion, 400);
        assert_err(b"GET / http/1.1\r\nHost: x\r\n\r\n", BadVersion, 400);
        assert_err(b"GET / HTTP/1.10\r\nHost: x\r\n\r\n", BadVersion, 400);
        assert_err(b"GET / HTTP/11.\r\nHost: x\r\n\r\n", BadVersion, 400);
        assert_err(b"GET / HTTP/2\r\nHost: x\r\n\r\n", BadVersion, 400);
        assert_err(
            b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
            VersionNotSupported,
            505,
        );
        assert_err(
            b"GET / HTTP/0.9\r\nHost: x\r\n\r\n",
            VersionNotSupported,
            505,
        );
        assert_err(
            b"GET / HTTP/1.2\r\nHost: x\r\n\r\n",
            VersionNotSupported,
            505,
        );
        assert_err(b"GET / HTTP/1.1\nHost: x\r\n\r\n", BadLineEnding, 400);
        assert_err(b"GET / HTTP/1.1\rHost: x\r\n\r\n", BadLineEnding, 400);
    }

    #[test]
    fn header_errors() {
        use ParseError::*;
        assert_err(
            &req("Host: x\r\nBad Name: v\r\n"),
            WhitespaceBeforeColon,
            400,
        );
        assert_err(&req("Host : x\r\n"), WhitespaceBeforeColon, 400);
        assert_err(&req("Host\t: x\r\n"), WhitespaceBeforeColon, 400);
        assert_err(&req("Host: x\r\n: v\r\n"), BadHeaderName, 400);
        assert_err(&req("Host: x\r\nNo-Colon\r\n"), BadHeaderName, 400);
        assert_err(&req("Host: x\r\nA(b: v\r\n"), BadHeaderName, 400);
        assert_err(
            b"GET / HTTP/1.1\r\nHost: x\r\n\xc3\xa9: v\r\n\r\n",
            BadHeaderName,
            400,
        );
        assert_err(&req("Host: x\r\n\0: v\r\n"), BadHeaderName, 400);
        assert_err(&req("Host: x\r\nA: b\r\n c\r\n"), ObsoleteLineFolding, 400);
        assert_err(&req("Host: x\r\nA: b\r\n\tc\r\n"), ObsoleteLineFolding, 400);
        assert_err(&req("Host: x\r\nA: b\0c\r\n"), BadHeaderValue, 400);
        assert_err(&req("Host: x\r\nA: b\x7fc\r\n"), BadHeaderValue, 400);
        assert_err(&req("Host: x\r\nA: b\x1bc\r\n"), BadHeaderValue, 400);
        assert_err(
            &req("Host: x\r\nA: 0123456789abcdef\x0b01234\r\n"),
            BadHeaderValue,
            400,
        );
        assert_err(
            &req("Host: x\r\nA: 0123456789abcdef01234\x7f\r\n"),
            BadHeaderValue,
            400,
        );
        assert_err(&req("Host: x\r\nA: b\rc\r\n"), BadLineEnding, 400);
        assert_err(&req("Host: x\r\nA: b\nB: c\r\n"), BadLineEnding, 400);
        assert_err(&req("Host: x\r\nA: b\r\r\n"), BadLineEnding, 400);
        assert_err(&req("Host: x\r\n\nA: b\r\n"), BadLineEnding, 400);
        assert_err(b"GET / HTTP/1.1\r\nHost: x\r\n\rX", BadLineEnding, 400);
        assert_err(b"GET / HTTP/1.1\r\nHost: x\r\n\n", BadLineEnding, 400);
        assert_err(b"GET / HTTP/1.1\r\nHost: x\n\r\n", BadLineEnding, 400);
    }

    #[test]
    fn framing_errors() {
        use ParseError::*;
        assert_err(
            &req("Host: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n"),
            ContentLengthWithTransferEncoding,
            400,
        );
        assert_err(
            &req("Host: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n"),
            ContentLengthWithTransferEncoding,
            400,
        );
        assert_err(
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            TransferEncodingInHttp10,
            400,
        );
        assert_err(
            &req("Host: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
            DuplicateTransferEncoding,
            400,
        );
        for te in [
            "gzip",
            "gzip, chunked",
            "chunked, chunked",
            "identity",
            "",
            "chunked;q=1",
            "chun ked",
        ] {
            assert_err(
                &req(&format!("Host: x\r\nTransfer-Encoding: {te}\r\n")),
                UnsupportedTransferEncoding,
                501,
            );
        }
        for te in ["chunked", "CHUNKED", " chunked\t", "cHuNkEd"] {
            let h = complete_owned(req(&format!("Host: x\r\nTransfer-Encoding: {te}\r\n")));
            assert_eq!(h, BodyFraming::Chunked);
        }
        for cl in [
            "",
            "+5",
            "-5",
            "5 5",
            "5,5",
            "5, 5",
            "0x5",
            "5a",
            "18446744073709551616",
            "99999999999999999999999",
        ] {
            assert_err(
                &req(&format!("Host: x\r\nContent-Length: {cl}\r\n")),
                BadContentLength,
                400,
            );
        }
        for (cl, n) in [
            ("0", 0),
            (" 42 ", 42),
            ("007", 7),
            ("18446744073709551615", u64::MAX),
        ] {
            let f = complete_owned(req(&format!("Host: x\r\nContent-Length: {cl}\r\n")));
            assert_eq!(f, BodyFraming::Length(n));
        }
        assert_err(
            &req("Host: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n"),
            DuplicateContentLength,
            400,
        );
        assert_err(
            &req("Host: x\r\ncontent-length: 5\r\nCONTENT-LENGTH: 6\r\n"),
            DuplicateContentLength,
            400,
        );
    }

    fn complete_owned(buf: Vec<u8>) -> BodyFraming {
        complete(&buf).framing
    }

    #[test]
    fn host_errors() {
        use ParseError::*;
        assert_err(&req(""), MissingHost, 400);
        assert_err(&req("Hostname: x\r\n"), MissingHost, 400);
        assert_err(&req("Host: a\r\nhost: a\r\n"), DuplicateHost, 400);
        assert_err(
            b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
            DuplicateHost,
            400,
        );
        // An empty Host is allowed by RFC 9110 (authority-less targets).
        complete(&req("Host:\r\n"));
    }

    #[test]
    fn every_proper_prefix_is_partial() {
        for r in VALID {
            let h = complete(r);
            for n in 0..h.head_len {
                assert_eq!(
                    parse(&r[..n]),
                    Ok(Parsed::Partial),
                    "prefix {n} of {:?}",
                    String::from_utf8_lossy(r)
                );
            }
            for n in h.head_len..=r.len() {
                assert!(matches!(parse(&r[..n]), Ok(Parsed::Complete(_))));
            }
        }
    }

    #[test]
    fn pipelined_requests() {
        let mut stream = Vec::new();
        for r in [TECHEMPOWER, CHUNKED, HTTP10, TECHEMPOWER] {
            stream.extend_from_slice(r);
        }
        let mut rest = &stream[..];
        let mut methods = Vec::new();
        while !rest.is_empty() {
            let mut headers = [Header::EMPTY; 16];
            let Ok(Parsed::Complete(h)) = parse_request(rest, &mut headers, &Limits::default())
            else {
                panic!("pipelined parse failed at {}", stream.len() - rest.len());
            };
            methods.push(h.method);
            rest = &rest[h.head_len..];
        }
        assert_eq!(methods, ["GET", "PUT", "GET", "GET"]);
    }

    #[test]
    fn request_line_limit() {
        let limits = Limits {
            max_request_line: 32,
            ..Limits::default()
        };
        // The line including CRLF may be exactly the limit.
        let ok = b"GET /1234567890123456 HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(ok.iter().position(|&b| b == b'\n'), Some(31));
        assert!(matches!(parse_with(ok, &limits), Ok(Parsed::Complete(_))));
        let long = b"GET /12345678901234567 HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(
            parse_with(long, &limits),
            Err(ParseError::RequestLineTooLong)
        );
        assert_eq!(ParseError::RequestLineTooLong.status(), 414);
        // Still partial, but already past the limit.
        let partial = [b'G'; 32];
        assert_eq!(parse_with(&partial[..31], &limits), Ok(Parsed::Partial));
        assert_eq!(
            parse_with(&partial, &limits),
            Err(ParseError::RequestLineTooLong)
        );
        let partial = b"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        assert_eq!(
            parse_with(partial, &limits),
            Err(ParseError::RequestLineTooLong)
        );
        assert_eq!(parse(&[b'a'; 8192]), Err(ParseError::RequestLineTooLong));
        assert_eq!(parse(&[b'a'; 8191]), Ok(Parsed::Partial));
    }

    #[test]
    fn head_size_limit() {
        let limits = Limits {
            max_head_bytes: 64,
            ..Limits::default()
        };
        let mut r = b"GET / HTTP/1.1\r\nHost: x\r\nPad: ".to_vec();
        r.resize(64 - 4, b'p');
        r.extend_from_slice(b"\r\n\r\n");
        assert_eq!(r.len(), 64);
        assert!(matches!(parse_with(&r, &limits), Ok(Parsed::Complete(_))));
        r.insert(40, b'p');
        assert_eq!(parse_with(&r, &limits), Err(ParseError::HeadTooLarge));
        assert_eq!(parse_with(&r[..63], &limits), Ok(Parsed::Partial));
        assert_eq!(parse_with(&r[..64], &limits), Err(ParseError::HeadTooLarge));
        // Endless header lines are cut off while partial too.
        let mut flood = b"GET / HTTP/1.1\r\n".to_vec();
        while flood.len() < 20_000 {
            flood.extend_from_slice(b"X: y\r\n");
        }
        let mut many = vec![Header::EMPTY; 10_000];
        let limits = Limits {
            max_headers: 10_000,
            ..Limits::default()
        };
        let e = parse_request(&flood, &mut many, &limits);
        assert_eq!(e, Err(ParseError::HeadTooLarge));
        assert_eq!(ParseError::HeadTooLarge.status(), 431);
        // The head limit also applies when it is tighter than the line limit.
        let tight = Limits {
            max_head_bytes: 10,
            ..Limits::default()
        };
        assert_eq!(
            parse_with(b"GET /abcdefgh", &tight),
            Err(ParseError::HeadTooLarge)
        );
    }

    #[test]
    fn header_count_limit() {
        let mut r = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 0..63 {
            r.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        let at_limit = [&r[..], b"\r\n"].concat();
        assert_eq!(complete(&at_limit).headers.len(), 64);
        r.extend_from_slice(b"One-More: v\r\n\r\n");
        assert_eq!(parse(&r), Err(ParseError::TooManyHeaders));
        assert_eq!(ParseError::TooManyHeaders.status(), 431);
        // Reported while partial, as soon as the extra line starts.
        let start = r.len() - "One-More: v\r\n\r\n".len();
        assert_eq!(parse(&r[..start]), Ok(Parsed::Partial));
        assert_eq!(parse(&r[..start + 1]), Err(ParseError::TooManyHeaders));
        // The caller's array is a bound too.
        let mut small = [Header::EMPTY; 2];
        let three = b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\n\r\n";
        assert_eq!(
            parse_request(three, &mut small, &Limits::default()),
            Err(ParseError::TooManyHeaders)
        );
        let limits = Limits {
            max_headers: 1,
            ..Limits::default()
        };
        assert_eq!(parse_with(three, &limits), Err(ParseError::TooManyHeaders));
    }

    #[test]
    fn find_head_end_offsets() {
        let r = TECHEMPOWER;
        for from in 0..=r.len() + 5 {
            let expected = (from <= r.len() - 4).then_some(r.len());
            assert_eq!(find_head_end(r, from), expected, "from {from}");
        }
        assert_eq!(find_head_end(b"", 0), None);
        assert_eq!(find_head_end(b"\r\n\r\n", 0), Some(4));
        assert_eq!(find_head_end(b"\r\n\r\nX\r\n\r\n", 1), Some(9));
        assert_eq!(find_head_end(b"a\n\n\r\n\r\r\n\r\n", 0), Some(10));
        assert_eq!(find_head_end(b"\n\n\n\n", 0), None);
        // Incremental use as the brief describes: from = previous length - 3.
        let mut prev: usize = 0;
        let mut found = None;
        for n in 1..=r.len() {
            found = find_head_end(&r[..n], prev.saturating_sub(3));
            if found.is_some() {
                assert_eq!(n, r.len());
                break;
            }
            prev = n;
        }
        assert_eq!(found, Some(r.len()));
    }

    /// The target scan's end is `find_stop::<TARGET>`'s, and its '?' the
    /// first one before that end, in both versions.
    fn check_target(buf: &[u8]) {
        for i in 0..=buf.len() {
            let end = (i..buf.len())
                .find(|&j| is_stop::<TARGET>(buf[j]))
                .unwrap_or(buf.len());
            let query = (i..end).find(|&j| buf[j] == b'?').unwrap_or(end);
            assert_eq!(find_target_end(buf, i), (end, query), "at {i} in {buf:?}");
            assert_eq!(
                find_target_end_bytes(buf, i, None),
                (end, query),
                "at {i} in {buf:?}"
            );
        }
    }

    /// The SSE2 scanners and the portable ones (which other targets use, and
    /// which finish the tail for SSE2) must agree with the byte predicate.
    #[test]
    fn scanners_agree() {
        fn check<const CLASS: u8>(buf: &[u8]) {
            for i in 0..=buf.len() {
                let expected = (i..buf.len())
                    .find(|&j| is_stop::<CLASS>(buf[j]))
                    .unwrap_or(buf.len());
                assert_eq!(
                    find_stop::<CLASS>(buf, i),
                    expected,
                    "class {CLASS} at {i} in {buf:?}"
                );
                assert_eq!(
                    find_stop_swar::<CLASS>(buf, i),
                    expected,
                    "class {CLASS} at {i} in {buf:?}"
                );
            }
        }
        let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
        for _ in 0..3000 {
            let len = rng.below(48);
            // Mostly token bytes, so scans run long, with occasional others.
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    if rng.below(12) == 0 {
                        rng.next() as u8
                    } else {
                        b"aZ09-_.~!?"[rng.below(10)]
                    }
                })
                .collect();
            check::<VALUE>(&buf);
            check::<TOKEN>(&buf);
            check::<TARGET>(&buf);
            check_target(&buf);
        }
        let all: Vec<u8> = (0..=255).collect();
        check::<VALUE>(&all);
        check::<TOKEN>(&all);
        check::<TARGET>(&all);
        for b in 0..=255u8 {
            assert_eq!(
                !is_stop::<TOKEN>(b),
                b"!#$%&'*+-.^_`|~".contains(&b) || b.is_ascii_alphanumeric()
            );
            let mut buf = [b'a'; 40];
            for at in [0, 7, 8, 15, 16, 17, 31, 39] {
                buf[at] = b;
                let token_stop = if is_tchar(b) { 40 } else { at };
                assert_eq!(find_stop::<TOKEN>(&buf, 0), token_stop);
                buf[at] = b'a';
            }
        }
    }

    #[test]
    fn errors_have_text() {
        let e = ParseError::UnsupportedTransferEncoding;
        assert_eq!(e.status(), 501);
        assert_eq!(e.to_string(), "unsupported Transfer-Encoding (501)");
        let _: &dyn std::error::Error = &e;
    }

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Mutations of valid requests must never panic, and the parser must be
    /// online: a prefix of an accepted head is Partial, and a prefix of a
    /// rejected one is Partial or the very same error.
    #[test]
    fn fuzz_mutations() {
        const INTERESTING: &[u8] = b"\r\n\r\n \t:,;\0\x7f\x80\xffaZ0/?=-HTTP/1.";
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let limit_sets = [
            Limits::default(),
            Limits {
                max_request_line: 20,
                max_head_bytes: 90,
                max_headers: 3,
            },
            Limits {
                max_request_line: 200,
                max_head_bytes: 40,
                max_headers: 64,
            },
        ];
        let (mut accepted, mut rejected) = (0, 0);
        for case in 0..6000 {
            let mut r = VALID[rng.below(VALID.len())].to_vec();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(r.len() + 1);
                match rng.below(5) {
                    0 if at < r.len() => r[at] = INTERESTING[rng.below(INTERESTING.len())],
                    1 if at < r.len() => r[at] = rng.next() as u8,
                    2 => r.insert(at, INTERESTING[rng.below(INTERESTING.len())]),
                    3 if at < r.len() => {
                        r.remove(at);
                    }
                    _ => {
                        let from = rng.below(r.len());
                        let len = rng.below(r.len() - from).min(24);
                        let piece = r[from..from + len].to_vec();
                        r.splice(at..at, piece);
                    }
                }
            }
            let limits = &limit_sets[case % limit_sets.len()];
            let full = parse_with(&r, limits);
            let cut = match full {
                Ok(Parsed::Complete(h)) => {
                    accepted += 1;
                    assert!(h.head_len <= r.len() && h.head_len <= limits.max_head_bytes);
                    assert_eq!(find_head_end(&r, 0), Some(h.head_len));
                    h.head_len
                }
                Ok(Parsed::Partial) => r.len(),
                Err(_) => {
                    rejected += 1;
                    r.len()
                }
            };
            // Every prefix for some cases, a random dozen for the rest, to
            // keep the test quick in debug builds.
            let prefixes: Vec<usize> = if case % 8 == 0 {
                (0..cut).collect()
            } else {
                (0..12).map(|_| rng.below(cut.max(1))).collect()
            };
            for n in prefixes {
                match parse_with(&r[..n], limits) {
                    Ok(Parsed::Partial) => {}
                    Err(e) if full == Err(e) => {}
                    other => panic!(
                        "prefix {n} of {:?} gave {other:?}, full gave {full:?}",
                        String::from_utf8_lossy(&r)
                    ),
                }
            }
        }
        assert!(
            accepted > 500 && rejected > 1000,
            "{accepted} accepted, {rejected} rejected"
        );
    }
}
