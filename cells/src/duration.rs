//! Durations as Vault's API spells them.
//!
//! Vault accepts a duration either as a number of seconds (`300`, `"300"`)
//! or as a Go `time.ParseDuration` string (`"1h30m"`, `"1.5s"`, `"768h"`),
//! and its own parser adds a `d` (days) suffix on a plain integer. It prints
//! durations the way Go's `time.Duration.String` does (`"1h0m0s"`, `"0s"`,
//! `"1.5ms"`). Both directions are here so every engine agrees.
//!
//! Like Go's `time.Duration`, the largest duration is `i64::MAX`
//! nanoseconds (about 292 years); anything longer is an error, not a
//! silent wrap. Negative durations are refused: callers that give a
//! negative value a meaning (KV's "disable") check for the sign first.

use std::time::Duration;

use serde_json::Value;

const NANOS_PER_SEC: u128 = 1_000_000_000;
/// Go's `time.Duration` is an `i64` of nanoseconds.
const MAX_NANOS: u128 = i64::MAX as u128;

/// Parses seconds (a JSON number or a string of digits), `<n>d` days, or a
/// Go duration string. The error says what was wrong, without naming the
/// field (the caller knows it).
pub fn parse_duration(value: &Value) -> Result<Duration, String> {
    match value {
        Value::Number(n) => {
            if let Some(secs) = n.as_u64() {
                return from_nanos(u128::from(secs) * NANOS_PER_SEC);
            }
            if n.as_i64().is_some() {
                return Err("duration must not be negative".into());
            }
            match n.as_f64() {
                Some(f) if f.is_finite() && f >= 0.0 => {
                    // Float seconds: round to the nearest nanosecond.
                    let nanos = (f * 1e9).round();
                    if nanos > MAX_NANOS as f64 {
                        return Err("duration is too long".into());
                    }
                    // In range and non-negative, so the cast is exact
                    // enough and cannot wrap.
                    from_nanos(nanos as u128)
                }
                _ => Err("duration must not be negative".into()),
            }
        }
        Value::String(s) => parse_duration_str(s),
        Value::Null => Ok(Duration::ZERO),
        other => Err(format!(
            "expected a duration (seconds or a string like \"1h30m\"), got {}",
            kind(other)
        )),
    }
}

/// The string half of [`parse_duration`].
pub fn parse_duration_str(input: &str) -> Result<Duration, String> {
    let s = input.trim();
    if s.is_empty() {
        return Ok(Duration::ZERO);
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u128 = s.parse().map_err(|_| "duration is too long".to_owned())?;
        return from_nanos(secs.saturating_mul(NANOS_PER_SEC));
    }
    if let Some(days) = s.strip_suffix('d')
        && !days.is_empty()
        && days.bytes().all(|b| b.is_ascii_digit())
    {
        let days: u128 = days
            .parse()
            .map_err(|_| "duration is too long".to_owned())?;
        return from_nanos(days.saturating_mul(86_400 * NANOS_PER_SEC));
    }
    parse_go(s).map_err(|why| format!("invalid duration {input:?}: {why}"))
}

/// Go's `time.ParseDuration` grammar: `[+]` then one or more
/// `<decimal><unit>`; `"0"` alone is allowed.
fn parse_go(s: &str) -> Result<Duration, &'static str> {
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.starts_with('-') {
        return Err("must not be negative");
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty");
    }
    let mut rest = s;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(after_dot) = rest.strip_prefix('.') {
            let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &after_dot[..frac_len];
            rest = &after_dot[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err("expected a number");
        }
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(rest.len(), |(i, _)| i);
        let unit = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => NANOS_PER_SEC,
            "m" => 60 * NANOS_PER_SEC,
            "h" => 3_600 * NANOS_PER_SEC,
            "" => return Err("missing unit"),
            _ => return Err("unknown unit"),
        };
        rest = &rest[unit_len..];

        let int: u128 = if int_part.is_empty() {
            0
        } else {
            // More digits than fit are an overflow whatever the unit.
            if int_part.len() > 30 {
                return Err("too long");
            }
            int_part.parse().map_err(|_| "too long")?
        };
        let mut nanos = int.checked_mul(unit).ok_or("too long")?;
        // Only the first digits that can matter at nanosecond precision
        // count; Go drops the rest the same way.
        let mut scale: u128 = 1;
        let mut frac: u128 = 0;
        for d in frac_part.bytes().take(20) {
            frac = frac * 10 + u128::from(d - b'0');
            scale *= 10;
        }
        nanos += frac * unit / scale;
        total = total.checked_add(nanos).ok_or("too long")?;
        if total > MAX_NANOS {
            return Err("too long");
        }
    }
    from_nanos(total).map_err(|_| "too long")
}

fn from_nanos(nanos: u128) -> Result<Duration, String> {
    if nanos > MAX_NANOS {
        return Err("duration is too long".into());
    }
    let secs = (nanos / NANOS_PER_SEC) as u64;
    let sub = (nanos % NANOS_PER_SEC) as u32;
    Ok(Duration::new(secs, sub))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Formats like Go's `time.Duration.String`: `"0s"`, `"1h0m0s"`,
/// `"1m30s"`, `"1.5s"`, `"250ms"`, `"1.5µs"`, `"7ns"`. Durations past Go's
/// range are printed all the same (Go could not hold them).
pub fn format_go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < NANOS_PER_SEC {
        // Below a second Go switches to the largest unit that fits.
        let (unit, digits, name) = if nanos < 1_000 {
            (1, 0, "ns")
        } else if nanos < 1_000_000 {
            (1_000, 3, "µs")
        } else {
            (1_000_000, 6, "ms")
        };
        return format!("{}{}{name}", nanos / unit, fraction(nanos % unit, digits));
    }
    let secs = nanos / NANOS_PER_SEC;
    let frac = fraction(nanos % NANOS_PER_SEC, 9);
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    if secs >= 3600 {
        format!("{h}h{m}m{s}{frac}s")
    } else if secs >= 60 {
        format!("{m}m{s}{frac}s")
    } else {
        format!("{s}{frac}s")
    }
}

/// `.` and the `digits`-wide fraction with trailing zeros trimmed, or
/// nothing when it is zero.
fn fraction(value: u128, digits: usize) -> String {
    if value == 0 || digits == 0 {
        return String::new();
    }
    let s = format!("{value:0digits$}");
    format!(".{}", s.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn parses_seconds_days_and_go_strings() {
        let cases = [
            (json!(300), 300_000_000_000u128),
            (json!("300"), 300_000_000_000),
            (json!("90s"), 90_000_000_000),
            (json!("1h30m"), 5_400_000_000_000),
            (json!("768h"), 768 * 3_600_000_000_000),
            (json!("1.5s"), 1_500_000_000),
            (json!(".5m"), 30_000_000_000),
            (json!("1h0m0s"), 3_600_000_000_000),
            (json!("2d"), 2 * 86_400_000_000_000),
            (json!("0"), 0),
            (json!("0s"), 0),
            (json!(""), 0),
            (json!(" 5m "), 300_000_000_000),
            (json!("1µs"), 1_000),
            (json!("3us"), 3_000),
            (json!("10ns"), 10),
            (json!(1.5), 1_500_000_000),
            (json!(null), 0),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_duration(&input).map(|d| d.as_nanos()),
                Ok(want),
                "{input}"
            );
        }
    }

    #[test]
    fn rejects_bad_durations() {
        for bad in [
            json!("banana"),
            json!("-5s"),
            json!(-5),
            json!(-0.5),
            json!("1x"),
            json!("h"),
            json!("1.s.2"),
            json!("5 m"),
            json!("1h-5m"),
            json!(true),
            json!([1]),
            json!({"a": 1}),
            json!("9999999999999999999999h"),
            json!(u64::MAX),
            json!("3000000h"),
        ] {
            assert!(parse_duration(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_like_go() {
        let cases = [
            (0u64, 0u32, "0s"),
            (3600, 0, "1h0m0s"),
            (90, 0, "1m30s"),
            (59, 0, "59s"),
            (1, 500_000_000, "1.5s"),
            (0, 250_000_000, "250ms"),
            (0, 1_500, "1.5µs"),
            (0, 7, "7ns"),
            (12_319, 0, "3h25m19s"),
            (768 * 3600, 0, "768h0m0s"),
            (61, 1, "1m1.000000001s"),
        ];
        for (s, n, want) in cases {
            assert_eq!(format_go_duration(Duration::new(s, n)), want);
        }
    }

    proptest! {
        #[test]
        fn format_then_parse_is_identity(nanos in 0u64..=(i64::MAX as u64)) {
            let d = Duration::from_nanos(nanos);
            let text = format_go_duration(d);
            prop_assert_eq!(parse_duration_str(&text), Ok(d), "{}", text);
        }

        #[test]
        fn parsing_never_panics(s in "\\PC{0,24}") {
            let _ = parse_duration_str(&s);
        }
    }
}
