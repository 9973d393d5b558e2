//! numeric, carried as its exact decimal text.

use super::*;

const NUMERIC_POS: u16 = 0x0000;
const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;
const NUMERIC_PINF: u16 = 0xD000;
const NUMERIC_NINF: u16 = 0xF000;

/// An exact decimal, kept as its PostgreSQL text form (`"-12.3400"`, `"NaN"`,
/// `"Infinity"`), converted from/to the binary base-10000 numeric format.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Numeric(pub(super) String);

impl Numeric {
    /// Validates and normalizes a decimal string the way `numeric_in` would
    /// (`"1.50"` keeps its scale, `"1e3"` becomes `"1000"`).
    pub fn new(s: &str) -> Result<Numeric, BoxError> {
        let mut buf = BytesMut::new();
        numeric_to_sql(s, &mut buf)?;
        Ok(Numeric(numeric_to_text(&buf)?))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn is_nan(&self) -> bool {
        self.0 == "NaN"
    }
    /// Lossy conversion for arithmetic outside the database.
    pub fn to_f64(&self) -> f64 {
        float_from_text(&self.0).unwrap_or(f64::NAN)
    }
}

impl FromStr for Numeric {
    type Err = BoxError;
    fn from_str(s: &str) -> Result<Numeric, BoxError> {
        Numeric::new(s)
    }
}

impl fmt::Display for Numeric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<i64> for Numeric {
    fn from(v: i64) -> Numeric {
        Numeric(v.to_string())
    }
}

/// Encodes a decimal string into the binary numeric format.
pub(super) fn numeric_to_sql(s: &str, out: &mut BytesMut) -> Result<(), BoxError> {
    let t = s.trim();
    let special = match t.to_ascii_lowercase().as_str() {
        "nan" => Some(NUMERIC_NAN),
        "infinity" | "+infinity" | "inf" | "+inf" => Some(NUMERIC_PINF),
        "-infinity" | "-inf" => Some(NUMERIC_NINF),
        _ => None,
    };
    if let Some(sign) = special {
        out.put_i16(0);
        out.put_i16(0);
        out.put_u16(sign);
        out.put_u16(0);
        return Ok(());
    }
    let bad = || -> BoxError { format!("invalid numeric {s:?}").into() };
    let (neg, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (mantissa, exp) = match body.find(['e', 'E']) {
        Some(i) => {
            let e: i64 = body[i + 1..].parse().map_err(|_| bad())?;
            (&body[..i], e)
        }
        None => (body, 0),
    };
    if exp.unsigned_abs() > 200_000 {
        return Err(bad());
    }
    let (int_part, frac_part) = match mantissa.split_once('.') {
        Some((i, f)) => (i, f),
        None => (mantissa, ""),
    };
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    // All digits, with the decimal point after `point` of them.
    let digits: Vec<u8> = int_part
        .bytes()
        .chain(frac_part.bytes())
        .map(|b| b - b'0')
        .collect();
    let point = int_part.len() as i64 + exp;
    let dscale = (frac_part.len() as i64 - exp).max(0);
    if dscale > 0x3FFF {
        return Err(bad());
    }
    // Align to base-10000 groups: the first group starts at a multiple of 4
    // relative to the decimal point.
    let lead_pad = (4 - point.rem_euclid(4)) % 4;
    let start = point + lead_pad; // digits in front of the point, rounded up to a multiple of 4
    let weight_first = start / 4 - 1;
    let total = lead_pad as usize + digits.len();
    let ngroups = total.div_ceil(4);
    let mut groups: Vec<i16> = Vec::with_capacity(ngroups);
    for g in 0..ngroups {
        let mut v = 0i16;
        for k in 0..4 {
            let idx = (g * 4 + k) as i64 - lead_pad;
            let d = if idx >= 0 && (idx as usize) < digits.len() {
                digits[idx as usize] as i16
            } else {
                0
            };
            v = v * 10 + d;
        }
        groups.push(v);
    }
    let mut weight = weight_first;
    let lead_zeros = groups.iter().take_while(|&&g| g == 0).count();
    groups.drain(..lead_zeros);
    weight -= lead_zeros as i64;
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    let weight = i16::try_from(weight).map_err(|_| bad())?;
    let ndigits = i16::try_from(groups.len()).map_err(|_| bad())?;
    out.put_i16(ndigits);
    out.put_i16(weight);
    out.put_u16(if neg && !groups.is_empty() {
        NUMERIC_NEG
    } else {
        NUMERIC_POS
    });
    out.put_u16(dscale as u16);
    for g in groups {
        out.put_i16(g);
    }
    Ok(())
}

/// Renders the binary numeric format exactly like `numeric_out`.
pub(super) fn numeric_to_text(raw: &[u8]) -> Result<String, BoxError> {
    let rd16 = |i: usize| -> Result<u16, BoxError> {
        raw.get(i..i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "numeric value too short".into())
    };
    let ndigits = rd16(0)? as i16;
    let weight = rd16(2)? as i16 as i32;
    let sign = rd16(4)?;
    let dscale = rd16(6)? as i32;
    if ndigits < 0 || raw.len() != 8 + 2 * ndigits as usize {
        return Err("invalid numeric length".into());
    }
    match sign {
        NUMERIC_NAN => return Ok("NaN".into()),
        NUMERIC_PINF => return Ok("Infinity".into()),
        NUMERIC_NINF => return Ok("-Infinity".into()),
        NUMERIC_POS | NUMERIC_NEG => {}
        _ => return Err("invalid numeric sign".into()),
    }
    let mut groups = Vec::with_capacity(ndigits as usize);
    for i in 0..ndigits as usize {
        let g = rd16(8 + 2 * i)?;
        if g > 9999 {
            return Err("invalid numeric digit".into());
        }
        groups.push(g);
    }
    let digit = |i: i32| -> u16 {
        if i >= 0 && (i as usize) < groups.len() {
            groups[i as usize]
        } else {
            0
        }
    };
    let mut s = String::with_capacity(8 + 4 * groups.len() + dscale as usize);
    if sign == NUMERIC_NEG {
        s.push('-');
    }
    if weight < 0 {
        s.push('0');
    } else {
        for i in 0..=weight {
            if i == 0 {
                write!(s, "{}", digit(i)).unwrap();
            } else {
                write!(s, "{:04}", digit(i)).unwrap();
            }
        }
    }
    if dscale > 0 {
        s.push('.');
        let mut left = dscale;
        let mut i = weight + 1;
        while left > 0 {
            let g = format!("{:04}", digit(i));
            let take = left.min(4) as usize;
            s.push_str(&g[..take]);
            left -= take as i32;
            i += 1;
        }
    }
    Ok(s)
}

impl ToSql for Numeric {
    fn accepts(ty: Type) -> bool {
        ty == Type::NUMERIC
    }
    fn to_sql(&self, ty: Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        check!(ty);
        numeric_to_sql(&self.0, out)?;
        Ok(IsNull::No)
    }
}

impl FromSql<'_> for Numeric {
    fn accepts(ty: Type) -> bool {
        ty == Type::NUMERIC
    }
    fn from_sql(_: Type, raw: &[u8]) -> Result<Self, BoxError> {
        numeric_to_text(raw).map(Numeric)
    }
    fn accepts_text(ty: Type) -> bool {
        ty == Type::NUMERIC
    }
    fn from_text(_: Type, s: &str) -> Result<Self, BoxError> {
        Ok(Numeric(s.to_owned()))
    }
}
