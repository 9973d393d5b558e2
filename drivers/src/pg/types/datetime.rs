//! date, time, timestamp, timestamptz and interval: microseconds and days
//! from PostgreSQL's epoch, rendered as the server renders them.

use super::*;

const USECS_PER_SEC: i64 = 1_000_000;
pub(super) const USECS_PER_DAY: i64 = 86_400 * USECS_PER_SEC;
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
