//! bool, the integers and the floats.

use super::*;

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

pub(super) fn float_from_text(s: &str) -> Result<f64, BoxError> {
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
