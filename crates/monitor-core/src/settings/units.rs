//! Durations and sizes written by people: `"500ms"`, `"1.5s"`, `"2m"`, `"1h30m"`, `"1MiB"`.
//!
//! The `humantime` crate parses durations and the `bytesize` crate sizes. What stays here is
//! what they do not do:
//! - bare numbers: seconds for durations (`10`, `0.5`, as the original service wrote them)
//!   and bytes with a fraction (`1.5`), where both crates want a unit or a whole number;
//! - values too large for them (`"18446744073709551615s"`, `"99999999999999TiB"`), which come
//!   back as "above the maximum", never as a parse error or a wrapped small value;
//! - messages in this service's words (`unknown unit "parsecs" (use ms, s, m, h, d)`);
//! - formatting for messages: `humantime` writes `1day` and `99years 11months…` and
//!   `bytesize` rounds to one decimal (`1.1 GiB` for both a size and a slightly smaller
//!   maximum), while messages show a value in the form a setting takes (`36500d`, `64 MiB`).

use std::time::Duration;

use bytesize::{ByteSize, GIB, KIB, MIB, TIB};
use humantime::DurationError;

/// Longest duration any setting accepts (100 years): far beyond any sensible value, and far
/// enough from the limits of clocks and date arithmetic that nothing computed from a setting
/// can overflow. Most settings have a tighter maximum of their own.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Units named in messages about durations (`humantime` takes longer spellings too).
const DURATION_UNITS: &str = "ms, s, m, h, d";

/// Parses a duration: one or more `<number><unit>` parts (units `ms`, `s`, `m`, `h`, `d`, and
/// the other spellings `humantime` takes), or a bare number of seconds (`"10"`, `"0.5"`). At
/// most [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let secs = parse_seconds(text)?;
    duration_at_most(secs, MAX_DURATION).map_err(|above| match above {
        Some(max) => format!("is above the maximum {}", format_duration(max)),
        None => "must be a positive duration".to_string(),
    })
}

/// Parses a duration written as [`parse_duration`] takes it into seconds, without bounds: the
/// result may be huge or infinite, which the caller compares with its maximum.
pub(crate) fn parse_seconds(text: &str) -> Result<f64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("is empty".into());
    }
    // A bare number is seconds; `humantime` wants a unit.
    if let Ok(secs) = text.parse::<f64>() {
        return Ok(secs);
    }
    match humantime::parse_duration(&whole_fractions(text)) {
        Ok(d) => Ok(d.as_secs_f64()),
        // Beyond u64 seconds: above every maximum.
        Err(DurationError::NumberOverflow) => Ok(f64::INFINITY),
        Err(DurationError::UnknownUnit { unit, .. }) if unit.is_empty() => Err(format!(
            "a unit is missing after a number ({DURATION_UNITS})"
        )),
        Err(DurationError::UnknownUnit { unit, .. }) => {
            Err(format!("unknown unit {unit:?} (use {DURATION_UNITS})"))
        }
        Err(DurationError::NumberExpected(at) | DurationError::InvalidCharacter(at)) => Err(
            format!("expected a number at {:?}", text.get(at..).unwrap_or(text)),
        ),
        Err(e) => Err(e.to_string()),
    }
}

/// `text` with a `0` written where a fraction's digits are left out (`.5s`, `1.s`), which
/// `humantime` refuses and this service always took.
fn whole_fractions(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    let mut previous = ' ';
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '.' && !previous.is_ascii_digit() {
            out.push('0');
        }
        out.push(c);
        if c == '.' && !chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('0');
        }
        previous = c;
    }
    out
}

/// `secs` as a duration if it is a non-negative number of seconds up to `max`. `Err(None)`:
/// negative or not a number; `Err(Some(max))`: above the maximum.
pub(crate) fn duration_at_most(secs: f64, max: Duration) -> Result<Duration, Option<Duration>> {
    if secs.is_nan() || secs < 0.0 {
        return Err(None);
    }
    if secs > max.as_secs_f64() {
        return Err(Some(max));
    }
    // Within 0..=max, so the conversion cannot fail.
    Duration::try_from_secs_f64(secs).map_err(|_| Some(max))
}

/// Parses a size in bytes: a number, or a number with a unit (`B`, `KB`, `MB`, `GB`, `TB`,
/// `KiB`, `MiB`, `GiB`, `TiB` and the other spellings `bytesize` takes; case-insensitive). A
/// size beyond `u64` comes back as `u64::MAX`, which every maximum refuses.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let number: f64 = text[..number_end]
        .parse()
        .map_err(|_| "expected a number of bytes".to_string())?;
    if number_end == text.len() {
        // A bare number, whole or not, is bytes; `as` saturates beyond u64 (or infinity).
        return Ok(number.round() as u64);
    }
    // Whole numbers with a unit beyond u64 saturate in `bytesize` too.
    text.parse::<ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|_| {
            format!(
                "unknown unit {:?} (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)",
                text[number_end..].trim().to_ascii_lowercase()
            )
        })
}

/// Formats a size for messages: `64 MiB`, `1.5 GiB`, `1000 bytes`.
pub fn format_size(bytes: u64) -> String {
    for (unit, name) in [(TIB, "TiB"), (GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")] {
        if bytes >= unit {
            return format!("{} {name}", trim_float(bytes as f64 / unit as f64));
        }
    }
    format!("{bytes} bytes")
}

/// Formats a duration briefly: `12s`, `1.5s`, `500ms`, `2m`, `90s`, `1h`, `1d`.
pub fn format_duration(d: Duration) -> String {
    let millis = d.as_secs_f64() * 1000.0;
    if millis < 1000.0 {
        return format!("{}ms", trim_float(millis));
    }
    let secs = d.as_secs_f64();
    for (unit, name) in [(86_400.0, "d"), (3600.0, "h"), (60.0, "m")] {
        if secs >= unit && secs % unit == 0.0 {
            return format!("{}{name}", trim_float(secs / unit));
        }
    }
    format!("{}s", trim_float(secs))
}

fn trim_float(x: f64) -> String {
    let text = format!("{x:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_seconds_and_units() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration(" 1m 30s "), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10 s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2.s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1 min 2 secs"), Ok(Duration::from_secs(62)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
    }

    #[test]
    fn bad_durations_say_why() {
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-5").is_err());
        assert!(parse_duration("ten")
            .unwrap_err()
            .contains("expected a number"));
        assert!(parse_duration("10 parsecs")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_duration("5m3")
            .unwrap_err()
            .contains("unit is missing"));
    }

    #[test]
    fn sizes_accept_units() {
        assert_eq!(parse_size("1MiB"), Ok(1_048_576));
        assert_eq!(parse_size("512 KiB"), Ok(524_288));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("42"), Ok(42));
        assert!(parse_size("1 parsec").unwrap_err().contains("unknown unit"));
        assert!(parse_size("lots")
            .unwrap_err()
            .contains("expected a number"));
        assert_eq!(parse_size("1.5"), Ok(2));
        assert_eq!(parse_size("1.5 KiB"), Ok(1536));
        assert_eq!(parse_size("1 gib"), Ok(1 << 30));
        assert_eq!(parse_size("2k"), Ok(2000));
        assert_eq!(parse_size("2TiB"), Ok(2 << 40));
        assert_eq!(parse_size("1000000TiB"), Ok(1_000_000 << 40));
        assert_eq!(parse_size("99999999999999TiB"), Ok(u64::MAX));
        assert_eq!(parse_size(&"9".repeat(400)), Ok(u64::MAX));
    }

    #[test]
    fn huge_durations_are_above_the_maximum_not_a_panic() {
        for text in [
            "18446744073709551615s",
            "99999999999d",
            "400000000h",
            "1e300",
            &"9".repeat(400),
        ] {
            assert_eq!(
                parse_duration(text),
                Err("is above the maximum 36500d".to_string()),
                "{text}"
            );
        }
        assert_eq!(parse_duration("36500d"), Ok(MAX_DURATION));
        assert_eq!(
            duration_at_most(86_401.0, Duration::from_secs(86_400)),
            Err(Some(Duration::from_secs(86_400)))
        );
        assert_eq!(duration_at_most(f64::NAN, MAX_DURATION), Err(None));
    }

    #[test]
    fn sizes_format_in_binary_units() {
        assert_eq!(format_size(64 << 20), "64 MiB");
        assert_eq!(format_size(1536 << 20), "1.5 GiB");
        assert_eq!(format_size(1000), "1000 bytes");
        assert_eq!(format_size(1 << 40), "1 TiB");
    }

    #[test]
    fn durations_format_briefly() {
        assert_eq!(format_duration(Duration::from_secs(12)), "12s");
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(format_duration(Duration::from_secs(86_400)), "1d");
        assert_eq!(format_duration(Duration::from_secs(5400)), "90m");
    }
}
