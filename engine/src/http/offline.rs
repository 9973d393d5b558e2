//! One request served from bytes, without a connection: the path the
//! connection takes for a synchronous handler (parse, route, handler,
//! error renderer, framing, encode). For instruction-count benchmarks and
//! tests of what a request becomes; the server itself runs `conn.rs`.

use super::conn::{parse_head, FEW_HEADERS};
use super::parse::{Header, Limits, ParseError, Parsed};
use super::response::{encode, police, Framing};
use super::router::{Dispatch, Params, Request, Router};
use super::status::Status;
use crate::http::Response;

/// Parses the request at the start of `buf`, runs its route's handler (a
/// synchronous one; an async handler is answered 500 here) and appends
/// the response to `out`. Returns the request's length, `Ok(0)` when the
/// request is incomplete.
pub fn respond<S: 'static>(
    router: &Router<S>,
    buf: &[u8],
    date: &[u8],
    out: &mut Vec<u8>,
) -> Result<usize, ParseError> {
    // The header slots as the connection makes them (see `parse_head`).
    let mut few = [Header::EMPTY; FEW_HEADERS];
    let mut many = None;
    let head = match parse_head(buf, &mut few, &mut many, &Limits::default())? {
        Parsed::Complete(h) => h,
        Parsed::Partial => return Ok(0),
    };
    let mut params = None;
    let mut response = match router.find(head.method, head.path(), &mut params) {
        Err(r) => r,
        Ok((handler, _)) => {
            let req = Request::new(&head, Params::of(&params), &[]);
            let dispatched = router.dispatch(handler, &req);
            match dispatched {
                Dispatch::Ready(r) => r,
                Dispatch::Pending(_) => Response::error(
                    Status::INTERNAL_SERVER_ERROR,
                    "an async handler cannot be served offline",
                ),
            }
        }
    };
    router.finish(&mut response);
    let close = police(&mut response) || !head.keep_alive;
    let framing = Framing {
        head_only: head.method == "HEAD",
        close,
        keep_alive_10: head.version == super::parse::Version::Http10,
    };
    encode(&response, date, framing, out);
    Ok(head.head_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_becomes_its_response() {
        let router = Router::new(()).get_sync("/plaintext", |_, _| Response::text("Hello, World!"));
        let mut out = Vec::new();
        let raw = b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\nGET /plain";
        let used = respond(&router, raw, b"D", &mut out).unwrap();
        assert_eq!(used, raw.len() - 10);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 200 OK\r\n") && text.ends_with("Hello, World!"),
            "{text}"
        );
        let mut out = Vec::new();
        assert_eq!(
            respond(&router, &raw[used..], b"D", &mut out),
            Ok(0),
            "incomplete"
        );
        assert!(out.is_empty());
        respond(
            &router,
            b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n",
            b"D",
            &mut out,
        )
        .unwrap();
        assert!(out.starts_with(b"HTTP/1.1 404 "));
    }
}
