//! One-dimensional arrays of any element type with a codec.

use super::*;

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
