//! The RESP decoder on arbitrary bytes under a small cap: no panic, memory
//! bounded by what arrived, and the same replies whether the bytes come in
//! one piece or split at a fuzzer-chosen point.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidepool_drivers::redis::Decoder;

fn run(parts: &[&[u8]]) -> Vec<String> {
    let mut d = Decoder::new(4096);
    let mut out = Vec::new();
    for p in parts {
        d.feed(p);
        loop {
            match d.decode() {
                Ok(Some(r)) => out.push(format!("{r:?}")),
                Ok(None) => break,
                Err(e) => {
                    out.push(format!("fatal {e}"));
                    return out;
                }
            }
        }
        assert!(d.buffered() <= 4096 + p.len() + 64, "buffered {}", d.buffered());
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, body)) = data.split_first() else { return };
    let at = (split as usize * 7).min(body.len());
    let whole = run(&[body]);
    let halves = run(&[&body[..at], &body[at..]]);
    // A fatal error may come earlier when split (a line is refused while
    // still arriving), but the replies before it agree.
    let n = whole.len().min(halves.len());
    let ok = |v: &[String]| v.iter().take_while(|s| !s.starts_with("fatal")).count();
    let common = ok(&whole).min(ok(&halves)).min(n);
    assert_eq!(whole[..common], halves[..common]);
});
