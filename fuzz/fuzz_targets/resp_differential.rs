//! Our RESP decoder against redis-protocol's (the reference) on arbitrary
//! RESP2 input: where both read a whole reply they read the same value
//! from the same bytes, and ours never finishes a reply the reference
//! still needs bytes for. (Either may refuse what the other accepts: ours
//! is stricter on some framing; the fuzzer keeps what they disagree on
//! from hiding a wrong value.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use redis_protocol::resp2::types::OwnedFrame;
use tidepool_drivers::redis::{Decoder, ServerError, Value};

fn from_reference(f: OwnedFrame) -> Value {
    match f {
        OwnedFrame::SimpleString(s) => Value::Simple(String::from_utf8_lossy(&s).into_owned()),
        OwnedFrame::Error(e) => Value::Error(ServerError::parse(&e)),
        OwnedFrame::Integer(i) => Value::Int(i),
        OwnedFrame::BulkString(b) => Value::Bulk(b),
        OwnedFrame::Array(a) => Value::Array(a.into_iter().map(from_reference).collect()),
        OwnedFrame::Null => Value::Nil,
    }
}

fuzz_target!(|data: &[u8]| {
    if !data.first().is_some_and(|b| b"+-:$*".contains(b)) {
        return;
    }
    let theirs = redis_protocol::resp2::decode::decode(data);
    let mut d = Decoder::new(1 << 20);
    d.feed(data);
    let ours = d.decode();
    match (theirs, ours) {
        (Ok(Some((frame, used))), Ok(Some(Ok(v)))) => {
            assert_eq!(data.len() - d.buffered(), used, "bytes consumed differ");
            assert_eq!(v, from_reference(frame), "values differ");
        }
        (Ok(None), Ok(Some(Ok(v)))) => {
            panic!("ours finished {v:?} where the reference needs more bytes")
        }
        _ => {}
    }
});
