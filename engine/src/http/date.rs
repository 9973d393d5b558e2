//! The `Date` header, rendered once a second per worker (RFC 9110 IMF-fixdate).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub(crate) struct DateCache {
    text: [u8; 29],
    next_refresh: Instant,
}

impl DateCache {
    pub(crate) fn new() -> DateCache {
        let mut d = DateCache {
            text: [b' '; 29],
            next_refresh: Instant::now(),
        };
        d.refresh(Instant::now());
        d
    }

    /// The current date text; re-rendered only when a second boundary passed.
    pub(crate) fn get(&mut self, now: Instant) -> &[u8; 29] {
        if now >= self.next_refresh {
            self.refresh(now);
        }
        &self.text
    }

    fn refresh(&mut self, now: Instant) {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.text = render(since.as_secs());
        let into_second = Duration::from_nanos(u64::from(since.subsec_nanos()));
        self.next_refresh = now + (Duration::from_secs(1) - into_second);
    }
}

/// Renders seconds since the epoch as `Sun, 06 Nov 1994 08:49:37 GMT`.
pub(crate) fn render(secs: u64) -> [u8; 29] {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    let (y, mo, d) = civil_from_days(days as i64);
    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[..3].copy_from_slice(DAYS[(days % 7) as usize]);
    two(&mut out[5..7], d as u64);
    out[8..11].copy_from_slice(MONTHS[(mo - 1) as usize]);
    let y = y as u64;
    out[12] = b'0' + (y / 1000 % 10) as u8;
    out[13] = b'0' + (y / 100 % 10) as u8;
    out[14] = b'0' + (y / 10 % 10) as u8;
    out[15] = b'0' + (y % 10) as u8;
    two(&mut out[17..19], h);
    two(&mut out[20..22], m);
    two(&mut out[23..25], s);
    out
}

fn two(dst: &mut [u8], v: u64) {
    dst[0] = b'0' + (v / 10) as u8;
    dst[1] = b'0' + (v % 10) as u8;
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's published civil_from_days algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(&render(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(&render(784_111_777), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(&render(951_782_400), b"Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(&render(1_795_462_114), b"Mon, 23 Nov 2026 19:28:34 GMT");
    }
}
