//! Strings and bytea; strings sent to types without a binary codec go as
//! text, for the server to parse.

use super::*;

pub(super) fn str_to_sql(s: &str, ty: Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
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

pub(super) fn str_from_sql(ty: Type, raw: &[u8]) -> Result<&str, BoxError> {
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
