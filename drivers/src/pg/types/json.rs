//! json and jsonb.

use super::*;

/// JSON kept as text: exactly what the server stored (json) or printed (jsonb).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Json(pub String);

pub(super) fn jsonb_payload(raw: &[u8]) -> Result<&[u8], BoxError> {
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
