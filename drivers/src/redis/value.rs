//! Decoded replies and their conversion into Rust types.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use super::error::{Error, Result, ServerError};

/// One reply from the server, RESP2 or RESP3.
///
/// RESP2 servers never produce `Map`, `Set`, `Double`, `Bool`, `BigNumber`,
/// `Verb` or `Push`; the [`FromValue`] conversions accept both encodings
/// where they mean the same thing (a RESP2 flat array for a map, a bulk
/// string for a double, ...).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Null bulk string, null array or RESP3 null.
    Nil,
    /// Integer reply.
    Int(i64),
    /// Bulk string; binary-safe.
    Bulk(Vec<u8>),
    /// Simple string (`+OK`).
    Simple(String),
    /// Array reply.
    Array(Vec<Value>),
    /// RESP3 map, in the order the server sent it.
    Map(Vec<(Value, Value)>),
    /// RESP3 set.
    Set(Vec<Value>),
    /// RESP3 double.
    Double(f64),
    /// RESP3 boolean.
    Bool(bool),
    /// RESP3 big number, as its decimal text.
    BigNumber(String),
    /// RESP3 verbatim string with its three-letter format (`txt`, `mkd`).
    Verb { format: String, text: Vec<u8> },
    /// RESP3 out-of-band push (pub/sub message, invalidation).
    Push(Vec<Value>),
    /// Error reply. At the top level of a command's reply this becomes
    /// `Err(Error::Server)`; inside a pipeline or `EXEC` result it stays a
    /// value so the other results are not lost.
    Error(ServerError),
}

impl Value {
    /// Whether this is [`Value::Nil`].
    pub fn is_nil(&self) -> bool {
        matches!(self, Value::Nil)
    }

    /// The bytes of a bulk, simple or verbatim string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bulk(b) => Some(b),
            Value::Simple(s) => Some(s.as_bytes()),
            Value::Verb { text, .. } => Some(text),
            _ => None,
        }
    }

    /// Turns a top-level error reply into `Err`.
    pub fn into_result(self) -> Result<Value> {
        match self {
            Value::Error(e) => Err(Error::Server(e)),
            v => Ok(v),
        }
    }

    fn kind_name(&self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::Int(_) => "integer",
            Value::Bulk(_) => "bulk string",
            Value::Simple(_) => "simple string",
            Value::Array(_) => "array",
            Value::Map(_) => "map",
            Value::Set(_) => "set",
            Value::Double(_) => "double",
            Value::Bool(_) => "boolean",
            Value::BigNumber(_) => "big number",
            Value::Verb { .. } => "verbatim string",
            Value::Push(_) => "push",
            Value::Error(_) => "error",
        }
    }
}

fn type_err<T>(v: &Value, want: &str) -> Result<T> {
    Err(Error::Type(format!(
        "expected {want}, got {}",
        v.kind_name()
    )))
}

/// Conversion of a reply into a Rust type.
///
/// An error reply converts into `Err(Error::Server)` whatever the target
/// type, except for [`Value`] itself.
pub trait FromValue: Sized {
    /// Converts, or says why not.
    fn from_value(v: Value) -> Result<Self>;
}

impl FromValue for Value {
    fn from_value(v: Value) -> Result<Value> {
        Ok(v)
    }
}

impl FromValue for () {
    fn from_value(v: Value) -> Result<()> {
        v.into_result().map(drop)
    }
}

impl FromValue for Vec<u8> {
    fn from_value(v: Value) -> Result<Vec<u8>> {
        match v {
            Value::Bulk(b) => Ok(b),
            Value::Simple(s) | Value::BigNumber(s) => Ok(s.into_bytes()),
            Value::Verb { text, .. } => Ok(text),
            Value::Int(i) => Ok(i.to_string().into_bytes()),
            Value::Double(d) => Ok(d.to_string().into_bytes()),
            Value::Error(e) => Err(Error::Server(e)),
            v => type_err(&v, "a string"),
        }
    }
}

impl FromValue for bytes::Bytes {
    fn from_value(v: Value) -> Result<bytes::Bytes> {
        Vec::<u8>::from_value(v).map(bytes::Bytes::from)
    }
}

impl FromValue for String {
    fn from_value(v: Value) -> Result<String> {
        let b = Vec::<u8>::from_value(v)?;
        String::from_utf8(b).map_err(|_| Error::Type("string is not valid UTF-8".into()))
    }
}

fn parse_text<T: std::str::FromStr>(b: &[u8], want: &str) -> Result<T> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            Error::Type(format!(
                "expected {want}, got {:?}",
                String::from_utf8_lossy(b)
            ))
        })
}

macro_rules! int_from_value {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(v: Value) -> Result<$t> {
                match v {
                    Value::Int(i) => <$t>::try_from(i)
                        .map_err(|_| Error::Type(format!("{i} out of range"))),
                    Value::Bulk(ref b) => parse_text(b, "an integer"),
                    Value::Simple(ref s) | Value::BigNumber(ref s) => {
                        parse_text(s.as_bytes(), "an integer")
                    }
                    Value::Bool(b) => Ok(b as $t),
                    Value::Error(e) => Err(Error::Server(e)),
                    v => type_err(&v, "an integer"),
                }
            }
        }
    )*};
}
// No `u8`: `Vec<u8>` is the byte string, not a list of small integers.
int_from_value!(i64, i32, u64, u32, usize, isize, u16, i16, i8, i128, u128);

impl FromValue for f64 {
    fn from_value(v: Value) -> Result<f64> {
        match v {
            Value::Double(d) => Ok(d),
            Value::Int(i) => Ok(i as f64),
            Value::Bulk(ref b) => parse_float(b),
            Value::Simple(ref s) | Value::BigNumber(ref s) => parse_float(s.as_bytes()),
            Value::Error(e) => Err(Error::Server(e)),
            v => type_err(&v, "a number"),
        }
    }
}

fn parse_float(b: &[u8]) -> Result<f64> {
    match b {
        b"inf" | b"+inf" => Ok(f64::INFINITY),
        b"-inf" => Ok(f64::NEG_INFINITY),
        _ => parse_text(b, "a number"),
    }
}

impl FromValue for bool {
    fn from_value(v: Value) -> Result<bool> {
        match v {
            Value::Bool(b) => Ok(b),
            Value::Int(i) => Ok(i != 0),
            Value::Nil => Ok(false),
            Value::Simple(ref s) if s == "OK" => Ok(true),
            Value::Bulk(ref b) if b == b"1" || b == b"0" => Ok(b == b"1"),
            Value::Error(e) => Err(Error::Server(e)),
            v => type_err(&v, "a boolean"),
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: Value) -> Result<Option<T>> {
        match v {
            Value::Nil => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// Elements of an aggregate; a RESP3 map is flattened into key, value, ...
/// as RESP2 would have sent it.
fn elements(v: Value) -> Result<Vec<Value>> {
    match v {
        Value::Array(a) | Value::Set(a) | Value::Push(a) => Ok(a),
        Value::Map(m) => Ok(m.into_iter().flat_map(|(k, v)| [k, v]).collect()),
        Value::Nil => Ok(Vec::new()),
        Value::Error(e) => Err(Error::Server(e)),
        v => type_err(&v, "an array"),
    }
}

impl<T: FromValue> FromValue for Vec<T> {
    fn from_value(v: Value) -> Result<Vec<T>> {
        // A lone string would otherwise match "any T" and hide a mistake.
        elements(v)?.into_iter().map(T::from_value).collect()
    }
}

/// Key/value pairs from a RESP3 map or a RESP2 flat array.
fn pairs(v: Value) -> Result<Vec<(Value, Value)>> {
    match v {
        Value::Map(m) => Ok(m),
        v => {
            let flat = elements(v)?;
            if flat.len() % 2 != 0 {
                return Err(Error::Type("odd number of elements for a map".into()));
            }
            let mut out = Vec::with_capacity(flat.len() / 2);
            let mut it = flat.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((k, v));
            }
            Ok(out)
        }
    }
}

impl<K: FromValue + Eq + Hash, V: FromValue> FromValue for HashMap<K, V> {
    fn from_value(v: Value) -> Result<HashMap<K, V>> {
        pairs(v)?
            .into_iter()
            .map(|(k, v)| Ok((K::from_value(k)?, V::from_value(v)?)))
            .collect()
    }
}

impl<K: FromValue + Ord, V: FromValue> FromValue for BTreeMap<K, V> {
    fn from_value(v: Value) -> Result<BTreeMap<K, V>> {
        pairs(v)?
            .into_iter()
            .map(|(k, v)| Ok((K::from_value(k)?, V::from_value(v)?)))
            .collect()
    }
}

impl<A: FromValue, B: FromValue> FromValue for (A, B) {
    fn from_value(v: Value) -> Result<(A, B)> {
        let mut e = elements(v)?;
        if e.len() != 2 {
            return Err(Error::Type(format!("expected 2 elements, got {}", e.len())));
        }
        let b = e.pop().expect("two elements");
        let a = e.pop().expect("two elements");
        Ok((A::from_value(a)?, B::from_value(b)?))
    }
}

impl<A: FromValue, B: FromValue, C: FromValue> FromValue for (A, B, C) {
    fn from_value(v: Value) -> Result<(A, B, C)> {
        let e = elements(v)?;
        if e.len() != 3 {
            return Err(Error::Type(format!("expected 3 elements, got {}", e.len())));
        }
        let mut it = e.into_iter();
        let (a, b, c) = (it.next(), it.next(), it.next());
        Ok((
            A::from_value(a.expect("three"))?,
            B::from_value(b.expect("three"))?,
            C::from_value(c.expect("three"))?,
        ))
    }
}

/// Converts pairs of a map-like reply (HGETALL, ZRANGE WITHSCORES under
/// RESP2 and RESP3) into `Vec<(K, V)>`, preserving server order.
pub(crate) fn pairs_from_value<K: FromValue, V: FromValue>(v: Value) -> Result<Vec<(K, V)>> {
    match v {
        // ZRANGE ... WITHSCORES under RESP3 is an array of [member, score]
        // arrays rather than a flat array.
        Value::Array(a)
            if a.iter()
                .all(|e| matches!(e, Value::Array(p) if p.len() == 2))
                && !a.is_empty() =>
        {
            a.into_iter().map(<(K, V)>::from_value).collect()
        }
        v => pairs(v)?
            .into_iter()
            .map(|(k, v)| Ok((K::from_value(k)?, V::from_value(v)?)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::Bulk(s.as_bytes().to_vec())
    }

    #[test]
    fn scalars() {
        assert_eq!(i64::from_value(Value::Int(-5)).unwrap(), -5);
        assert_eq!(i64::from_value(bulk("42")).unwrap(), 42);
        assert!(i8::from_value(Value::Int(300)).is_err());
        assert_eq!(f64::from_value(bulk("1.5")).unwrap(), 1.5);
        assert_eq!(f64::from_value(bulk("-inf")).unwrap(), f64::NEG_INFINITY);
        assert_eq!(f64::from_value(Value::Double(2.5)).unwrap(), 2.5);
        assert!(bool::from_value(Value::Int(1)).unwrap());
        assert!(!bool::from_value(Value::Nil).unwrap());
        assert!(bool::from_value(Value::Simple("OK".into())).unwrap());
        assert_eq!(String::from_value(bulk("hé")).unwrap(), "hé");
        assert!(String::from_value(Value::Bulk(vec![0xff])).is_err());
        assert_eq!(
            Vec::<u8>::from_value(Value::Bulk(vec![0, 13, 10])).unwrap(),
            vec![0, 13, 10]
        );
        assert_eq!(Option::<String>::from_value(Value::Nil).unwrap(), None);
        assert_eq!(Option::<i64>::from_value(Value::Int(3)).unwrap(), Some(3));
        assert!(i64::from_value(Value::Array(vec![])).is_err());
    }

    #[test]
    fn errors_propagate() {
        let e = Value::Error(ServerError::parse("WRONGTYPE x"));
        assert!(matches!(
            String::from_value(e.clone()),
            Err(Error::Server(_))
        ));
        assert!(matches!(
            Option::<i64>::from_value(e.clone()),
            Err(Error::Server(_))
        ));
        assert!(matches!(
            Vec::<i64>::from_value(e.clone()),
            Err(Error::Server(_))
        ));
        assert!(matches!(<()>::from_value(e.clone()), Err(Error::Server(_))));
        assert_eq!(Value::from_value(e.clone()).unwrap(), e);
    }

    #[test]
    fn aggregates() {
        let arr = Value::Array(vec![bulk("1"), Value::Int(2), Value::Nil]);
        assert_eq!(
            Vec::<Option<i64>>::from_value(arr).unwrap(),
            vec![Some(1), Some(2), None]
        );
        let flat = Value::Array(vec![bulk("a"), bulk("1"), bulk("b"), bulk("2")]);
        let m: HashMap<String, i64> = FromValue::from_value(flat.clone()).unwrap();
        assert_eq!(m["a"], 1);
        assert_eq!(m["b"], 2);
        let map = Value::Map(vec![(bulk("a"), bulk("1"))]);
        let m: BTreeMap<String, i64> = FromValue::from_value(map.clone()).unwrap();
        assert_eq!(m["a"], 1);
        let p: Vec<(String, i64)> = pairs_from_value(flat).unwrap();
        assert_eq!(p, vec![("a".into(), 1), ("b".into(), 2)]);
        let p: Vec<(String, i64)> = pairs_from_value(map).unwrap();
        assert_eq!(p, vec![("a".into(), 1)]);
        let nested = Value::Array(vec![Value::Array(vec![bulk("m"), Value::Double(1.5)])]);
        let p: Vec<(String, f64)> = pairs_from_value(nested).unwrap();
        assert_eq!(p, vec![("m".into(), 1.5)]);
        let t: (String, i64) =
            FromValue::from_value(Value::Array(vec![bulk("x"), Value::Int(1)])).unwrap();
        assert_eq!(t, ("x".into(), 1));
        assert!(HashMap::<String, String>::from_value(Value::Array(vec![bulk("a")])).is_err());
        assert_eq!(
            Vec::<i64>::from_value(Value::Nil).unwrap(),
            Vec::<i64>::new()
        );
        let set: Vec<String> = FromValue::from_value(Value::Set(vec![bulk("x")])).unwrap();
        assert_eq!(set, vec!["x".to_string()]);
    }
}
