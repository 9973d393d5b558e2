//! What handlers return, and how it becomes bytes.

use std::borrow::Cow;

use super::status::Status;

/// A response body. Static bodies cost no allocation.
#[derive(Debug, Clone)]
pub enum Body {
    Empty,
    Static(&'static [u8]),
    Bytes(Vec<u8>),
}

impl Body {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Body::Empty => b"",
            Body::Static(b) => b,
            Body::Bytes(b) => b,
        }
    }
}

/// An HTTP response. `Content-Length`, `Date`, `Server` and `Connection`
/// are added by the server (framing headers a handler sets are dropped:
/// see `encode`); handlers set status, content type, extra headers and
/// the body. Handlers may return anything [`IntoResponse`](super::IntoResponse)
/// instead.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: Status,
    pub content_type: Option<&'static str>,
    pub headers: Vec<(&'static str, Cow<'static, str>)>,
    pub body: Body,
    /// Set by [`Response::error`]: the message the router's error renderer
    /// is given.
    pub(crate) error: Option<Box<str>>,
}

impl Response {
    pub fn new(status: Status) -> Response {
        Response {
            status,
            content_type: None,
            headers: Vec::new(),
            body: Body::Empty,
            error: None,
        }
    }

    /// 200 with a static text/plain body.
    pub fn text(body: &'static str) -> Response {
        Response {
            content_type: Some("text/plain"),
            body: Body::Static(body.as_bytes()),
            ..Response::new(Status::OK)
        }
    }

    /// 200 with an owned text/plain body.
    pub fn text_owned(body: String) -> Response {
        Response {
            content_type: Some("text/plain; charset=utf-8"),
            body: Body::Bytes(body.into_bytes()),
            ..Response::new(Status::OK)
        }
    }

    /// 200 with `value` serialized as JSON; a value that cannot be
    /// serialized becomes a 500.
    pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Response {
        match serde_json::to_vec(value) {
            Ok(body) => Response {
                content_type: Some("application/json"),
                body: Body::Bytes(body),
                ..Response::new(Status::OK)
            },
            Err(_) => Response::error(
                Status::INTERNAL_SERVER_ERROR,
                "response serialization failed",
            ),
        }
    }

    /// A bytes body with a content type.
    pub fn bytes(content_type: &'static str, body: Vec<u8>) -> Response {
        Response {
            content_type: Some(content_type),
            body: Body::Bytes(body),
            ..Response::new(Status::OK)
        }
    }

    /// An error: the status with a short message, rendered by the router's
    /// error renderer (`Router::error_renderer`; plain text by default).
    pub fn error(status: Status, message: &str) -> Response {
        let mut body = Vec::with_capacity(message.len() + 1);
        body.extend_from_slice(message.as_bytes());
        body.push(b'\n');
        Response {
            content_type: Some("text/plain; charset=utf-8"),
            body: Body::Bytes(body),
            error: Some(message.into()),
            ..Response::new(status)
        }
    }

    /// The message of a [`Response::error`].
    pub fn error_message(&self) -> Option<&str> {
        self.error.as_deref()
    }

    pub fn with_status(mut self, status: Status) -> Response {
        self.status = status;
        self
    }

    /// Adds a header. Names and values must not contain CR or LF; values that
    /// do are dropped rather than allowed to split the response.
    pub fn with_header(
        mut self,
        name: &'static str,
        value: impl Into<Cow<'static, str>>,
    ) -> Response {
        let value = value.into();
        if !name.is_empty()
            && !name
                .bytes()
                .any(|b| b == b'\r' || b == b'\n' || b == b':' || b == b' ')
            && !value.bytes().any(|b| b == b'\r' || b == b'\n')
        {
            self.headers.push((name, value));
        }
        self
    }
}

impl From<&'static str> for Response {
    fn from(s: &'static str) -> Response {
        Response::text(s)
    }
}

/// Appends the decimal form of `n` without allocating.
#[inline]
pub(crate) fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    // Lengths under 1,000 (most bodies) are copied as fixed-size arrays,
    // which compile to plain stores: a copy of a runtime-length slice is a
    // `memmove` call, which for two or three digits costs more than the
    // digits. Longer numbers are pushed lowest first and reversed in place.
    let digit = |d: u64| b'0' + d as u8;
    match n {
        0..=9 => return out.push(digit(n)),
        10..=99 => return out.extend_from_slice(&[digit(n / 10), digit(n % 10)]),
        100..=999 => {
            return out.extend_from_slice(&[digit(n / 100), digit(n / 10 % 10), digit(n % 10)])
        }
        _ => {}
    }
    let start = out.len();
    loop {
        out.push(b'0' + (n % 10) as u8);
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out[start..].reverse();
}

/// Header names the server owns: a handler's are dropped, since the
/// server frames the body itself (RFC 9112 §6: a second Content-Length or
/// a Transfer-Encoding beside it would make the response ambiguous) and
/// says itself whether the connection stays open.
fn framing_header(name: &str) -> bool {
    name.eq_ignore_ascii_case("content-length")
        || name.eq_ignore_ascii_case("transfer-encoding")
        || name.eq_ignore_ascii_case("connection")
}

/// Makes a handler's response one the server can send, as hyper's
/// response role does; returns whether the connection must close after it.
/// A 1xx cannot end an exchange (RFC 9110 §15.2): it becomes a 500. A
/// `Connection: close` from the handler is honoured (the header itself is
/// rewritten by `encode`).
pub(crate) fn police(resp: &mut Response) -> bool {
    if resp.status.is_informational() {
        *resp = Response::error(
            Status::INTERNAL_SERVER_ERROR,
            "a handler answered with an informational (1xx) status",
        );
        return false;
    }
    resp.headers.iter().any(|(name, value)| {
        name.eq_ignore_ascii_case("connection")
            && value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("close"))
    })
}

/// How a response is framed for the request it answers.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Framing {
    /// A HEAD request: the body is omitted, its Content-Length kept.
    pub(crate) head_only: bool,
    /// The connection closes after this response: `Connection: close`.
    pub(crate) close: bool,
    /// The request was HTTP/1.0 and the connection stays open: say
    /// `Connection: keep-alive`, which a 1.0 client needs to hear.
    pub(crate) keep_alive_10: bool,
}

/// Writes `resp` as an HTTP/1.1 response into `out`, with the server's own
/// framing (the handler's framing headers are left out: see `police`).
pub(crate) fn encode(resp: &Response, date: &[u8], framing: Framing, out: &mut Vec<u8>) {
    let body = resp.body.as_bytes();
    // Constant-length copies compile to plain stores; most responses are
    // 200s with an IMF-fixdate (29 bytes), so those take that path.
    if resp.status == Status::OK {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\nServer: tidepool\r\nDate: ");
    } else {
        out.extend_from_slice(b"HTTP/1.1 ");
        push_decimal(out, u64::from(resp.status.as_u16()));
        out.push(b' ');
        out.extend_from_slice(resp.status.reason().as_bytes());
        out.extend_from_slice(b"\r\nServer: tidepool\r\nDate: ");
    }
    match <&[u8; 29]>::try_from(date) {
        Ok(fixed) => out.extend_from_slice(fixed),
        Err(_) => out.extend_from_slice(date),
    }
    if let Some(ct) = resp.content_type {
        out.extend_from_slice(b"\r\nContent-Type: ");
        out.extend_from_slice(ct.as_bytes());
    }
    for (name, value) in &resp.headers {
        if framing_header(name) {
            continue;
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
    }
    // 1xx, 204 and 304 carry no body and no length (RFC 9110 8.6).
    let bodyless = resp.status.is_bodyless();
    if !bodyless {
        out.extend_from_slice(b"\r\nContent-Length: ");
        push_decimal(out, body.len() as u64);
    }
    if framing.close {
        out.extend_from_slice(b"\r\nConnection: close");
    } else if framing.keep_alive_10 {
        out.extend_from_slice(b"\r\nConnection: keep-alive");
    }
    out.extend_from_slice(b"\r\n\r\n");
    if !framing.head_only && !bodyless {
        out.extend_from_slice(body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_with_length_and_date() {
        let mut out = Vec::new();
        let date = b"Mon, 23 Nov 2026 19:28:34 GMT";
        encode(
            &Response::text("Hello, World!"),
            date,
            Framing::default(),
            &mut out,
        );
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "HTTP/1.1 200 OK\r\nServer: tidepool\r\nDate: Mon, 23 Nov 2026 19:28:34 GMT\r\n\
             Content-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!"
        );
    }

    #[test]
    fn head_keeps_length_and_drops_body_and_204_has_no_length() {
        let mut out = Vec::new();
        let head_close = Framing {
            head_only: true,
            close: true,
            ..Framing::default()
        };
        encode(&Response::text("abc"), b"D", head_close, &mut out);
        let s = std::str::from_utf8(&out).unwrap();
        assert!(
            s.ends_with("Content-Length: 3\r\nConnection: close\r\n\r\n"),
            "{s}"
        );
        out.clear();
        encode(
            &Response::new(Status::NO_CONTENT),
            b"D",
            Framing::default(),
            &mut out,
        );
        assert!(!std::str::from_utf8(&out)
            .unwrap()
            .contains("Content-Length"));
    }

    #[test]
    fn header_injection_is_refused() {
        let r = Response::text("x")
            .with_header("X-A", "ok")
            .with_header("X-B", "bad\r\nSet-Cookie: a");
        assert_eq!(r.headers.len(), 1);
    }

    fn encoded(resp: &Response, framing: Framing) -> String {
        let mut out = Vec::new();
        encode(resp, b"D", framing, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_handlers_framing_headers_are_replaced_by_the_servers() {
        let r = Response::text("abc")
            .with_header("Content-Length", "99")
            .with_header("transfer-encoding", "chunked")
            .with_header("Connection", "keep-alive, Upgrade")
            .with_header("X-Kept", "yes");
        let s = encoded(&r, Framing::default());
        assert_eq!(s.matches("Content-Length").count(), 1, "{s}");
        assert!(s.contains("Content-Length: 3\r\n"), "{s}");
        assert!(!s.to_ascii_lowercase().contains("transfer-encoding"), "{s}");
        assert!(!s.contains("Connection"), "{s}");
        assert!(s.contains("X-Kept: yes"), "{s}");
    }

    #[test]
    fn connection_close_from_a_handler_is_honoured() {
        let mut r = Response::text("bye").with_header("connection", "Close");
        assert!(police(&mut r));
        let s = encoded(
            &r,
            Framing {
                close: true,
                ..Framing::default()
            },
        );
        assert_eq!(s.matches("Connection").count(), 1, "{s}");
        assert!(s.contains("Connection: close\r\n"), "{s}");
        let mut r = Response::text("stay").with_header("Connection", "keep-alive");
        assert!(!police(&mut r));
    }

    #[test]
    fn an_informational_status_is_never_final() {
        let mut r = Response::new(Status::CONTINUE);
        police(&mut r);
        assert_eq!(r.status, Status::INTERNAL_SERVER_ERROR);
        assert!(encoded(&r, Framing::default()).starts_with("HTTP/1.1 500 "));
    }

    #[test]
    fn http_10_keep_alive_is_said() {
        let keep = Framing {
            keep_alive_10: true,
            ..Framing::default()
        };
        assert!(encoded(&Response::text("x"), keep).contains("Connection: keep-alive\r\n"));
        // Closing wins.
        let both = Framing {
            close: true,
            ..keep
        };
        let s = encoded(&Response::text("x"), both);
        assert!(
            s.contains("Connection: close") && !s.contains("keep-alive"),
            "{s}"
        );
    }

    #[test]
    fn decimal() {
        for n in [0u64, 7, 9, 10, 42, 99, 100, 305, 999, 1000, 12345, u64::MAX] {
            let mut v = Vec::new();
            push_decimal(&mut v, n);
            assert_eq!(v, n.to_string().into_bytes());
        }
    }
}
