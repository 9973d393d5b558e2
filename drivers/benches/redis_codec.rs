//! Reply decoding: Tidepool's incremental decoder against the
//! `redis-protocol` crate's RESP2/RESP3 decoders, on complete replies and
//! on a large reply arriving in 16 KiB reads.
//!
//! Tidepool's numbers include copying the input into the decoder's buffer
//! (which stands in for the socket read); `redis-protocol` decodes the
//! input where it lies.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tidepool_drivers::redis::{cmd, encode_value, Decoder, IntoCommand, Value};

fn wire(v: &Value, resp2: bool) -> Vec<u8> {
    let mut out = Vec::new();
    encode_value(v, resp2, &mut out);
    out
}

fn bulk(n: usize) -> Value {
    Value::Bulk((0..n).map(|i| (i % 251) as u8).collect())
}

fn cases() -> Vec<(&'static str, Value, bool)> {
    let array = Value::Array(
        (0..100)
            .map(|i| Value::Bulk(format!("value-{i:04}").into_bytes()))
            .collect(),
    );
    let map = Value::Map(
        (0..100)
            .map(|i| {
                (
                    Value::Bulk(format!("field-{i:03}").into_bytes()),
                    Value::Bulk(format!("{i}").into_bytes()),
                )
            })
            .collect(),
    );
    let mixed = Value::Array(
        (0..100)
            .map(|i| match i % 4 {
                0 => Value::Int(i),
                1 => Value::Double(i as f64 / 3.0),
                2 => Value::Nil,
                _ => Value::Simple("OK".into()),
            })
            .collect(),
    );
    vec![
        ("resp2/ok", Value::Simple("OK".into()), true),
        ("resp2/bulk_16", bulk(16), true),
        ("resp2/bulk_4k", bulk(4096), true),
        ("resp2/bulk_6k", bulk(6000), true),
        ("resp2/bulk_16k", bulk(16384), true),
        ("resp2/bulk_1m", bulk(1 << 20), true),
        ("resp2/array_100", array.clone(), true),
        ("resp2/hash_100_flat", map.clone(), true),
        ("resp3/bulk_16", bulk(16), false),
        ("resp3/array_100", array, false),
        ("resp3/map_100", map, false),
        ("resp3/mixed_100", mixed, false),
    ]
}

fn complete_replies(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_complete");
    for (name, v, resp2) in cases() {
        let input = wire(&v, resp2);
        g.throughput(Throughput::Bytes(input.len() as u64));
        g.bench_with_input(BenchmarkId::new("tidepool", name), &input, |b, input| {
            let mut d = Decoder::new(usize::MAX);
            b.iter(|| {
                d.feed(input);
                black_box(d.decode().unwrap().unwrap().unwrap())
            })
        });
        g.bench_with_input(
            BenchmarkId::new("redis-protocol-owned", name),
            &input,
            |b, input| {
                b.iter(|| {
                    if resp2 {
                        black_box(
                            redis_protocol::resp2::decode::decode(input)
                                .unwrap()
                                .unwrap()
                                .1,
                        );
                    } else {
                        black_box(
                            redis_protocol::resp3::decode::complete::decode(input)
                                .unwrap()
                                .unwrap()
                                .1,
                        );
                    }
                })
            },
        );
        let bytes = Bytes::from(input.clone());
        g.bench_with_input(
            BenchmarkId::new("redis-protocol-bytes", name),
            &bytes,
            |b, input| {
                b.iter(|| {
                    if resp2 {
                        black_box(
                            redis_protocol::resp2::decode::decode_bytes(input)
                                .unwrap()
                                .unwrap()
                                .1,
                        );
                    } else {
                        black_box(
                            redis_protocol::resp3::decode::complete::decode_bytes(input)
                                .unwrap()
                                .unwrap()
                                .1,
                        );
                    }
                })
            },
        );
    }
    g.finish();
}

fn pipelined_stream(c: &mut Criterion) {
    // 1,000 small replies back to back, as a pipeline's answer arrives.
    let mut input = Vec::new();
    for i in 0..1000 {
        encode_value(&Value::Bulk(format!("v{i}").into_bytes()), true, &mut input);
    }
    let mut g = c.benchmark_group("decode_stream_1000");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("tidepool", |b| {
        let mut d = Decoder::new(usize::MAX);
        b.iter(|| {
            d.feed(&input);
            let mut n = 0;
            while let Some(v) = d.decode().unwrap() {
                black_box(v.unwrap());
                n += 1;
            }
            assert_eq!(n, 1000);
        })
    });
    g.bench_function("redis-protocol-owned", |b| {
        b.iter(|| {
            let mut at = 0;
            while let Some((f, n)) = redis_protocol::resp2::decode::decode(&input[at..]).unwrap() {
                black_box(f);
                at += n;
            }
        })
    });
    g.finish();
}

fn fragmented(c: &mut Criterion) {
    // A large reply arriving in 16 KiB reads: a restartable parser starts
    // over after every read, the incremental one resumes.
    let array = Value::Array(
        (0..20_000)
            .map(|i| Value::Bulk(format!("member-{i:06}").into_bytes()))
            .collect(),
    );
    let input = wire(&array, true);
    let mut g = c.benchmark_group("decode_fragmented_16k_reads");
    g.throughput(Throughput::Bytes(input.len() as u64));
    g.sample_size(20);
    g.bench_function("tidepool/array_20000", |b| {
        b.iter(|| {
            let mut d = Decoder::new(usize::MAX);
            let mut out = None;
            for chunk in input.chunks(16 * 1024) {
                d.feed(chunk);
                if let Some(v) = d.decode().unwrap() {
                    out = Some(v.unwrap());
                }
            }
            black_box(out.unwrap())
        })
    });
    g.bench_function("redis-protocol-owned/array_20000", |b| {
        b.iter(|| {
            let mut buf = Vec::new();
            let mut out = None;
            for chunk in input.chunks(16 * 1024) {
                buf.extend_from_slice(chunk);
                if let Some((f, _)) = redis_protocol::resp2::decode::decode(&buf).unwrap() {
                    out = Some(f);
                }
            }
            black_box(out.unwrap())
        })
    });
    g.finish();
}

fn encoding(c: &mut Criterion) {
    let value = vec![b'x'; 64];
    let mut g = c.benchmark_group("encode");
    g.bench_function("set_key_64b", |b| {
        let mut out = Vec::with_capacity(256);
        b.iter(|| {
            out.clear();
            ["SET".as_bytes(), b"some:key:12345", &value].encode_into(&mut out);
            black_box(out.len())
        })
    });
    g.bench_function("cmd_builder_5_args", |b| {
        let mut out = Vec::with_capacity(256);
        b.iter(|| {
            out.clear();
            cmd("SET")
                .arg("some:key:12345")
                .arg(&value)
                .arg("EX")
                .arg(60)
                .encode_into(&mut out);
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    complete_replies,
    pipelined_stream,
    fragmented,
    encoding
);
criterion_main!(benches);
