use super::datetime::USECS_PER_DAY;
use super::*;

fn enc<T: ToSql>(v: T, ty: Type) -> BytesMut {
    let mut b = BytesMut::new();
    v.to_sql(ty, &mut b).unwrap();
    b
}

fn round<T>(v: T, ty: Type) -> T
where
    T: ToSql + for<'a> FromSql<'a>,
{
    let b = enc(&v, ty);
    T::from_sql(ty, &b).unwrap()
}

#[test]
fn type_names() {
    assert_eq!(Type::INT4.name().as_deref(), Some("int4"));
    assert_eq!(Type::INT4_ARRAY.name().as_deref(), Some("int4[]"));
    assert_eq!(Type::INT4_ARRAY.element(), Some(Type::INT4));
    assert_eq!(Type::INT4.array(), Some(Type::INT4_ARRAY));
    assert_eq!(Type(869).to_string(), "oid 869");
    assert!(!Type(869).is_binary_supported());
    assert!(Type::JSONB_ARRAY.is_binary_supported());
}

#[test]
fn scalars_round_trip() {
    assert!(round(true, Type::BOOL));
    assert_eq!(round(i16::MIN, Type::INT2), i16::MIN);
    assert_eq!(round(i32::MAX, Type::INT4), i32::MAX);
    assert_eq!(round(i64::MIN, Type::INT8), i64::MIN);
    assert_eq!(round(-1.5f32, Type::FLOAT4), -1.5);
    assert!(round(f64::NAN, Type::FLOAT8).is_nan());
    assert_eq!(round(u32::MAX, Type::OID), u32::MAX);
    let u: Uuid = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".parse().unwrap();
    assert_eq!(round(u, Type::UUID), u);
    assert_eq!(u.to_string(), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
}

#[test]
fn int_widening_and_range() {
    let b = enc(5i32, Type::INT8);
    assert_eq!(i64::from_sql(Type::INT8, &b).unwrap(), 5);
    let mut out = BytesMut::new();
    assert!(70000i32.to_sql(Type::INT2, &mut out).is_err());
    let err = 1i32.to_sql(Type::TEXT, &mut out).err().unwrap();
    assert!(err.downcast_ref::<WrongType>().is_some());
    assert!(<i32 as FromSql>::accepts(Type::INT2));
    assert!(!<i32 as FromSql>::accepts(Type::INT8));
}

#[test]
fn strings_and_formats() {
    assert_eq!("x".format(Type::TEXT), FORMAT_BINARY);
    assert_eq!("2020-01-01".format(Type::DATE), FORMAT_TEXT);
    let b = enc("{\"a\":1}", Type::JSONB);
    assert_eq!(b[0], 1);
    assert_eq!(String::from_sql(Type::JSONB, &b).unwrap(), "{\"a\":1}");
    assert!(!<&str as ToSql>::accepts(Type::TEXT_ARRAY));
}

fn num(s: &str) -> String {
    Numeric::new(s).unwrap().0
}

#[test]
fn numeric_round_trips() {
    for (i, o) in [
        ("0", "0"),
        ("0.000", "0.000"),
        ("-0", "0"),
        ("1", "1"),
        ("-1.50", "-1.50"),
        ("12345678.87654321", "12345678.87654321"),
        ("10000", "10000"),
        ("0.0001", "0.0001"),
        ("0.00001", "0.00001"),
        ("1e3", "1000"),
        ("1.5e-3", "0.0015"),
        (
            "123456789012345678901234567890.123456789",
            "123456789012345678901234567890.123456789",
        ),
        ("NaN", "NaN"),
        ("infinity", "Infinity"),
        ("-Infinity", "-Infinity"),
        ("+7.", "7"),
        (".5", "0.5"),
    ] {
        assert_eq!(num(i), o, "input {i}");
    }
    for bad in ["", "abc", "1.2.3", "1e", "--1", "."] {
        assert!(Numeric::new(bad).is_err(), "{bad}");
    }
}

#[test]
fn numeric_binary_layout() {
    // 12345.678 = groups [1, 2345, 6780], weight 1, dscale 3.
    let b = enc(Numeric("12345.678".into()), Type::NUMERIC);
    assert_eq!(
        &b[..],
        &[0, 3, 0, 1, 0, 0, 0, 3, 0, 1, 0x09, 0x29, 0x1a, 0x7c]
    );
    let b = enc(Numeric("0.0001".into()), Type::NUMERIC);
    assert_eq!(&b[..], &[0, 1, 0xff, 0xff, 0, 0, 0, 4, 0, 1]);
}

#[test]
fn float_text() {
    for (v, t) in [
        (0.0, "0"),
        (-0.0, "-0"),
        (1.5, "1.5"),
        (0.1, "0.1"),
        (100.0, "100"),
        (1e14, "100000000000000"),
        (1e15, "1e+15"),
        (1.5e-5, "1.5e-05"),
        (0.0001, "0.0001"),
        (1e100, "1e+100"),
        (f64::MAX, "1.7976931348623157e+308"),
        (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
        (123456789012345.6, "123456789012345.6"),
        (f64::NEG_INFINITY, "-Infinity"),
    ] {
        assert_eq!(float8_text(v), t);
    }
    assert_eq!(float4_text(123456.0), "123456");
    assert_eq!(float4_text(1234567.0), "1.234567e+06");
    assert_eq!(float4_text(0.1), "0.1");
    assert_eq!(float4_text(f32::MAX), "3.4028235e+38");
}

#[test]
fn dates() {
    assert_eq!(Date(0).to_string(), "2000-01-01");
    assert_eq!(
        Date::from_ymd(2024, 2, 29).unwrap().to_string(),
        "2024-02-29"
    );
    assert!(Date::from_ymd(2023, 2, 29).is_none());
    assert_eq!(
        Date::from_ymd(-43, 3, 15).unwrap().to_string(),
        "0044-03-15 BC"
    );
    assert_eq!(
        Date::from_ymd(0, 1, 1).unwrap().to_string(),
        "0001-01-01 BC"
    );
    assert_eq!(
        Date::from_ymd(12345, 6, 7).unwrap().to_string(),
        "12345-06-07"
    );
    assert_eq!(Date::INFINITY.to_string(), "infinity");
    let d = Date::from_ymd(1969, 12, 31).unwrap();
    assert_eq!(d.ymd(), (1969, 12, 31));
    // 4713-11-24 BC is julian day 0, the lowest PostgreSQL date.
    assert_eq!(Date::from_ymd(-4713, 11, 24).unwrap().0, -2_451_545);
}

#[test]
fn timestamps() {
    let d = Date::from_ymd(2021, 3, 4).unwrap();
    let t = Time::from_hms_micro(5, 6, 7, 89_000).unwrap();
    assert_eq!(t.to_string(), "05:06:07.089");
    assert_eq!(Timestamp::new(d, t).to_string(), "2021-03-04 05:06:07.089");
    assert_eq!(
        TimestampTz::new(d, Time(0)).to_string(),
        "2021-03-04 00:00:00+00"
    );
    let bc = Date::from_ymd(-99, 1, 1).unwrap();
    assert_eq!(
        TimestampTz::new(bc, Time(1)).to_string(),
        "0100-01-01 00:00:00.000001+00 BC"
    );
    assert_eq!(Timestamp(-1).to_string(), "1999-12-31 23:59:59.999999");
    assert_eq!(Time(USECS_PER_DAY).to_string(), "24:00:00");
    assert_eq!(
        TimestampTz::from_unix_micros(0).to_string(),
        "1970-01-01 00:00:00+00"
    );
    assert_eq!(Timestamp::INFINITY.to_string(), "infinity");
}

/// Inputs an external fuzz run found: none may panic or be accepted wrongly.
#[test]
fn fuzz_found_inputs_are_handled() {
    assert!(Numeric::new("1e-9223372036854775808").is_err());
    assert!(Numeric::new("1e9223372036854775807").is_err());
    assert!("+f+f+f+f+f+f+f+f+f+f+f+f+f+f+f+f".parse::<Uuid>().is_err());
    assert!("0123456789abcdef0123456789ABCDEF".parse::<Uuid>().is_ok());
}

/// `'infinity'` is a value databases return every day: it converts and
/// combines without overflow, and stays infinite.
#[test]
fn infinite_timestamps_stay_infinite() {
    assert_eq!(Timestamp::INFINITY.to_unix_micros(), i64::MAX);
    assert_eq!(Timestamp::NEG_INFINITY.to_unix_micros(), i64::MIN);
    assert_eq!(TimestampTz::INFINITY.to_unix_micros(), i64::MAX);
    assert_eq!(TimestampTz::NEG_INFINITY.to_unix_micros(), i64::MIN);
    assert_eq!(Timestamp::from_unix_micros(i64::MAX), Timestamp::INFINITY);
    assert_eq!(Timestamp::new(Date::INFINITY, Time(5)), Timestamp::INFINITY);
    assert_eq!(
        TimestampTz::new(Date::NEG_INFINITY, Time(5)),
        TimestampTz::NEG_INFINITY
    );
    // Far but finite: saturates instead of wrapping.
    assert_eq!(
        Timestamp::new(Date(i32::MAX - 1), Time(0)),
        Timestamp::INFINITY
    );
    assert_eq!(Timestamp(i64::MAX - 1).to_unix_micros(), i64::MAX);
    // Ordinary values are unchanged.
    let t = Timestamp::from_unix_micros(1_700_000_000_000_000);
    assert_eq!(t.to_unix_micros(), 1_700_000_000_000_000);
}

#[test]
fn intervals() {
    let h = 3_600_000_000i64;
    for (iv, t) in [
        (Interval::new(0, 0, 0), "00:00:00"),
        (
            Interval::new(14, 3, 4 * h + 5 * 60_000_000 + 6_789_000),
            "1 year 2 mons 3 days 04:05:06.789",
        ),
        (Interval::new(1, 1, 0), "1 mon 1 day"),
        (Interval::new(0, -1, 2 * h), "-1 days +02:00:00"),
        (Interval::new(-13, 0, 0), "-1 years -1 mons"),
        (Interval::new(0, 0, -1_500_000), "-00:00:01.5"),
        (Interval::new(0, 2, -h), "2 days -01:00:00"),
        (Interval::new(-1, 2, 0), "-1 mons +2 days"),
        (Interval::new(0, 0, 100 * h), "100:00:00"),
    ] {
        assert_eq!(iv.to_string(), t);
    }
    let iv = Interval::new(-5, 6, -7);
    assert_eq!(round(iv, Type::INTERVAL), iv);
}

#[test]
fn arrays() {
    let v = vec![Some(1i32), None, Some(3)];
    let b = enc(&v, Type::INT4_ARRAY);
    assert_eq!(
        Vec::<Option<i32>>::from_sql(Type::INT4_ARRAY, &b).unwrap(),
        v
    );
    assert_eq!(to_text(Type::INT4_ARRAY, &b).unwrap(), "{1,NULL,3}");
    assert!(Vec::<i32>::from_sql(Type::INT4_ARRAY, &b).is_err());
    let e: Vec<i64> = vec![];
    let b = enc(&e, Type::INT8_ARRAY);
    assert_eq!(to_text(Type::INT8_ARRAY, &b).unwrap(), "{}");
    assert!(Vec::<i64>::from_sql(Type::INT8_ARRAY, &b)
        .unwrap()
        .is_empty());
    let s = vec!["a b", "", "null", "q\"x\\", "plain", "{}"];
    let b = enc(&s, Type::TEXT_ARRAY);
    assert_eq!(
        to_text(Type::TEXT_ARRAY, &b).unwrap(),
        r#"{"a b","","null","q\"x\\",plain,"{}"}"#
    );
    let by: Vec<Vec<u8>> = vec![vec![1, 0xab]];
    let b = enc(&by, Type::BYTEA_ARRAY);
    assert_eq!(to_text(Type::BYTEA_ARRAY, &b).unwrap(), r#"{"\\x01ab"}"#);
    let mut out = BytesMut::new();
    assert!(vec![1i32].to_sql(Type::TEXT_ARRAY, &mut out).is_err());
}

#[test]
fn multidim_array_text() {
    let mut b = BytesMut::new();
    pt::array_to_sql(
        [
            pt::ArrayDimension {
                len: 2,
                lower_bound: 1,
            },
            pt::ArrayDimension {
                len: 2,
                lower_bound: 1,
            },
        ],
        Type::INT4.0,
        [1, 2, 3, 4],
        |v, buf| {
            pt::int4_to_sql(v, buf);
            Ok(IsNull::No)
        },
        &mut b,
    )
    .unwrap();
    assert_eq!(to_text(Type::INT4_ARRAY, &b).unwrap(), "{{1,2},{3,4}}");
    // One dimension of two int4s from `lower`: text shows the bounds
    // unless they start at 1; a bound at the top of the range puts the
    // upper one past it.
    let one_dim = |lower: i32| {
        let mut b = BytesMut::new();
        pt::array_to_sql(
            [pt::ArrayDimension {
                len: 2,
                lower_bound: lower,
            }],
            Type::INT4.0,
            [1, 2],
            |v, buf| {
                pt::int4_to_sql(v, buf);
                Ok(IsNull::No)
            },
            &mut b,
        )
        .unwrap();
        to_text(Type::INT4_ARRAY, &b).unwrap()
    };
    assert_eq!(one_dim(0), "[0:1]={1,2}");
    assert_eq!(one_dim(i32::MAX), "[2147483647:2147483648]={1,2}");
}

#[test]
fn misc_text() {
    assert_eq!(to_text(Type::BYTEA, &[0xde, 0xad]).unwrap(), "\\xdead");
    assert_eq!(to_text(Type::BOOL, &[1]).unwrap(), "t");
    assert_eq!(to_text(Type::CHAR, b"a").unwrap(), "a");
    assert_eq!(to_text(Type::CHAR, &[0xe9]).unwrap(), "\\351");
    assert_eq!(to_text(Type::JSONB, b"\x01{}").unwrap(), "{}");
    let v = serde_json::json!({"k": [1, 2]});
    let b = enc(&v, Type::JSONB);
    assert_eq!(serde_json::Value::from_sql(Type::JSONB, &b).unwrap(), v);
}
