//! Result rows.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::DataRowBody;

use super::error::{Error, Result};
use super::types::{self, FromSql, Type, FORMAT_BINARY};

/// Description of one result column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub type_: Type,
    /// Format the values arrive in: 1 binary, 0 text.
    pub format: i16,
    /// Source table OID and attribute number, 0 when not a plain column.
    pub table_oid: u32,
    pub column_id: i16,
}

impl Column {
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn type_(&self) -> Type {
        self.type_
    }
}

/// Ways to name a column: position or name.
pub trait RowIndex: fmt::Display {
    fn index(&self, columns: &[Column]) -> Option<usize>;
}

impl RowIndex for usize {
    fn index(&self, columns: &[Column]) -> Option<usize> {
        (*self < columns.len()).then_some(*self)
    }
}

impl RowIndex for str {
    fn index(&self, columns: &[Column]) -> Option<usize> {
        columns
            .iter()
            .position(|c| c.name == self)
            // Like SQL identifiers, fall back to a case-insensitive match.
            .or_else(|| {
                columns
                    .iter()
                    .position(|c| c.name.eq_ignore_ascii_case(self))
            })
    }
}

impl<T: RowIndex + ?Sized> RowIndex for &T {
    fn index(&self, columns: &[Column]) -> Option<usize> {
        (**self).index(columns)
    }
}

/// Marks a NULL in the compact offset table.
const NULL_START: u32 = u32::MAX;

/// One row of a result, sharing its column descriptions with its siblings.
#[derive(Clone)]
pub struct Row {
    columns: Arc<[Column]>,
    body: Bytes,
    // (start, end) of each value inside `body`; start == NULL_START for NULL.
    ranges: Box<[(u32, u32)]>,
}

impl Row {
    pub(crate) fn new(columns: Arc<[Column]>, body: DataRowBody) -> Result<Row> {
        let mut ranges = Vec::with_capacity(columns.len());
        let mut it = body.ranges();
        while let Some(r) = it.next().map_err(|e| Error::protocol(e.to_string()))? {
            ranges.push(match r {
                Some(r) => (r.start as u32, r.end as u32),
                None => (NULL_START, 0),
            });
        }
        if ranges.len() != columns.len() {
            return Err(Error::protocol(format!(
                "DataRow has {} values for {} columns",
                ranges.len(),
                columns.len()
            )));
        }
        Ok(Row {
            columns,
            body: body.buffer_bytes().clone(),
            ranges: ranges.into_boxed_slice(),
        })
    }

    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    pub fn len(&self) -> usize {
        self.columns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// The raw bytes of a value (binary or text, per `Column::format`), `None` for NULL.
    pub fn raw(&self, idx: usize) -> Option<&[u8]> {
        let (s, e) = self.ranges[idx];
        (s != NULL_START).then(|| &self.body[s as usize..e as usize])
    }

    fn find(&self, idx: &(impl RowIndex + ?Sized)) -> Result<usize> {
        idx.index(&self.columns)
            .ok_or_else(|| Error::Usage(format!("no column {idx} in the result")))
    }

    /// Reads a column; panics on a missing column, a type mismatch or an unexpected NULL.
    /// Use [`Row::try_get`] to handle those.
    #[track_caller]
    pub fn get<'a, T: FromSql<'a>>(&'a self, idx: impl RowIndex) -> T {
        match self.try_get(idx) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        }
    }

    /// Reads a column by position or name.
    pub fn try_get<'a, T: FromSql<'a>>(&'a self, idx: impl RowIndex) -> Result<T> {
        let i = self.find(&idx)?;
        let col = &self.columns[i];
        let binary = col.format == FORMAT_BINARY;
        let accepted = if binary {
            T::accepts(col.type_)
        } else {
            T::accepts_text(col.type_)
        };
        if !accepted {
            return Err(Error::TypeMismatch {
                column: col.name.clone(),
                rust_type: std::any::type_name::<T>(),
                pg_type: col.type_.to_string(),
            });
        }
        let conv = |e: types::BoxError| Error::Conversion {
            column: col.name.clone(),
            message: e.to_string(),
        };
        match self.raw(i) {
            None => T::from_sql_null(col.type_).map_err(conv),
            Some(raw) if binary => T::from_sql(col.type_, raw).map_err(conv),
            Some(raw) => {
                let s = std::str::from_utf8(raw).map_err(|e| conv(e.into()))?;
                T::from_text(col.type_, s).map_err(conv)
            }
        }
    }

    /// The value as PostgreSQL would print it (`psql` output), `None` for NULL.
    pub fn to_text(&self, idx: impl RowIndex) -> Result<Option<String>> {
        let i = self.find(&idx)?;
        let col = &self.columns[i];
        let Some(raw) = self.raw(i) else {
            return Ok(None);
        };
        let conv = |e: types::BoxError| Error::Conversion {
            column: col.name.clone(),
            message: e.to_string(),
        };
        if col.format == FORMAT_BINARY {
            types::to_text(col.type_, raw).map(Some).map_err(conv)
        } else {
            String::from_utf8(raw.to_vec())
                .map(Some)
                .map_err(|e| conv(e.into()))
        }
    }
}

impl fmt::Debug for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (i, c) in self.columns.iter().enumerate() {
            match self.to_text(i) {
                Ok(Some(t)) => m.entry(&c.name, &t),
                Ok(None) => m.entry(&c.name, &"NULL"),
                Err(_) => m.entry(&c.name, &"<undecodable>"),
            };
        }
        m.finish()
    }
}
