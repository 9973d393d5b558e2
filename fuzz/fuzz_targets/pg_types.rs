//! PostgreSQL binary values on arbitrary bytes, as a column of every type
//! the driver decodes (scalars, dates and times including infinities,
//! numerics, UUIDs, JSON, arrays of them): decoding answers a value or an
//! error, never a panic or an overflow, and rendering what was decoded
//! (Display, the text users see) never panics either.
#![no_main]

use std::fmt::{Debug, Display};

use libfuzzer_sys::fuzz_target;
use tidepool_drivers::pg::{
    Date, FromSql, Interval, Json, Numeric, Time, Timestamp, TimestampTz, Type, Uuid,
};

fn debug<'a, T: FromSql<'a> + Debug>(ty: Type, raw: &'a [u8]) {
    if T::accepts(ty) {
        if let Ok(v) = T::from_sql(ty, raw) {
            let _ = format!("{v:?}");
        }
    }
}

fn shown<'a, T: FromSql<'a> + Debug + Display>(ty: Type, raw: &'a [u8]) {
    if T::accepts(ty) {
        if let Ok(v) = T::from_sql(ty, raw) {
            let _ = format!("{v} {v:?}");
        }
    }
}

const TYPES: &[Type] = &[
    Type::BOOL,
    Type::BYTEA,
    Type::INT2,
    Type::INT4,
    Type::INT8,
    Type::FLOAT4,
    Type::FLOAT8,
    Type::TEXT,
    Type::JSON,
    Type::JSONB,
    Type::DATE,
    Type::TIME,
    Type::TIMESTAMP,
    Type::TIMESTAMPTZ,
    Type::INTERVAL,
    Type::NUMERIC,
    Type::UUID,
    Type::INT4_ARRAY,
    Type::INT8_ARRAY,
    Type::TEXT_ARRAY,
    Type::NUMERIC_ARRAY,
    Type::TIMESTAMP_ARRAY,
    Type::DATE_ARRAY,
    Type::UUID_ARRAY,
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, raw)) = data.split_first() else {
        return;
    };
    let ty = TYPES[pick as usize % TYPES.len()];
    debug::<bool>(ty, raw);
    debug::<Vec<u8>>(ty, raw);
    debug::<i16>(ty, raw);
    debug::<i32>(ty, raw);
    debug::<i64>(ty, raw);
    debug::<f32>(ty, raw);
    debug::<f64>(ty, raw);
    debug::<String>(ty, raw);
    debug::<Json>(ty, raw);
    debug::<serde_json::Value>(ty, raw);
    shown::<Date>(ty, raw);
    shown::<Time>(ty, raw);
    shown::<Timestamp>(ty, raw);
    shown::<TimestampTz>(ty, raw);
    shown::<Interval>(ty, raw);
    shown::<Numeric>(ty, raw);
    shown::<Uuid>(ty, raw);
    debug::<Vec<Option<i32>>>(ty, raw);
    debug::<Vec<Option<i64>>>(ty, raw);
    debug::<Vec<Option<String>>>(ty, raw);
    debug::<Vec<Option<Numeric>>>(ty, raw);
    debug::<Vec<Option<Timestamp>>>(ty, raw);
    debug::<Vec<Option<Date>>>(ty, raw);
    debug::<Vec<Option<Uuid>>>(ty, raw);
});
