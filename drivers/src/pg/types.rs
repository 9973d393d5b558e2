//! Conversions between Rust values and PostgreSQL's binary wire format, plus
//! a text rendering of any received value that matches the server's own
//! output functions (DateStyle ISO, IntervalStyle postgres, TimeZone UTC,
//! bytea_output hex, extra_float_digits 1).

use std::error::Error as StdError;
use std::fmt::{self, Write as _};
use std::str::FromStr;

use bytes::{BufMut, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::types as pt;
pub use postgres_protocol::IsNull;

/// A PostgreSQL type OID.
pub type Oid = u32;

/// Boxed error returned by conversions.
pub type BoxError = Box<dyn StdError + Sync + Send>;

/// A PostgreSQL type, identified by its OID.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Type(pub Oid);

// (oid, name, array oid) of the built-in types the driver encodes in binary.
const TYPES: &[(Oid, &str, Oid)] = &[
    (16, "bool", 1000),
    (17, "bytea", 1001),
    (18, "char", 1002),
    (19, "name", 1003),
    (20, "int8", 1016),
    (21, "int2", 1005),
    (23, "int4", 1007),
    (25, "text", 1009),
    (26, "oid", 1028),
    (114, "json", 199),
    (700, "float4", 1021),
    (701, "float8", 1022),
    (705, "unknown", 0),
    (1042, "bpchar", 1014),
    (1043, "varchar", 1015),
    (1082, "date", 1182),
    (1083, "time", 1183),
    (1114, "timestamp", 1115),
    (1184, "timestamptz", 1185),
    (1186, "interval", 1187),
    (1700, "numeric", 1231),
    (2278, "void", 0),
    (2950, "uuid", 2951),
    (3802, "jsonb", 3807),
];

impl Type {
    pub const BOOL: Type = Type(16);
    pub const BYTEA: Type = Type(17);
    pub const CHAR: Type = Type(18);
    pub const NAME: Type = Type(19);
    pub const INT8: Type = Type(20);
    pub const INT2: Type = Type(21);
    pub const INT4: Type = Type(23);
    pub const TEXT: Type = Type(25);
    pub const OID: Type = Type(26);
    pub const JSON: Type = Type(114);
    pub const FLOAT4: Type = Type(700);
    pub const FLOAT8: Type = Type(701);
    pub const UNKNOWN: Type = Type(705);
    pub const BPCHAR: Type = Type(1042);
    pub const VARCHAR: Type = Type(1043);
    pub const DATE: Type = Type(1082);
    pub const TIME: Type = Type(1083);
    pub const TIMESTAMP: Type = Type(1114);
    pub const TIMESTAMPTZ: Type = Type(1184);
    pub const INTERVAL: Type = Type(1186);
    pub const NUMERIC: Type = Type(1700);
    pub const VOID: Type = Type(2278);
    pub const UUID: Type = Type(2950);
    pub const JSONB: Type = Type(3802);
    pub const BOOL_ARRAY: Type = Type(1000);
    pub const BYTEA_ARRAY: Type = Type(1001);
    pub const INT2_ARRAY: Type = Type(1005);
    pub const INT4_ARRAY: Type = Type(1007);
    pub const INT8_ARRAY: Type = Type(1016);
    pub const TEXT_ARRAY: Type = Type(1009);
    pub const VARCHAR_ARRAY: Type = Type(1015);
    pub const FLOAT4_ARRAY: Type = Type(1021);
    pub const FLOAT8_ARRAY: Type = Type(1022);
    pub const NUMERIC_ARRAY: Type = Type(1231);
    pub const UUID_ARRAY: Type = Type(2951);
    pub const DATE_ARRAY: Type = Type(1182);
    pub const TIMESTAMP_ARRAY: Type = Type(1115);
    pub const TIMESTAMPTZ_ARRAY: Type = Type(1185);
    pub const INTERVAL_ARRAY: Type = Type(1187);
    pub const JSONB_ARRAY: Type = Type(3807);

    pub fn oid(self) -> Oid {
        self.0
    }

    /// The catalog name (`int4`, `text`, ...), `int4[]` for arrays, `None` when unknown to the driver.
    pub fn name(self) -> Option<String> {
        if let Some(&(_, n, _)) = TYPES.iter().find(|t| t.0 == self.0) {
            return Some(n.to_string());
        }
        self.element().and_then(|e| e.name()).map(|n| n + "[]")
    }

    /// The element type, for the array types of the built-in scalars above.
    pub fn element(self) -> Option<Type> {
        TYPES
            .iter()
            .find(|t| t.2 == self.0 && t.2 != 0)
            .map(|t| Type(t.0))
    }

    /// The array type whose elements are `self`.
    pub fn array(self) -> Option<Type> {
        TYPES
            .iter()
            .find(|t| t.0 == self.0 && t.2 != 0)
            .map(|t| Type(t.2))
    }

    /// Whether results of this type are requested in binary: the driver decodes
    /// every built-in type listed above (and arrays of them); anything else
    /// (enums, inet, user types) comes back as text, readable as `String`.
    pub fn is_binary_supported(self) -> bool {
        TYPES.iter().any(|t| t.0 == self.0) || self.element().is_some()
    }

    fn is_textlike(self) -> bool {
        matches!(self.0, 25 | 1043 | 1042 | 19 | 705)
    }
}

impl fmt::Debug for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(&n),
            None => write!(f, "oid {}", self.0),
        }
    }
}

/// Returned inside the boxed error of [`ToSql::to_sql`] when the value cannot be
/// sent as the parameter's type; the driver turns it into `Error::TypeMismatch`.
#[derive(Debug)]
pub struct WrongType {
    pub rust_type: &'static str,
    pub pg_type: Type,
}

impl fmt::Display for WrongType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot convert between Rust type {} and PostgreSQL type {}",
            self.rust_type, self.pg_type
        )
    }
}

impl StdError for WrongType {}

fn wrong<T: ?Sized>(ty: Type) -> BoxError {
    Box::new(WrongType {
        rust_type: std::any::type_name::<T>(),
        pg_type: ty,
    })
}

/// Wire format code of a parameter or result column.
pub const FORMAT_TEXT: i16 = 0;
pub const FORMAT_BINARY: i16 = 1;

/// A value that can be bound as a statement parameter.
pub trait ToSql {
    /// Whether values of this Rust type can be sent as `ty`.
    fn accepts(ty: Type) -> bool
    where
        Self: Sized;

    /// Appends the encoding of `self` for parameter type `ty`; returns `IsNull::Yes`
    /// (writing nothing) for NULL. Implementations check the type and return a
    /// [`WrongType`] error for types they do not accept.
    fn to_sql(&self, ty: Type, out: &mut BytesMut) -> Result<IsNull, BoxError>;

    /// The format `to_sql` writes for `ty`: binary, except strings sent to types the
    /// driver has no binary codec for, which go as text so the server parses them.
    fn format(&self, _ty: Type) -> i16 {
        FORMAT_BINARY
    }

    fn type_name(&self) -> &'static str {
        std::any::type_name::<Self>()
    }
}

/// A value that can be read from a result column.
pub trait FromSql<'a>: Sized {
    /// Whether a binary column of type `ty` can be read as `Self`.
    fn accepts(ty: Type) -> bool;

    fn from_sql(ty: Type, raw: &'a [u8]) -> Result<Self, BoxError>;

    fn from_sql_null(_ty: Type) -> Result<Self, BoxError> {
        Err("unexpected NULL (use Option<T>)".into())
    }

    /// Whether a text-format column (simple query results, types without a binary
    /// codec) of type `ty` can be read as `Self`.
    fn accepts_text(_ty: Type) -> bool {
        false
    }

    fn from_text(_ty: Type, _s: &'a str) -> Result<Self, BoxError> {
        Err("text format not supported for this type".into())
    }
}

macro_rules! check {
    ($ty:expr) => {
        if !<Self as ToSql>::accepts($ty) {
            return Err(wrong::<Self>($ty));
        }
    };
}

/// `ToSql` for a type bound to exactly one PostgreSQL type through one
/// postgres-protocol encoder; `$arg` is what the encoder gets of `$v`.
macro_rules! one_type_to_sql {
    ($t:ty, $pg:ident, $enc:path, |$v:ident| $arg:expr) => {
        impl ToSql for $t {
            fn accepts(ty: Type) -> bool {
                ty == Type::$pg
            }
            fn to_sql(&self, ty: Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
                check!(ty);
                let $v = self;
                $enc($arg, out);
                Ok(IsNull::No)
            }
        }
    };
}

// ---------------------------------------------------------------- references, Option

impl<T: ToSql> ToSql for &T {
    fn accepts(ty: Type) -> bool {
        T::accepts(ty)
    }
    fn to_sql(&self, ty: Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        (**self).to_sql(ty, out)
    }
    fn format(&self, ty: Type) -> i16 {
        (**self).format(ty)
    }
    fn type_name(&self) -> &'static str {
        (**self).type_name()
    }
}

impl<T: ToSql> ToSql for Option<T> {
    fn accepts(ty: Type) -> bool {
        T::accepts(ty)
    }
    fn to_sql(&self, ty: Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match self {
            Some(v) => v.to_sql(ty, out),
            None => {
                check!(ty);
                Ok(IsNull::Yes)
            }
        }
    }
    fn format(&self, ty: Type) -> i16 {
        match self {
            Some(v) => v.format(ty),
            None => FORMAT_BINARY,
        }
    }
}

impl<'a, T: FromSql<'a>> FromSql<'a> for Option<T> {
    fn accepts(ty: Type) -> bool {
        T::accepts(ty)
    }
    fn from_sql(ty: Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        T::from_sql(ty, raw).map(Some)
    }
    fn from_sql_null(_ty: Type) -> Result<Self, BoxError> {
        Ok(None)
    }
    fn accepts_text(ty: Type) -> bool {
        T::accepts_text(ty)
    }
    fn from_text(ty: Type, s: &'a str) -> Result<Self, BoxError> {
        T::from_text(ty, s).map(Some)
    }
}

// ---------------------------------------------------------------- bool, integers, floats

one_type_to_sql!(bool, BOOL, pt::bool_to_sql, |v| *v);

impl FromSql<'_> for bool {
    fn accepts(ty: Type) -> bool {
        ty == Type::BOOL
    }
    fn from_sql(_: Type, raw: &[u8]) -> Result<Self, BoxError> {
        pt::bool_from_sql(raw)
    }
    fn accepts_text(ty: Type) -> bool {
        ty == Type::BOOL
    }
    fn from_text(_: Type, s: &str) -> Result<Self, BoxError> {
        match s {
            "t" | "true" => Ok(true),
            "f" | "false" => Ok(false),
            _ => Err(format!("invalid bool {s:?}").into()),
        }
    }
}

fn is_int(ty: Type) -> bool {
    matches!(ty, Type::INT2 | Type::INT4 | Type::INT8)
}

/// Integers are sent to any integer (or numeric) parameter when the value fits,
/// so `id = $1` works with an `i32` literal against a bigint column.
fn int_to_sql(v: i64, ty: Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
    match ty {
        Type::INT2 => pt::int2_to_sql(
            i16::try_from(v).map_err(|_| format!("{v} out of range for int2"))?,
            out,
        ),
        Type::INT4 => pt::int4_to_sql(
            i32::try_from(v).map_err(|_| format!("{v} out of range for int4"))?,
            out,
        ),
        Type::INT8 => pt::int8_to_sql(v, out),
        Type::NUMERIC => numeric_to_sql(&v.to_string(), out)?,
        _ => unreachable!("checked by accepts"),
    }
    Ok(IsNull::No)
}

macro_rules! int_impl {
    ($t:ty, [$($from:expr),*]) => {
        impl ToSql for $t {
            fn accepts(ty: Type) -> bool {
                is_int(ty) || ty == Type::NUMERIC
            }
            fn to_sql(&self, ty: Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
                check!(ty);
                int_to_sql(i64::from(*self), ty, out)
            }
        }
        impl FromSql<'_> for $t {
            fn accepts(ty: Type) -> bool {
                [$($from),*].contains(&ty)
            }
            fn from_sql(ty: Type, raw: &[u8]) -> Result<Self, BoxError> {
                let v: i64 = match ty {
                    Type::INT2 => pt::int2_from_sql(raw)?.into(),
                    Type::INT4 => pt::int4_from_sql(raw)?.into(),
                    _ => pt::int8_from_sql(raw)?,
                };
                Ok(<$t>::try_from(v)?)
            }
            fn accepts_text(ty: Type) -> bool {
                <Self as FromSql>::accepts(ty)
            }
            fn from_text(_: Type, s: &str) -> Result<Self, BoxError> {
                Ok(s.parse()?)
            }
        }
    };
}

int_impl!(i16, [Type::INT2]);
int_impl!(i32, [Type::INT2, Type::INT4]);
int_impl!(i64, [Type::INT2, Type::INT4, Type::INT8]);

// The `"char"` type (a single byte).
one_type_to_sql!(i8, CHAR, pt::char_to_sql, |v| *v);

impl FromSql<'_> for i8 {
    fn accepts(ty: Type) -> bool {
        ty == Type::CHAR
    }
    fn from_sql(_: Type, raw: &[u8]) -> Result<Self, BoxError> {
        pt::char_from_sql(raw)
    }
}

one_type_to_sql!(u32, OID, pt::oid_to_sql, |v| *v);

impl FromSql<'_> for u32 {
    fn accepts(ty: Type) -> bool {
        ty == Type::OID
    }
    fn from_sql(_: Type, raw: &[u8]) -> Result<Self, BoxError> {
        pt::oid_from_sql(raw)
    }
    fn accepts_text(ty: Type) -> bool {
        ty == Type::OID
    }
    fn from_text(_: Type, s: &str) -> Result<Self, BoxError> {
        Ok(s.parse()?)
    }
}

fn float_from_text(s: &str) -> Result<f64, BoxError> {
    Ok(match s {
        "NaN" => f64::NAN,
        "Infinity" => f64::INFINITY,
        "-Infinity" => f64::NEG_INFINITY,
        _ => s.parse()?,
    })
}

impl ToSql for f32 {
    fn accepts(ty: Type) -> bool {
        ty == Type::FLOAT4 || ty == Type::FLOAT8
    }
    fn to_sql(&self, ty: Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        check!(ty);
        if ty == Type::FLOAT4 {
            pt::float4_to_sql(*self, out);
        } else {
            pt::float8_to_sql(f64::from(*self), out);
        }
        Ok(IsNull::No)
    }
}

impl FromSql<'_> for f32 {
    fn accepts(ty: Type) -> bool {
        ty == Type::FLOAT4
    }
    fn from_sql(_: Type, raw: &[u8]) -> Result<Self, BoxError> {
        pt::float4_from_sql(raw)
    }
    fn accepts_text(ty: Type) -> bool {
        ty == Type::FLOAT4
    }
    fn from_text(_: Type, s: &str) -> Result<Self, BoxError> {
        Ok(float_from_text(s)? as f32)
    }
}

one_type_to_sql!(f64, FLOAT8, pt::float8_to_sql, |v| *v);

impl FromSql<'_> for f64 {
    fn accepts(ty: Type) -> bool {
        ty == Type::FLOAT8 || ty == Type::FLOAT4
    }
    fn from_sql(ty: Type, raw: &[u8]) -> Result<Self, BoxError> {
        if ty == Type::FLOAT4 {
            Ok(f64::from(pt::float4_from_sql(raw)?))
        } else {
            pt::float8_from_sql(raw)
        }
    }
    fn accepts_text(ty: Type) -> bool {
        <Self as FromSql>::accepts(ty)
    }
    fn from_text(_: Type, s: &str) -> Result<Self, BoxError> {
        float_from_text(s)
    }
}

// ---------------------------------------------------------------- strings, bytea

fn str_to_sql(s: &str, ty: Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
    if ty == Type::JSONB {
        out.put_u8(1);
    } else if ty == Type::CHAR {
        // "char" is one byte; its binary form has no length prefix inside the value.
        if s.len() > 1 {
            return Err(format!("{s:?} does not fit the \"char\" type").into());
        }
    }
    pt::text_to_sql(s, out);
    Ok(IsNull::No)
}

fn str_format(ty: Type) -> i16 {
    if ty.is_textlike() || matches!(ty, Type::JSON | Type::JSONB | Type::CHAR) {
        FORMAT_BINARY
    } else {
        // Text format lets the server parse a string into any type (dates, inet,
        // enums, ...): the binary text-ish encodings above coincide with text.
        FORMAT_TEXT
    }
}

fn str_accepts(ty: Type) -> bool {
    // Any scalar type can be sent as text; arrays need elements encoded in binary.
    ty.element().is_none()
}

impl ToSql for &str {
    fn accepts(ty: Type) -> bool {
        str_accepts(ty)
    }
    fn to_sql(&self, ty: Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        check!(ty);
        str_to_sql(self, ty, out)
    }
    fn format(&self, ty: Type) -> i16 {
        str_format(ty)
    }
}

impl ToSql for String {
    fn accepts(ty: Type) -> bool {
        str_accepts(ty)
    }
    fn to_sql(&self, ty: Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        check!(ty);
        str_to_sql(self, ty, out)
    }
    fn format(&self, ty: Type) -> i16 {
        str_format(ty)
    }
}

fn str_from_sql(ty: Type, raw: &[u8]) -> Result<&str, BoxError> {
    let raw = if ty == Type::JSONB {
        jsonb_payload(raw)?
    } else {
        raw
    };
    pt::text_from_sql(raw)
}

fn str_from_accepts(ty: Type) -> bool {
    ty.is_textlike() || matches!(ty, Type::JSON | Type::JSONB | Type::CHAR)
}

impl<'a> FromSql<'a> for &'a str {
    fn accepts(ty: Type) -> bool {
        str_from_accepts(ty)
    }
    fn from_sql(ty: Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        str_from_sql(ty, raw)
    }
    fn accepts_text(_: Type) -> bool {
        true
    }
    fn from_text(_: Type, s: &'a str) -> Result<Self, BoxError> {
        Ok(s)
    }
}

impl FromSql<'_> for String {
    fn accepts(ty: Type) -> bool {
        str_from_accepts(ty)
    }
    fn from_sql(ty: Type, raw: &[u8]) -> Result<Self, BoxError> {
        str_from_sql(ty, raw).map(str::to_owned)
    }
    fn accepts_text(_: Type) -> bool {
        true
    }
    fn from_text(_: Type, s: &str) -> Result<Self, BoxError> {
        Ok(s.to_owned())
    }
}

impl ToSql for &[u8] {
    fn accepts(ty: Type) -> bool {
        ty == Type::BYTEA
    }
    fn to_sql(&self, ty: Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        check!(ty);
        pt::bytea_to_sql(self, out);
        Ok(IsNull::No)
    }
}

impl ToSql for Vec<u8> {
    fn accepts(ty: Type) -> bool {
        ty == Type::BYTEA
    }
    fn to_sql(&self, ty: Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        check!(ty);
        pt::bytea_to_sql(self, out);
        Ok(IsNull::No)
    }
}

impl<'a> FromSql<'a> for &'a [u8] {
    fn accepts(ty: Type) -> bool {
        ty == Type::BYTEA
    }
    fn from_sql(_: Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(pt::bytea_from_sql(raw))
    }
}

impl FromSql<'_> for Vec<u8> {
    fn accepts(ty: Type) -> bool {
        ty == Type::BYTEA
    }
    fn from_sql(_: Type, raw: &[u8]) -> Result<Self, BoxError> {
        Ok(pt::bytea_from_sql(raw).to_vec())
    }
}

// ---------------------------------------------------------------- numeric

const NUMERIC_POS: u16 = 0x0000;
const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;
const NUMERIC_PINF: u16 = 0xD000;
const NUMERIC_NINF: u16 = 0xF000;

/// An exact decimal, kept as its PostgreSQL text form (`"-12.3400"`, `"NaN"`,
/// `"Infinity"`), converted from/to the binary base-10000 numeric format.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Numeric(String);

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
fn numeric_to_sql(s: &str, out: &mut BytesMut) -> Result<(), BoxError> {
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
fn numeric_to_text(raw: &[u8]) -> Result<String, BoxError> {
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

// ---------------------------------------------------------------- uuid

/// A UUID; `Display` gives the canonical lowercase hyphenated form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Uuid(pub [u8; 16]);

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_char('-')?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl FromStr for Uuid {
    type Err = BoxError;
    /// Accepts hex digits with optional hyphens and braces, like `uuid_in`.
    fn from_str(s: &str) -> Result<Uuid, BoxError> {
        let hex: Vec<u8> = s
            .bytes()
            .filter(|b| !matches!(b, b'-' | b'{' | b'}'))
            .collect();
        // `from_str_radix` alone would take a sign ("+f" is 15).
        if hex.len() != 32 || !hex.iter().all(u8::is_ascii_hexdigit) {
            return Err(format!("invalid uuid {s:?}").into());
        }
        let mut out = [0u8; 16];
        for (i, o) in out.iter_mut().enumerate() {
            let h = std::str::from_utf8(&hex[2 * i..2 * i + 2])?;
            *o = u8::from_str_radix(h, 16).map_err(|_| format!("invalid uuid {s:?}"))?;
        }
        Ok(Uuid(out))
    }
}

one_type_to_sql!(Uuid, UUID, pt::uuid_to_sql, |v| v.0);

impl FromSql<'_> for Uuid {
    fn accepts(ty: Type) -> bool {
        ty == Type::UUID
    }
    fn from_sql(_: Type, raw: &[u8]) -> Result<Self, BoxError> {
        pt::uuid_from_sql(raw).map(Uuid)
    }
    fn accepts_text(ty: Type) -> bool {
        ty == Type::UUID
    }
    fn from_text(_: Type, s: &str) -> Result<Self, BoxError> {
        s.parse()
    }
}

one_type_to_sql!([u8; 16], UUID, pt::uuid_to_sql, |v| *v);

impl FromSql<'_> for [u8; 16] {
    fn accepts(ty: Type) -> bool {
        ty == Type::UUID
    }
    fn from_sql(_: Type, raw: &[u8]) -> Result<Self, BoxError> {
        pt::uuid_from_sql(raw)
    }
}

// ---------------------------------------------------------------- json

/// JSON kept as text: exactly what the server stored (json) or printed (jsonb).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Json(pub String);

fn jsonb_payload(raw: &[u8]) -> Result<&[u8], BoxError> {
    match raw.split_first() {
        Some((1, rest)) => Ok(rest),
        _ => Err("unsupported jsonb version".into()),
    }
}

fn json_accepts(ty: Type) -> bool {
    ty == Type::JSON || ty == Type::JSONB
}

impl ToSql for Json {
    fn accepts(ty: Type) -> bool {
        json_accepts(ty)
    }
    fn to_sql(&self, ty: Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        check!(ty);
        str_to_sql(&self.0, ty, out)
    }
}

impl FromSql<'_> for Json {
    fn accepts(ty: Type) -> bool {
        json_accepts(ty)
    }
    fn from_sql(ty: Type, raw: &[u8]) -> Result<Self, BoxError> {
        str_from_sql(ty, raw).map(|s| Json(s.to_owned()))
    }
    fn accepts_text(ty: Type) -> bool {
        json_accepts(ty)
    }
    fn from_text(_: Type, s: &str) -> Result<Self, BoxError> {
        Ok(Json(s.to_owned()))
    }
}

impl ToSql for serde_json::Value {
    fn accepts(ty: Type) -> bool {
        json_accepts(ty)
    }
    fn to_sql(&self, ty: Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        check!(ty);
        if ty == Type::JSONB {
            out.put_u8(1);
        }
        serde_json::to_writer((&mut *out).writer(), self)?;
        Ok(IsNull::No)
    }
}

impl FromSql<'_> for serde_json::Value {
    fn accepts(ty: Type) -> bool {
        json_accepts(ty)
    }
    fn from_sql(ty: Type, raw: &[u8]) -> Result<Self, BoxError> {
        let raw = if ty == Type::JSONB {
            jsonb_payload(raw)?
        } else {
            raw
        };
        Ok(serde_json::from_slice(raw)?)
    }
    fn accepts_text(ty: Type) -> bool {
        json_accepts(ty)
    }
    fn from_text(_: Type, s: &str) -> Result<Self, BoxError> {
        Ok(serde_json::from_str(s)?)
    }
}

// ---------------------------------------------------------------- date / time

const USECS_PER_SEC: i64 = 1_000_000;
const USECS_PER_DAY: i64 = 86_400 * USECS_PER_SEC;
/// Days from 1970-01-01 to PostgreSQL's epoch 2000-01-01.
const PG_EPOCH_UNIX_DAYS: i64 = 10_957;

/// Days since 1970-01-01 of a proleptic Gregorian date (astronomical years: 0 = 1 BC).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Writes `YYYY-MM-DD` for an astronomical year, returning whether " BC" is due.
fn write_ymd(s: &mut String, days_since_pg_epoch: i64) -> bool {
    let (y, m, d) = civil_from_days(days_since_pg_epoch + PG_EPOCH_UNIX_DAYS);
    let (year, bc) = if y > 0 { (y, false) } else { (1 - y, true) };
    write!(s, "{year:04}-{m:02}-{d:02}").unwrap();
    bc
}

/// `HH:MM:SS[.ffffff]` with trailing fractional zeros dropped, like AppendSeconds.
fn write_hms(s: &mut String, usecs: i64) {
    let secs = usecs / USECS_PER_SEC;
    let frac = usecs % USECS_PER_SEC;
    write!(
        s,
        "{:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
    .unwrap();
    write_frac(s, frac);
}

fn write_frac(s: &mut String, frac: i64) {
    if frac != 0 {
        let f = format!(".{:06}", frac);
        s.push_str(f.trim_end_matches('0'));
    }
}

/// A calendar date, stored as days since 2000-01-01 (PostgreSQL's binary form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Date(pub i32);

impl Date {
    pub const INFINITY: Date = Date(i32::MAX);
    pub const NEG_INFINITY: Date = Date(i32::MIN);

    /// `year` is astronomical (0 = 1 BC, -1 = 2 BC).
    pub fn from_ymd(year: i32, month: u32, day: u32) -> Option<Date> {
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year.into(), month) {
            return None;
        }
        let d = days_from_civil(year.into(), month, day) - PG_EPOCH_UNIX_DAYS;
        i32::try_from(d).ok().map(Date)
    }
    /// (astronomical year, month, day); meaningless for the infinities.
    pub fn ymd(self) -> (i32, u32, u32) {
        let (y, m, d) = civil_from_days(i64::from(self.0) + PG_EPOCH_UNIX_DAYS);
        (y as i32, m, d)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Date::INFINITY => f.write_str("infinity"),
            Date::NEG_INFINITY => f.write_str("-infinity"),
            Date(d) => {
                let mut s = String::with_capacity(16);
                if write_ymd(&mut s, d.into()) {
                    s.push_str(" BC");
                }
                f.write_str(&s)
            }
        }
    }
}

/// Time of day, in microseconds since midnight (`24:00:00` is allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Time(pub i64);

impl Time {
    pub fn from_hms_micro(h: u32, m: u32, s: u32, us: u32) -> Option<Time> {
        let v = ((i64::from(h) * 60 + i64::from(m)) * 60 + i64::from(s)) * USECS_PER_SEC
            + i64::from(us);
        (m < 60 && s < 60 && us < 1_000_000 && v <= USECS_PER_DAY).then_some(Time(v))
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::with_capacity(16);
        write_hms(&mut s, self.0);
        f.write_str(&s)
    }
}

fn fmt_timestamp(f: &mut fmt::Formatter<'_>, us: i64, tz: bool) -> fmt::Result {
    match us {
        i64::MAX => return f.write_str("infinity"),
        i64::MIN => return f.write_str("-infinity"),
        _ => {}
    }
    let mut s = String::with_capacity(32);
    let bc = write_ymd(&mut s, us.div_euclid(USECS_PER_DAY));
    s.push(' ');
    write_hms(&mut s, us.rem_euclid(USECS_PER_DAY));
    if tz {
        s.push_str("+00");
    }
    if bc {
        s.push_str(" BC");
    }
    f.write_str(&s)
}

/// Microseconds of `date` at `time`. The infinite dates give the infinite
/// timestamps, and a date too far out for the range saturates to them
/// rather than overflowing.
fn ts_from_parts(date: Date, time: Time) -> i64 {
    match date {
        Date::INFINITY => i64::MAX,
        Date::NEG_INFINITY => i64::MIN,
        Date(d) => i64::from(d)
            .checked_mul(USECS_PER_DAY)
            .and_then(|us| us.checked_add(time.0))
            .unwrap_or(if d < 0 { i64::MIN } else { i64::MAX }),
    }
}

/// Moves a timestamp's microseconds by `by`, keeping the infinities
/// infinite and saturating finite values at them.
fn shift_micros(us: i64, by: i64) -> i64 {
    match us {
        i64::MAX | i64::MIN => us,
        _ => us.saturating_add(by),
    }
}

/// A timestamp without time zone: microseconds since 2000-01-01 00:00:00.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub const INFINITY: Timestamp = Timestamp(i64::MAX);
    pub const NEG_INFINITY: Timestamp = Timestamp(i64::MIN);

    pub fn new(date: Date, time: Time) -> Timestamp {
        Timestamp(ts_from_parts(date, time))
    }
    pub fn from_unix_micros(us: i64) -> Timestamp {
        Timestamp(shift_micros(us, -PG_EPOCH_UNIX_DAYS * USECS_PER_DAY))
    }
    /// Microseconds since 1970; the infinities stay `i64::MAX`/`i64::MIN`.
    pub fn to_unix_micros(self) -> i64 {
        shift_micros(self.0, PG_EPOCH_UNIX_DAYS * USECS_PER_DAY)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_timestamp(f, self.0, false)
    }
}

/// A point in time (timestamptz): microseconds since 2000-01-01 00:00:00 UTC,
/// displayed in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimestampTz(pub i64);

impl TimestampTz {
    pub const INFINITY: TimestampTz = TimestampTz(i64::MAX);
    pub const NEG_INFINITY: TimestampTz = TimestampTz(i64::MIN);

    /// From a UTC date and time.
    pub fn new(date: Date, time: Time) -> TimestampTz {
        TimestampTz(ts_from_parts(date, time))
    }
    pub fn from_unix_micros(us: i64) -> TimestampTz {
        TimestampTz(shift_micros(us, -PG_EPOCH_UNIX_DAYS * USECS_PER_DAY))
    }
    /// Microseconds since 1970; the infinities stay `i64::MAX`/`i64::MIN`.
    pub fn to_unix_micros(self) -> i64 {
        shift_micros(self.0, PG_EPOCH_UNIX_DAYS * USECS_PER_DAY)
    }
    pub fn now() -> TimestampTz {
        std::time::SystemTime::now().into()
    }
}

impl From<std::time::SystemTime> for TimestampTz {
    fn from(t: std::time::SystemTime) -> TimestampTz {
        let us = match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => d.as_micros() as i64,
            Err(e) => -(e.duration().as_micros() as i64),
        };
        TimestampTz::from_unix_micros(us)
    }
}

impl fmt::Display for TimestampTz {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_timestamp(f, self.0, true)
    }
}

/// An interval, in PostgreSQL's three independent units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Interval {
    pub months: i32,
    pub days: i32,
    pub micros: i64,
}

impl Interval {
    pub fn new(months: i32, days: i32, micros: i64) -> Interval {
        Interval {
            months,
            days,
            micros,
        }
    }
}

impl fmt::Display for Interval {
    /// IntervalStyle `postgres`, e.g. `1 year 2 mons -3 days +04:05:06.5`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // PostgreSQL 17 infinities.
        if self.months == i32::MAX && self.days == i32::MAX && self.micros == i64::MAX {
            return f.write_str("infinity");
        }
        if self.months == i32::MIN && self.days == i32::MIN && self.micros == i64::MIN {
            return f.write_str("-infinity");
        }
        let mut s = String::with_capacity(32);
        let mut is_zero = true;
        let mut is_before = false;
        let mut part = |s: &mut String, v: i64, unit: &str| {
            if v == 0 {
                return;
            }
            if !is_zero {
                s.push(' ');
            }
            if is_before && v > 0 {
                s.push('+');
            }
            write!(s, "{v} {unit}{}", if v != 1 { "s" } else { "" }).unwrap();
            // Each nonzero field decides whether the next one shows a '+'.
            is_before = v < 0;
            is_zero = false;
        };
        let months = i64::from(self.months);
        part(&mut s, months / 12, "year");
        part(&mut s, months % 12, "mon");
        part(&mut s, i64::from(self.days), "day");
        let t = self.micros;
        if is_zero || t != 0 {
            let minus = t < 0;
            if !is_zero {
                s.push(' ');
            }
            if minus {
                s.push('-');
            } else if is_before {
                s.push('+');
            }
            let a = t.unsigned_abs();
            let secs = a / 1_000_000;
            write!(
                s,
                "{:02}:{:02}:{:02}",
                secs / 3600,
                secs / 60 % 60,
                secs % 60
            )
            .unwrap();
            write_frac(&mut s, (a % 1_000_000) as i64);
        }
        f.write_str(&s)
    }
}

macro_rules! simple_codec {
    ($t:ty, $ty:expr, |$v:ident, $out:ident| $enc:expr, |$raw:ident| $dec:expr) => {
        impl ToSql for $t {
            fn accepts(ty: Type) -> bool {
                ty == $ty
            }
            fn to_sql(&self, ty: Type, $out: &mut BytesMut) -> Result<IsNull, BoxError> {
                check!(ty);
                let $v = self;
                $enc;
                Ok(IsNull::No)
            }
        }
        impl FromSql<'_> for $t {
            fn accepts(ty: Type) -> bool {
                ty == $ty
            }
            fn from_sql(_: Type, $raw: &[u8]) -> Result<Self, BoxError> {
                $dec
            }
        }
    };
}

simple_codec!(
    Date,
    Type::DATE,
    |v, out| pt::date_to_sql(v.0, out),
    |raw| Ok(Date(pt::date_from_sql(raw)?))
);
simple_codec!(
    Time,
    Type::TIME,
    |v, out| pt::time_to_sql(v.0, out),
    |raw| Ok(Time(pt::time_from_sql(raw)?))
);
simple_codec!(
    Timestamp,
    Type::TIMESTAMP,
    |v, out| pt::timestamp_to_sql(v.0, out),
    |raw| Ok(Timestamp(pt::timestamp_from_sql(raw)?))
);
simple_codec!(
    TimestampTz,
    Type::TIMESTAMPTZ,
    |v, out| pt::timestamp_to_sql(v.0, out),
    |raw| Ok(TimestampTz(pt::timestamp_from_sql(raw)?))
);
simple_codec!(
    Interval,
    Type::INTERVAL,
    |v, out| {
        out.put_i64(v.micros);
        out.put_i32(v.days);
        out.put_i32(v.months);
    },
    |raw| {
        if raw.len() != 16 {
            return Err("invalid interval length".into());
        }
        Ok(Interval {
            micros: i64::from_be_bytes(raw[0..8].try_into().unwrap()),
            days: i32::from_be_bytes(raw[8..12].try_into().unwrap()),
            months: i32::from_be_bytes(raw[12..16].try_into().unwrap()),
        })
    }
);

// ---------------------------------------------------------------- arrays

fn array_to_sql<T: ToSql>(items: &[T], ty: Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
    let elem = match ty.element() {
        Some(e) if T::accepts(e) => e,
        _ => return Err(wrong::<[T]>(ty)),
    };
    let len = i32::try_from(items.len()).map_err(|_| "array too long")?;
    let dims = (!items.is_empty()).then_some(pt::ArrayDimension {
        len,
        lower_bound: 1,
    });
    pt::array_to_sql(dims, elem.0, items, |e, buf| e.to_sql(elem, buf), out)?;
    Ok(IsNull::No)
}

fn array_accepts<T: ToSql>(ty: Type) -> bool {
    ty.element().is_some_and(T::accepts)
}

// `u8` has no `ToSql`/`FromSql` impl, so `Vec<u8>` and `&[u8]` stay bytea.
impl<T: ToSql> ToSql for Vec<T> {
    fn accepts(ty: Type) -> bool {
        array_accepts::<T>(ty)
    }
    fn to_sql(&self, ty: Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        array_to_sql(self, ty, out)
    }
}

impl<T: ToSql> ToSql for &[T] {
    fn accepts(ty: Type) -> bool {
        array_accepts::<T>(ty)
    }
    fn to_sql(&self, ty: Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        array_to_sql(self, ty, out)
    }
}

impl<'a, T: FromSql<'a>> FromSql<'a> for Vec<T> {
    fn accepts(ty: Type) -> bool {
        ty.element().is_some_and(T::accepts)
    }
    fn from_sql(ty: Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        let elem = ty.element().ok_or("not an array")?;
        let arr = pt::array_from_sql(raw)?;
        if arr.dimensions().count()? > 1 {
            return Err("multi-dimensional arrays cannot be read as Vec<T>".into());
        }
        let mut v = Vec::new();
        let mut values = arr.values();
        while let Some(item) = values.next()? {
            v.push(match item {
                Some(b) => T::from_sql(elem, b)?,
                None => T::from_sql_null(elem)?,
            });
        }
        Ok(v)
    }
}

// ---------------------------------------------------------------- text rendering

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

#[cfg(test)]
mod tests {
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
}
