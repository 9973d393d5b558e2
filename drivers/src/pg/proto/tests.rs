//! Sans-IO tests: a scripted fake server feeds bytes, responses are checked.

use super::*;
use crate::pg::types::Numeric;

/// Backend message builders.
pub(crate) mod be {
    pub fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }
    fn cstr(v: &mut Vec<u8>, s: &str) {
        v.extend_from_slice(s.as_bytes());
        v.push(0);
    }
    pub fn auth(code: i32, extra: &[u8]) -> Vec<u8> {
        let mut b = code.to_be_bytes().to_vec();
        b.extend_from_slice(extra);
        msg(b'R', &b)
    }
    pub fn param_status(k: &str, v: &str) -> Vec<u8> {
        let mut b = Vec::new();
        cstr(&mut b, k);
        cstr(&mut b, v);
        msg(b'S', &b)
    }
    pub fn key_data(pid: i32, secret: i32) -> Vec<u8> {
        let mut b = pid.to_be_bytes().to_vec();
        b.extend_from_slice(&secret.to_be_bytes());
        msg(b'K', &b)
    }
    pub fn rfq(status: u8) -> Vec<u8> {
        msg(b'Z', &[status])
    }
    pub fn error(sev: &str, code: &str, text: &str) -> Vec<u8> {
        let mut b = Vec::new();
        for (t, v) in [(b'S', sev), (b'V', sev), (b'C', code), (b'M', text)] {
            b.push(t);
            cstr(&mut b, v);
        }
        b.push(0);
        msg(b'E', &b)
    }
    pub fn notice(text: &str) -> Vec<u8> {
        let mut b = Vec::new();
        for (t, v) in [(b'S', "NOTICE"), (b'C', "00000"), (b'M', text)] {
            b.push(t);
            cstr(&mut b, v);
        }
        b.push(0);
        msg(b'N', &b)
    }
    pub fn param_desc(oids: &[u32]) -> Vec<u8> {
        let mut b = (oids.len() as i16).to_be_bytes().to_vec();
        for o in oids {
            b.extend_from_slice(&o.to_be_bytes());
        }
        msg(b't', &b)
    }
    pub fn row_desc(cols: &[(&str, u32)]) -> Vec<u8> {
        let mut b = (cols.len() as i16).to_be_bytes().to_vec();
        for (name, oid) in cols {
            cstr(&mut b, name);
            b.extend_from_slice(&0u32.to_be_bytes());
            b.extend_from_slice(&0i16.to_be_bytes());
            b.extend_from_slice(&oid.to_be_bytes());
            b.extend_from_slice(&(-1i16).to_be_bytes());
            b.extend_from_slice(&(-1i32).to_be_bytes());
            b.extend_from_slice(&0i16.to_be_bytes());
        }
        msg(b'T', &b)
    }
    pub fn data_row(vals: &[Option<&[u8]>]) -> Vec<u8> {
        let mut b = (vals.len() as i16).to_be_bytes().to_vec();
        for v in vals {
            match v {
                Some(v) => {
                    b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    b.extend_from_slice(v);
                }
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        msg(b'D', &b)
    }
    pub fn complete(tag: &str) -> Vec<u8> {
        let mut b = Vec::new();
        cstr(&mut b, tag);
        msg(b'C', &b)
    }
    pub fn notification(pid: i32, ch: &str, payload: &str) -> Vec<u8> {
        let mut b = pid.to_be_bytes().to_vec();
        cstr(&mut b, ch);
        cstr(&mut b, payload);
        msg(b'A', &b)
    }
    pub fn parse_complete() -> Vec<u8> {
        msg(b'1', &[])
    }
    pub fn bind_complete() -> Vec<u8> {
        msg(b'2', &[])
    }
    pub fn close_complete() -> Vec<u8> {
        msg(b'3', &[])
    }
    pub fn no_data() -> Vec<u8> {
        msg(b'n', &[])
    }
    pub fn copy_in_response() -> Vec<u8> {
        msg(b'G', &[0, 0, 0])
    }
    pub fn copy_out_response() -> Vec<u8> {
        msg(b'H', &[0, 0, 0])
    }
    pub fn copy_data(d: &[u8]) -> Vec<u8> {
        msg(b'd', d)
    }
    pub fn copy_done() -> Vec<u8> {
        msg(b'c', &[])
    }
    pub fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
        parts.concat()
    }
}

/// Splits frontend bytes into (tag, body) messages. The startup packet has no tag.
fn frontend_msgs(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut v = Vec::new();
    while !b.is_empty() {
        let len = u32::from_be_bytes(b[1..5].try_into().unwrap()) as usize;
        v.push((b[0], b[5..1 + len].to_vec()));
        b = &b[1 + len..];
    }
    v
}

fn cfg() -> Config {
    Config::new().user("alice").password("pw").dbname("db")
}

/// A connection past startup.
fn ready() -> Protocol {
    let mut p = Protocol::connect(&cfg()).unwrap();
    p.out.clear();
    p.receive(&be::cat(&[
        be::auth(0, &[]),
        be::param_status("server_version", "15.4"),
        be::key_data(42, 99),
        be::rfq(b'I'),
    ]));
    assert!(p.is_ready());
    p
}

fn take(p: &mut Protocol) -> Vec<u8> {
    let mut v = Vec::new();
    p.take_output(&mut v);
    v
}

fn stmt(params: &[Type], cols: &[(&str, Type)]) -> Statement {
    Statement::new(
        "s1".into(),
        "sql".into(),
        params.to_vec(),
        cols.iter()
            .map(|(n, t)| Column {
                name: n.to_string(),
                type_: *t,
                format: if t.is_binary_supported() { 1 } else { 0 },
                table_oid: 0,
                column_id: 0,
            })
            .collect(),
    )
}

#[test]
fn startup_message_has_user_db_and_encoding() {
    let p = Protocol::connect(&cfg().application_name("app")).unwrap();
    let out = p.output();
    let len = u32::from_be_bytes(out[0..4].try_into().unwrap()) as usize;
    assert_eq!(len, out.len());
    assert_eq!(&out[4..8], &[0, 3, 0, 0]);
    let body = String::from_utf8_lossy(&out[8..]);
    for s in [
        "user\0alice\0",
        "database\0db\0",
        "application_name\0app\0",
        "client_encoding\0UTF8\0",
    ] {
        assert!(body.contains(s), "{body:?} lacks {s:?}");
    }
}

#[test]
fn trust_startup_keeps_params_and_key() {
    let mut p = ready();
    assert_eq!(p.parameter("server_version"), Some("15.4"));
    assert_eq!(
        p.backend_key(),
        Some(BackendKey {
            process_id: 42,
            secret_key: 99
        })
    );
    assert_eq!(p.tx_status(), TxStatus::Idle);
    assert!(take(&mut p).is_empty());
}

#[test]
fn cleartext_and_md5_startup() {
    let mut p = Protocol::connect(&cfg()).unwrap();
    take(&mut p);
    p.receive(&be::auth(3, &[]));
    let m = frontend_msgs(&take(&mut p));
    assert_eq!(m, vec![(b'p', b"pw\0".to_vec())]);

    let mut p = Protocol::connect(&cfg()).unwrap();
    take(&mut p);
    p.receive(&be::auth(5, &[1, 2, 3, 4]));
    let m = frontend_msgs(&take(&mut p));
    let expect = postgres_protocol::authentication::md5_hash(b"alice", b"pw", [1, 2, 3, 4]);
    assert_eq!(m[0].1, format!("{expect}\0").into_bytes());
    assert!(m[0].1.starts_with(b"md5"));
    // Split delivery: the rest arrives a byte at a time.
    for b in be::cat(&[be::auth(0, &[]), be::key_data(1, 2), be::rfq(b'I')]) {
        p.receive(&[b]);
    }
    assert!(p.is_ready());
}

#[test]
fn wrong_password_is_one_auth_error() {
    let mut p = Protocol::connect(&cfg()).unwrap();
    take(&mut p);
    p.receive(&be::auth(3, &[]));
    take(&mut p);
    p.receive(&be::error(
        "FATAL",
        "28P01",
        "password authentication failed for user \"alice\"",
    ));
    assert!(p.is_dead());
    let e = p.take_fatal().unwrap();
    assert!(matches!(e, Error::Auth { .. }), "{e:?}");
    assert_eq!(e.code(), Some("28P01"));
    assert!(!e.is_transient());
    assert!(take(&mut p).is_empty(), "no retry is attempted");
}

#[test]
fn missing_database_is_db_error() {
    let mut p = Protocol::connect(&cfg()).unwrap();
    p.receive(&be::error(
        "FATAL",
        "3D000",
        "database \"db\" does not exist",
    ));
    let e = p.take_fatal().unwrap();
    assert!(matches!(e, Error::Db(_)));
    assert!(!e.is_transient());
}

#[test]
fn password_required_but_missing() {
    let mut p = Protocol::connect(&Config::new().user("u")).unwrap();
    p.receive(&be::auth(3, &[]));
    assert!(matches!(p.take_fatal(), Some(Error::Auth { .. })));
}

#[test]
fn unsupported_methods_are_auth_errors() {
    for (code, extra) in [(7, &b""[..]), (10, &b"OTHER-MECH\0\0"[..])] {
        let mut p = Protocol::connect(&cfg()).unwrap();
        p.receive(&be::auth(code, extra));
        assert!(matches!(p.take_fatal(), Some(Error::Auth { .. })));
    }
}

mod scram_server {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use hmac::{Hmac, KeyInit, Mac};
    use sha2::{Digest, Sha256};

    fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
        let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
        m.update(data);
        m.finalize().into_bytes().to_vec()
    }

    pub fn salted(password: &[u8], salt: &[u8], iters: u32) -> Vec<u8> {
        let mut u = hmac(password, &[salt, &[0, 0, 0, 1]].concat());
        let mut out = u.clone();
        for _ in 1..iters {
            u = hmac(password, &u);
            for (o, x) in out.iter_mut().zip(&u) {
                *o ^= x;
            }
        }
        out
    }

    /// Verifies the client-final message; returns the server-final message.
    pub fn verify(
        password: &[u8],
        client_first_bare: &str,
        server_first: &str,
        client_final: &str,
    ) -> Option<String> {
        let salt = STANDARD.decode("c2FsdHNhbHQ=").unwrap();
        let sp = salted(password, &salt, 4096);
        let client_key = hmac(&sp, b"Client Key");
        let stored_key = Sha256::digest(&client_key).to_vec();
        let server_key = hmac(&sp, b"Server Key");
        let (without_proof, proof) = client_final.rsplit_once(",p=").unwrap();
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let sig = hmac(&stored_key, auth_message.as_bytes());
        let proof = STANDARD.decode(proof).unwrap();
        let recovered: Vec<u8> = proof.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        if Sha256::digest(&recovered).to_vec() != stored_key {
            return None;
        }
        let server_sig = hmac(&server_key, auth_message.as_bytes());
        Some(format!("v={}", STANDARD.encode(server_sig)))
    }
}

fn scram_exchange(client_pw: &str, server_pw: &str, tamper_final: bool) -> Protocol {
    let mut p = Protocol::connect(&cfg().password(client_pw)).unwrap();
    take(&mut p);
    p.receive(&be::auth(10, b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0"));
    let m = frontend_msgs(&take(&mut p));
    let body = &m[0].1;
    assert!(body.starts_with(b"SCRAM-SHA-256\0"));
    let first = String::from_utf8(body[14 + 4..].to_vec()).unwrap();
    let bare = first.strip_prefix("n,,").unwrap().to_string();
    // The nonce may itself contain "r=" (any printable but a comma).
    let nonce = bare.split_once(",r=").unwrap().1.to_string();
    let server_first = format!("r={nonce}SRV,s=c2FsdHNhbHQ=,i=4096");
    p.receive(&be::auth(11, server_first.as_bytes()));
    let m = frontend_msgs(&take(&mut p));
    let client_final = String::from_utf8(m[0].1.clone()).unwrap();
    match scram_server::verify(server_pw.as_bytes(), &bare, &server_first, &client_final) {
        Some(mut fin) => {
            if tamper_final {
                fin = "v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into();
            }
            p.receive(&be::cat(&[
                be::auth(12, fin.as_bytes()),
                be::auth(0, &[]),
                be::key_data(7, 8),
                be::rfq(b'I'),
            ]));
        }
        None => p.receive(&be::error(
            "FATAL",
            "28P01",
            "password authentication failed",
        )),
    }
    p
}

#[test]
fn scram_success() {
    let p = scram_exchange("s3cret", "s3cret", false);
    assert!(p.is_ready());
}

#[test]
fn scram_wrong_password() {
    let mut p = scram_exchange("nope", "s3cret", false);
    let e = p.take_fatal().unwrap();
    assert_eq!(e.code(), Some("28P01"));
    assert!(matches!(e, Error::Auth { .. }));
}

#[test]
fn scram_rejects_forged_server_signature() {
    let mut p = scram_exchange("s3cret", "s3cret", true);
    assert!(!p.is_ready());
    assert!(matches!(p.take_fatal(), Some(Error::Auth { .. })));
}

#[test]
fn prepare_then_execute() {
    let mut p = ready();
    let id = p.prepare("s1", "select $1::int4 + 1 as n", &[]).unwrap();
    let m = frontend_msgs(&take(&mut p));
    assert_eq!(m.iter().map(|x| x.0).collect::<Vec<_>>(), b"PDS");
    p.receive(&be::cat(&[
        be::parse_complete(),
        be::param_desc(&[23]),
        be::row_desc(&[("n", 23)]),
        be::rfq(b'I'),
    ]));
    let (rid, r) = p.poll_response().unwrap();
    assert_eq!(rid, id);
    let Response::Prepared { params, columns } = r.unwrap() else {
        panic!()
    };
    assert_eq!(params, vec![Type::INT4]);
    assert_eq!(columns[0].format, 1);
    let st = Statement::new("s1".into(), "q".into(), params, columns);

    let id = p.execute(&st, &[&41i32]).unwrap();
    let m = frontend_msgs(&take(&mut p));
    assert_eq!(m.iter().map(|x| x.0).collect::<Vec<_>>(), b"BES");
    // Bind: portal "", stmt "s1", 1 format (binary), 1 param of 4 bytes, 1 result format.
    assert_eq!(
        m[0].1,
        [
            &b"\0s1\0"[..],
            &[0, 1, 0, 1, 0, 1, 0, 0, 0, 4, 0, 0, 0, 41, 0, 1, 0, 1]
        ]
        .concat()
    );
    p.receive(&be::cat(&[
        be::bind_complete(),
        be::data_row(&[Some(&42i32.to_be_bytes())]),
        be::complete("SELECT 1"),
        be::rfq(b'I'),
    ]));
    let (rid, r) = p.poll_response().unwrap();
    assert_eq!(rid, id);
    let Response::Rows { rows, tag } = r.unwrap() else {
        panic!()
    };
    assert_eq!(tag, "SELECT 1");
    assert_eq!(rows[0].get::<i32>(0), 42);
    assert_eq!(rows[0].get::<i64>("n"), 42);
    assert_eq!(rows[0].to_text(0).unwrap().as_deref(), Some("42"));
}

#[test]
fn param_type_errors_queue_nothing() {
    let mut p = ready();
    let st = stmt(&[Type::INT4, Type::TEXT], &[]);
    let e = p.execute(&st, &[&1i32, &2i32]).unwrap_err();
    match e {
        Error::TypeMismatch {
            column, pg_type, ..
        } => {
            assert_eq!(column, "$2");
            assert_eq!(pg_type, "text");
        }
        e => panic!("{e:?}"),
    }
    assert!(p.output().is_empty());
    assert!(matches!(
        p.execute(&st, &[&1i32]).unwrap_err(),
        Error::Usage(_)
    ));
    let e = p
        .execute(&stmt(&[Type::INT2], &[]), &[&100_000i64])
        .unwrap_err();
    assert!(matches!(e, Error::Conversion { .. }), "{e:?}");
    assert_eq!(p.in_flight(), 0);
}

#[test]
fn text_format_for_unknown_types() {
    let mut p = ready();
    // inet (869) has no binary codec in the driver: the string goes as text and
    // the result column is requested as text.
    let st = stmt(&[Type(869)], &[("a", Type(869)), ("b", Type::INT4)]);
    p.execute(&st, &[&"10.0.0.1"]).unwrap();
    let m = frontend_msgs(&take(&mut p));
    let bind = &m[0].1;
    // formats: count 1, code 0 (text)
    assert_eq!(&bind[4..8], &[0, 1, 0, 0]);
    // result formats: count 2, text then binary
    assert_eq!(&bind[bind.len() - 6..], &[0, 2, 0, 0, 0, 1]);
    p.receive(&be::cat(&[
        be::bind_complete(),
        be::data_row(&[Some(b"10.0.0.1"), Some(&5i32.to_be_bytes())]),
        be::complete("SELECT 1"),
        be::rfq(b'I'),
    ]));
    let Response::Rows { rows, .. } = p.poll_response().unwrap().1.unwrap() else {
        panic!()
    };
    assert_eq!(rows[0].get::<&str>(0), "10.0.0.1");
    assert_eq!(rows[0].to_text("a").unwrap().unwrap(), "10.0.0.1");
    let e = rows[0].try_get::<i32>(0).unwrap_err();
    assert!(matches!(e, Error::TypeMismatch { .. }));
}

#[test]
fn sql_error_keeps_connection_and_pipeline_order() {
    let mut p = ready();
    let st = stmt(&[], &[("x", Type::INT4)]);
    let a = p.execute(&st, &[]).unwrap();
    let b = p.execute(&st, &[]).unwrap();
    let c = p.simple_query("select 1").unwrap();
    // Three syncs, three ReadyForQuery replies, one written batch.
    assert_eq!(p.in_flight(), 3);
    p.receive(&be::cat(&[
        be::bind_complete(),
        be::data_row(&[Some(&1i32.to_be_bytes())]),
        be::complete("SELECT 1"),
        be::rfq(b'I'),
        be::error("ERROR", "22012", "division by zero"),
        be::rfq(b'I'),
        be::row_desc(&[("?column?", 23)]),
        be::data_row(&[Some(b"1")]),
        be::complete("SELECT 1"),
        be::rfq(b'I'),
    ]));
    let (id, r) = p.poll_response().unwrap();
    assert_eq!(id, a);
    assert!(r.is_ok());
    let (id, r) = p.poll_response().unwrap();
    assert_eq!(id, b);
    let e = r.unwrap_err();
    assert_eq!(e.code(), Some("22012"));
    assert!(!e.is_broken());
    let (id, r) = p.poll_response().unwrap();
    assert_eq!(id, c);
    let Response::Simple(res) = r.unwrap() else {
        panic!()
    };
    assert_eq!(res[0].rows[0].get::<&str>(0), "1");
    assert_eq!(res[0].rows[0].get::<i32>(0), 1);
    assert!(!p.is_dead());
}

#[test]
fn simple_query_multiple_statements() {
    let mut p = ready();
    p.simple_query("create table t(); insert ...; select ...")
        .unwrap();
    p.receive(&be::cat(&[
        be::complete("CREATE TABLE"),
        be::complete("INSERT 0 2"),
        be::row_desc(&[("a", 25), ("b", 23)]),
        be::data_row(&[Some(b"x"), None]),
        be::data_row(&[Some(b"y"), Some(b"7")]),
        be::complete("SELECT 2"),
        be::rfq(b'T'),
    ]));
    let Response::Simple(res) = p.poll_response().unwrap().1.unwrap() else {
        panic!()
    };
    assert_eq!(res.len(), 3);
    assert_eq!(res[1].rows_affected(), 2);
    assert_eq!(res[2].rows.len(), 2);
    assert_eq!(res[2].rows[0].get::<Option<i32>>("b"), None);
    assert_eq!(res[2].rows[1].get::<Option<i32>>("b"), Some(7));
    assert_eq!(p.tx_status(), TxStatus::InTransaction);
}

#[test]
fn async_messages_anywhere() {
    let mut p = ready();
    p.simple_query("select 1").unwrap();
    p.receive(&be::cat(&[
        be::notice("hello"),
        be::notification(5, "chan", "payload"),
        be::param_status("TimeZone", "UTC"),
        be::complete("SELECT 0"),
        be::rfq(b'I'),
    ]));
    assert!(p.poll_response().unwrap().1.is_ok());
    let n: Vec<_> = p.take_notifications().collect();
    assert_eq!(n[0].channel, "chan");
    assert_eq!(n[0].payload, "payload");
    assert_eq!(p.take_notices().next().unwrap().message, "hello");
    assert_eq!(p.parameter("TimeZone"), Some("UTC"));
    // Notifications may also arrive with nothing pending.
    p.receive(&be::notification(5, "c2", ""));
    assert!(!p.is_dead());
    assert_eq!(p.take_notifications().count(), 1);
}

#[test]
fn fatal_error_fails_everything() {
    let mut p = ready();
    let st = stmt(&[], &[]);
    let a = p.execute(&st, &[]).unwrap();
    let b = p.execute(&st, &[]).unwrap();
    p.receive(&be::error(
        "FATAL",
        "57P01",
        "terminating connection due to administrator command",
    ));
    assert!(p.is_dead());
    let (id, r) = p.poll_response().unwrap();
    assert_eq!(id, a);
    let e = r.unwrap_err();
    assert!(e.is_broken() && e.is_transient());
    let (id, r) = p.poll_response().unwrap();
    assert_eq!(id, b);
    assert!(matches!(r, Err(Error::Closed)));
    assert!(matches!(p.simple_query("x"), Err(Error::Closed)));
}

#[test]
fn protocol_violation_is_fatal() {
    let mut p = ready();
    p.simple_query("select 1").unwrap();
    p.receive(&be::parse_complete());
    assert!(p.is_dead());
    assert!(matches!(
        p.poll_response().unwrap().1,
        Err(Error::Protocol(_))
    ));

    let mut p = ready();
    p.receive(&be::rfq(b'I'));
    assert!(p.is_dead());
    assert!(p.take_fatal().is_some());

    let mut p = ready();
    p.simple_query("select 1").unwrap();
    p.receive(&[b'D', 0, 0, 0, 1]);
    assert!(matches!(
        p.poll_response().unwrap().1,
        Err(Error::Protocol(_))
    ));
}

#[test]
fn io_failure_goes_to_the_oldest_request() {
    let mut p = ready();
    let a = p.simple_query("select pg_sleep(10)").unwrap();
    p.fail(Error::Io(std::io::ErrorKind::UnexpectedEof.into()));
    let (id, r) = p.poll_response().unwrap();
    assert_eq!(id, a);
    assert!(matches!(r, Err(Error::Io(_))));
}

#[test]
fn close_and_no_data() {
    let mut p = ready();
    let a = p.prepare("s9", "insert into t values (1)", &[]).unwrap();
    let b = p.close_statement("s9").unwrap();
    let m = frontend_msgs(&take(&mut p));
    assert_eq!(m.iter().map(|x| x.0).collect::<Vec<_>>(), b"PDSCS");
    p.receive(&be::cat(&[
        be::parse_complete(),
        be::param_desc(&[]),
        be::no_data(),
        be::rfq(b'I'),
        be::close_complete(),
        be::rfq(b'I'),
    ]));
    let (id, r) = p.poll_response().unwrap();
    assert_eq!(id, a);
    assert!(matches!(r.unwrap(), Response::Prepared { columns, .. } if columns.is_empty()));
    let (id, r) = p.poll_response().unwrap();
    assert_eq!(id, b);
    assert!(matches!(r.unwrap(), Response::Closed));
}

#[test]
fn failed_transaction_status() {
    let mut p = ready();
    p.simple_query("bad").unwrap();
    p.receive(&be::cat(&[
        be::error("ERROR", "42601", "syntax error"),
        be::rfq(b'E'),
    ]));
    assert_eq!(p.tx_status(), TxStatus::Failed);
    let e = p.poll_response().unwrap().1.unwrap_err();
    assert_eq!(e.as_db().unwrap().message, "syntax error");
}

#[test]
fn copy_in_flow() {
    let mut p = ready();
    let id = p.copy_in("copy t from stdin").unwrap();
    take(&mut p);
    assert!(!p.copy_in_ready(id));
    p.receive(&be::copy_in_response());
    assert!(p.copy_in_ready(id));
    p.copy_data(b"1\tx\n").unwrap();
    p.copy_done();
    let m = frontend_msgs(&take(&mut p));
    assert_eq!(m, vec![(b'd', b"1\tx\n".to_vec()), (b'c', vec![])]);
    p.receive(&be::cat(&[be::complete("COPY 1"), be::rfq(b'I')]));
    let Response::Copy { tag } = p.poll_response().unwrap().1.unwrap() else {
        panic!()
    };
    assert_eq!(rows_affected(&tag), 1);
}

#[test]
fn copy_out_flow_and_stray_copy() {
    let mut p = ready();
    let id = p.copy_out("copy t to stdout").unwrap();
    p.receive(&be::cat(&[
        be::copy_out_response(),
        be::copy_data(b"a\n"),
        be::copy_data(b"b\n"),
        be::copy_done(),
        be::complete("COPY 2"),
        be::rfq(b'I'),
    ]));
    assert_eq!(&p.take_copy_chunk(id).unwrap()[..], b"a\n");
    assert_eq!(&p.take_copy_chunk(id).unwrap()[..], b"b\n");
    assert!(p.take_copy_chunk(id).is_none());
    assert!(p.poll_response().unwrap().1.is_ok());

    // COPY FROM STDIN through simple_query is refused with CopyFail, not a hang.
    p.simple_query("copy t from stdin").unwrap();
    take(&mut p);
    p.receive(&be::copy_in_response());
    let m = frontend_msgs(&take(&mut p));
    assert_eq!(m[0].0, b'f');
    p.receive(&be::cat(&[
        be::error("ERROR", "57014", "COPY from stdin failed"),
        be::rfq(b'I'),
    ]));
    assert!(p.poll_response().unwrap().1.is_err());
    assert!(!p.is_dead());
}

#[test]
fn numeric_and_arrays_through_rows() {
    let mut p = ready();
    let st = stmt(&[], &[("n", Type::NUMERIC), ("a", Type::TEXT_ARRAY)]);
    p.execute(&st, &[]).unwrap();
    let mut num = BytesMut::new();
    Numeric::new("-1.50")
        .unwrap()
        .to_sql(Type::NUMERIC, &mut num)
        .unwrap();
    let mut arr = BytesMut::new();
    vec![Some("a"), None]
        .to_sql(Type::TEXT_ARRAY, &mut arr)
        .unwrap();
    p.receive(&be::cat(&[
        be::bind_complete(),
        be::data_row(&[Some(&num), Some(&arr)]),
        be::complete("SELECT 1"),
        be::rfq(b'I'),
    ]));
    let Response::Rows { rows, .. } = p.poll_response().unwrap().1.unwrap() else {
        panic!()
    };
    assert_eq!(rows[0].get::<Numeric>(0).as_str(), "-1.50");
    assert_eq!(
        rows[0].get::<Vec<Option<String>>>(1),
        vec![Some("a".to_string()), None]
    );
    assert_eq!(rows[0].to_text(1).unwrap().unwrap(), "{a,NULL}");
    let e = rows[0].try_get::<Vec<String>>(1).unwrap_err();
    assert!(matches!(e, Error::Conversion { .. }), "{e:?}");
    let e = rows[0].try_get::<i32>("n").unwrap_err();
    match e {
        Error::TypeMismatch {
            column,
            rust_type,
            pg_type,
        } => {
            assert_eq!(column, "n");
            assert_eq!(rust_type, "i32");
            assert_eq!(pg_type, "numeric");
        }
        e => panic!("{e:?}"),
    }
    assert!(matches!(rows[0].try_get::<i32>("zz"), Err(Error::Usage(_))));
}

#[test]
fn a_huge_declared_length_is_refused_before_anything_is_reserved() {
    // Before authentication: 5 bytes that declare a 2 GiB message.
    let mut p = Protocol::connect(&cfg()).unwrap();
    take(&mut p);
    p.receive(b"R\x7f\xff\xff\xff");
    assert!(p.is_dead());
    let e = p.take_fatal().expect("a fatal error");
    assert!(e.to_string().contains("declares"), "{e}");
    assert!(
        p.inbuf.capacity() < 1 << 20,
        "reserved {}",
        p.inbuf.capacity()
    );
    // After it: a DataRow over the limit, and a length below the header's own.
    for header in [b"D\x40\x00\x00\x01", b"D\x00\x00\x00\x03"] {
        let mut p = ready();
        p.receive(header);
        assert!(p.is_dead(), "{header:?}");
        assert!(p.inbuf.capacity() < 1 << 20);
    }
    // A large message within the limit arrives a piece at a time, and the
    // buffer grows only with what arrived.
    let mut p = ready();
    p.receive(b"N\x00\x10\x00\x00");
    assert!(!p.is_dead());
    assert!(
        p.inbuf.capacity() < 1 << 20,
        "reserved {}",
        p.inbuf.capacity()
    );
}

#[test]
fn notices_stay_capped_even_after_a_startup_that_sent_many() {
    let mut p = Protocol::connect(&cfg()).unwrap();
    take(&mut p);
    let mut msgs = vec![be::auth(0, &[])];
    msgs.extend((0..1000).map(|i| be::notice(&format!("startup notice {i}"))));
    msgs.extend([be::key_data(1, 2), be::rfq(b'I')]);
    p.receive(&be::cat(&msgs));
    assert!(p.is_ready());
    assert_eq!(p.notices.len(), super::MAX_NOTICES);
    p.receive(&be::cat(
        &(0..100)
            .map(|i| be::notice(&format!("later {i}")))
            .collect::<Vec<_>>(),
    ));
    assert_eq!(
        p.notices.len(),
        super::MAX_NOTICES,
        "the cap holds afterwards too"
    );
}

/// Shared connection: caller A's BEGIN, B's INSERT and C's SELECT arrive in
/// one read. B's INSERT ran inside A's transaction (its ReadyForQuery says
/// 'T'), so it must not be acknowledged: A fails with the reason, B and C
/// with `Closed`, all before anyone is answered, and the connection is dead.
#[test]
fn an_idle_only_session_fails_a_transaction_and_everything_behind_it() {
    let mut p = ready();
    p.require_idle_sessions();
    let a = p.simple_query("begin").unwrap();
    let b = p.simple_query("insert into t values (1)").unwrap();
    let c = p.simple_query("rollback").unwrap();
    p.receive(&be::cat(&[
        be::complete("BEGIN"),
        be::rfq(b'T'),
        be::complete("INSERT 0 1"),
        be::rfq(b'T'),
        be::complete("ROLLBACK"),
        be::rfq(b'I'),
    ]));
    let (id, r) = p.poll_response().unwrap();
    assert_eq!(id, a);
    assert!(
        matches!(&r, Err(Error::Usage(m)) if m.contains("transaction")),
        "{r:?}"
    );
    for want in [b, c] {
        let (id, r) = p.poll_response().unwrap();
        assert_eq!(id, want);
        assert!(matches!(r, Err(Error::Closed)), "{r:?}");
    }
    assert!(p.poll_response().is_none());
    assert!(p.is_dead());
}

/// The same rule on a connection that is not shared would be wrong: an
/// exclusive client's transaction is its own.
#[test]
fn an_exclusive_session_may_stay_in_a_transaction() {
    let mut p = ready();
    p.simple_query("begin").unwrap();
    p.receive(&be::cat(&[be::complete("BEGIN"), be::rfq(b'T')]));
    assert!(p.poll_response().unwrap().1.is_ok());
    assert!(!p.is_dead());
}
