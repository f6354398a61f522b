//! Parsing of byte sizes (`64KiB`, `1MB`, `512`) and durations (`250ms`, `5s`, `2m`) written
//! in the config file. Pure functions returning a message on error.

use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Visitor};

/// A size as written in YAML: a plain integer (bytes) or a string with a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RawSize {
    Bytes(u64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawSize;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a size in bytes, like 65536 or \"64KiB\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawSize, E> {
                u64::try_from(v)
                    .map(RawSize::Bytes)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawSize, E> {
                Ok(RawSize::Text(v.to_owned()))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Bytes for a size; units B, KB/MB/GB (powers of 1000) and KiB/MiB/GiB (powers of 1024),
/// case-insensitive, optionally separated from the number by blanks.
pub(super) fn size(raw: &RawSize) -> Result<u64, String> {
    let text = match raw {
        RawSize::Bytes(n) => return Ok(*n),
        RawSize::Text(t) => t.trim(),
    };
    let bad =
        || format!("`{text}` is not a size; write e.g. 65536, \"512B\", \"64KiB\" or \"1MB\"");
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(bad());
    }
    let number: u64 = number.parse().map_err(|_| bad())?;
    let multiplier: u64 = match unit.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => return Err(bad()),
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// A duration with a unit: `ms`, `s`, `m`, `h` or `d` (integers only).
pub(super) fn duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let bad = || {
        format!(
            "`{text}` is not a duration; write an integer with a unit: ms, s, m, h or d (e.g. \"250ms\", \"5s\")"
        )
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(bad());
    }
    let number: u64 = number.parse().map_err(|_| bad())?;
    let millis_per_unit: u64 = match unit.trim_start() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    number
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{text}` is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let t = |s: &str| RawSize::Text(s.to_owned());
        let cases: &[(RawSize, Option<u64>)] = &[
            (RawSize::Bytes(512), Some(512)),
            (t("512"), Some(512)),
            (t("512B"), Some(512)),
            (t("1KB"), Some(1000)),
            (t("64KiB"), Some(65536)),
            (t("64 kib"), Some(65536)),
            (t("1MiB"), Some(1 << 20)),
            (t("2MB"), Some(2_000_000)),
            (t("1GiB"), Some(1 << 30)),
            (t(""), None),
            (t("KiB"), None),
            (t("1.5KiB"), None),
            (t("-1"), None),
            (t("10 TB"), None),
            (t("99999999999999999999"), None),
            (t("99999999999GiB"), None),
        ];
        for (raw, want) in cases {
            assert_eq!(size(raw).ok(), *want, "{raw:?}");
        }
    }

    #[test]
    fn durations() {
        let cases: &[(&str, Option<u64>)] = &[
            ("250ms", Some(250)),
            ("5s", Some(5_000)),
            ("2m", Some(120_000)),
            ("1h", Some(3_600_000)),
            ("30d", Some(2_592_000_000)),
            ("0s", Some(0)),
            (" 10 s ", Some(10_000)),
            ("5", None),
            ("s", None),
            ("1.5s", None),
            ("5S", None),
            ("5sec", None),
            ("-1s", None),
            ("99999999999999999999h", None),
            ("9999999999999999h", None),
        ];
        for (text, want) in cases {
            let got = duration(text).ok().map(|d| d.as_millis());
            assert_eq!(got, want.map(u128::from), "{text:?}");
        }
    }
}
