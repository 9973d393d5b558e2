//! HTTP/1.1 request rendering and a small response parser: enough to frame
//! responses on a keep-alive connection (Content-Length, chunked, or
//! close-delimited) and read the status, with no copying.

use crate::plan::mix::{Class, Template};
use crate::util::Rng;

/// A request split around its only variable part, the path.
#[derive(Clone, Debug)]
pub struct RequestTemplate {
    /// "GET " — or, when the path is static, the whole request.
    head: Vec<u8>,
    path: Option<Template>,
    /// " HTTP/1.1\r\nHost: …\r\n…\r\n\r\nbody".
    tail: Vec<u8>,
    pub is_head: bool,
}

/// Appends a whole request to `out`, growing nothing but `out` (trace
/// replay renders one per request).
pub fn render_fixed_into(
    out: &mut Vec<u8>,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: Option<&str>,
) {
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    tail_into(out, host, headers, body);
}

/// " HTTP/1.1\r\nHost: …\r\n<headers>\r\n<body>", appended to `out`.
fn tail_into(out: &mut Vec<u8>, host: &str, headers: &[(String, String)], body: Option<&str>) {
    use std::io::Write;
    // Writing into a Vec cannot fail.
    let _ = write!(out, " HTTP/1.1\r\nHost: {host}\r\n");
    for (k, v) in headers {
        let _ = write!(out, "{k}: {v}\r\n");
    }
    match body {
        Some(b) => {
            let _ = write!(out, "Content-Length: {}\r\n\r\n{b}", b.len());
        }
        None => out.extend_from_slice(b"\r\n"),
    }
}

impl RequestTemplate {
    pub fn new(class: &Class, host: &str) -> RequestTemplate {
        let mut tail = Vec::new();
        tail_into(&mut tail, host, &class.headers, class.body.as_deref());
        let is_head = class.method == "HEAD";
        if class.path.is_static() {
            let mut head = format!("{} ", class.method).into_bytes();
            let mut rng = Rng::new(0);
            class.path.render_into(&mut head, &mut rng);
            head.extend_from_slice(&tail);
            RequestTemplate {
                head,
                path: None,
                tail: Vec::new(),
                is_head,
            }
        } else {
            RequestTemplate {
                head: format!("{} ", class.method).into_bytes(),
                path: Some(class.path.clone()),
                tail,
                is_head,
            }
        }
    }

    pub fn render_into(&self, out: &mut Vec<u8>, rng: &mut Rng) {
        out.extend_from_slice(&self.head);
        if let Some(p) = &self.path {
            p.render_into(out, rng);
            out.extend_from_slice(&self.tail);
        }
    }
}

/// The outcome of looking at the start of a receive buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed.
    Partial,
    /// A whole response of `len` bytes.
    Done {
        status: u16,
        len: usize,
        close: bool,
    },
    /// The body runs until the peer closes.
    UntilClose {
        status: u16,
    },
    Invalid(&'static str),
}

/// Position of the first '\n': eight bytes at a time (SWAR), since this
/// search is most of what framing a small response costs.
#[inline]
fn find_nl(hay: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    const NL: u64 = LO * b'\n' as u64;
    let mut i = 0;
    while i + 8 <= hay.len() {
        let w = u64::from_le_bytes(hay[i..i + 8].try_into().expect("8 bytes")) ^ NL;
        let zero = w.wrapping_sub(LO) & !w & HI;
        if zero != 0 {
            // The lowest flagged byte is the first match (little endian).
            return Some(i + (zero.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    hay[i..].iter().position(|&c| c == b'\n').map(|p| i + p)
}

fn eq_ignore_case(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_ascii_lowercase() == *y)
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn parse_dec(s: &[u8]) -> Option<usize> {
    if s.is_empty() || s.len() > 18 {
        return None;
    }
    let mut v = 0usize;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (c - b'0') as usize;
    }
    Some(v)
}

/// Frames one response at the start of `buf`; `head_request` says the
/// request was HEAD (no body whatever the headers say).
///
/// One pass over the head: each line is found once, and only lines that
/// can be one of the three headers that matter are compared.
pub fn parse_response(buf: &[u8], head_request: bool) -> Parsed {
    if buf.len() >= 5 && !buf.starts_with(b"HTTP/") {
        return Parsed::Invalid("not an HTTP response");
    }
    let Some(nl) = find_nl(buf) else {
        return partial(buf);
    };
    let status_line = &buf[..nl];
    if status_line.len() < 12 || !status_line.starts_with(b"HTTP/1.") {
        return Parsed::Invalid("bad status line");
    }
    let http10 = status_line[7] == b'0';
    let Some(status) = parse_dec(&status_line[9..12]).map(|s| s as u16) else {
        return Parsed::Invalid("bad status code");
    };
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    let mut close = http10;
    let mut pos = nl + 1;
    let head_end = loop {
        let Some(len) = find_nl(&buf[pos..]) else {
            return partial(buf);
        };
        let line = &buf[pos..pos + len];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        pos += len + 1;
        if line.is_empty() {
            break pos;
        }
        // content-length (14), connection (10), transfer-encoding (17).
        let first = line[0] | 0x20;
        if first != b'c' && first != b't' {
            continue;
        }
        let Some(colon) = line.iter().position(|&c| c == b':') else {
            continue;
        };
        let name = &line[..colon];
        let value = trim(&line[colon + 1..]);
        match name.len() {
            14 if eq_ignore_case(name, b"content-length") => match parse_dec(value) {
                Some(n) => content_length = Some(n),
                None => return Parsed::Invalid("bad Content-Length"),
            },
            17 if eq_ignore_case(name, b"transfer-encoding") => {
                chunked = value
                    .split(|&c| c == b',')
                    .any(|v| eq_ignore_case(trim(v), b"chunked"));
            }
            10 if eq_ignore_case(name, b"connection") => {
                if eq_ignore_case(value, b"close") {
                    close = true;
                } else if eq_ignore_case(value, b"keep-alive") {
                    close = false;
                }
            }
            _ => {}
        }
    };
    if head_request || status / 100 == 1 || status == 204 || status == 304 {
        return Parsed::Done {
            status,
            len: head_end,
            close,
        };
    }
    if chunked {
        return match chunked_len(&buf[head_end..]) {
            Ok(Some(n)) => Parsed::Done {
                status,
                len: head_end + n,
                close,
            },
            Ok(None) => Parsed::Partial,
            Err(e) => Parsed::Invalid(e),
        };
    }
    match content_length {
        Some(n) if buf.len() >= head_end + n => Parsed::Done {
            status,
            len: head_end + n,
            close,
        },
        Some(_) => Parsed::Partial,
        None => Parsed::UntilClose { status },
    }
}

fn partial(buf: &[u8]) -> Parsed {
    if buf.len() > 64 * 1024 {
        Parsed::Invalid("response head over 64 KiB")
    } else {
        Parsed::Partial
    }
}

/// Length of a complete chunked body (with trailers), if all there.
fn chunked_len(body: &[u8]) -> Result<Option<usize>, &'static str> {
    let mut pos = 0;
    loop {
        let Some(nl) = body[pos..].iter().position(|&c| c == b'\n') else {
            return Ok(None);
        };
        let line = &body[pos..pos + nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let size_hex = line.split(|&c| c == b';').next().unwrap_or_default();
        let size_hex = trim(size_hex);
        if size_hex.is_empty() || size_hex.len() > 15 {
            return Err("bad chunk size");
        }
        let mut size = 0usize;
        for &c in size_hex {
            let d = (c as char).to_digit(16).ok_or("bad chunk size")?;
            size = size * 16 + d as usize;
        }
        pos += nl + 1;
        if size == 0 {
            // Trailers end with an empty line.
            loop {
                let Some(nl) = body[pos..].iter().position(|&c| c == b'\n') else {
                    return Ok(None);
                };
                let empty = nl == 0 || (nl == 1 && body[pos] == b'\r');
                pos += nl + 1;
                if empty {
                    return Ok(Some(pos));
                }
            }
        }
        if body.len() < pos + size + 2 {
            return Ok(None);
        }
        pos += size;
        if &body[pos..pos + 2] != b"\r\n" {
            return Err("chunk not followed by CRLF");
        }
        pos += 2;
    }
}

/// A parsed `http://host:port/` target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub addr: std::net::SocketAddr,
    pub host_header: String,
}

pub fn parse_target(url: &str) -> Result<Target, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("target {url:?}: only http:// URLs are supported"))?;
    let hostport = rest.split('/').next().unwrap_or_default();
    let with_port = if hostport.starts_with('[') {
        if hostport.contains("]:") {
            hostport.to_string()
        } else {
            format!("{hostport}:80")
        }
    } else if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    use std::net::ToSocketAddrs;
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| format!("target {url:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("target {url:?}: no address"))?;
    Ok(Target {
        addr,
        host_header: hostport.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_content_length_and_pipelined_responses() {
        let one = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nDate: x\r\n\r\nHello, World!";
        let mut two = one.to_vec();
        two.extend_from_slice(
            b"HTTP/1.1 503 Busy\r\ncontent-length: 0\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(
            parse_response(&two, false),
            Parsed::Done {
                status: 200,
                len: one.len(),
                close: false
            }
        );
        assert_eq!(
            parse_response(&two[one.len()..], false),
            Parsed::Done {
                status: 503,
                len: two.len() - one.len(),
                close: true
            }
        );
        for cut in 0..one.len() {
            assert_eq!(
                parse_response(&one[..cut], false),
                Parsed::Partial,
                "cut {cut}"
            );
        }
    }

    #[test]
    fn frames_chunked_and_close_delimited() {
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nHello\r\n1;ext=1\r\n!\r\n0\r\n\r\n";
        assert_eq!(
            parse_response(r, false),
            Parsed::Done {
                status: 200,
                len: r.len(),
                close: false
            }
        );
        for cut in 0..r.len() {
            assert_eq!(
                parse_response(&r[..cut], false),
                Parsed::Partial,
                "cut {cut}"
            );
        }
        assert_eq!(
            parse_response(b"HTTP/1.0 200 OK\r\n\r\nabc", false),
            Parsed::UntilClose { status: 200 }
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true),
            Parsed::Done {
                status: 200,
                len: 38,
                close: false
            }
        );
        assert!(matches!(
            parse_response(b"SSH-2.0-x\r\n\r\n", false),
            Parsed::Invalid(_)
        ));
        assert!(matches!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false),
            Parsed::Invalid(_)
        ));
    }

    #[test]
    fn finds_newlines_like_a_plain_search() {
        let mut rng = Rng::new(5);
        for len in 0..80 {
            for _ in 0..50 {
                let v: Vec<u8> = (0..len)
                    .map(|_| match rng.range(0, 9) {
                        0 => b'\n',
                        1 => 0x8a,
                        2 => b'\r',
                        _ => b'a' + rng.range(0, 25) as u8,
                    })
                    .collect();
                assert_eq!(find_nl(&v), v.iter().position(|&c| c == b'\n'), "{v:?}");
            }
        }
    }

    #[test]
    fn renders_requests() {
        let class = crate::plan::config::class_from_spec(&crate::plan::config::ClassSpec {
            name: "c".into(),
            method: "POST".into(),
            path: "/cache/{rand:7..7}".into(),
            body: Some("hey".into()),
            headers: [("X-A".to_string(), "1".to_string())].into_iter().collect(),
            weight: 1.0,
        })
        .unwrap();
        let t = RequestTemplate::new(&class, "127.0.0.1:8080");
        let mut out = Vec::new();
        t.render_into(&mut out, &mut Rng::new(1));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /cache/7 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nX-A: 1\r\nContent-Length: 3\r\n\r\nhey"
        );
        // A trace entry renders after whatever is already queued.
        let mut out = b"queued".to_vec();
        let headers = [("X-A".to_string(), "1".to_string())];
        render_fixed_into(&mut out, "h", "HEAD", "/x", &headers, None);
        assert_eq!(out, b"queuedHEAD /x HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n\r\n");
    }

    #[test]
    fn targets_parse() {
        let t = parse_target("http://127.0.0.1:8080").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.host_header, "127.0.0.1:8080");
        assert!(parse_target("https://x").is_err());
        assert_eq!(parse_target("http://[::1]:9/x").unwrap().addr.port(), 9);
    }
}
