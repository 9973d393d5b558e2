//! Method + path routing to handlers that run on the worker.
//!
//! Paths are literal segments and `{name}` captures. Handlers are either
//! plain functions (no allocation per request) or async functions, which may
//! await ring operations (database queries) on the worker that parsed the
//! request.

use std::future::Future;
use std::pin::Pin;

use super::parse::RequestHead;
use super::response::Response;

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

    pub fn method(&self) -> &'r str {
        self.head.method
    }

    /// The request target's path (before `?`).
    pub fn path(&self) -> &'r str {
        self.head.path()
    }

    /// The raw query string (after `?`), if any.
    pub fn query(&self) -> Option<&'r str> {
        self.head.query()
    }

    /// The first value of a query parameter, undecoded (`n=5` -> "5").
    pub fn query_param(&self, name: &str) -> Option<&'r str> {
        self.query()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then_some(v)
        })
    }

    /// The first value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&'r [u8]> {
        self.head.header(name)
    }

    pub fn head(&self) -> &'r RequestHead<'r, 'r> {
        self.head
    }

    /// A `{name}` segment captured by the route.
    pub fn param(&self, name: &str) -> Option<&'r str> {
        self.params.get(name)
    }

    pub fn body(&self) -> &'r [u8] {
        self.body
    }

    /// The body parsed as JSON, or a 400 response explaining why not.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, Response> {
        serde_json::from_slice(self.body)
            .map_err(|e| Response::error(400, &format!("invalid JSON body: {e}")))
    }
}

/// Captured path parameters, stored inline.
#[derive(Clone, Copy, Default)]
pub struct Params<'r> {
    items: [(&'r str, &'r str); MAX_PARAMS],
    len: usize,
}

impl<'r> Params<'r> {
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

/// An async handler: `async fn(&Request<'_>, &S) -> Response`.
pub(crate) trait AsyncHandler<S> {
    fn call<'a>(&'a self, req: &'a Request<'a>, state: &'a S) -> BoxFuture<'a>;
}

impl<S, F> AsyncHandler<S> for F
where
    F: AsyncFn(&Request<'_>, &S) -> Response,
{
    fn call<'a>(&'a self, req: &'a Request<'a>, state: &'a S) -> BoxFuture<'a> {
        Box::pin(self(req, state))
    }
}

type SyncFn<S> = Box<dyn Fn(&Request<'_>, &S) -> Response>;

pub(crate) enum Handler<S> {
    Sync(SyncFn<S>),
    Async(Box<dyn AsyncHandler<S>>),
}

enum Segment {
    Literal(String),
    Param(String),
}

struct Route<S> {
    method: String,
    segments: Vec<Segment>,
    handler: Handler<S>,
}

/// What the router decided for a request.
pub(crate) enum Dispatch<'a> {
    Ready(Response),
    Pending(BoxFuture<'a>),
}

/// Routes requests to handlers; `S` is the per-worker state handlers receive
/// (database pools, caches).
pub struct Router<S> {
    routes: Vec<Route<S>>,
    state: S,
}

impl<S: 'static> Router<S> {
    pub fn new(state: S) -> Router<S> {
        Router {
            routes: Vec::new(),
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

    fn add(mut self, method: &str, path: &str, handler: Handler<S>) -> Self {
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
            method: method.to_string(),
            segments,
            handler,
        });
        self
    }

    /// A synchronous handler: runs inline, allocates nothing per request.
    pub fn route_sync(
        self,
        method: &str,
        path: &str,
        f: impl Fn(&Request<'_>, &S) -> Response + 'static,
    ) -> Self {
        self.add(method, path, Handler::Sync(Box::new(f)))
    }

    /// An async handler that may await ring operations on this worker.
    pub fn route<F>(self, method: &str, path: &str, f: F) -> Self
    where
        F: AsyncFn(&Request<'_>, &S) -> Response + 'static,
    {
        self.add(method, path, Handler::Async(Box::new(f)))
    }

    pub fn get<F>(self, path: &str, f: F) -> Self
    where
        F: AsyncFn(&Request<'_>, &S) -> Response + 'static,
    {
        self.route("GET", path, f)
    }

    pub fn post<F>(self, path: &str, f: F) -> Self
    where
        F: AsyncFn(&Request<'_>, &S) -> Response + 'static,
    {
        self.route("POST", path, f)
    }

    pub fn put<F>(self, path: &str, f: F) -> Self
    where
        F: AsyncFn(&Request<'_>, &S) -> Response + 'static,
    {
        self.route("PUT", path, f)
    }

    pub fn delete<F>(self, path: &str, f: F) -> Self
    where
        F: AsyncFn(&Request<'_>, &S) -> Response + 'static,
    {
        self.route("DELETE", path, f)
    }

    pub fn get_sync(self, path: &str, f: impl Fn(&Request<'_>, &S) -> Response + 'static) -> Self {
        self.route_sync("GET", path, f)
    }

    fn matches<'p>(route: &'p Route<S>, path: &'p str, params: &mut Params<'p>) -> bool {
        params.len = 0;
        let mut rest = path.strip_prefix('/').unwrap_or(path);
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

    /// Finds the handler for `method` + `path`: the route and its captures,
    /// or a 404, or a 405 listing the allowed methods.
    /// The handler for `method` and `path`, with the path's parameters
    /// written into `params` (filled in place: it is a few hundred bytes,
    /// not worth moving twice per request).
    pub(crate) fn find<'a>(
        &'a self,
        method: &str,
        path: &'a str,
        params: &mut Params<'a>,
    ) -> Result<&'a Handler<S>, Response> {
        let mut allowed: Option<String> = None;
        for route in &self.routes {
            if !Self::matches(route, path, params) {
                continue;
            }
            if route.method == method || (method == "HEAD" && route.method == "GET") {
                return Ok(&route.handler);
            }
            let a = allowed.get_or_insert_with(String::new);
            if !a.is_empty() {
                a.push_str(", ");
            }
            a.push_str(&route.method);
            if route.method == "GET" {
                a.push_str(", HEAD");
            }
        }
        Err(match allowed {
            Some(a) => Response::error(405, "method not allowed").with_header("Allow", a),
            None => Response::error(404, "not found"),
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
            .route_sync("PUT", "/cache/{key}", |_, _| Response::new(204))
            .get_sync("/cache/{key}", |_, _| Response::new(200))
    }

    #[test]
    fn literal_and_params() {
        let r = router();
        let mut p = Params::default();
        assert!(r.find("GET", "/plaintext", &mut p).is_ok());
        assert!(r.find("GET", "/users/7/posts/abc", &mut p).is_ok());
        assert_eq!(p.get("id"), Some("7"));
        assert_eq!(p.get("post"), Some("abc"));
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

    #[test]
    fn method_not_allowed_lists_allow() {
        let r = router();
        let resp = r
            .find("POST", "/cache/k", &mut Params::default())
            .err()
            .unwrap();
        assert_eq!(resp.status, 405);
        let allow = &resp.headers.iter().find(|(n, _)| *n == "Allow").unwrap().1;
        assert_eq!(allow, "PUT, GET, HEAD");
        assert!(r.find("HEAD", "/plaintext", &mut Params::default()).is_ok());
    }
}
