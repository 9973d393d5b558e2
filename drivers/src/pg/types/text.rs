//! Any received value rendered as text, matching the server's own output
//! functions (what a simple query would have returned).

use super::*;

/// Renders a binary float like `float8out`/`float4out` with extra_float_digits = 1:
/// the shortest round-trip digits, exponent form outside `1e-4 <= |v| < 10^threshold`.
fn write_float(s: &mut String, shortest_exp: &str, threshold: i32) {
    // `shortest_exp` is Rust's `{:e}` output: shortest round-trip digits.
    let (neg, body) = match shortest_exp.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, shortest_exp),
    };
    let (mant, exp) = body
        .split_once('e')
        .expect("LowerExp output has an exponent");
    let exp: i32 = exp.parse().expect("LowerExp exponent is an integer");
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    if neg {
        s.push('-');
    }
    if (-4..threshold).contains(&exp) {
        if exp < 0 {
            s.push_str("0.");
            for _ in 0..(-exp - 1) {
                s.push('0');
            }
            s.push_str(&digits);
        } else {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                s.push_str(&digits);
                for _ in digits.len()..int_len {
                    s.push('0');
                }
            } else {
                s.push_str(&digits[..int_len]);
                s.push('.');
                s.push_str(&digits[int_len..]);
            }
        }
    } else {
        s.push_str(&digits[..1]);
        if digits.len() > 1 {
            s.push('.');
            s.push_str(&digits[1..]);
        }
        write!(s, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs()).unwrap();
    }
}

fn float_special(v: f64) -> Option<&'static str> {
    if v.is_nan() {
        Some("NaN")
    } else if v == f64::INFINITY {
        Some("Infinity")
    } else if v == f64::NEG_INFINITY {
        Some("-Infinity")
    } else {
        None
    }
}

/// Text of an `f64` as PostgreSQL prints a float8.
pub fn float8_text(v: f64) -> String {
    if let Some(sp) = float_special(v) {
        return sp.into();
    }
    let mut s = String::new();
    write_float(&mut s, &format!("{v:e}"), 15);
    s
}

/// Text of an `f32` as PostgreSQL prints a float4.
pub fn float4_text(v: f32) -> String {
    if let Some(sp) = float_special(f64::from(v)) {
        return sp.into();
    }
    let mut s = String::new();
    write_float(&mut s, &format!("{v:e}"), 6);
    s
}

/// Renders a binary-format value of type `ty` exactly as PostgreSQL's output
/// function would (what `psql -At` prints). Types without a binary codec are
/// received as text and need no rendering.
pub fn to_text(ty: Type, raw: &[u8]) -> Result<String, BoxError> {
    let mut s = String::new();
    render(ty, raw, &mut s)?;
    Ok(s)
}

fn render(ty: Type, raw: &[u8], s: &mut String) -> Result<(), BoxError> {
    match ty {
        Type::BOOL => s.push(if pt::bool_from_sql(raw)? { 't' } else { 'f' }),
        Type::BYTEA => {
            s.push_str("\\x");
            for b in raw {
                write!(s, "{b:02x}").unwrap();
            }
        }
        Type::CHAR => {
            // charout (PostgreSQL 15+): bytes with the high bit set print as \ooo.
            match raw.first() {
                None | Some(0) => {}
                Some(&b) if b & 0x80 != 0 => write!(s, "\\{b:03o}").unwrap(),
                Some(&b) => s.push(b as char),
            }
        }
        Type::INT2 => write!(s, "{}", pt::int2_from_sql(raw)?).unwrap(),
        Type::INT4 => write!(s, "{}", pt::int4_from_sql(raw)?).unwrap(),
        Type::INT8 => write!(s, "{}", pt::int8_from_sql(raw)?).unwrap(),
        Type::OID => write!(s, "{}", pt::oid_from_sql(raw)?).unwrap(),
        Type::FLOAT4 => s.push_str(&float4_text(pt::float4_from_sql(raw)?)),
        Type::FLOAT8 => s.push_str(&float8_text(pt::float8_from_sql(raw)?)),
        Type::NUMERIC => s.push_str(&numeric_to_text(raw)?),
        Type::DATE => write!(s, "{}", Date::from_sql(ty, raw)?).unwrap(),
        Type::TIME => write!(s, "{}", Time::from_sql(ty, raw)?).unwrap(),
        Type::TIMESTAMP => write!(s, "{}", Timestamp::from_sql(ty, raw)?).unwrap(),
        Type::TIMESTAMPTZ => write!(s, "{}", TimestampTz::from_sql(ty, raw)?).unwrap(),
        Type::INTERVAL => write!(s, "{}", Interval::from_sql(ty, raw)?).unwrap(),
        Type::UUID => write!(s, "{}", Uuid::from_sql(ty, raw)?).unwrap(),
        Type::VOID => {}
        _ if ty.element().is_some() => render_array(ty, raw, s)?,
        // text, varchar, bpchar, name, unknown, json, jsonb, and text-format columns.
        _ => s.push_str(str_from_sql(ty, raw)?),
    }
    Ok(())
}

fn render_array(ty: Type, raw: &[u8], s: &mut String) -> Result<(), BoxError> {
    let elem = ty.element().ok_or("not an array")?;
    let arr = pt::array_from_sql(raw)?;
    let dims: Vec<pt::ArrayDimension> = arr.dimensions().collect()?;
    if dims.is_empty() {
        s.push_str("{}");
        return Ok(());
    }
    if dims.iter().any(|d| d.lower_bound != 1) {
        for d in &dims {
            // In i64: a lower bound near i32::MAX must not overflow.
            let upper = i64::from(d.lower_bound) + i64::from(d.len) - 1;
            write!(s, "[{}:{upper}]", d.lower_bound).unwrap();
        }
        s.push('=');
    }
    let mut values = arr.values();
    let mut item = String::new();
    // Walk the dimensions like an odometer, opening and closing braces.
    let n = dims.len();
    let mut idx = vec![0i32; n];
    for _ in 0..n {
        s.push('{');
    }
    loop {
        let v = values
            .next()?
            .ok_or("array has fewer elements than its dimensions")?;
        match v {
            None => s.push_str("NULL"),
            Some(b) => {
                item.clear();
                render(elem, b, &mut item)?;
                push_array_item(s, &item);
            }
        }
        let mut d = n;
        loop {
            d -= 1;
            idx[d] += 1;
            if idx[d] < dims[d].len {
                s.push(',');
                for _ in d + 1..n {
                    s.push('{');
                }
                break;
            }
            idx[d] = 0;
            s.push('}');
            if d == 0 {
                return Ok(());
            }
        }
    }
}

/// Quotes an array element the way `array_out` does.
fn push_array_item(s: &mut String, item: &str) {
    let needs_quotes = item.is_empty()
        || item.eq_ignore_ascii_case("NULL")
        || item.bytes().any(|b| {
            matches!(
                b,
                b'"' | b'\\' | b'{' | b'}' | b',' | b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c
            )
        });
    if !needs_quotes {
        s.push_str(item);
        return;
    }
    s.push('"');
    for c in item.chars() {
        if c == '"' || c == '\\' {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('"');
}
