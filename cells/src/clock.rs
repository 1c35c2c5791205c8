//! Wall-clock time, read through one function so logic can be given another.

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// RFC 3339 in UTC, as Vault's API prints times (fractional seconds only
/// when there are any).
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// [`rfc3339`] of a Unix time in seconds (empty when out of range).
pub fn rfc3339_unix(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map(rfc3339)
        .unwrap_or_default()
}
