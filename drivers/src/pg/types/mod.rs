//! Conversions between Rust values and PostgreSQL's binary wire format, plus
//! a text rendering of any received value that matches the server's own
//! output functions (DateStyle ISO, IntervalStyle postgres, TimeZone UTC,
//! bytea_output hex, extra_float_digits 1).
//!
//! The traits and the type table are here; each family of types has its
//! codecs in a module of its own (`scalar`, `strings`, `numeric`, `uuid`,
//! `json`, `datetime`, `array`), and `text` renders any received value.

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

mod array;
mod datetime;
mod json;
mod numeric;
mod scalar;
mod strings;
#[cfg(test)]
mod tests;
mod text;
mod uuid;

pub use datetime::{Date, Interval, Time, Timestamp, TimestampTz};
pub use json::Json;
pub use numeric::Numeric;
pub use text::{float4_text, float8_text, to_text};
pub use uuid::Uuid;

// Shared between the codecs.
use json::jsonb_payload;
use numeric::{numeric_to_sql, numeric_to_text};
use scalar::float_from_text;
use strings::{str_from_sql, str_to_sql};
