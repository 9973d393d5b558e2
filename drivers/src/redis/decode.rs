//! Incremental RESP2/RESP3 reply decoder with a reply-size cap.
//!
//! The decoder owns the read buffer. It keeps the partially built reply
//! between calls, so a large reply arriving in many reads is parsed once
//! (a restartable parser would re-scan it after every read), and it knows
//! every declared length before buffering the bytes behind it, so an
//! oversized reply is never held in memory: it is skipped as it streams in
//! and reported as [`Error::TooLarge`] for that one command, leaving the
//! connection usable.
//!
//! A large bulk string gets its own exactly-sized buffer as soon as its
//! header is seen, and the reads go straight into it: the value is handed
//! out without being copied, and the shared read buffer never grows to the
//! size of the biggest value.

use std::mem;

use super::error::{Error, Result, ServerError};
use super::value::Value;

/// Deepest nesting accepted. Dropping a `Value` recurses, so a hostile
/// `*1\r\n*1\r\n...` reply must not be able to build an arbitrarily deep
/// one.
const MAX_DEPTH: usize = 128;
/// Smallest encoding of one element (`_\r\n`), used to reject aggregates
/// whose declared count alone cannot fit under the cap.
const MIN_ELEMENT: usize = 3;
/// Read size when nothing bigger is known to be coming.
const READ_CHUNK: usize = 16 * 1024;
/// Capacity kept after a large reply has been consumed.
const KEEP_CAPACITY: usize = 64 * 1024;
/// Bulk strings from this size on are read into their own buffer.
const BIG_BULK: usize = 32 * 1024;
/// Elements reserved for an aggregate before any has arrived.
const AGG_PREALLOC: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AggKind {
    Array,
    Map,
    Set,
    Push,
    Attribute,
}

#[derive(Debug)]
struct Agg {
    kind: AggKind,
    left: usize,
    items: Vec<Value>,
}

/// A bulk string whose payload starts at `pos` in the shared buffer.
#[derive(Debug, Clone, Copy)]
struct PendingBulk {
    ty: u8,
    len: usize,
}

/// A large bulk string being received into its own buffer.
#[derive(Debug)]
struct BigBulk {
    ty: u8,
    len: usize,
    /// Payload and CRLF received so far; its capacity grows with what
    /// arrived (at most doubling per read), never to `len + 2` up front.
    data: Vec<u8>,
    /// `data` is out for a read.
    lent: bool,
}

/// Decodes replies from bytes appended to its buffer.
///
/// Feed it with [`feed`](Decoder::feed), or for owned-buffer I/O with
/// [`read_buf`](Decoder::read_buf) / [`filled`](Decoder::filled), then call
/// [`decode`](Decoder::decode) until it returns `Ok(None)`.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Next byte to parse; everything before it is consumed.
    pos: usize,
    /// Where the search for the end of the current line resumes.
    line_scan: usize,
    /// Bytes of the current reply consumed so far.
    reply_size: usize,
    stack: Vec<Agg>,
    bulk: Option<PendingBulk>,
    big: Option<BigBulk>,
    max_reply: usize,
    /// Discarding the rest of an oversized reply.
    skipping: bool,
    /// Payload bytes (CRLF included) still to discard while skipping.
    skip_left: usize,
    failed: Option<Error>,
}

impl Decoder {
    /// A decoder refusing replies bigger than `max_reply` bytes on the wire.
    pub fn new(max_reply: usize) -> Decoder {
        Decoder {
            buf: Vec::new(),
            pos: 0,
            line_scan: 0,
            reply_size: 0,
            stack: Vec::new(),
            bulk: None,
            big: None,
            max_reply: max_reply.max(16),
            skipping: false,
            skip_left: 0,
            failed: None,
        }
    }

    /// The configured cap.
    pub fn max_reply(&self) -> usize {
        self.max_reply
    }

    /// Appends received bytes.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        if let Some(big) = &mut self.big {
            let n = (big.len + 2 - big.data.len()).min(bytes.len());
            big.data.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
        }
        if !bytes.is_empty() {
            self.compact();
            // Sized like a socket read buffer, so feeding behaves as reading.
            if self.buf.capacity() - self.buf.len() < bytes.len() {
                self.buf.reserve(bytes.len().max(READ_CHUNK));
            }
            self.buf.extend_from_slice(bytes);
        }
    }

    /// Hands out a buffer for an owned-buffer read: the read must only
    /// append (into spare capacity) and the buffer must come back through
    /// [`filled`](Decoder::filled) before anything else is called. While a
    /// large bulk string is arriving this is that string's own buffer, with
    /// room for as much of the rest as it already holds (the memory a
    /// declared length can claim grows only with bytes received).
    pub fn read_buf(&mut self) -> Vec<u8> {
        if let Some(big) = &mut self.big {
            big.lent = true;
            let left = big.len + 2 - big.data.len();
            let room = big.data.capacity() - big.data.len();
            if room < left.min(READ_CHUNK) {
                big.data.reserve(left.min(big.data.len().max(READ_CHUNK)));
            }
            return mem::take(&mut big.data);
        }
        self.compact();
        let want = match self.bulk {
            Some(b) => (self.pos + b.len + 2).saturating_sub(self.buf.len()),
            None => 0,
        }
        .max(READ_CHUNK);
        if self.buf.capacity() - self.buf.len() < (want / 2).max(READ_CHUNK / 4) {
            self.buf.reserve(want);
        }
        mem::take(&mut self.buf)
    }

    /// Takes back the buffer handed out by [`read_buf`](Decoder::read_buf).
    pub fn filled(&mut self, mut buf: Vec<u8>) {
        if let Some(big) = &mut self.big {
            if big.lent {
                big.lent = false;
                let end = big.len + 2;
                if buf.len() > end {
                    // The allocator gave more room than asked and the read
                    // went past the string: the rest is the next reply.
                    debug_assert!(self.buf.len() == self.pos);
                    self.buf.extend_from_slice(&buf[end..]);
                    buf.truncate(end);
                }
                big.data = buf;
                return;
            }
        }
        debug_assert!(self.buf.is_empty());
        self.buf = buf;
    }

    /// Bytes received but not yet consumed by a complete reply.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos + self.big.as_ref().map_or(0, |b| b.data.len())
    }

    /// Whether a reply has started arriving but is not complete.
    pub fn in_reply(&self) -> bool {
        self.reply_size > 0
            || !self.stack.is_empty()
            || self.bulk.is_some()
            || self.big.is_some()
            || self.skipping
            || self.pos < self.buf.len()
    }

    fn compact(&mut self) {
        let s = self.pos;
        if s == 0 {
            return;
        }
        if s == self.buf.len() {
            self.buf.clear();
            if self.buf.capacity() > KEEP_CAPACITY * 4 {
                self.buf.shrink_to(KEEP_CAPACITY);
            }
        } else {
            self.buf.drain(..s);
        }
        self.pos = 0;
        self.line_scan = self.line_scan.saturating_sub(s);
    }

    /// Decodes the next complete reply.
    ///
    /// `Ok(None)`: more bytes are needed. `Ok(Some(Ok(v)))`: a reply (an
    /// error reply is `Value::Error`). `Ok(Some(Err(TooLarge)))`: a reply
    /// over the cap was consumed and discarded; the stream is still in
    /// sync. `Err(_)`: the stream is not valid RESP; the decoder stays
    /// failed and the connection must be dropped.
    pub fn decode(&mut self) -> Result<Option<Result<Value>>> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self.decode_inner();
        if let Err(e) = &r {
            self.failed = Some(e.clone());
        }
        r
    }

    fn advance(&mut self, to: usize) {
        self.reply_size += to - self.pos;
        self.pos = to;
    }

    fn decode_inner(&mut self) -> Result<Option<Result<Value>>> {
        loop {
            if self.skip_left > 0 {
                let n = self.skip_left.min(self.buf.len() - self.pos);
                self.advance(self.pos + n);
                self.skip_left -= n;
                if self.skip_left > 0 {
                    return Ok(None);
                }
                if let Some(done) = self.element_done(None) {
                    return Ok(Some(done));
                }
                continue;
            }
            if let Some(big) = &self.big {
                debug_assert!(!big.lent, "decode while the buffer is out for a read");
                if big.data.len() < big.len + 2 {
                    return Ok(None);
                }
                let mut big = self.big.take().expect("big bulk");
                if &big.data[big.len..] != b"\r\n" {
                    return Err(Error::protocol("bulk string not terminated by CRLF"));
                }
                big.data.truncate(big.len);
                self.reply_size += big.len + 2;
                let v = bulk_value(big.ty, big.data)?;
                if let Some(done) = self.element_done(Some(v)) {
                    return Ok(Some(done));
                }
                continue;
            }
            if let Some(b) = self.bulk {
                let end = self.pos + b.len;
                if self.buf.len() < end + 2 {
                    return Ok(None);
                }
                if &self.buf[end..end + 2] != b"\r\n" {
                    return Err(Error::protocol("bulk string not terminated by CRLF"));
                }
                let data = self.buf[self.pos..end].to_vec();
                let v = bulk_value(b.ty, data)?;
                self.bulk = None;
                self.advance(end + 2);
                if let Some(done) = self.element_done(Some(v)) {
                    return Ok(Some(done));
                }
                continue;
            }

            let Some(eol) = self.find_eol()? else {
                return Ok(None);
            };
            // The same answer whether the line came in one read or was
            // refused while still arriving (`find_eol`).
            if eol - self.pos > self.max_reply {
                return Err(Error::protocol("reply line longer than the reply limit"));
            }
            let ty = self.buf[self.pos];
            let line = &self.buf[self.pos + 1..eol];
            let after = eol + 2;
            let v = match ty {
                b'+' => Value::Simple(utf8_lossy(line)),
                b'-' => Value::Error(ServerError::parse(&String::from_utf8_lossy(line))),
                b':' => Value::Int(parse_int(line)?),
                b'_' => Value::Nil,
                b'#' => match line {
                    b"t" => Value::Bool(true),
                    b"f" => Value::Bool(false),
                    _ => return Err(Error::protocol("malformed boolean")),
                },
                b',' => Value::Double(parse_double(line)?),
                b'(' => {
                    if line.is_empty()
                        || !line
                            .iter()
                            .all(|&c| c.is_ascii_digit() || c == b'-' || c == b'+')
                    {
                        return Err(Error::protocol("malformed big number"));
                    }
                    Value::BigNumber(utf8_lossy(line))
                }
                b'$' | b'!' | b'=' => {
                    let len = parse_int(line).map_err(|_| stream_err(line))?;
                    self.advance(after);
                    if len == -1 && ty == b'$' {
                        Value::Nil
                    } else {
                        let len =
                            usize::try_from(len).map_err(|_| Error::protocol("negative length"))?;
                        if !self.skipping
                            && self.reply_size.saturating_add(len).saturating_add(2)
                                > self.max_reply
                        {
                            self.enter_skip();
                        }
                        if self.skipping {
                            self.skip_left = len + 2;
                        } else if len >= BIG_BULK && self.buf.len() - self.pos < len + 2 {
                            // Sized by what arrived, not by the declared
                            // length: an 11-byte header must not reserve
                            // 64 MiB. It grows as the payload comes.
                            let have = self.buf.len() - self.pos;
                            let mut data = Vec::with_capacity(have.max(READ_CHUNK));
                            data.extend_from_slice(&self.buf[self.pos..]);
                            self.pos = self.buf.len();
                            self.big = Some(BigBulk {
                                ty,
                                len,
                                data,
                                lent: false,
                            });
                        } else {
                            self.bulk = Some(PendingBulk { ty, len });
                        }
                        continue;
                    }
                }
                b'*' | b'%' | b'~' | b'>' | b'|' => {
                    let n = parse_int(line).map_err(|_| stream_err(line))?;
                    self.advance(after);
                    if n == -1 && ty == b'*' {
                        Value::Nil
                    } else {
                        let n =
                            usize::try_from(n).map_err(|_| Error::protocol("negative length"))?;
                        let kind = match ty {
                            b'*' => AggKind::Array,
                            b'%' => AggKind::Map,
                            b'~' => AggKind::Set,
                            b'>' => AggKind::Push,
                            _ => AggKind::Attribute,
                        };
                        let count = if matches!(kind, AggKind::Map | AggKind::Attribute) {
                            n.checked_mul(2)
                                .ok_or_else(|| Error::protocol("length overflow"))?
                        } else {
                            n
                        };
                        if self.stack.len() >= MAX_DEPTH {
                            return Err(Error::protocol("reply nested too deeply"));
                        }
                        if !self.skipping
                            && count.saturating_mul(MIN_ELEMENT)
                                > self.max_reply.saturating_sub(self.reply_size)
                        {
                            self.enter_skip();
                        }
                        if count == 0 {
                            if kind == AggKind::Attribute {
                                continue;
                            }
                            build(kind, Vec::new())
                        } else {
                            let items = if self.skipping {
                                Vec::new()
                            } else {
                                // The count is the server's word; memory grows
                                // with the elements actually received (nested
                                // headers alone hold next to nothing).
                                Vec::with_capacity(count.min(AGG_PREALLOC))
                            };
                            self.stack.push(Agg {
                                kind,
                                left: count,
                                items,
                            });
                            continue;
                        }
                    }
                }
                _ => {
                    return Err(Error::protocol(format!(
                        "unexpected reply type byte {:?}",
                        ty as char
                    )))
                }
            };
            if self.pos < after {
                self.advance(after);
            }
            if let Some(done) = self.element_done(Some(v)) {
                return Ok(Some(done));
            }
        }
    }

    /// Finds the CR of the CRLF ending the line at `pos`.
    fn find_eol(&mut self) -> Result<Option<usize>> {
        let from = self.line_scan.max(self.pos);
        match memchr::memchr(b'\n', &self.buf[from..]) {
            Some(i) => {
                let nl = from + i;
                if nl < self.pos + 2 || self.buf[nl - 1] != b'\r' {
                    return Err(Error::protocol("line not terminated by CRLF"));
                }
                Ok(Some(nl - 1))
            }
            None => {
                self.line_scan = self.buf.len();
                if self.buf.len() - self.pos > self.max_reply {
                    return Err(Error::protocol("reply line longer than the reply limit"));
                }
                Ok(None)
            }
        }
    }

    fn enter_skip(&mut self) {
        self.skipping = true;
        for agg in &mut self.stack {
            agg.items = Vec::new();
        }
    }

    /// Records a finished element; returns the reply when it was the last
    /// piece of one.
    fn element_done(&mut self, mut v: Option<Value>) -> Option<Result<Value>> {
        loop {
            let Some(top) = self.stack.last_mut() else {
                self.reply_size = 0;
                if self.skipping {
                    self.skipping = false;
                    return Some(Err(Error::TooLarge {
                        limit: self.max_reply,
                    }));
                }
                return Some(Ok(v.unwrap_or(Value::Nil)));
            };
            if let Some(v) = v.take() {
                if !self.skipping {
                    top.items.push(v);
                }
            }
            top.left -= 1;
            if top.left > 0 {
                if !self.skipping && self.reply_size > self.max_reply {
                    self.enter_skip();
                }
                return None;
            }
            let agg = self.stack.pop().expect("non-empty stack");
            if agg.kind == AggKind::Attribute {
                // Attributes annotate the value that follows; no command this
                // driver issues needs them, and they are not an element of
                // their parent.
                return None;
            }
            if !self.skipping {
                v = Some(build(agg.kind, agg.items));
            }
        }
    }
}

fn bulk_value(ty: u8, data: Vec<u8>) -> Result<Value> {
    Ok(match ty {
        b'$' => Value::Bulk(data),
        b'!' => Value::Error(ServerError::parse(&String::from_utf8_lossy(&data))),
        _ => {
            if data.len() < 4 || data[3] != b':' {
                return Err(Error::protocol("malformed verbatim string"));
            }
            Value::Verb {
                format: String::from_utf8_lossy(&data[..3]).into_owned(),
                text: data[4..].to_vec(),
            }
        }
    })
}

fn build(kind: AggKind, mut items: Vec<Value>) -> Value {
    match kind {
        AggKind::Array => Value::Array(items),
        AggKind::Set => Value::Set(items),
        AggKind::Push => Value::Push(items),
        AggKind::Map | AggKind::Attribute => {
            let mut pairs = Vec::with_capacity(items.len() / 2);
            let mut it = items.drain(..);
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                pairs.push((k, v));
            }
            Value::Map(pairs)
        }
    }
}

fn stream_err(line: &[u8]) -> Error {
    if line == b"?" {
        Error::protocol("streamed RESP3 types are not supported")
    } else {
        Error::protocol("malformed length")
    }
}

fn utf8_lossy(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(b).into_owned(),
    }
}

fn parse_int(b: &[u8]) -> Result<i64> {
    let (neg, digits) = match b {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, b),
    };
    if digits.is_empty() || digits.len() > 19 {
        return Err(Error::protocol("malformed integer"));
    }
    let mut n: i64 = 0;
    for &c in digits {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return Err(Error::protocol("malformed integer"));
        }
        // Accumulate negatively so i64::MIN parses.
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_sub(d as i64))
            .ok_or_else(|| Error::protocol("integer overflow"))?;
    }
    if neg {
        Ok(n)
    } else {
        n.checked_neg()
            .ok_or_else(|| Error::protocol("integer overflow"))
    }
}

fn parse_double(b: &[u8]) -> Result<f64> {
    let s = std::str::from_utf8(b).map_err(|_| Error::protocol("malformed double"))?;
    match s {
        "inf" | "+inf" => Ok(f64::INFINITY),
        "-inf" => Ok(f64::NEG_INFINITY),
        "nan" | "-nan" => Ok(f64::NAN),
        _ => s.parse().map_err(|_| Error::protocol("malformed double")),
    }
}

/// Serialises a value in RESP3 (RESP2 where `resp2`); the inverse of the
/// decoder, for tests and benchmarks.
#[doc(hidden)]
pub fn encode_value(v: &Value, resp2: bool, out: &mut Vec<u8>) {
    use std::io::Write;
    let agg = |out: &mut Vec<u8>, c: u8, n: usize| {
        let _ = write!(out, "{}{}\r\n", c as char, n);
    };
    match v {
        Value::Nil if resp2 => out.extend_from_slice(b"$-1\r\n"),
        Value::Nil => out.extend_from_slice(b"_\r\n"),
        Value::Int(i) => {
            let _ = write!(out, ":{i}\r\n");
        }
        Value::Bulk(b) => super::encode::write_bulk(out, b),
        Value::Simple(s) => {
            let _ = write!(out, "+{s}\r\n");
        }
        Value::Error(e) => {
            let _ = write!(out, "-{}\r\n", e.message());
        }
        Value::Array(a) | Value::Set(a) | Value::Push(a) if resp2 => {
            agg(out, b'*', a.len());
            a.iter().for_each(|v| encode_value(v, resp2, out));
        }
        Value::Array(a) | Value::Set(a) | Value::Push(a) => {
            let c = match v {
                Value::Array(_) => b'*',
                Value::Set(_) => b'~',
                _ => b'>',
            };
            agg(out, c, a.len());
            a.iter().for_each(|v| encode_value(v, resp2, out));
        }
        Value::Map(m) => {
            if resp2 {
                agg(out, b'*', m.len() * 2);
            } else {
                agg(out, b'%', m.len());
            }
            for (k, v) in m {
                encode_value(k, resp2, out);
                encode_value(v, resp2, out);
            }
        }
        Value::Double(d) if resp2 => super::encode::write_bulk(out, d.to_string().as_bytes()),
        Value::Double(d) => {
            let _ = write!(out, ",{d:?}\r\n");
        }
        Value::Bool(b) if resp2 => {
            let _ = write!(out, ":{}\r\n", *b as i32);
        }
        Value::Bool(b) => {
            let _ = write!(out, "#{}\r\n", if *b { 't' } else { 'f' });
        }
        Value::BigNumber(s) if resp2 => super::encode::write_bulk(out, s.as_bytes()),
        Value::BigNumber(s) => {
            let _ = write!(out, "({s}\r\n");
        }
        Value::Verb { text, .. } if resp2 => super::encode::write_bulk(out, text),
        Value::Verb { format, text } => {
            let _ = write!(out, "={}\r\n{}:", text.len() + 4, format);
            out.extend_from_slice(text);
            out.extend_from_slice(b"\r\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::Bulk(s.as_bytes().to_vec())
    }

    fn decode_all(input: &[u8], max: usize) -> Result<Vec<Result<Value>>> {
        let mut d = Decoder::new(max);
        d.feed(input);
        let mut out = Vec::new();
        while let Some(r) = d.decode()? {
            out.push(r);
        }
        assert!(!d.in_reply(), "trailing partial reply");
        Ok(out)
    }

    fn one(input: &[u8]) -> Value {
        let mut v = decode_all(input, 1 << 20).unwrap();
        assert_eq!(v.len(), 1);
        v.pop().unwrap().unwrap()
    }

    #[test]
    fn resp2_types() {
        assert_eq!(one(b"+OK\r\n"), Value::Simple("OK".into()));
        assert_eq!(one(b":-42\r\n"), Value::Int(-42));
        assert_eq!(one(b"$-1\r\n"), Value::Nil);
        assert_eq!(one(b"*-1\r\n"), Value::Nil);
        assert_eq!(one(b"$0\r\n\r\n"), bulk(""));
        assert_eq!(one(b"$4\r\na\r\n\0\r\n"), Value::Bulk(b"a\r\n\0".to_vec()));
        assert_eq!(one(b"*0\r\n"), Value::Array(vec![]));
        assert_eq!(
            one(b"*3\r\n$1\r\na\r\n:1\r\n*1\r\n$-1\r\n"),
            Value::Array(vec![
                bulk("a"),
                Value::Int(1),
                Value::Array(vec![Value::Nil])
            ])
        );
        match one(b"-WRONGTYPE bad\r\n") {
            Value::Error(e) => assert_eq!(e.kind(), &super::super::ServerErrorKind::WrongType),
            v => panic!("{v:?}"),
        }
        assert_eq!(one(b":9223372036854775807\r\n"), Value::Int(i64::MAX));
        assert_eq!(one(b":-9223372036854775808\r\n"), Value::Int(i64::MIN));
    }

    #[test]
    fn resp3_types() {
        assert_eq!(one(b"_\r\n"), Value::Nil);
        assert_eq!(one(b"#t\r\n"), Value::Bool(true));
        assert_eq!(one(b",1.5\r\n"), Value::Double(1.5));
        assert_eq!(one(b",-inf\r\n"), Value::Double(f64::NEG_INFINITY));
        assert_eq!(one(b",3\r\n"), Value::Double(3.0));
        assert!(matches!(one(b",nan\r\n"), Value::Double(d) if d.is_nan()));
        assert_eq!(
            one(b"(3492890328409238509324850943850943825024385\r\n"),
            Value::BigNumber("3492890328409238509324850943850943825024385".into())
        );
        assert_eq!(
            one(b"=15\r\ntxt:Some string\r\n"),
            Value::Verb {
                format: "txt".into(),
                text: b"Some string".to_vec()
            }
        );
        assert_eq!(
            one(b"%2\r\n+a\r\n:1\r\n$1\r\nb\r\n_\r\n"),
            Value::Map(vec![
                (Value::Simple("a".into()), Value::Int(1)),
                (bulk("b"), Value::Nil)
            ])
        );
        assert_eq!(one(b"~1\r\n:1\r\n"), Value::Set(vec![Value::Int(1)]));
        assert_eq!(
            one(b">2\r\n+message\r\n$1\r\nx\r\n"),
            Value::Push(vec![Value::Simple("message".into()), bulk("x")])
        );
        match one(b"!21\r\nSYNTAX invalid syntax\r\n") {
            Value::Error(e) => assert_eq!(e.code(), "SYNTAX"),
            v => panic!("{v:?}"),
        }
        // An attribute is dropped and the value after it is the reply, also
        // inside an aggregate.
        assert_eq!(one(b"|1\r\n+key\r\n:7\r\n:42\r\n"), Value::Int(42));
        assert_eq!(
            one(b"*2\r\n|1\r\n+k\r\n+v\r\n:1\r\n:2\r\n"),
            Value::Array(vec![Value::Int(1), Value::Int(2)])
        );
        assert_eq!(one(b"%0\r\n"), Value::Map(vec![]));
    }

    #[test]
    fn several_replies_and_partial_input() {
        let input = b"+OK\r\n*2\r\n$3\r\nfoo\r\n%1\r\n:1\r\n,2.5\r\n$5\r\nhello\r\n";
        let whole = decode_all(input, 1024).unwrap();
        assert_eq!(whole.len(), 3);
        // Every split point, byte by byte, gives the same replies.
        for split in 0..input.len() {
            let mut d = Decoder::new(1024);
            let mut got = Vec::new();
            d.feed(&input[..split]);
            while let Some(r) = d.decode().unwrap() {
                got.push(r.unwrap());
            }
            d.feed(&input[split..]);
            while let Some(r) = d.decode().unwrap() {
                got.push(r.unwrap());
            }
            assert_eq!(got.len(), 3, "split {split}");
            for (a, b) in got.iter().zip(&whole) {
                assert_eq!(a, b.as_ref().unwrap());
            }
        }
        let mut d = Decoder::new(1024);
        let mut got = Vec::new();
        for b in input {
            d.feed(&[*b]);
            while let Some(r) = d.decode().unwrap() {
                got.push(r.unwrap());
            }
        }
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn malformed_input_is_fatal() {
        for bad in [
            &b"?x\r\n"[..],
            b"+OK\n",
            b":12a\r\n",
            b":\r\n",
            b"$3\r\nabcd\r\n",
            b"$-2\r\n",
            b"*-5\r\n",
            b"$?\r\n",
            b"#x\r\n",
            b",abc\r\n",
            b"=3\r\nabc\r\n",
            b":99999999999999999999\r\n",
        ] {
            let mut d = Decoder::new(1024);
            d.feed(bad);
            assert!(d.decode().is_err(), "{:?}", String::from_utf8_lossy(bad));
            // It stays failed.
            assert!(d.decode().is_err());
        }
    }

    #[test]
    fn depth_limit() {
        let mut input = Vec::new();
        for _ in 0..MAX_DEPTH + 1 {
            input.extend_from_slice(b"*1\r\n");
        }
        input.extend_from_slice(b":1\r\n");
        assert!(decode_all(&input, 1 << 20).is_err());
    }

    #[test]
    fn oversized_bulk_is_skipped_and_stream_stays_in_sync() {
        let mut input = Vec::new();
        input.extend_from_slice(b"+before\r\n");
        super::super::encode::write_bulk(&mut input, &vec![b'x'; 5000]);
        input.extend_from_slice(b"+after\r\n");
        let r = decode_all(&input, 1000).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].as_ref().unwrap(), &Value::Simple("before".into()));
        assert!(matches!(r[1], Err(Error::TooLarge { limit: 1000 })));
        assert_eq!(r[2].as_ref().unwrap(), &Value::Simple("after".into()));
    }

    #[test]
    fn oversized_reply_is_never_buffered() {
        // A 1 MiB bulk arriving in 4 KiB reads under a 64 KiB cap: the
        // buffer must stay small while it is skipped.
        let mut d = Decoder::new(64 * 1024);
        let mut input = Vec::new();
        super::super::encode::write_bulk(&mut input, &vec![7u8; 1 << 20]);
        input.extend_from_slice(b":5\r\n");
        let mut got = Vec::new();
        for chunk in input.chunks(4096) {
            d.feed(chunk);
            assert!(d.buffered() <= 8192, "buffered {}", d.buffered());
            while let Some(r) = d.decode().unwrap() {
                got.push(r);
            }
        }
        assert!(matches!(got[0], Err(Error::TooLarge { .. })));
        assert_eq!(got[1].as_ref().unwrap(), &Value::Int(5));
    }

    /// A status line over the cap is refused the same way whether it
    /// arrives in one read or in two.
    #[test]
    fn an_overlong_line_is_refused_however_it_is_split() {
        let mut line = b"+".to_vec();
        line.extend(std::iter::repeat_n(b'x', 200));
        line.extend_from_slice(b"\r\n");
        let whole = {
            let mut d = Decoder::new(100);
            d.feed(&line);
            d.decode().unwrap_err().to_string()
        };
        let split = {
            let mut d = Decoder::new(100);
            d.feed(&line[..150]);
            let first = d.decode();
            d.feed(&line[150..]);
            first.and_then(|_| d.decode()).unwrap_err().to_string()
        };
        assert_eq!(whole, split);
        assert!(whole.contains("longer than the reply limit"), "{whole}");
    }

    /// A bulk header declaring 64 MiB reserves what arrived, not 64 MiB;
    /// the payload's buffer grows with it, through owned-buffer reads too.
    #[test]
    fn a_declared_length_reserves_nothing_before_the_bytes_come() {
        let mut d = Decoder::new(512 << 20);
        d.feed(b"$67108864\r\n");
        assert!(d.decode().unwrap().is_none());
        let reserved =
            |d: &Decoder| d.buf.capacity() + d.big.as_ref().map_or(0, |b| b.data.capacity());
        assert!(reserved(&d) <= 256 << 10, "reserved {}", reserved(&d));
        // Owned-buffer reads: at most about twice what has arrived.
        let mut got = 0usize;
        for _ in 0..8 {
            let mut b = d.read_buf();
            let n = (b.capacity() - b.len()).min(100_000);
            b.extend(std::iter::repeat_n(b'z', n));
            got += n;
            d.filled(b);
            assert!(d.decode().unwrap().is_none());
            assert!(
                reserved(&d) <= 2 * got + (256 << 10),
                "reserved {} after {got} bytes",
                reserved(&d)
            );
        }
    }

    /// Nested aggregate headers hold next to nothing until elements come.
    #[test]
    fn nested_headers_reserve_little() {
        let mut d = Decoder::new(512 << 20);
        for _ in 0..127 {
            d.feed(b"*1024\r\n");
        }
        assert!(d.decode().unwrap().is_none());
        let held: usize = d
            .stack
            .iter()
            .map(|a| a.items.capacity() * std::mem::size_of::<Value>())
            .sum();
        assert!(
            held <= 127 * 8 * std::mem::size_of::<Value>(),
            "held {held}"
        );
    }

    #[test]
    fn oversized_aggregates() {
        // Declared count alone exceeds the cap: nothing is allocated for it.
        let mut d = Decoder::new(1000);
        d.feed(b"*1000000\r\n");
        assert!(d.decode().unwrap().is_none());
        assert!(d.stack[0].items.capacity() == 0);
        let mut d = Decoder::new(1000);
        d.feed(b"*1000\r\n");
        assert!(d.decode().unwrap().is_none());
        for _ in 0..1000 {
            d.feed(b":1\r\n");
        }
        d.feed(b"+next\r\n");
        assert!(matches!(
            d.decode().unwrap(),
            Some(Err(Error::TooLarge { .. }))
        ));
        assert_eq!(
            d.decode().unwrap().unwrap().unwrap(),
            Value::Simple("next".into())
        );

        // Many small elements that add up past the cap, nested.
        let mut input = b"*2\r\n*300\r\n".to_vec();
        for _ in 0..300 {
            input.extend_from_slice(b"$3\r\nabc\r\n");
        }
        input.extend_from_slice(b"%1\r\n+k\r\n+v\r\n:9\r\n");
        let r = decode_all(&input, 1000).unwrap();
        assert!(matches!(r[0], Err(Error::TooLarge { .. })));
        assert_eq!(r[1].as_ref().unwrap(), &Value::Int(9));

        // Exactly at the cap is fine.
        let mut input = Vec::new();
        super::super::encode::write_bulk(&mut input, &[b'a'; 100]);
        let r = decode_all(&input, input.len()).unwrap();
        assert!(r[0].is_ok());
        let r = decode_all(&input, input.len() - 1).unwrap();
        assert!(r[0].is_err());
    }

    #[test]
    fn big_bulk_is_read_into_its_own_buffer() {
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        let mut wire = b"+first\r\n".to_vec();
        super::super::encode::write_bulk(&mut wire, &payload);
        wire.extend_from_slice(b":7\r\n");
        // Reads of odd sizes through the owned-buffer path, including one
        // that would run past the end of the string if it could.
        let mut d = Decoder::new(1 << 20);
        let mut got = Vec::new();
        let mut i = 0;
        let mut sizes = [1000usize, 70_000, 3, 50_000, 1 << 20].iter().cycle();
        while i < wire.len() {
            let mut b = d.read_buf();
            let room = b.capacity() - b.len();
            let n = (*sizes.next().unwrap()).min(room).min(wire.len() - i);
            b.extend_from_slice(&wire[i..i + n]);
            d.filled(b);
            i += n;
            while let Some(v) = d.decode().unwrap() {
                got.push(v.unwrap());
            }
        }
        assert_eq!(got.len(), 3);
        assert_eq!(got[1], Value::Bulk(payload.clone()));
        assert_eq!(got[2], Value::Int(7));
        // The shared buffer never grew to the string's size.
        assert!(d.buf.capacity() < 100_000, "{}", d.buf.capacity());

        // The same through feed(), with the next reply in the same chunk.
        let mut d = Decoder::new(1 << 20);
        let mut got = Vec::new();
        for chunk in wire.chunks(65_536) {
            d.feed(chunk);
            while let Some(v) = d.decode().unwrap() {
                got.push(v.unwrap());
            }
        }
        assert_eq!(got[1], Value::Bulk(payload));
        assert_eq!(got[2], Value::Int(7));
    }

    #[test]
    fn big_bulk_inside_an_array_and_bad_terminator() {
        let mut wire = b"*2\r\n".to_vec();
        super::super::encode::write_bulk(&mut wire, &vec![1u8; BIG_BULK * 2]);
        wire.extend_from_slice(b"$1\r\nx\r\n");
        let mut d = Decoder::new(1 << 20);
        d.feed(&wire[..100]);
        assert!(d.decode().unwrap().is_none());
        d.feed(&wire[100..]);
        let v = d.decode().unwrap().unwrap().unwrap();
        assert!(matches!(v, Value::Array(ref a) if a.len() == 2));

        // A read that runs past the string (an allocator that gave more
        // room than asked): the excess is the next reply.
        let mut d = Decoder::new(1 << 20);
        d.feed(&wire[..100]);
        assert!(d.decode().unwrap().is_none());
        let mut b = d.read_buf();
        b.reserve(1000);
        b.extend_from_slice(&wire[100..]);
        b.extend_from_slice(b":5\r\n");
        d.filled(b);
        assert!(matches!(d.decode().unwrap(), Some(Ok(Value::Array(_)))));
        assert_eq!(d.decode().unwrap().unwrap().unwrap(), Value::Int(5));

        let mut wire = Vec::new();
        super::super::encode::write_bulk(&mut wire, &vec![1u8; BIG_BULK]);
        let n = wire.len();
        wire[n - 2] = b'x';
        let mut d = Decoder::new(1 << 20);
        d.feed(&wire[..10]);
        assert!(d.decode().unwrap().is_none());
        d.feed(&wire[10..]);
        assert!(d.decode().is_err());
    }

    fn from_reference(f: redis_protocol::resp2::types::OwnedFrame) -> Value {
        use redis_protocol::resp2::types::OwnedFrame as F;
        match f {
            F::SimpleString(s) => Value::Simple(String::from_utf8(s).unwrap()),
            F::Error(e) => Value::Error(ServerError::parse(&e)),
            F::Integer(i) => Value::Int(i),
            F::BulkString(b) => Value::Bulk(b),
            F::Array(a) => Value::Array(a.into_iter().map(from_reference).collect()),
            F::Null => Value::Nil,
        }
    }

    #[test]
    fn agrees_with_the_reference_decoder() {
        let mut r = Rng(0xD1B54A32D192ED03);
        for _ in 0..300 {
            let v = random_value(&mut r, 0);
            let mut wire = Vec::new();
            encode_value(&v, true, &mut wire);
            let (frame, used) = redis_protocol::resp2::decode::decode(&wire)
                .unwrap()
                .unwrap();
            assert_eq!(used, wire.len());
            let mut d = Decoder::new(1 << 20);
            d.feed(&wire);
            let ours = d.decode().unwrap().unwrap().unwrap();
            assert_eq!(ours, from_reference(frame));
        }
    }

    /// Small deterministic generator so the round-trip test needs no crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn random_value(r: &mut Rng, depth: u32) -> Value {
        let k = if depth > 3 { r.below(8) } else { r.below(12) };
        match k {
            0 => Value::Nil,
            1 => Value::Int(r.next() as i64),
            2 | 3 => Value::Bulk((0..r.below(40)).map(|_| r.below(256) as u8).collect()),
            4 => Value::Simple("simple".into()),
            5 => Value::Double((r.below(1000) as f64) / 8.0),
            6 => Value::Bool(r.below(2) == 0),
            7 => Value::Verb {
                format: "txt".into(),
                text: b"v\r\n".to_vec(),
            },
            8 => Value::Array(
                (0..r.below(5))
                    .map(|_| random_value(r, depth + 1))
                    .collect(),
            ),
            9 => Value::Set(
                (0..r.below(5))
                    .map(|_| random_value(r, depth + 1))
                    .collect(),
            ),
            10 => Value::Map(
                (0..r.below(4))
                    .map(|_| (random_value(r, depth + 1), random_value(r, depth + 1)))
                    .collect(),
            ),
            _ => Value::Push(
                (0..r.below(4))
                    .map(|_| random_value(r, depth + 1))
                    .collect(),
            ),
        }
    }

    #[test]
    fn random_round_trip_in_random_chunks() {
        let mut r = Rng(0x9E3779B97F4A7C15);
        for _ in 0..300 {
            let values: Vec<Value> = (0..5).map(|_| random_value(&mut r, 0)).collect();
            let mut wire = Vec::new();
            for v in &values {
                encode_value(v, false, &mut wire);
            }
            let mut d = Decoder::new(1 << 20);
            let mut got = Vec::new();
            let mut i = 0;
            while i < wire.len() {
                let n = (r.below(17) as usize + 1).min(wire.len() - i);
                let mut b = d.read_buf();
                b.extend_from_slice(&wire[i..i + n]);
                d.filled(b);
                i += n;
                while let Some(v) = d.decode().unwrap() {
                    got.push(v.unwrap());
                }
            }
            assert_eq!(got, values);
        }
    }
}
