//! Typed access to request parameters.
//!
//! Vault's clients send parameters loosely typed: booleans and numbers as
//! strings (query parameters always are), lists as arrays or comma-separated
//! strings, durations as seconds or Go-style strings. These readers accept
//! exactly those forms and answer anything else with a 400 that names the
//! field, so handlers only ever see typed values.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::api_error::ApiError;
use crate::logical::Data;

fn bad(field: &str, want: &str, got: &Value) -> ApiError {
    let kind = match got {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    };
    ApiError::InvalidRequest(format!(
        "invalid value for {field:?}: want {want}, got {kind}"
    ))
}

/// The value of `field`, treating JSON `null` as absent.
fn present<'a>(data: &'a Data, field: &str) -> Option<&'a Value> {
    data.get(field).filter(|v| !v.is_null())
}

pub fn string(data: &Data, field: &str) -> Result<Option<String>, ApiError> {
    match present(data, field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(v) => Err(bad(field, "a string", v)),
    }
}

pub fn require_string(data: &Data, field: &str) -> Result<String, ApiError> {
    string(data, field)?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::InvalidRequest(format!("missing required field {field:?}")))
}

/// Go's `strconv.ParseBool`, which Vault uses for every boolean it reads
/// from text (query parameters, option maps).
pub fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

pub fn boolean(data: &Data, field: &str) -> Result<Option<bool>, ApiError> {
    match present(data, field) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s.is_empty() => Ok(Some(false)),
        Some(Value::String(s)) => parse_bool(s)
            .map(Some)
            .ok_or_else(|| bad(field, "a boolean", &Value::String(s.clone()))),
        Some(Value::Number(n)) if n.as_u64() == Some(0) => Ok(Some(false)),
        Some(Value::Number(n)) if n.as_u64() == Some(1) => Ok(Some(true)),
        Some(v) => Err(bad(field, "a boolean", v)),
    }
}

pub fn uint(data: &Data, field: &str) -> Result<Option<u64>, ApiError> {
    match present(data, field) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| bad(field, "a non-negative integer", &Value::Number(n.clone()))),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => s
            .parse::<u64>()
            .map(Some)
            .map_err(|_| bad(field, "a non-negative integer", &Value::String(s.clone()))),
        Some(v) => Err(bad(field, "a non-negative integer", v)),
    }
}

/// A duration: integer seconds, or a Go-style string (`"768h"`, `"1h30m"`,
/// `"300"`, `"10m"`).
pub fn duration(data: &Data, field: &str) -> Result<Option<Duration>, ApiError> {
    match present(data, field) {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(v) => crate::duration::parse_duration(v)
            .map(Some)
            .map_err(|e| ApiError::InvalidRequest(format!("invalid value for {field:?}: {e}"))),
    }
}

/// Seconds of a duration field.
pub fn seconds(data: &Data, field: &str) -> Result<Option<u64>, ApiError> {
    Ok(duration(data, field)?.map(|d| d.as_secs()))
}

/// A list of strings: a JSON array of strings, or a comma-separated string.
/// Entries are trimmed; empty entries dropped.
pub fn string_list(data: &Data, field: &str) -> Result<Option<Vec<String>>, ApiError> {
    match present(data, field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        )),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Ok(s.trim().to_owned()),
                other => Err(bad(field, "a list of strings", other)),
            })
            .filter(|r| r.as_ref().map_or(true, |s| !s.is_empty()))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(v) => Err(bad(field, "a list of strings", v)),
    }
}

/// A map of strings to strings (`meta`, `options`). Non-string scalar values
/// are rendered as strings, as Vault's clients sometimes send numbers.
pub fn string_map(data: &Data, field: &str) -> Result<Option<BTreeMap<String, String>>, ApiError> {
    match present(data, field) {
        None => Ok(None),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                Value::Number(n) => Ok((k.clone(), n.to_string())),
                Value::Bool(b) => Ok((k.clone(), b.to_string())),
                other => Err(bad(&format!("{field}.{k}"), "a string", other)),
            })
            .collect::<Result<BTreeMap<_, _>, _>>()
            .map(Some),
        Some(v) => Err(bad(field, "an object of strings", v)),
    }
}

/// Rejects fields a handler does not know, so a typo is an error rather than
/// a silently ignored setting.
pub fn deny_unknown(data: &Data, known: &[&str]) -> Result<(), ApiError> {
    match data.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(ApiError::InvalidRequest(format!("unknown field {k:?}"))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data(v: Value) -> Data {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn loose_forms_parse_and_wrong_types_name_the_field() {
        let d = data(json!({
            "b1": "true", "b2": false, "n1": "42", "n2": 7, "l1": "a, b,,c", "l2": ["x"],
            "m": {"k": "v", "n": 1}, "ttl": "1h30m", "t2": 90, "nul": null,
            "bad_n": -1, "bad_b": "maybe", "bad_l": [1], "bad_ttl": "banana",
        }));
        assert_eq!(boolean(&d, "b1").expect("parses"), Some(true));
        assert_eq!(boolean(&d, "b2").expect("parses"), Some(false));
        assert_eq!(uint(&d, "n1").expect("parses"), Some(42));
        assert_eq!(uint(&d, "n2").expect("parses"), Some(7));
        assert_eq!(uint(&d, "nul").expect("parses"), None);
        assert_eq!(
            string_list(&d, "l1").expect("parses"),
            Some(vec!["a".into(), "b".into(), "c".into()])
        );
        assert_eq!(
            string_list(&d, "l2").expect("parses"),
            Some(vec!["x".into()])
        );
        assert_eq!(
            string_map(&d, "m").expect("parses").expect("parses")["n"],
            "1"
        );
        assert_eq!(seconds(&d, "ttl").expect("parses"), Some(5400));
        assert_eq!(seconds(&d, "t2").expect("parses"), Some(90));
        for (f, r) in [
            ("bad_n", uint(&d, "bad_n").err()),
            ("bad_b", boolean(&d, "bad_b").err()),
            ("bad_l", string_list(&d, "bad_l").err()),
            ("bad_ttl", duration(&d, "bad_ttl").err()),
        ] {
            let e = r.expect("an error");
            assert!(matches!(e, ApiError::InvalidRequest(_)));
            assert!(e.to_string().contains(f), "{e}");
        }
        assert!(deny_unknown(&d, &["b1"]).is_err());
        assert!(require_string(&d, "missing").is_err());
    }
}
