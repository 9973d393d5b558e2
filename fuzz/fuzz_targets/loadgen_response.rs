//! The load generator's response parser and exchange on bytes from a
//! server under test: no panic; a complete response is self-delimiting
//! (its own bytes parse the same, and its prefixes are incomplete); the
//! status agrees with httparse's where both read a head; fed in pieces,
//! the exchange completes no more responses than were asked for, and the
//! same ones as fed whole.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use tidepool_loadgen::client::exchange::{Exchange, InFlight};
use tidepool_loadgen::client::http::{parse_response, Parsed};
use tidepool_loadgen::report::stats::Interval;

fn check_parser(buf: &[u8], head: bool) {
    let parsed = parse_response(buf, head);
    if let Parsed::Done { status, len, close } = parsed {
        assert!(len > 0 && len <= buf.len(), "len {len} of {}", buf.len());
        match parse_response(&buf[..len], head) {
            Parsed::Done { status: s, len: l, close: c } => {
                assert_eq!((s, l, c), (status, len, close), "its own bytes parse the same")
            }
            other => panic!("its own bytes parse as {other:?}"),
        }
        for cut in [len - 1, len / 2] {
            if cut > 0 {
                assert!(
                    matches!(parse_response(&buf[..cut], head), Parsed::Partial),
                    "a prefix of {cut} is not incomplete"
                );
            }
        }
    }
    let status = match parsed {
        Parsed::Done { status, .. } | Parsed::UntilClose { status } => Some(status),
        _ => None,
    };
    if let Some(ours) = status {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(_)) = r.parse(buf) {
            assert_eq!(r.code, Some(ours), "status differs from httparse's");
        }
    }
}

fn exchange(parts: &[&[u8]], asked: usize, head: bool) -> (u64, bool) {
    let t0 = Instant::now();
    let mut ex = Exchange::with_depth(asked);
    let mut iv = Interval::new(0, 1);
    for _ in 0..asked {
        ex.inflight.push_back(InFlight {
            intended: t0,
            sent: t0,
            class: 0,
            head,
        });
    }
    let mut broken = false;
    for p in parts {
        if ex.feed(p, t0, &mut iv).is_err() {
            broken = true;
            break;
        }
    }
    let done = iv.classes[0].as_ref().map_or(0, |c| c.completed());
    assert!(done <= asked as u64, "{done} responses to {asked} requests");
    (done, broken)
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, body)) = data.split_first() else { return };
    let head = ctl & 1 == 1;
    let asked = usize::from(ctl >> 1 & 7) + 1;
    check_parser(body, head);
    let at = (usize::from(ctl) * 13) % (body.len() + 1);
    let whole = exchange(&[body], asked, head);
    let split = exchange(&[&body[..at], &body[at..]], asked, head);
    if !whole.1 && !split.1 {
        assert_eq!(whole.0, split.0, "split at {at} completes differently");
    }
});
