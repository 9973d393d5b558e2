//! What handlers return, and how it becomes bytes.

use std::borrow::Cow;

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
/// are added by the server; handlers set status, content type, extra
/// headers and the body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub content_type: Option<&'static str>,
    pub headers: Vec<(&'static str, Cow<'static, str>)>,
    pub body: Body,
}

impl Response {
    pub fn new(status: u16) -> Response {
        Response {
            status,
            content_type: None,
            headers: Vec::new(),
            body: Body::Empty,
        }
    }

    /// 200 with a static text/plain body.
    pub fn text(body: &'static str) -> Response {
        Response {
            status: 200,
            content_type: Some("text/plain"),
            headers: Vec::new(),
            body: Body::Static(body.as_bytes()),
        }
    }

    /// 200 with an owned text/plain body.
    pub fn text_owned(body: String) -> Response {
        Response {
            status: 200,
            content_type: Some("text/plain; charset=utf-8"),
            headers: Vec::new(),
            body: Body::Bytes(body.into_bytes()),
        }
    }

    /// 200 with `value` serialized as JSON; a value that cannot be
    /// serialized becomes a 500.
    pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Response {
        match serde_json::to_vec(value) {
            Ok(body) => Response {
                status: 200,
                content_type: Some("application/json"),
                headers: Vec::new(),
                body: Body::Bytes(body),
            },
            Err(_) => Response::error(500, "response serialization failed"),
        }
    }

    /// A bytes body with a content type.
    pub fn bytes(content_type: &'static str, body: Vec<u8>) -> Response {
        Response {
            status: 200,
            content_type: Some(content_type),
            headers: Vec::new(),
            body: Body::Bytes(body),
        }
    }

    /// A status with a short plain-text explanation.
    pub fn error(status: u16, message: &str) -> Response {
        let mut body = Vec::with_capacity(message.len() + 1);
        body.extend_from_slice(message.as_bytes());
        body.push(b'\n');
        Response {
            status,
            content_type: Some("text/plain; charset=utf-8"),
            headers: Vec::new(),
            body: Body::Bytes(body),
        }
    }

    pub fn with_status(mut self, status: u16) -> Response {
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
        if !name.bytes().any(|b| b == b'\r' || b == b'\n' || b == b':')
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

/// The reason phrase for a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Appends the decimal form of `n` without allocating.
pub(crate) fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    // Digits are pushed lowest first and reversed in place: a copy of a
    // runtime-length slice is a `memmove` call, which for the two or three
    // digits of a Content-Length cost more than the rest of this.
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

/// Writes `resp` as an HTTP/1.1 response into `out`. `head_only` omits the
/// body (HEAD requests) but keeps its Content-Length; `close` adds
/// `Connection: close`.
pub(crate) fn encode(
    resp: &Response,
    date: &[u8],
    head_only: bool,
    close: bool,
    out: &mut Vec<u8>,
) {
    let body = resp.body.as_bytes();
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(resp.status));
    out.push(b' ');
    out.extend_from_slice(reason(resp.status).as_bytes());
    out.extend_from_slice(b"\r\nServer: tidepool\r\nDate: ");
    out.extend_from_slice(date);
    if let Some(ct) = resp.content_type {
        out.extend_from_slice(b"\r\nContent-Type: ");
        out.extend_from_slice(ct.as_bytes());
    }
    for (name, value) in &resp.headers {
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
    }
    // 1xx, 204 and 304 carry no body and no length (RFC 9110 8.6).
    let bodyless = resp.status < 200 || resp.status == 204 || resp.status == 304;
    if !bodyless {
        out.extend_from_slice(b"\r\nContent-Length: ");
        push_decimal(out, body.len() as u64);
    }
    if close {
        out.extend_from_slice(b"\r\nConnection: close");
    }
    out.extend_from_slice(b"\r\n\r\n");
    if !head_only && !bodyless {
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
            false,
            false,
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
        encode(&Response::text("abc"), b"D", true, true, &mut out);
        let s = std::str::from_utf8(&out).unwrap();
        assert!(
            s.ends_with("Content-Length: 3\r\nConnection: close\r\n\r\n"),
            "{s}"
        );
        out.clear();
        encode(&Response::new(204), b"D", false, false, &mut out);
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

    #[test]
    fn decimal() {
        for n in [0u64, 7, 10, 12345, u64::MAX] {
            let mut v = Vec::new();
            push_decimal(&mut v, n);
            assert_eq!(v, n.to_string().into_bytes());
        }
    }
}
