//! Durations and sizes written by people: `"500ms"`, `"1.5s"`, `"2m"`, `"1h30m"`, `"1MiB"`.

use std::time::Duration;

/// Parses a duration: one or more `<number><unit>` parts (units `ms`, `s`, `m`, `h`, `d`), or a
/// bare number of seconds (`"10"`, `"0.5"`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("is empty".into());
    }
    if let Ok(secs) = text.parse::<f64>() {
        return to_duration(secs);
    }
    let mut total = 0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_end == 0 {
            return Err(format!("expected a number at {rest:?}"));
        }
        let number: f64 = rest[..number_end]
            .parse()
            .map_err(|_| format!("{:?} is not a number", &rest[..number_end]))?;
        rest = rest[number_end..].trim_start();
        let unit_end = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ms" => 0.001,
            "s" | "sec" | "secs" => 1.0,
            "m" | "min" | "mins" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            "" => return Err("a unit is missing after a number (ms, s, m, h, d)".into()),
            other => return Err(format!("unknown unit {other:?} (use ms, s, m, h, d)")),
        };
        total += number * scale;
        rest = rest[unit_end..].trim_start();
    }
    to_duration(total)
}

fn to_duration(secs: f64) -> Result<Duration, String> {
    if !secs.is_finite() || secs < 0.0 {
        return Err("must be a positive duration".into());
    }
    Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())
}

/// Parses a size in bytes: a whole number, or a number with a unit (`B`, `KB`, `MB`, `GB`,
/// `KiB`, `MiB`, `GiB`; case-insensitive).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let number: f64 = text[..number_end]
        .parse()
        .map_err(|_| "expected a number of bytes".to_string())?;
    let scale: f64 = match text[number_end..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} (use B, KiB, MiB, GiB, KB, MB, GB)"
            ))
        }
    };
    let bytes = number * scale;
    if !bytes.is_finite() || bytes > u64::MAX as f64 {
        return Err("is too large".into());
    }
    Ok(bytes.round() as u64)
}

/// Formats a duration briefly: `12s`, `1.5s`, `500ms`, `2m`, `90s`.
pub fn format_duration(d: Duration) -> String {
    let millis = d.as_secs_f64() * 1000.0;
    if millis < 1000.0 {
        return format!("{}ms", trim_float(millis));
    }
    let secs = d.as_secs_f64();
    if secs >= 60.0 && secs % 60.0 == 0.0 {
        return format!("{}m", trim_float(secs / 60.0));
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
    }

    #[test]
    fn bad_durations_say_why() {
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-5").is_err());
        assert!(parse_duration("ten").is_err());
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
        assert!(parse_size("1 parsec").is_err());
    }

    #[test]
    fn durations_format_briefly() {
        assert_eq!(format_duration(Duration::from_secs(12)), "12s");
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
    }
}
