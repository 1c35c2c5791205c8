//! Typed request fields for KV version 2, parsed the way Vault's framework
//! parses them (numbers may arrive as strings, booleans as `"true"`, version
//! lists as `"1,2"`), with a 400 that names the field otherwise.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::api_error::ApiError;
use crate::duration::parse_duration;
use crate::logical::Data;

/// Vault's limits on `custom_metadata`.
pub const MAX_CUSTOM_METADATA_KEYS: usize = 64;
pub const MAX_CUSTOM_METADATA_KEY_LEN: usize = 128;
pub const MAX_CUSTOM_METADATA_VALUE_LEN: usize = 512;

fn invalid(field: &str, why: impl std::fmt::Display) -> ApiError {
    ApiError::InvalidRequest(format!("invalid value for field {field:?}: {why}"))
}

fn present<'a>(data: &'a Data, field: &str) -> Option<&'a Value> {
    data.get(field).filter(|v| !v.is_null())
}

/// A non-negative integer, or a string of one.
pub fn uint(data: &Data, field: &str) -> Result<Option<u64>, ApiError> {
    present(data, field)
        .map(|v| uint_value(v, field))
        .transpose()
}

pub fn uint_value(v: &Value, field: &str) -> Result<u64, ApiError> {
    let parsed = match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 1e19)
                .map(|f| f as u64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    parsed.ok_or_else(|| invalid(field, format!("expected a non-negative integer, got {v}")))
}

/// A `u32` (`max_versions`).
pub fn uint32(data: &Data, field: &str) -> Result<Option<u32>, ApiError> {
    uint(data, field)?
        .map(|n| u32::try_from(n).map_err(|_| invalid(field, "too large")))
        .transpose()
}

/// A boolean, or a string Go's `strconv.ParseBool` accepts.
pub fn boolean(data: &Data, field: &str) -> Result<Option<bool>, ApiError> {
    let Some(v) = present(data, field) else {
        return Ok(None);
    };
    let parsed = match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => crate::params::parse_bool(s),
        Value::Number(n) => n.as_u64().filter(|n| *n <= 1).map(|n| n == 1),
        _ => None,
    };
    parsed
        .map(Some)
        .ok_or_else(|| invalid(field, format!("expected a boolean, got {v}")))
}

/// A duration that may be negative, in nanoseconds: seconds or a Go
/// duration string, with a leading `-` allowed.
pub fn signed_duration(data: &Data, field: &str) -> Result<Option<i64>, ApiError> {
    let Some(v) = present(data, field) else {
        return Ok(None);
    };
    let (negative, magnitude) = match v {
        Value::Number(n) if n.as_f64().is_some_and(|f| f < 0.0) => (
            true,
            n.as_f64().map(|f| Value::from(-f)).unwrap_or(Value::Null),
        ),
        Value::String(s) if s.trim_start().starts_with('-') => (
            true,
            Value::String(s.trim_start().trim_start_matches('-').to_owned()),
        ),
        other => (false, other.clone()),
    };
    let d = parse_duration(&magnitude).map_err(|e| invalid(field, e))?;
    // parse_duration caps at i64::MAX nanoseconds.
    let nanos = i64::try_from(d.as_nanos()).map_err(|_| invalid(field, "too long"))?;
    Ok(Some(if negative { -nanos } else { nanos }))
}

/// A JSON object.
pub fn object<'a>(data: &'a Data, field: &str) -> Result<Option<&'a Map<String, Value>>, ApiError> {
    match present(data, field) {
        None => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(v) => Err(invalid(field, format!("expected an object, got {v}"))),
    }
}

/// `versions`: a list of numbers (or numeric strings), one number, or a
/// comma-separated string. Missing or empty is Vault's "no version number
/// provided".
pub fn versions(data: &Data) -> Result<Vec<u64>, ApiError> {
    const FIELD: &str = "versions";
    let out = match present(data, FIELD) {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| uint_value(v, FIELD))
            .collect::<Result<_, _>>()?,
        Some(Value::String(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| uint_value(&Value::String(s.to_owned()), FIELD))
            .collect::<Result<_, _>>()?,
        Some(v @ Value::Number(_)) => vec![uint_value(v, FIELD)?],
        Some(v) => {
            return Err(invalid(
                FIELD,
                format!("expected a list of version numbers, got {v}"),
            ));
        }
    };
    if out.is_empty() {
        return Err(ApiError::InvalidRequest(
            "no version number provided".into(),
        ));
    }
    Ok(out)
}

/// `options.cas`: absent, or a non-negative integer.
pub fn cas(data: &Data) -> Result<Option<u64>, ApiError> {
    let Some(options) = object(data, "options")? else {
        return Ok(None);
    };
    match options.get("cas") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => uint_value(v, "cas").map(Some).map_err(|_| {
            ApiError::InvalidRequest(format!(
                "error parsing check-and-set parameter: field \"cas\" must be a non-negative integer, got {v}"
            ))
        }),
    }
}

/// `custom_metadata`: string keys to strings (numbers and booleans are
/// taken as their text, as Vault's weak decoding does), within Vault's
/// limits. Every problem is reported, not just the first.
pub fn custom_metadata(v: &Value) -> Result<BTreeMap<String, String>, ApiError> {
    const FIELD: &str = "custom_metadata";
    let Value::Object(m) = v else {
        return Err(invalid(
            FIELD,
            format!("expected an object of strings, got {v}"),
        ));
    };
    let mut out = BTreeMap::new();
    let mut errors = Vec::new();
    let prefix = "custom_metadata validation failed";
    if m.len() > MAX_CUSTOM_METADATA_KEYS {
        errors.push(format!(
            "{prefix}: payload must contain at most {MAX_CUSTOM_METADATA_KEYS} keys, provided {}",
            m.len()
        ));
    }
    for (k, v) in m {
        let value = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => {
                errors.push(format!(
                    "{prefix}: value for key {k:?} must be a string, got {other}"
                ));
                continue;
            }
        };
        if k.is_empty() || k.len() > MAX_CUSTOM_METADATA_KEY_LEN {
            errors.push(format!(
                "{prefix}: length of key {k:?} is {} but must be 0 < len(key) <= {MAX_CUSTOM_METADATA_KEY_LEN}",
                k.len()
            ));
        }
        if value.len() > MAX_CUSTOM_METADATA_VALUE_LEN {
            errors.push(format!(
                "{prefix}: length of value for key {k:?} is {} but must be <= {MAX_CUSTOM_METADATA_VALUE_LEN}",
                value.len()
            ));
        }
        if k.chars().any(char::is_control) {
            errors.push(format!(
                "{prefix}: key {k:?} contains unprintable characters"
            ));
        }
        if value.chars().any(char::is_control) {
            errors.push(format!(
                "{prefix}: value for key {k:?} contains unprintable characters"
            ));
        }
        out.insert(k.clone(), value);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ApiError::InvalidRequest(errors.join("; ")))
    }
}
