//! The request-head parser on arbitrary bytes, differentially against
//! httparse: whatever Tidepool accepts as a complete head, httparse must
//! parse to the same method, target and header fields (Tidepool is
//! stricter, RFC 9112; the reverse is not required), and its path and
//! query must be the target's split at the first '?'. Also: the same bytes
//! split anywhere never turn a rejection into an acceptance.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidepool_engine::http::parse::{parse_request, Header, Limits, Parsed};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let mut slots = [Header::EMPTY; 64];
    let Ok(Parsed::Complete(head)) = parse_request(data, &mut slots, &limits) else {
        return;
    };
    let mut theirs = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut theirs);
    match req.parse(data) {
        Ok(httparse::Status::Complete(len)) => {
            assert_eq!(len, head.head_len, "head length");
            assert_eq!(req.method, Some(head.method), "method");
            assert_eq!(req.path, Some(head.target), "target");
            // The query is what follows the target's first '?' (found by
            // the parser's target scan itself).
            let query = head.target.split_once('?').map(|(_, q)| q);
            assert_eq!(head.query(), query, "query");
            if head.target.starts_with('/') {
                let path = head.target.split('?').next();
                assert_eq!(Some(head.path()), path, "path");
            }
            assert_eq!(req.headers.len(), head.headers.len(), "field count");
            for (a, b) in req.headers.iter().zip(head.headers) {
                assert!(a.name.eq_ignore_ascii_case(b.name), "field name");
                assert_eq!(a.value, b.value, "field value");
            }
        }
        other => panic!("tidepool accepted a head httparse refuses: {other:?}"),
    }
    // Every prefix is either still partial or the same complete head.
    for cut in [1, data.len() / 2, head.head_len.saturating_sub(1)] {
        if cut == 0 || cut >= data.len() {
            continue;
        }
        let mut slots = [Header::EMPTY; 64];
        match parse_request(&data[..cut], &mut slots, &limits) {
            Ok(Parsed::Partial) => {}
            Ok(Parsed::Complete(h)) => assert_eq!(h.head_len, head.head_len),
            Err(e) => panic!("a prefix of an accepted head was refused: {e:?}"),
        }
    }
});
