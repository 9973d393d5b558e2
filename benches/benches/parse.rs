//! Request-head parsing: Tidepool's strict parser against httparse, which
//! validates less (no framing, Host or keep-alive semantics), on the
//! TechEmpower plaintext request and a realistic browser navigation.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use tidepool_engine::http::parse::{parse_request, Header, Limits, Parsed};

const TECHEMPOWER: &[u8] = b"GET /plaintext HTTP/1.1\r\n\
Host: localhost:8080\r\n\
Accept: text/plain,text/html;q=0.9,application/xhtml+xml;q=0.9,application/xml;q=0.8,*/*;q=0.7\r\n\
Connection: keep-alive\r\n\
\r\n";

const BROWSER: &[u8] = b"GET /articles/2024/io-uring-servers?page=2&sort=recent HTTP/1.1\r\n\
Host: www.example.org\r\n\
Connection: keep-alive\r\n\
sec-ch-ua: \"Chromium\";v=\"124\", \"Google Chrome\";v=\"124\", \"Not-A.Brand\";v=\"99\"\r\n\
sec-ch-ua-mobile: ?0\r\n\
sec-ch-ua-platform: \"Linux\"\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8\r\n\
Sec-Fetch-Site: same-origin\r\n\
Sec-Fetch-Mode: navigate\r\n\
Sec-Fetch-Dest: document\r\n\
Referer: https://www.example.org/articles/2024/\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-GB,en;q=0.9,fr;q=0.8\r\n\
Cookie: session=8f2a1c9e4b7d6a5f3e2d; theme=dark; _ga=GA1.2.1234567890\r\n\
\r\n";

// Both parsers get a header array made once per benchmark rather than per
// call, so the 2 KiB memset of a fresh array does not dilute the comparison.

fn tidepool<'b>(buf: &'b [u8], headers: &mut [Header<'b>], limits: &Limits) -> usize {
    match parse_request(black_box(buf), headers, limits) {
        Ok(Parsed::Complete(head)) => black_box(head).head_len,
        other => panic!("tidepool rejected the benchmark request: {other:?}"),
    }
}

fn httparse<'b>(buf: &'b [u8], headers: &mut [httparse::Header<'b>]) -> usize {
    let mut req = httparse::Request::new(headers);
    match req.parse(black_box(buf)) {
        Ok(httparse::Status::Complete(n)) => {
            black_box(&req);
            n
        }
        other => panic!("httparse rejected the benchmark request: {other:?}"),
    }
}

fn bench(c: &mut Criterion) {
    for (name, buf) in [("techempower", TECHEMPOWER), ("browser", BROWSER)] {
        let limits = Limits::default();
        let mut ours = [Header::EMPTY; 64];
        let mut theirs = [httparse::EMPTY_HEADER; 64];
        assert_eq!(tidepool(buf, &mut ours, &limits), buf.len());
        assert_eq!(httparse(buf, &mut theirs), buf.len());
        let mut group = c.benchmark_group(format!("parse/{name}"));
        group.throughput(Throughput::Bytes(buf.len() as u64));
        group.bench_function("tidepool", |b| b.iter(|| tidepool(buf, &mut ours, &limits)));
        group.bench_function("httparse", |b| b.iter(|| httparse(buf, &mut theirs)));
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
