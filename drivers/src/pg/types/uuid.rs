//! uuid.

use super::*;

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
