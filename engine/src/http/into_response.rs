//! What a handler may return: anything that becomes a [`Response`].
//!
//! `Result<T, E>` with both sides `IntoResponse` is one, so handlers use
//! `?` on their own error type (which implements `IntoResponse` to say
//! how it is shown) or on a [`Rejection`](super::extract::Rejection).

use std::borrow::Cow;

use super::response::{Body, Response};
use super::status::Status;

/// Turns a handler's return value into the response sent.
pub trait IntoResponse {
    fn into_response(self) -> Response;
}

impl IntoResponse for Response {
    fn into_response(self) -> Response {
        self
    }
}

/// The status with an empty body.
impl IntoResponse for Status {
    fn into_response(self) -> Response {
        Response::new(self)
    }
}

/// 200 with an empty body.
impl IntoResponse for () {
    fn into_response(self) -> Response {
        Response::new(Status::OK)
    }
}

/// 200, `text/plain; charset=utf-8`, no allocation.
impl IntoResponse for &'static str {
    fn into_response(self) -> Response {
        Response {
            content_type: Some("text/plain; charset=utf-8"),
            body: Body::Static(self.as_bytes()),
            ..Response::new(Status::OK)
        }
    }
}

/// 200, `text/plain; charset=utf-8`.
impl IntoResponse for String {
    fn into_response(self) -> Response {
        Response::text_owned(self)
    }
}

/// 200, `text/plain; charset=utf-8`.
impl IntoResponse for Cow<'static, str> {
    fn into_response(self) -> Response {
        match self {
            Cow::Borrowed(s) => s.into_response(),
            Cow::Owned(s) => s.into_response(),
        }
    }
}

/// 200, `application/octet-stream`.
impl IntoResponse for Vec<u8> {
    fn into_response(self) -> Response {
        Response::bytes("application/octet-stream", self)
    }
}

/// 200, `application/octet-stream`, no allocation.
impl IntoResponse for &'static [u8] {
    fn into_response(self) -> Response {
        Response {
            content_type: Some("application/octet-stream"),
            body: Body::Static(self),
            ..Response::new(Status::OK)
        }
    }
}

/// `T`'s response with this status.
impl<T: IntoResponse> IntoResponse for (Status, T) {
    fn into_response(self) -> Response {
        let mut r = self.1.into_response();
        r.status = self.0;
        r
    }
}

/// `T`'s response with these headers added (see [`Response::with_header`]).
impl<T: IntoResponse, const N: usize> IntoResponse for ([(&'static str, &'static str); N], T) {
    fn into_response(self) -> Response {
        let mut r = self.1.into_response();
        for (name, value) in self.0 {
            r = r.with_header(name, value);
        }
        r
    }
}

/// `T`'s response with this status and these headers.
impl<T: IntoResponse, const N: usize> IntoResponse
    for (Status, [(&'static str, &'static str); N], T)
{
    fn into_response(self) -> Response {
        let mut r = (self.1, self.2).into_response();
        r.status = self.0;
        r
    }
}

impl<T: IntoResponse, E: IntoResponse> IntoResponse for Result<T, E> {
    fn into_response(self) -> Response {
        match self {
            Ok(t) => t.into_response(),
            Err(e) => e.into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(r: &Response) -> &str {
        std::str::from_utf8(r.body.as_bytes()).unwrap()
    }

    #[test]
    fn plain_values() {
        let r = "hi".into_response();
        assert_eq!(
            (r.status, r.content_type),
            (Status::OK, Some("text/plain; charset=utf-8"))
        );
        assert_eq!(text(&r), "hi");
        let r = String::from("owned").into_response();
        assert_eq!(text(&r), "owned");
        let r = Cow::Borrowed("cow").into_response();
        assert_eq!(text(&r), "cow");
        let r = vec![1u8, 2].into_response();
        assert_eq!(r.content_type, Some("application/octet-stream"));
        assert_eq!(r.body.as_bytes(), [1, 2]);
        let r = (&b"raw"[..]).into_response();
        assert_eq!(r.body.as_bytes(), b"raw");
        let r = ().into_response();
        assert_eq!((r.status, r.body.as_bytes().len()), (Status::OK, 0));
        let r = Status::NO_CONTENT.into_response();
        assert_eq!(r.status, Status::NO_CONTENT);
    }

    #[test]
    fn status_and_headers_wrap_any_response() {
        let r = (Status::CREATED, "made").into_response();
        assert_eq!((r.status, text(&r)), (Status::CREATED, "made"));
        let r = ([("Location", "/todos/1")], "made").into_response();
        assert_eq!(r.headers, [("Location", Cow::Borrowed("/todos/1"))]);
        let r = (Status::CREATED, [("Location", "/todos/1")], "made").into_response();
        assert_eq!(r.status, Status::CREATED);
        assert_eq!(r.headers.len(), 1);
        // A header that would split the response is dropped, as with_header does.
        let r = ([("X-Bad", "a\r\nb")], "x").into_response();
        assert!(r.headers.is_empty());
    }

    #[test]
    fn results_take_either_side() {
        let ok: Result<&'static str, Status> = Ok("fine");
        assert_eq!(ok.into_response().status, Status::OK);
        let err: Result<&'static str, (Status, String)> =
            Err((Status::CONFLICT, "taken".to_string()));
        let r = err.into_response();
        assert_eq!((r.status, text(&r)), (Status::CONFLICT, "taken"));
    }
}
