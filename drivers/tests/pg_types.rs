//! Every supported type through a bound parameter and back, and the driver's
//! text rendering checked against `psql -At`.

use std::fmt::Debug;

use tidepool_drivers::pg::{
    Client, Config, Date, FromSql, Interval, Json, Numeric, Time, Timestamp, TimestampTz, ToSql,
    Uuid,
};
use tidepool_engine::rt::block_on;
use tidepool_testkit::{PgServer, PgUser};

async fn connect() -> Client {
    let cfg: Config = PgServer::shared().url(PgUser::Trust).parse().unwrap();
    Client::connect(&cfg).await.unwrap()
}

/// Sends `v` as a parameter cast to `ty` and reads it back (as `R`).
async fn round_as<P: ToSql, R: for<'a> FromSql<'a>>(c: &mut Client, ty: &str, v: &P) -> R {
    let sql = format!("select $1::{ty}");
    let row = c
        .query_one(&sql, &[v])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    row.try_get(0).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

async fn round<T: ToSql + for<'a> FromSql<'a>>(c: &mut Client, ty: &str, v: &T) -> T {
    round_as(c, ty, v).await
}

async fn same<T>(c: &mut Client, ty: &str, vals: &[T])
where
    T: ToSql + for<'a> FromSql<'a> + PartialEq + Debug,
{
    for v in vals {
        assert_eq!(&round(c, ty, v).await, v, "{ty}");
    }
    // NULL goes through as None for every type.
    let none: Option<T> = None;
    assert_eq!(round(c, ty, &none).await, None, "{ty}");
    // And as an array, NULLs included.
    let arr: Vec<Option<&T>> = vals.iter().map(Some).chain([None]).collect();
    let aty = format!("{ty}[]");
    let back: Vec<Option<T>> = round_as(c, &aty, &arr).await;
    assert_eq!(
        back.iter().map(Option::as_ref).collect::<Vec<_>>(),
        arr,
        "{aty}"
    );
    let empty: Vec<&T> = Vec::new();
    let back: Vec<T> = round_as(c, &aty, &empty).await;
    assert!(back.is_empty());
}

#[test]
fn scalars_round_trip() {
    block_on(async {
        let mut c = connect().await;
        same(&mut c, "bool", &[true, false]).await;
        same(&mut c, "int2", &[i16::MIN, -1, 0, i16::MAX]).await;
        same(&mut c, "int4", &[i32::MIN, 0, i32::MAX]).await;
        same(&mut c, "int8", &[i64::MIN, 0, i64::MAX]).await;
        same(&mut c, "oid", &[0u32, u32::MAX]).await;
        same(&mut c, "\"char\"", &[b'a' as i8, 1]).await;
        same(
            &mut c,
            "text",
            &[
                String::new(),
                "héllo wörld ✓ 🎉".to_string(),
                "quote\" back\\slash {,} NULL".to_string(),
                "x".repeat(100_000),
            ],
        )
        .await;
        same(&mut c, "varchar", &["v".to_string()]).await;
        same(&mut c, "name", &["pg_class".to_string()]).await;
        // bpchar pads to its length.
        assert_eq!(
            round_as::<_, String>(&mut c, "char(5)", &"ab").await,
            "ab   "
        );
        same(&mut c, "bytea", &[vec![], (0..=255u8).collect::<Vec<u8>>()]).await;
        let u: Uuid = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".parse().unwrap();
        same(&mut c, "uuid", &[u, Uuid([0; 16]), Uuid([0xff; 16])]).await;
        assert_eq!(round(&mut c, "uuid", &[7u8; 16]).await, [7u8; 16]);
    });
}

#[test]
fn floats_round_trip() {
    block_on(async {
        let mut c = connect().await;
        for v in [
            0.0f32,
            -0.0,
            f32::MIN,
            f32::MAX,
            f32::MIN_POSITIVE,
            f32::EPSILON,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ] {
            let back = round(&mut c, "float4", &v).await;
            assert!(
                back.to_bits() == v.to_bits() || (v.is_nan() && back.is_nan()),
                "{v}"
            );
        }
        for v in [
            0.0f64,
            -0.0,
            f64::MIN,
            f64::MAX,
            f64::MIN_POSITIVE,
            1e-310,
            0.1,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
        ] {
            let back = round(&mut c, "float8", &v).await;
            assert!(
                back.to_bits() == v.to_bits() || (v.is_nan() && back.is_nan()),
                "{v}"
            );
        }
        let arr = vec![Some(1.5f64), None, Some(f64::NAN)];
        let back: Vec<Option<f64>> = round(&mut c, "float8[]", &arr).await;
        assert_eq!(back[0], Some(1.5));
        assert_eq!(back[1], None);
        assert!(back[2].unwrap().is_nan());
        // f32 widens into float8; f64 reads float4.
        assert_eq!(round_as::<_, f64>(&mut c, "float8", &1.5f32).await, 1.5);
    });
}

#[test]
fn numeric_round_trip() {
    block_on(async {
        let mut c = connect().await;
        let vals: Vec<Numeric> = [
            "0",
            "0.000",
            "1",
            "-1.50",
            "123456789012345678901234567890.000000000000000000001",
            "-0.000000000000000000000000000001",
            "10000",
            "99999999",
            "NaN",
            "Infinity",
            "-Infinity",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        same(&mut c, "numeric", &vals).await;
        // Exponent forms are normalized exactly like the server's numeric_in.
        for s in ["1e20", "1.5e-7", "-2.50E+3"] {
            let n: Numeric = s.parse().unwrap();
            let row = c
                .query_one(&format!("select '{s}'::numeric"), &[])
                .await
                .unwrap();
            assert_eq!(row.get::<Numeric>(0), n, "{s}");
            assert_eq!(round(&mut c, "numeric", &n).await, n);
        }
        // Integers bind to numeric parameters.
        assert_eq!(
            round(&mut c, "numeric", &Numeric::from(i64::MIN))
                .await
                .as_str(),
            "-9223372036854775808"
        );
        let row = c
            .query_one("select $1::numeric + 1", &[&41i64])
            .await
            .unwrap();
        assert_eq!(row.get::<Numeric>(0).as_str(), "42");
    });
}

#[test]
fn date_time_round_trip() {
    block_on(async {
        let mut c = connect().await;
        same(
            &mut c,
            "date",
            &[
                Date(0),
                Date::from_ymd(1970, 1, 1).unwrap(),
                Date::from_ymd(-4713, 11, 24).unwrap(),
                Date::from_ymd(5_874_897, 12, 31).unwrap(),
                Date::INFINITY,
                Date::NEG_INFINITY,
            ],
        )
        .await;
        same(
            &mut c,
            "time",
            &[
                Time(0),
                Time::from_hms_micro(23, 59, 59, 999_999).unwrap(),
                Time::from_hms_micro(24, 0, 0, 0).unwrap(),
            ],
        )
        .await;
        let min = Timestamp::new(Date::from_ymd(-4713, 11, 24).unwrap(), Time(0));
        let max = Timestamp::new(
            Date::from_ymd(294_276, 12, 31).unwrap(),
            Time::from_hms_micro(23, 59, 59, 999_999).unwrap(),
        );
        same(
            &mut c,
            "timestamp",
            &[
                Timestamp(0),
                Timestamp::from_unix_micros(0),
                min,
                max,
                Timestamp::INFINITY,
                Timestamp::NEG_INFINITY,
            ],
        )
        .await;
        same(
            &mut c,
            "timestamptz",
            &[
                TimestampTz(0),
                TimestampTz(min.0),
                TimestampTz(max.0),
                TimestampTz::now(),
                TimestampTz::INFINITY,
                TimestampTz::NEG_INFINITY,
            ],
        )
        .await;
        same(
            &mut c,
            "interval",
            &[
                Interval::default(),
                Interval::new(14, 3, 4_000_000),
                Interval::new(-1, -2, -3),
                Interval::new(i32::MAX - 1, i32::MIN + 1, i64::MAX - 1),
            ],
        )
        .await;
        // The server agrees on the calendar: a date computed client-side.
        let row = c
            .query_one(
                "select $1::date = '2024-02-29'::date",
                &[&Date::from_ymd(2024, 2, 29).unwrap()],
            )
            .await
            .unwrap();
        assert!(row.get::<bool>(0));
        let row = c
            .query_one(
                "select extract(epoch from $1::timestamptz)::int8",
                &[&TimestampTz::from_unix_micros(1_700_000_000_000_000)],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<i64>(0), 1_700_000_000);
    });
}

#[test]
fn json_round_trip() {
    block_on(async {
        let mut c = connect().await;
        let raw = Json(r#"{"b": 1, "a": [1, 2.50, "ü"]}"#.into());
        // json keeps the text as is.
        assert_eq!(round(&mut c, "json", &raw).await, raw);
        // jsonb normalizes it; compare as values.
        let v: serde_json::Value = serde_json::from_str(&raw.0).unwrap();
        let back: serde_json::Value =
            serde_json::from_str(&round(&mut c, "jsonb", &raw).await.0).unwrap();
        assert_eq!(back, v);
        same(&mut c, "jsonb", &[v.clone(), serde_json::Value::Null]).await;
        same(&mut c, "json", &[v]).await;
        let row = c
            .query_one("select $1::jsonb -> 'a' ->> 2", &[&raw])
            .await
            .unwrap();
        assert_eq!(row.get::<&str>(0), "ü");
    });
}

#[test]
fn arrays_edge_cases() {
    block_on(async {
        let mut c = connect().await;
        let v: Vec<Option<String>> = vec![
            Some(String::new()),
            None,
            Some("NULL".into()),
            Some("a,b{c}\"d\\".into()),
            Some("ünï".into()),
        ];
        assert_eq!(round(&mut c, "text[]", &v).await, v);
        let row = c
            .query_one(
                "select array_length($1::int8[], 1), $1::int8[] is null",
                &[&vec![1i64, 2, 3]],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<i32>(0), 3);
        // Reading a NULL-holding array as Vec<T> is a clear conversion error.
        let row = c
            .query_one("select array[1, null]::int4[]", &[])
            .await
            .unwrap();
        assert!(row.try_get::<Vec<i32>>(0).is_err());
        assert_eq!(row.get::<Vec<Option<i32>>>(0), vec![Some(1), None]);
        // A NULL array.
        let row = c.query_one("select null::int4[]", &[]).await.unwrap();
        assert_eq!(row.get::<Option<Vec<i32>>>(0), None);
        // Multi-dimensional arrays refuse Vec<T> but render as text.
        let row = c.query_one("select array[[1,2],[3,4]]", &[]).await.unwrap();
        assert!(row.try_get::<Vec<i32>>(0).is_err());
        assert_eq!(row.to_text(0).unwrap().unwrap(), "{{1,2},{3,4}}");
    });
}

#[test]
fn mismatches_and_text_fallback() {
    block_on(async {
        let mut c = connect().await;
        let row = c.query_one("select 1::int8 as big", &[]).await.unwrap();
        let e = row.try_get::<i32>("big").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("big") && msg.contains("i32") && msg.contains("int8"),
            "{msg}"
        );
        // Parameter mismatch names the parameter.
        let e = c.query("select $1::int4", &[&"x"]).await.unwrap_err();
        assert!(
            matches!(e, tidepool_drivers::pg::Error::TypeMismatch { .. }) || e.code().is_some(),
            "{e}"
        );
        let e = c.query("select $1::bool", &[&1i32]).await.unwrap_err();
        assert!(e.to_string().contains("$1"), "{e}");
        assert!(!c.is_broken());
        // Types without a binary codec arrive as text; strings bind to them as text.
        let row = c
            .query_one("select $1::inet, point(1, 2)", &[&"10.1.2.3/8"])
            .await
            .unwrap();
        assert_eq!(row.get::<String>(0), "10.1.2.3/8");
        assert_eq!(row.get::<&str>(1), "(1,2)");
        // Strings bind to dates as text, too.
        let row = c
            .query_one("select $1::date", &[&"2020-02-03"])
            .await
            .unwrap();
        assert_eq!(row.get::<Date>(0), Date::from_ymd(2020, 2, 3).unwrap());
    });
}

/// Expressions covering every type; the driver's rendering of each must equal psql's.
const EXPRS: &[&str] = &[
    "true",
    "false",
    "32767::int2",
    "(-2147483648)::int4",
    "9223372036854775807::int8",
    "4294967295::oid",
    "1.5::float4",
    "0.1::float4",
    "1e30::float4",
    "1234567::float4",
    "'NaN'::float4",
    "0.1::float8",
    "1e15::float8",
    "123456789012345.6::float8",
    "0.000012345::float8",
    "'-Infinity'::float8",
    "'-0'::float8",
    "'1e-5'::float4",
    "1.7976931348623157e308::float8",
    "123.4500::numeric",
    "(-0.000001)::numeric",
    "'NaN'::numeric",
    "1e30::numeric",
    "'-Infinity'::numeric",
    "0::numeric(10,3)",
    "'héllo ✓'::text",
    "'ab'::char(5)",
    "'x'::varchar(3)",
    "'pg_class'::name",
    "'z'::\"char\"",
    "'\\xdeadbeef'::bytea",
    "''::bytea",
    "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid",
    "'2024-02-29'::date",
    "'0044-03-15 BC'::date",
    "'infinity'::date",
    "'13:14:15.5'::time",
    "'24:00:00'::time",
    "'2024-01-02 03:04:05.678901'::timestamp",
    "'4713-11-24 00:00:00 BC'::timestamp",
    "'-infinity'::timestamp",
    "'2024-01-02 03:04:05+02'::timestamptz",
    "'0100-06-01 12:00:00+00 BC'::timestamptz",
    "'1 year 2 months 3 days 04:05:06.7'::interval",
    "'-1 days +02:00'::interval",
    "'-1.5 seconds'::interval",
    "'0'::interval",
    "'100 hours'::interval",
    "'-1 year -1 month'::interval",
    "'1 mon -1 day'::interval",
    "'{\"b\": 1, \"a\": [1, 2.50]}'::json",
    "'{\"b\": 1, \"a\": [1, 2.50], \"c\": {\"x\": null}}'::jsonb",
    "array[1, null, 3]",
    "array['a b', '', null, 'NULL', 'q\"x\\']",
    "'{}'::int4[]",
    "array['\\x01ff'::bytea]",
    "array[1.5::numeric, null, 'NaN']",
    "array['2020-01-01'::date, 'infinity']",
    "array['2020-01-01 10:00'::timestamptz]",
    "array['1 day'::interval, '-01:00']",
    "array['{\"a\": 1}'::jsonb]",
    "array[true, false]",
    "array[1.5::float8, 'NaN', '-Infinity']",
    "array['a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid]",
    "'[0:1]={5,6}'::int4[]",
    "array[[1, 2], [3, 4]]",
    "array['x'::varchar, 'y z']",
    "'10.0.0.1/8'::inet",
    "null::int4",
    "pg_sleep(0)",
];

#[test]
fn psql_cross_check() {
    let pg = PgServer::shared();
    let mut script = String::from("SET TimeZone = 'UTC';\n");
    for e in EXPRS {
        // Rows from psql -At are newline-terminated; a marker line keeps
        // them apart even if a value were empty.
        script.push_str(&format!("select 'MARK'; select {e};\n"));
    }
    let out = pg.psql(&script);
    let expected: Vec<String> = out
        .split("MARK\n")
        .skip(1)
        .map(|s| s.strip_suffix('\n').unwrap_or(s).to_string())
        .collect();
    assert_eq!(expected.len(), EXPRS.len(), "{out}");
    // Guard against a vacuous comparison.
    assert_eq!(expected[0], "t");
    assert_eq!(expected[EXPRS.len() - 4], "{x,\"y z\"}");
    assert!(
        expected.iter().filter(|s| s.is_empty()).count() <= 4,
        "{expected:?}"
    );
    if std::env::var_os("PG_CROSS_CHECK_PRINT").is_some() {
        for (e, v) in EXPRS.iter().zip(&expected) {
            eprintln!("{e} => {v}");
        }
    }
    block_on(async {
        let mut c = connect().await;
        let mut failures = Vec::new();
        for (e, want) in EXPRS.iter().zip(&expected) {
            let row = c
                .query_one(&format!("select {e}"), &[])
                .await
                .unwrap_or_else(|err| panic!("{e}: {err}"));
            let got = row.to_text(0).unwrap().unwrap_or_default();
            if &got != want {
                failures.push(format!("{e}: driver {got:?} != psql {want:?}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    });
}
