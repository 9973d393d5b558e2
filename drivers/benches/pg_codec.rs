//! Codec hot paths of the PostgreSQL driver, without a server: decoding
//! DataRow messages into typed rows, and encoding Bind messages.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tidepool_drivers::pg::proto::{Protocol, Response};
use tidepool_drivers::pg::{Column, Config, Numeric, Statement, TimestampTz, ToSql, Type};

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// A protocol core past startup.
fn ready() -> Protocol {
    let mut p = Protocol::connect(&Config::new().user("bench")).unwrap();
    let mut sink = Vec::new();
    p.take_output(&mut sink);
    let mut hello = msg(b'R', &0i32.to_be_bytes());
    hello.extend(msg(b'K', &[0, 0, 0, 1, 0, 0, 0, 2]));
    hello.extend(msg(b'Z', b"I"));
    p.receive(&hello);
    assert!(p.is_ready());
    p
}

fn col(name: &str, ty: Type) -> Column {
    Column {
        name: name.into(),
        type_: ty,
        format: 1,
        table_oid: 0,
        column_id: 0,
    }
}

fn bench_decode(c: &mut Criterion) {
    const ROWS: usize = 1000;
    let st = Statement::new(
        "s".into(),
        "select ...".into(),
        vec![],
        vec![
            col("id", Type::INT8),
            col("n", Type::INT4),
            col("name", Type::TEXT),
            col("score", Type::FLOAT8),
            col("at", Type::TIMESTAMPTZ),
            col("price", Type::NUMERIC),
        ],
    );
    // One Execute's worth of replies: BindComplete, rows, CommandComplete, ReadyForQuery.
    let mut reply = msg(b'2', &[]);
    for i in 0..ROWS {
        let mut vals: Vec<Vec<u8>> = Vec::new();
        let mut b = bytes::BytesMut::new();
        let params: [(&dyn ToSql, Type); 6] = [
            (&(i as i64), Type::INT8),
            (&(i as i32), Type::INT4),
            (&"some customer name", Type::TEXT),
            (&(i as f64 * 0.5), Type::FLOAT8),
            (&TimestampTz(i as i64 * 1_000_000), Type::TIMESTAMPTZ),
            (&Numeric::new("12345.67").unwrap(), Type::NUMERIC),
        ];
        for (v, t) in params {
            b.clear();
            v.to_sql(t, &mut b).unwrap();
            vals.push(b.to_vec());
        }
        let mut body = (vals.len() as i16).to_be_bytes().to_vec();
        for v in vals {
            body.extend_from_slice(&(v.len() as i32).to_be_bytes());
            body.extend_from_slice(&v);
        }
        reply.extend(msg(b'D', &body));
    }
    reply.extend(msg(b'C', b"SELECT 1000\0"));
    reply.extend(msg(b'Z', b"I"));

    let mut p = ready();
    let mut sink = Vec::new();
    let mut g = c.benchmark_group("pg_decode");
    g.throughput(Throughput::Elements(ROWS as u64));
    g.bench_function("datarows_to_typed_rows_1000x6", |b| {
        b.iter(|| {
            p.execute(&st, &[]).unwrap();
            sink.clear();
            p.take_output(&mut sink);
            p.receive(black_box(&reply));
            let Some((_, Ok(Response::Rows { rows, .. }))) = p.poll_response() else {
                panic!("no rows")
            };
            let mut acc = 0i64;
            for r in &rows {
                acc += r.get::<i64>(0) + i64::from(r.get::<i32>(1));
                acc += r.get::<&str>(2).len() as i64;
                acc += r.get::<f64>(3) as i64;
                acc += r.get::<TimestampTz>(4).0;
                acc += r.get::<Numeric>(5).as_str().len() as i64;
            }
            black_box(acc)
        })
    });
    g.bench_function("datarows_to_text_1000x6", |b| {
        b.iter(|| {
            p.execute(&st, &[]).unwrap();
            sink.clear();
            p.take_output(&mut sink);
            p.receive(black_box(&reply));
            let Some((_, Ok(Response::Rows { rows, .. }))) = p.poll_response() else {
                panic!("no rows")
            };
            let mut len = 0;
            for r in &rows {
                for i in 0..r.len() {
                    len += r.to_text(i).unwrap().map_or(0, |s| s.len());
                }
            }
            black_box(len)
        })
    });
    g.finish();
}

fn bench_encode(c: &mut Criterion) {
    let st = Statement::new(
        "s".into(),
        "insert ...".into(),
        vec![
            Type::INT8,
            Type::INT4,
            Type::TEXT,
            Type::FLOAT8,
            Type::TIMESTAMPTZ,
            Type::NUMERIC,
            Type::INT4_ARRAY,
        ],
        vec![col("id", Type::INT8)],
    );
    let price = Numeric::new("12345.67").unwrap();
    let at = TimestampTz::now();
    let tags: Vec<Option<i32>> = vec![Some(1), None, Some(3)];
    let mut p = ready();
    let mut sink = Vec::with_capacity(4096);
    let mut bind_reply = msg(b'2', &[]);
    bind_reply.extend(msg(b'C', b"INSERT 0 1\0"));
    bind_reply.extend(msg(b'Z', b"I"));
    let mut g = c.benchmark_group("pg_encode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("bind_execute_sync_7_params", |b| {
        b.iter(|| {
            p.execute(
                &st,
                &[
                    &42i64,
                    &7i32,
                    &"some customer name",
                    &3.25f64,
                    &at,
                    &price,
                    &tags,
                ],
            )
            .unwrap();
            sink.clear();
            p.take_output(&mut sink);
            black_box(sink.len());
            // Keep the pending queue from growing: answer the request.
            p.receive(&bind_reply);
            black_box(p.poll_response());
        })
    });
    g.finish();
}

criterion_group!(benches, bench_decode, bench_encode);
criterion_main!(benches);
