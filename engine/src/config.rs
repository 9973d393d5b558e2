//! Configuration values as people write them in files and environment
//! variables: durations with units (`"250ms"`, `"5s"`, `"1m30s"`), for
//! `#[serde(with = "tidepool_engine::config::duration")]` on the
//! configuration structs of every crate.

use std::time::Duration;

/// Parses a duration: one or more `<number><unit>` parts (`ns`, `us`, `µs`,
/// `ms`, `s`, `m` or `min`, `h`, `d`), e.g. `"250ms"`, `"1.5s"`, `"1h30m"`;
/// `"0"` alone is zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let bad = || {
        format!("invalid duration {text:?}: write a number with a unit, such as \"250ms\", \"5s\" or \"1m30s\"")
    };
    if s.is_empty() {
        return Err(bad());
    }
    // In whole nanoseconds, so "250ms" is exactly 250 ms.
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (int, frac) = rest[..num_end]
            .split_once('.')
            .unwrap_or((&rest[..num_end], ""));
        if int.is_empty() || int.len() > 20 || frac.len() > 9 || frac.contains('.') {
            return Err(bad());
        }
        let after = &rest[num_end..];
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let unit: u128 = match after[..unit_end].trim() {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" | "min" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "d" => 86_400_000_000_000,
            _ => return Err(bad()),
        };
        let int: u128 = int.parse().map_err(|_| bad())?;
        let frac_ns = if frac.is_empty() {
            0
        } else {
            let f: u128 = frac.parse().map_err(|_| bad())?;
            f * unit / 10u128.pow(frac.len() as u32)
        };
        total = int
            .checked_mul(unit)
            .and_then(|n| n.checked_add(frac_ns))
            .and_then(|n| total.checked_add(n))
            .ok_or_else(bad)?;
        rest = &after[unit_end..];
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| bad())?;
    Ok(Duration::new(secs, (total % 1_000_000_000) as u32))
}

/// Writes a duration the way [`parse_duration`] reads it, in the largest
/// unit that keeps it exact.
pub fn format_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    for (unit, size) in [
        ("h", 3_600_000_000_000u128),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
    ] {
        if ns > 0 && ns.is_multiple_of(size) {
            return format!("{}{unit}", ns / size);
        }
    }
    if ns == 0 {
        "0".into()
    } else {
        format!("{ns}ns")
    }
}

/// `#[serde(with = "…::duration")]` for a `Duration` field.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = Text::deserialize(d)?.0;
        super::parse_duration(&text).map_err(serde::de::Error::custom)
    }

    /// A duration as written: text, or a bare number (refused by
    /// `parse_duration` with the hint to add a unit, rather than by serde
    /// with "expected a string").
    pub(super) struct Text(pub(super) String);

    impl<'de> Deserialize<'de> for Text {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Text, D::Error> {
            #[derive(Deserialize)]
            #[serde(untagged)]
            enum Raw {
                Text(String),
                Int(i64),
                Float(f64),
            }
            Ok(Text(match Raw::deserialize(d)? {
                Raw::Text(t) => t,
                Raw::Int(i) => i.to_string(),
                Raw::Float(f) => f.to_string(),
            }))
        }
    }

    /// `#[serde(with = "…::duration::option")]` for an `Option<Duration>`
    /// field: `"off"` (or `"none"`) is `None`.
    pub mod option {
        use std::time::Duration;

        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => s.serialize_str(&super::super::format_duration(*d)),
                None => s.serialize_str("off"),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            let text = super::Text::deserialize(d)?.0;
            match text.trim() {
                "off" | "none" => Ok(None),
                t => super::super::parse_duration(t)
                    .map(Some)
                    .map_err(serde::de::Error::custom),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_with_units() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("250ms"), Ok(ms(250)));
        assert_eq!(parse_duration("5s"), Ok(ms(5000)));
        assert_eq!(parse_duration("1.5s"), Ok(ms(1500)));
        assert_eq!(parse_duration("1m30s"), Ok(ms(90_000)));
        assert_eq!(parse_duration("2min"), Ok(ms(120_000)));
        assert_eq!(parse_duration("1h"), Ok(ms(3_600_000)));
        assert_eq!(parse_duration("50us"), Ok(Duration::from_micros(50)));
        assert_eq!(parse_duration(" 0 "), Ok(Duration::ZERO));
        for bad in ["", "5", "s", "5 parsecs", "-1s", "1e3s", "ms5"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("\"250ms\""), "{bad}: {e}");
        }
    }

    #[test]
    fn formatting_round_trips() {
        for d in [
            Duration::ZERO,
            Duration::from_millis(250),
            Duration::from_secs(5),
            Duration::from_secs(90),
            Duration::from_secs(1800),
            Duration::from_secs(7200),
            Duration::from_micros(50),
            Duration::from_nanos(7),
        ] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{d:?}");
        }
        assert_eq!(format_duration(Duration::from_secs(1800)), "30m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }
}
