//! The chunked-body decoder: decoding in one piece and in pieces split at
//! fuzzer-chosen points gives the same body, the same bytes consumed and
//! the same verdict.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidepool_engine::http::chunked::{ChunkedDecoder, ChunkedLimits, Progress};

fn run(parts: &[&[u8]]) -> (Result<bool, ()>, usize, Vec<u8>) {
    let mut d = ChunkedDecoder::new(ChunkedLimits::default());
    let mut out = Vec::new();
    let mut consumed = 0;
    let mut pending: Vec<u8> = Vec::new();
    for p in parts {
        pending.extend_from_slice(p);
        match d.decode(&pending, &mut out) {
            Ok((used, Progress::Done)) => return (Ok(true), consumed + used, out),
            Ok((used, Progress::NeedMore)) => {
                consumed += used;
                pending.drain(..used);
            }
            Err(_) => return (Err(()), consumed, out),
        }
    }
    (Ok(false), consumed, out)
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, body)) = data.split_first() else { return };
    let whole = run(&[body]);
    let at = (split as usize).min(body.len());
    let halves = run(&[&body[..at], &body[at..]]);
    let bytes: Vec<&[u8]> = body.chunks(1).collect();
    let single = run(&bytes);
    assert_eq!(whole.0, halves.0, "verdict, split at {at}");
    assert_eq!(whole.0, single.0, "verdict, byte by byte");
    if whole.0 == Ok(true) {
        assert_eq!(whole.1, halves.1);
        assert_eq!(whole.1, single.1);
        assert_eq!(whole.2, halves.2);
        assert_eq!(whole.2, single.2);
    }
});
