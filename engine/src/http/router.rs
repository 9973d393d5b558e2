//! Method + path routing to handlers that run on the worker.
//!
//! Paths are literal segments and `{name}` captures. Handlers are either
//! plain functions (no allocation per request) or async functions, which may
//! await ring operations (database queries) on the worker that parsed the
//! request. Either returns anything [`IntoResponse`]: a `Response`, text,
//! `Json`, `(Status, T)`, or a `Result` of those, so handlers use `?`.
//!
//! The framework's own error responses (400, 404, 405, 408, 413, 500, 503,
//! and extractor rejections) go through one renderer, text by default, that
//! an app can replace to answer them in its own format.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use tidepool_engine::http::{IntoResponse, Json, Rejection, Request, Response, Router, Status};
//!
//! struct State;
//!
//! #[derive(Deserialize)]
//! struct NewTodo {
//!     title: String,
//! }
//!
//! #[derive(Serialize)]
//! struct Todo {
//!     id: i64,
//!     title: String,
//! }
//!
//! /// The app's error: how each failure is shown.
//! enum AppError {
//!     BadRequest(Rejection),
//!     NotFound,
//! }
//!
//! impl From<Rejection> for AppError {
//!     fn from(r: Rejection) -> Self {
//!         AppError::BadRequest(r)
//!     }
//! }
//!
//! impl IntoResponse for AppError {
//!     fn into_response(self) -> Response {
//!         match self {
//!             AppError::BadRequest(r) => r.into_response(),
//!             AppError::NotFound => Response::error(Status::NOT_FOUND, "no such todo"),
//!         }
//!     }
//! }
//!
//! async fn create(req: &Request<'_>, _: &State) -> Result<(Status, Json<Todo>), AppError> {
//!     let Json(new): Json<NewTodo> = req.extract()?;
//!     Ok((Status::CREATED, Json(Todo { id: 1, title: new.title })))
//! }
//!
//! async fn show(req: &Request<'_>, _: &State) -> Result<Json<Todo>, AppError> {
//!     let id: i64 = req.path_param("id")?;
//!     if id != 1 {
//!         return Err(AppError::NotFound);
//!     }
//!     Ok(Json(Todo { id, title: "write docs".into() }))
//! }
//!
//! let router = Router::new(State)
//!     .post("/todos", create)
//!     .get("/todos/{id}", show)
//!     // An async closure works as well.
//!     .get("/health", async |_, _| "ok");
//! # let _ = router;
//! ```
//!
//! A closure that returns an `async` block (`|req, st| async move { … }`)
//! does not work: the future borrows the request, which such a closure
//! cannot express. The compiler says "lifetime may not live long enough";
//! write an async closure (`async |req, st| { … }`) or an `async fn`
//! instead:
//!
//! ```compile_fail
//! use tidepool_engine::http::{Request, Router};
//! let router = Router::new(()).get("/x", |req: &Request<'_>, _: &()| async move {
//!     req.path().to_string()
//! });
//! ```

use std::borrow::Cow;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use super::extract::{decode_lossy, decode_query_part};
use super::into_response::IntoResponse;
use super::method::Method;
use super::parse::RequestHead;
use super::response::Response;
use super::status::Status;

/// Most path parameters a route may capture.
pub const MAX_PARAMS: usize = 8;

/// A request as handlers see it: the parsed head (borrowing the connection's
/// read buffer), captured path parameters, and the body.
pub struct Request<'r> {
    head: &'r RequestHead<'r, 'r>,
    params: &'r Params<'r>,
    body: &'r [u8],
}

impl<'r> Request<'r> {
    pub(crate) fn new(
        head: &'r RequestHead<'r, 'r>,
        params: &'r Params<'r>,
        body: &'r [u8],
    ) -> Self {
        Request { head, params, body }
    }

    /// The method token as sent (`"GET"`, or an extension method).
    pub fn method(&self) -> &'r str {
        self.head.method
    }

    /// The request target's path (before `?`), as sent (percent-encoded).
    pub fn path(&self) -> &'r str {
        self.head.path()
    }

    /// The raw query string (after `?`), if any.
    pub fn query(&self) -> Option<&'r str> {
        self.head.query()
    }

    /// The first value of a query parameter, percent-decoded (`+` is a
    /// space): `?q=a%20b+c` gives "a b c". See also `query_as`.
    pub fn query_param(&self, name: &str) -> Option<Cow<'r, str>> {
        self.query()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_query_part(k) == name).then(|| decode_query_part(v))
        })
    }

    /// The first value of a header (case-insensitive name), as bytes; see
    /// also `header_str`.
    pub fn header(&self, name: &str) -> Option<&'r [u8]> {
        self.head.header(name)
    }

    pub fn head(&self) -> &'r RequestHead<'r, 'r> {
        self.head
    }

    /// A `{name}` segment captured by the route, percent-decoded (invalid
    /// UTF-8 becomes U+FFFD); `path_param` parses it and says what is wrong.
    pub fn param(&self, name: &str) -> Option<Cow<'r, str>> {
        self.raw_param(name).map(decode_lossy)
    }

    /// A `{name}` segment as sent (percent-encoded).
    pub fn raw_param(&self, name: &str) -> Option<&'r str> {
        self.params.get(name)
    }

    pub fn body(&self) -> &'r [u8] {
        self.body
    }
}

/// Captured path parameters, stored inline.
#[derive(Clone, Copy, Default)]
pub struct Params<'r> {
    items: [(&'r str, &'r str); MAX_PARAMS],
    len: usize,
}

/// No parameters: what a request routed to a literal path sees.
const NO_PARAMS: Params<'static> = Params {
    items: [("", ""); MAX_PARAMS],
    len: 0,
};

impl<'r> Params<'r> {
    /// The parameters [`Router::find`] captured into `found`, none when it
    /// left it empty (a literal route: nothing was written, not even the
    /// few hundred bytes of an empty `Params`).
    pub(crate) fn of<'a>(found: &'a Option<Params<'r>>) -> &'a Params<'r> {
        found.as_ref().unwrap_or(&NO_PARAMS)
    }

    /// A captured segment as sent (percent-encoded).
    pub fn get(&self, name: &str) -> Option<&'r str> {
        self.items[..self.len]
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

pub type BoxFuture<'a> = Pin<Box<dyn Future<Output = Response> + 'a>>;

/// An async handler: `async fn(&Request<'_>, &S) -> impl IntoResponse`.
pub(crate) trait AsyncHandler<S> {
    fn call<'a>(&'a self, req: &'a Request<'a>, state: &'a S) -> BoxFuture<'a>;
}

/// An async function whose output becomes a response.
struct Async<F, R>(F, PhantomData<fn() -> R>);

impl<S, F, R> AsyncHandler<S> for Async<F, R>
where
    F: AsyncFn(&Request<'_>, &S) -> R,
    R: IntoResponse,
{
    fn call<'a>(&'a self, req: &'a Request<'a>, state: &'a S) -> BoxFuture<'a> {
        Box::pin(async move { (self.0)(req, state).await.into_response() })
    }
}

type SyncFn<S> = Box<dyn Fn(&Request<'_>, &S) -> Response>;

pub(crate) enum Handler<S> {
    Sync(SyncFn<S>),
    Async(Box<dyn AsyncHandler<S>>),
}

/// Renders the framework's own error responses: the status and a short
/// message (what was wrong, for the client).
type Renderer = Box<dyn Fn(Status, &str) -> Response>;

enum Segment {
    Literal(String),
    Param(String),
}

struct Route<S> {
    method: Method,
    /// As written (`/todos/{id}`): the route's label in metrics.
    pattern: String,
    segments: Vec<Segment>,
    /// No parameters: the route matches by comparing the whole path.
    literal: bool,
    handler: Handler<S>,
}

/// Runs before a routed request's handler; a response it returns is sent
/// instead of calling the handler.
type Before<S> = Box<dyn Fn(&Request<'_>, &S) -> Option<Response>>;
/// Runs on a routed request's response before it is sent.
type After = Box<dyn Fn(&Request<'_>, &mut Response)>;

/// What the router decided for a request.
pub(crate) enum Dispatch<'a> {
    Ready(Response),
    Pending(BoxFuture<'a>),
}

/// Routes requests to handlers; `S` is the per-worker state handlers receive
/// (database pools, caches).
pub struct Router<S> {
    routes: Vec<Route<S>>,
    fallback: Option<Handler<S>>,
    renderer: Option<Renderer>,
    before: Vec<Before<S>>,
    after: Vec<After>,
    state: S,
}

impl<S: 'static> Router<S> {
    pub fn new(state: S) -> Router<S> {
        Router {
            routes: Vec::new(),
            fallback: None,
            renderer: None,
            before: Vec::new(),
            after: Vec::new(),
            state,
        }
    }

    pub fn state(&self) -> &S {
        &self.state
    }

    fn parse_path(path: &str) -> Vec<Segment> {
        assert!(path.starts_with('/'), "route paths start with '/': {path}");
        path.split('/')
            .skip(1)
            .map(
                |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    Some(name) => Segment::Param(name.to_string()),
                    None => Segment::Literal(s.to_string()),
                },
            )
            .collect()
    }

    fn add(mut self, method: Method, path: &str, handler: Handler<S>) -> Self {
        let segments = Self::parse_path(path);
        let params = segments
            .iter()
            .filter(|s| matches!(s, Segment::Param(_)))
            .count();
        assert!(
            params <= MAX_PARAMS,
            "at most {MAX_PARAMS} parameters per route"
        );
        self.routes.push(Route {
            method,
            pattern: path.to_string(),
            segments,
            literal: params == 0,
            handler,
        });
        self
    }

    fn sync_handler<R: IntoResponse>(f: impl Fn(&Request<'_>, &S) -> R + 'static) -> Handler<S> {
        Handler::Sync(Box::new(move |req, state| f(req, state).into_response()))
    }

    fn async_handler<F, R>(f: F) -> Handler<S>
    where
        F: AsyncFn(&Request<'_>, &S) -> R + 'static,
        R: IntoResponse + 'static,
    {
        Handler::Async(Box::new(Async(f, PhantomData)))
    }

    /// A synchronous handler: runs inline, allocates nothing per request
    /// (beyond what its response does).
    pub fn route_sync<R: IntoResponse>(
        self,
        method: Method,
        path: &str,
        f: impl Fn(&Request<'_>, &S) -> R + 'static,
    ) -> Self {
        self.add(method, path, Self::sync_handler(f))
    }

    /// An async handler that may await ring operations on this worker:
    /// an `async fn(&Request<'_>, &S) -> impl IntoResponse`, or an async
    /// closure `async |req, state| { … }`.
    pub fn route<F, R>(self, method: Method, path: &str, f: F) -> Self
    where
        F: AsyncFn(&Request<'_>, &S) -> R + 'static,
        R: IntoResponse + 'static,
    {
        self.add(method, path, Self::async_handler(f))
    }

    /// GET (and HEAD, answered by the same handler without the body).
    pub fn get<F, R>(self, path: &str, f: F) -> Self
    where
        F: AsyncFn(&Request<'_>, &S) -> R + 'static,
        R: IntoResponse + 'static,
    {
        self.route(Method::Get, path, f)
    }

    pub fn post<F, R>(self, path: &str, f: F) -> Self
    where
        F: AsyncFn(&Request<'_>, &S) -> R + 'static,
        R: IntoResponse + 'static,
    {
        self.route(Method::Post, path, f)
    }

    pub fn put<F, R>(self, path: &str, f: F) -> Self
    where
        F: AsyncFn(&Request<'_>, &S) -> R + 'static,
        R: IntoResponse + 'static,
    {
        self.route(Method::Put, path, f)
    }

    pub fn patch<F, R>(self, path: &str, f: F) -> Self
    where
        F: AsyncFn(&Request<'_>, &S) -> R + 'static,
        R: IntoResponse + 'static,
    {
        self.route(Method::Patch, path, f)
    }

    pub fn delete<F, R>(self, path: &str, f: F) -> Self
    where
        F: AsyncFn(&Request<'_>, &S) -> R + 'static,
        R: IntoResponse + 'static,
    {
        self.route(Method::Delete, path, f)
    }

    /// A HEAD handler of its own (without one, GET's answers HEAD).
    pub fn head<F, R>(self, path: &str, f: F) -> Self
    where
        F: AsyncFn(&Request<'_>, &S) -> R + 'static,
        R: IntoResponse + 'static,
    {
        self.route(Method::Head, path, f)
    }

    pub fn options<F, R>(self, path: &str, f: F) -> Self
    where
        F: AsyncFn(&Request<'_>, &S) -> R + 'static,
        R: IntoResponse + 'static,
    {
        self.route(Method::Options, path, f)
    }

    pub fn get_sync<R: IntoResponse>(
        self,
        path: &str,
        f: impl Fn(&Request<'_>, &S) -> R + 'static,
    ) -> Self {
        self.route_sync(Method::Get, path, f)
    }

    /// The handler for requests whose path no route matches (instead of a
    /// 404 from the error renderer).
    pub fn fallback<F, R>(mut self, f: F) -> Self
    where
        F: AsyncFn(&Request<'_>, &S) -> R + 'static,
        R: IntoResponse + 'static,
    {
        self.fallback = Some(Self::async_handler(f));
        self
    }

    /// Renders the framework's own error responses (malformed requests,
    /// 404, 405, timeouts, panics, extractor rejections, and every
    /// `Response::error`): given the status and a short message, it
    /// returns the response to send (its status is kept as given, and a
    /// 405's `Allow` header is added back). Text by default.
    ///
    /// ```
    /// use tidepool_engine::http::{Response, Router, Status};
    /// let router = Router::new(()).error_renderer(|status, message| {
    ///     Response::json(&serde_json::json!({ "error": message })).with_status(status)
    /// });
    /// # let _ = router;
    /// ```
    pub fn error_renderer(mut self, f: impl Fn(Status, &str) -> Response + 'static) -> Self {
        self.renderer = Some(Box::new(f));
        self
    }

    /// Middleware: `f` runs before the handler of every routed request
    /// (the fallback's too), in the order added; when it returns a
    /// response, that is sent and the handler is not called
    /// (authentication, rate limits). A panic in it is a 500.
    pub fn before(mut self, f: impl Fn(&Request<'_>, &S) -> Option<Response> + 'static) -> Self {
        self.before.push(Box::new(f));
        self
    }

    /// Middleware: `f` sees and may change the response to every routed
    /// request before it is sent (headers, logging), in the order added.
    pub fn after(mut self, f: impl Fn(&Request<'_>, &mut Response) + 'static) -> Self {
        self.after.push(Box::new(f));
        self
    }

    /// The first `before` hook's answer, if one answers.
    pub(crate) fn run_before(&self, req: &Request<'_>) -> Option<Response> {
        self.before.iter().find_map(|f| f(req, &self.state))
    }

    /// Whether any `after` hook is set (the connection skips the call).
    pub(crate) fn has_after(&self) -> bool {
        !self.after.is_empty()
    }

    pub(crate) fn run_after(&self, req: &Request<'_>, resp: &mut Response) {
        for f in &self.after {
            f(req, resp);
        }
    }

    /// Each route's method and pattern, in the order route indexes count.
    pub(crate) fn route_list(&self) -> Vec<(&'static str, String)> {
        self.routes
            .iter()
            .map(|r| (r.method.as_str(), r.pattern.clone()))
            .collect()
    }

    /// Makes `resp` what is sent: an error response goes through the
    /// renderer. In place: a response is a hundred bytes, not worth moving
    /// twice per request for a check that almost always finds nothing.
    pub(crate) fn finish(&self, resp: &mut Response) {
        let (Some(render), Some(message)) = (&self.renderer, resp.error_message()) else {
            return;
        };
        let mut out = render(resp.status, message);
        out.status = resp.status;
        // What the framework said besides the message (405's Allow, 503's
        // Retry-After) stays.
        for (name, value) in std::mem::take(&mut resp.headers) {
            if !out
                .headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(name))
            {
                out.headers.push((name, value));
            }
        }
        *resp = out;
    }

    // Inlined into `find`'s loop, where it runs for every route tried.
    #[inline(always)]
    fn matches<'p>(route: &'p Route<S>, path: &'p str, found: &mut Option<Params<'p>>) -> bool {
        let mut rest = path.strip_prefix('/').unwrap_or(path);
        if route.literal {
            if let Some(p) = found {
                p.len = 0;
            }
            // What the walk below decides for literal segments, in one
            // comparison: the pattern's segments are its text after '/'.
            return rest == &route.pattern[1..];
        }
        let params = found.get_or_insert_with(Params::default);
        params.len = 0;
        let mut segs = route.segments.iter();
        loop {
            let seg = segs.next();
            let (part, more) = match rest.find('/') {
                Some(i) => (&rest[..i], Some(&rest[i + 1..])),
                None => (rest, None),
            };
            match seg {
                None => return false,
                Some(Segment::Literal(l)) if l != part => return false,
                Some(Segment::Literal(_)) => {}
                Some(Segment::Param(name)) => {
                    if part.is_empty() {
                        return false;
                    }
                    params.items[params.len] = (name.as_str(), part);
                    params.len += 1;
                }
            }
            match more {
                Some(m) => rest = m,
                None => return segs.next().is_none(),
            }
        }
    }

    /// The handler for `method` and `path`, with the path's parameters
    /// written into `found` (filled in place: it is a few hundred bytes,
    /// not worth moving twice per request, and left `None` for a literal
    /// route; read it with [`Params::of`]); else the fallback, a 404, or a
    /// 405 listing the allowed methods.
    /// The handler's route index is returned with it (`route_list`'s order;
    /// the fallback's is the number of routes).
    pub(crate) fn find<'a>(
        &'a self,
        method: &str,
        path: &'a str,
        found: &mut Option<Params<'a>>,
    ) -> Result<(&'a Handler<S>, usize), Response> {
        let mut allowed: Option<String> = None;
        let mut head_route = false;
        // Once, as a word-sized value: routes compare it, not the text.
        let wanted = Method::parse(method);
        for (i, route) in self.routes.iter().enumerate() {
            if !Self::matches(route, path, found) {
                continue;
            }
            if Some(route.method) == wanted {
                return Ok((&route.handler, i));
            }
            head_route |= route.method == Method::Head;
            let a = allowed.get_or_insert_with(String::new);
            if !a.is_empty() {
                a.push_str(", ");
            }
            a.push_str(route.method.as_str());
        }
        // GET answers HEAD unless the path has a HEAD route of its own.
        if wanted == Some(Method::Head) && !head_route {
            for (i, route) in self.routes.iter().enumerate() {
                if route.method == Method::Get && Self::matches(route, path, found) {
                    return Ok((&route.handler, i));
                }
            }
        }
        if let Some(p) = found {
            p.len = 0;
        }
        Err(match allowed {
            Some(mut a) => {
                if a.split(", ").any(|m| m == "GET") && !head_route {
                    a.push_str(", HEAD");
                }
                Response::error(Status::METHOD_NOT_ALLOWED, "method not allowed")
                    .with_header("Allow", a)
            }
            None => match &self.fallback {
                Some(h) => return Ok((h, self.routes.len())),
                None => Response::error(Status::NOT_FOUND, "not found"),
            },
        })
    }

    /// Runs the handler: sync handlers answer at once, async ones give a future.
    pub(crate) fn dispatch<'a>(
        &'a self,
        handler: &'a Handler<S>,
        req: &'a Request<'a>,
    ) -> Dispatch<'a> {
        match handler {
            Handler::Sync(f) => Dispatch::Ready(f(req, &self.state)),
            Handler::Async(h) => Dispatch::Pending(h.call(req, &self.state)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router<()> {
        Router::new(())
            .get_sync("/plaintext", |_, _| Response::text("hi"))
            .get_sync("/users/{id}/posts/{post}", |r, _| {
                Response::text_owned(format!(
                    "{}:{}",
                    r.param("id").unwrap(),
                    r.param("post").unwrap()
                ))
            })
            .route_sync(Method::Put, "/cache/{key}", |_, _| {
                Response::new(Status::NO_CONTENT)
            })
            .get_sync("/cache/{key}", |_, _| Response::new(Status::OK))
    }

    #[test]
    fn literal_and_params() {
        let r = router();
        let mut p = None;
        assert!(r.find("GET", "/plaintext", &mut p).is_ok());
        assert!(p.is_none(), "a literal route writes no parameters");
        assert!(r.find("GET", "/users/7/posts/abc", &mut p).is_ok());
        assert_eq!(Params::of(&p).get("id"), Some("7"));
        assert_eq!(Params::of(&p).get("post"), Some("abc"));
        // A literal route found after a parameterized one leaves none.
        assert!(r.find("GET", "/plaintext", &mut p).is_ok());
        assert!(Params::of(&p).is_empty());
        assert_eq!(
            r.find("GET", "/users/7/posts", &mut p)
                .err()
                .unwrap()
                .status,
            404
        );
        assert_eq!(
            r.find("GET", "/users//posts/x", &mut p)
                .err()
                .unwrap()
                .status,
            404
        );
        assert_eq!(
            r.find("GET", "/plaintext/", &mut p).err().unwrap().status,
            404
        );
        assert_eq!(r.find("GET", "/nope", &mut p).err().unwrap().status, 404);
    }

    /// A route without parameters matches by one comparison; it must
    /// decide exactly what the segment walk decides.
    #[test]
    fn a_literal_route_matches_what_its_segments_match() {
        let patterns = ["/", "/plaintext", "/a/b", "/a//b", "/a/"];
        let paths = [
            "",
            "/",
            "//",
            "plaintext",
            "/plaintext",
            "/plaintext/",
            "//plaintext",
            "/a/b",
            "a/b",
            "/a/b/",
            "/a//b",
            "/a/",
            "/a",
            "/ab",
        ];
        for pattern in patterns {
            let r = Router::new(()).get_sync(pattern, |_, _| Response::text("x"));
            let mut walked = Router::new(()).get_sync(pattern, |_, _| Response::text("x"));
            walked.routes[0].literal = false;
            for path in paths {
                let mut p = None;
                let fast = Router::matches(&r.routes[0], path, &mut p);
                let slow = Router::matches(&walked.routes[0], path, &mut p);
                assert_eq!(fast, slow, "route {pattern:?}, path {path:?}");
            }
        }
    }

    #[test]
    fn method_not_allowed_lists_allow() {
        let r = router();
        let resp = r.find("POST", "/cache/k", &mut None).err().unwrap();
        assert_eq!(resp.status, 405);
        let allow = &resp.headers.iter().find(|(n, _)| *n == "Allow").unwrap().1;
        assert_eq!(allow, "PUT, GET, HEAD");
        assert!(r.find("HEAD", "/plaintext", &mut None).is_ok());
    }

    use crate::http::parse::{parse_request, Header, Limits, Parsed};

    /// Runs `router` on one raw request as the connection would (sync
    /// handlers only) and returns the response as sent.
    fn answer<S: 'static>(router: &Router<S>, raw: &[u8]) -> Response {
        let mut headers = [Header::EMPTY; 16];
        let Ok(Parsed::Complete(head)) = parse_request(raw, &mut headers, &Limits::default())
        else {
            panic!("test request does not parse")
        };
        let mut params = None;
        let resp = match router.find(head.method, head.path(), &mut params) {
            Err(r) => r,
            Ok((h, _)) => {
                let req = Request::new(&head, Params::of(&params), &raw[head.head_len..]);
                let dispatched = router.dispatch(h, &req);
                match dispatched {
                    Dispatch::Ready(r) => r,
                    Dispatch::Pending(_) => panic!("async handler in a sync test"),
                }
            }
        };
        let mut resp = resp;
        router.finish(&mut resp);
        resp
    }

    fn body(r: &Response) -> &str {
        std::str::from_utf8(r.body.as_bytes()).unwrap()
    }

    #[test]
    fn handlers_return_anything_into_a_response() {
        let r = Router::new(())
            .get_sync("/text", |_, _| "plain")
            .get_sync("/created", |_, _| (Status::CREATED, String::from("new")))
            .get_sync("/result/{n}", |req, _| -> Result<String, Status> {
                let n: u32 = req.path_param("n").map_err(|_| Status::BAD_REQUEST)?;
                Ok(format!("n={n}"))
            });
        let resp = answer(&r, b"GET /text HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!((resp.status, body(&resp)), (Status::OK, "plain"));
        let resp = answer(&r, b"GET /created HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!((resp.status, body(&resp)), (Status::CREATED, "new"));
        let resp = answer(&r, b"GET /result/7 HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(body(&resp), "n=7");
        let resp = answer(&r, b"GET /result/x HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(resp.status, Status::BAD_REQUEST);
    }

    #[test]
    fn parameters_are_percent_decoded() {
        let r = Router::new(()).get_sync("/todos/{id}", |req, _| {
            let id: i64 = req.path_param("id")?;
            Ok::<_, crate::http::Rejection>(format!("{id} {}", req.param("id").unwrap()))
        });
        let resp = answer(&r, b"GET /todos/%31%32 HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!((resp.status, body(&resp)), (Status::OK, "12 12"));
        let resp = answer(&r, b"GET /todos/%ff HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(resp.status, Status::BAD_REQUEST);
        assert!(body(&resp).contains("`id`"), "{}", body(&resp));
    }

    #[test]
    fn every_method_routes_and_head_falls_back_to_get() {
        let r = Router::new(())
            .route_sync(Method::Patch, "/t", |_, _| "patched")
            .route_sync(Method::Options, "/t", |_, _| "options")
            .get_sync("/t", |_, _| "got")
            .get_sync("/h", |_, _| "got h")
            .route_sync(Method::Head, "/h", |_, _| "head h");
        assert_eq!(
            body(&answer(&r, b"PATCH /t HTTP/1.1\r\nHost: x\r\n\r\n")),
            "patched"
        );
        assert_eq!(
            body(&answer(&r, b"OPTIONS /t HTTP/1.1\r\nHost: x\r\n\r\n")),
            "options"
        );
        assert_eq!(
            body(&answer(&r, b"HEAD /t HTTP/1.1\r\nHost: x\r\n\r\n")),
            "got"
        );
        assert_eq!(
            body(&answer(&r, b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n")),
            "head h"
        );
        let resp = answer(&r, b"DELETE /t HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(resp.status, Status::METHOD_NOT_ALLOWED);
        let allow = &resp.headers.iter().find(|(n, _)| *n == "Allow").unwrap().1;
        assert_eq!(allow, "PATCH, OPTIONS, GET, HEAD");
    }

    #[test]
    fn the_fallback_answers_unrouted_paths_but_not_wrong_methods() {
        let r = Router::new(()).get_sync("/t", |_, _| "got").fallback(
            async |req: &Request<'_>, _: &()| {
                (Status::NOT_FOUND, format!("nothing at {}", req.path()))
            },
        );
        let mut params = None;
        assert!(
            r.find("GET", "/elsewhere", &mut params).is_ok(),
            "the fallback"
        );
        assert_eq!(
            r.find("POST", "/t", &mut params).err().map(|r| r.status),
            Some(Status::METHOD_NOT_ALLOWED)
        );
    }

    #[test]
    fn the_error_renderer_shapes_every_framework_error() {
        let r = Router::new(())
            .get_sync("/n/{n}", |req, _| {
                req.path_param::<u8>("n").map(|n| n.to_string())
            })
            .error_renderer(|status, message| {
                Response::json(&serde_json::json!({ "code": status.as_u16(), "error": message }))
            });
        let resp = answer(&r, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(resp.status, Status::NOT_FOUND, "the status is kept");
        assert_eq!(resp.content_type, Some("application/json"));
        assert_eq!(body(&resp), r#"{"code":404,"error":"not found"}"#);
        let resp = answer(
            &r,
            b"POST /n/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(resp.status, Status::METHOD_NOT_ALLOWED);
        assert!(resp
            .headers
            .iter()
            .any(|(n, v)| *n == "Allow" && v == "GET, HEAD"));
        // A rejection returned by a handler is rendered the same way.
        let resp = answer(&r, b"GET /n/300 HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(resp.status, Status::BAD_REQUEST);
        assert!(body(&resp).starts_with(r#"{"code":400,"error":"invalid path parameter `n`"#));
        // A response the handler built itself is left alone.
        let plain = Router::new(()).error_renderer(|_, _| Response::text("rendered"));
        let mut ok = Response::text("mine");
        plain.finish(&mut ok);
        assert_eq!(body(&ok), "mine");
    }
}
