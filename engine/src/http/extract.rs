//! Typed views of a request: path parameters, the query, a JSON body,
//! headers. Each fails with a [`Rejection`] saying which part was wrong
//! and the status to answer with; a handler returns it as is (it is an
//! [`IntoResponse`]) or turns it into its own error type with `?`.
//!
//! Path parameters and query values are percent-decoded (`%31` is `1`;
//! in the query, `+` is a space), as clients encode them.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::into_response::IntoResponse;
use super::response::Response;
use super::router::Request;
use super::status::Status;

/// A JSON body in (an extractor: `let Json(todo) = req.extract()?`) or out
/// (a response: `application/json`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Json<T>(pub T);

/// The query string deserialized into `T` (`?limit=10&tag=a+b`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Query<T>(pub T);

/// What part of a request an extractor could not use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectionKind {
    /// The route captures no parameter of that name (a bug in the app: 500).
    MissingParam,
    /// A path parameter does not parse as the type asked for (400).
    InvalidParam,
    /// The query does not deserialize into the type asked for (400).
    InvalidQuery,
    /// A JSON body without `Content-Type: application/json` (415).
    UnsupportedMediaType,
    /// A body that is not JSON (400).
    InvalidJson,
    /// JSON of the wrong shape for the type asked for (422).
    UnexpectedJson,
    /// A required header is absent (400).
    MissingHeader,
    /// A header is not visible ASCII / UTF-8 (400).
    InvalidHeader,
}

/// Why an extractor refused a request, with the status to answer.
#[derive(Debug, Clone)]
pub struct Rejection {
    kind: RejectionKind,
    status: Status,
    message: String,
}

impl Rejection {
    fn new(kind: RejectionKind, message: String) -> Rejection {
        use RejectionKind::*;
        let status = match kind {
            MissingParam => Status::INTERNAL_SERVER_ERROR,
            UnsupportedMediaType => Status::UNSUPPORTED_MEDIA_TYPE,
            UnexpectedJson => Status::UNPROCESSABLE_CONTENT,
            InvalidParam | InvalidQuery | InvalidJson | MissingHeader | InvalidHeader => {
                Status::BAD_REQUEST
            }
        };
        Rejection {
            kind,
            status,
            message,
        }
    }

    pub fn kind(&self) -> RejectionKind {
        self.kind
    }

    pub fn status(&self) -> Status {
        self.status
    }

    /// What was wrong, for the client (it names the part, not internals).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Rejection {}

/// The status with the message, rendered by the router's error renderer
/// (text by default; see `Router::error_renderer`).
impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        Response::error(self.status, &self.message)
    }
}

/// `application/json`; a value that cannot be serialized is a 500.
impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        Response::json(&self.0)
    }
}

/// A typed part of a request (see [`Request::extract`]).
pub trait FromRequest<'r>: Sized {
    fn from_request(req: &Request<'r>) -> Result<Self, Rejection>;
}

impl<'r, T: DeserializeOwned> FromRequest<'r> for Json<T> {
    fn from_request(req: &Request<'r>) -> Result<Self, Rejection> {
        req.json().map(Json)
    }
}

impl<'r, T: DeserializeOwned> FromRequest<'r> for Query<T> {
    fn from_request(req: &Request<'r>) -> Result<Self, Rejection> {
        req.query_as().map(Query)
    }
}

/// `raw` percent-decoded; invalid UTF-8 after decoding becomes U+FFFD.
pub(crate) fn decode_lossy(raw: &str) -> Cow<'_, str> {
    percent_encoding::percent_decode_str(raw).decode_utf8_lossy()
}

/// A query component decoded as forms encode it: `+` is a space.
pub(crate) fn decode_query_part(raw: &str) -> Cow<'_, str> {
    if raw.contains('+') {
        Cow::Owned(decode_lossy(&raw.replace('+', " ")).into_owned())
    } else {
        decode_lossy(raw)
    }
}

impl<'r> Request<'r> {
    /// Extracts a typed part: `let Json(body): Json<NewTodo> = req.extract()?;`.
    pub fn extract<T: FromRequest<'r>>(&self) -> Result<T, Rejection> {
        T::from_request(self)
    }

    /// Path parameter `name` parsed as `T` (after percent-decoding):
    /// `let id: i64 = req.path_param("id")?;`.
    pub fn path_param<T>(&self, name: &str) -> Result<T, Rejection>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        let Some(raw) = self.raw_param(name) else {
            return Err(Rejection::new(
                RejectionKind::MissingParam,
                format!("the route captures no parameter `{name}`"),
            ));
        };
        let invalid = |why: String| {
            Rejection::new(
                RejectionKind::InvalidParam,
                format!("invalid path parameter `{name}`: {why}"),
            )
        };
        let decoded = percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| invalid("not UTF-8 once decoded".into()))?;
        decoded.parse().map_err(|e: T::Err| invalid(e.to_string()))
    }

    /// The query deserialized into `T` (a struct with `serde::Deserialize`);
    /// no query is an empty one.
    pub fn query_as<T: DeserializeOwned>(&self) -> Result<T, Rejection> {
        serde_urlencoded::from_str(self.query().unwrap_or(""))
            .map_err(|e| Rejection::new(RejectionKind::InvalidQuery, format!("invalid query: {e}")))
    }

    /// The body as JSON of type `T`. The request must say
    /// `Content-Type: application/json` (or a `+json` type): 415 if not;
    /// 400 if the body is not JSON, 422 if it is JSON of another shape.
    /// (A body over `HttpConfig::max_body` was answered 413 before the
    /// handler ran.)
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Rejection> {
        if !self.header_str("content-type").is_some_and(is_json) {
            return Err(Rejection::new(
                RejectionKind::UnsupportedMediaType,
                "expected a body with Content-Type: application/json".into(),
            ));
        }
        serde_json::from_slice(self.body()).map_err(|e| {
            let kind = if e.is_data() {
                RejectionKind::UnexpectedJson
            } else {
                RejectionKind::InvalidJson
            };
            Rejection::new(kind, format!("invalid JSON body: {e}"))
        })
    }

    /// A header's first value as text; `None` if absent or not UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&'r str> {
        std::str::from_utf8(self.header(name)?).ok()
    }

    /// A header that must be there, as text.
    pub fn required_header(&self, name: &str) -> Result<&'r str, Rejection> {
        let raw = self.header(name).ok_or_else(|| {
            Rejection::new(
                RejectionKind::MissingHeader,
                format!("missing header {name}"),
            )
        })?;
        std::str::from_utf8(raw).map_err(|_| {
            Rejection::new(
                RejectionKind::InvalidHeader,
                format!("header {name} is not UTF-8"),
            )
        })
    }
}

/// `application/json`, or `application/<something>+json`, with any parameters.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse::{parse_request, Header, Limits, Parsed, RequestHead};
    use crate::http::router::Params;
    use serde::Deserialize;

    /// Parses `raw` and runs `f` on it as a request (no route parameters).
    fn with_request<T>(raw: &[u8], f: impl FnOnce(&Request<'_>) -> T) -> T {
        let mut headers = [Header::EMPTY; 16];
        let Ok(Parsed::Complete(head)) = parse_request(raw, &mut headers, &Limits::default())
        else {
            panic!("test request does not parse")
        };
        let head: &RequestHead<'_, '_> = &head;
        let params = Params::default();
        f(&Request::new(head, &params, &raw[head.head_len..]))
    }

    #[derive(Deserialize, Debug, PartialEq)]
    struct Page {
        limit: u32,
        tag: Option<String>,
    }

    #[test]
    fn query_values_are_decoded_and_deserialized() {
        let raw = b"GET /todos?limit=5&tag=a%20b+c HTTP/1.1\r\nHost: x\r\n\r\n";
        with_request(raw, |req| {
            assert_eq!(req.query_param("tag").as_deref(), Some("a b c"));
            assert_eq!(req.query_param("missing"), None);
            let Query(page): Query<Page> = req.extract().unwrap();
            assert_eq!(
                page,
                Page {
                    limit: 5,
                    tag: Some("a b c".into())
                }
            );
        });
        with_request(
            b"GET /todos?limit=lots HTTP/1.1\r\nHost: x\r\n\r\n",
            |req| {
                let e = req.query_as::<Page>().unwrap_err();
                assert_eq!(
                    (e.kind(), e.status()),
                    (RejectionKind::InvalidQuery, Status::BAD_REQUEST)
                );
            },
        );
        // Encoded names match too.
        with_request(b"GET /?%6Cimit=1 HTTP/1.1\r\nHost: x\r\n\r\n", |req| {
            assert_eq!(req.query_param("limit").as_deref(), Some("1"));
        });
    }

    #[derive(Deserialize, Debug, PartialEq)]
    struct NewTodo {
        title: String,
    }

    fn post(content_type: Option<&str>, body: &str) -> Vec<u8> {
        let ct = content_type.map_or(String::new(), |c| format!("Content-Type: {c}\r\n"));
        format!(
            "POST /todos HTTP/1.1\r\nHost: x\r\n{ct}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    #[test]
    fn json_bodies_check_their_type_and_shape() {
        let ok = post(Some("application/json; charset=utf-8"), r#"{"title":"t"}"#);
        with_request(&ok, |req| {
            let Json(t): Json<NewTodo> = req.extract().unwrap();
            assert_eq!(t.title, "t");
        });
        let vendor = post(Some("application/vnd.api+json"), r#"{"title":"v"}"#);
        with_request(&vendor, |req| assert!(req.json::<NewTodo>().is_ok()));
        for (ct, body, kind, status) in [
            (
                None,
                r#"{"title":"t"}"#,
                RejectionKind::UnsupportedMediaType,
                415,
            ),
            (
                Some("text/plain"),
                r#"{"title":"t"}"#,
                RejectionKind::UnsupportedMediaType,
                415,
            ),
            (
                Some("application/json"),
                r#"{"title":"#,
                RejectionKind::InvalidJson,
                400,
            ),
            (
                Some("application/json"),
                r#"{"name":"t"}"#,
                RejectionKind::UnexpectedJson,
                422,
            ),
        ] {
            let raw = post(ct, body);
            with_request(&raw, |req| {
                let e = req.json::<NewTodo>().unwrap_err();
                assert_eq!(
                    (e.kind(), e.status().as_u16()),
                    (kind, status),
                    "{ct:?} {body}"
                );
                let resp = e.into_response();
                assert_eq!(resp.status.as_u16(), status);
                assert!(
                    resp.error_message().is_some(),
                    "rendered as a framework error"
                );
            });
        }
    }

    #[test]
    fn headers_as_text() {
        let raw = b"GET / HTTP/1.1\r\nHost: x\r\nX-Token: abc\r\nX-Bin: \xff\r\n\r\n";
        with_request(raw, |req| {
            assert_eq!(req.header_str("x-token"), Some("abc"));
            assert_eq!(req.header_str("x-bin"), None);
            assert_eq!(req.required_header("X-Token").unwrap(), "abc");
            let e = req.required_header("x-missing").unwrap_err();
            assert_eq!(
                (e.kind(), e.status()),
                (RejectionKind::MissingHeader, Status::BAD_REQUEST)
            );
            let e = req.required_header("x-bin").unwrap_err();
            assert_eq!(e.kind(), RejectionKind::InvalidHeader);
        });
    }

    #[test]
    fn a_parameter_the_route_does_not_capture_is_the_apps_bug() {
        with_request(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", |req| {
            let e = req.path_param::<u32>("id").unwrap_err();
            assert_eq!(
                (e.kind(), e.status()),
                (RejectionKind::MissingParam, Status::INTERNAL_SERVER_ERROR)
            );
        });
    }

    #[test]
    fn json_responses() {
        let r = Json(serde_json::json!({"a": 1})).into_response();
        assert_eq!(r.content_type, Some("application/json"));
        assert_eq!(r.body.as_bytes(), br#"{"a":1}"#);
        let r = (Status::CREATED, Json([1, 2])).into_response();
        assert_eq!(r.status, Status::CREATED);
    }
}
