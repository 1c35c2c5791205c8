//! `allowed_parameters`, `denied_parameters` and `required_parameters`
//! (docs/policies.md, "Parameter constraints").

use std::collections::BTreeMap;

use serde_json::Value;

use super::DenyReason;
use crate::logical::Data;

/// Constraints on the request data of reads and writes. Keys are
/// lowercase; values are strings (globs with a leading and/or trailing
/// `*`), numbers or booleans. An empty value list means any value.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParameterRules {
    /// When not empty, only these keys may be sent (or any key, with `*`),
    /// each with one of the listed values.
    pub allowed: BTreeMap<String, Vec<Value>>,
    /// Keys that may not be sent with one of the listed values; `*` denies
    /// any data at all. Denied beats allowed.
    pub denied: BTreeMap<String, Vec<Value>>,
    /// Keys that must be present.
    pub required: Vec<String>,
}

impl ParameterRules {
    pub fn is_empty(&self) -> bool {
        self.allowed.is_empty() && self.denied.is_empty() && self.required.is_empty()
    }

    /// Vault's merge of two rules for one pattern (`vault/acl.go`,
    /// `NewACL`): value lists for a key are concatenated, but an empty list
    /// (any value) on either side wins; required keys are unioned.
    ///
    /// As in Vault, merging a rule without `allowed_parameters` into one
    /// with them keeps the restriction.
    pub fn merge(&mut self, other: &ParameterRules) {
        merge_values(&mut self.allowed, &other.allowed);
        merge_values(&mut self.denied, &other.denied);
        for key in &other.required {
            if !self.required.contains(key) {
                self.required.push(key.clone());
            }
        }
    }

    /// Checks request data against the constraints, in Vault's order
    /// (`vault/acl.go`, `AllowOperation`): required keys, then (if there is
    /// any data) denied keys, then allowed keys. Request keys are compared
    /// lowercased.
    pub(crate) fn check(&self, data: &Data) -> Result<(), DenyReason> {
        for key in &self.required {
            if !data.contains_key(key) {
                return Err(DenyReason::RequiredParameterMissing(key.clone()));
            }
        }
        if data.is_empty() {
            return Ok(());
        }
        if !self.denied.is_empty() {
            if self.denied.contains_key("*") {
                return Err(DenyReason::ParameterDenied("*".to_owned()));
            }
            for (key, value) in data {
                if let Some(list) = self.denied.get(&key.to_lowercase())
                    && denied_value(value, list)
                {
                    return Err(DenyReason::ParameterDenied(key.clone()));
                }
            }
        }
        if self.allowed.is_empty() {
            return Ok(());
        }
        let any_key = self.allowed.contains_key("*");
        if any_key && self.allowed.len() == 1 {
            return Ok(());
        }
        for (key, value) in data {
            match self.allowed.get(&key.to_lowercase()) {
                None if !any_key => {
                    return Err(DenyReason::ParameterNotAllowed(key.clone()));
                }
                Some(list) if !allowed_value(value, list) => {
                    return Err(DenyReason::ParameterNotAllowed(key.clone()));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn merge_values(into: &mut BTreeMap<String, Vec<Value>>, from: &BTreeMap<String, Vec<Value>>) {
    for (key, values) in from {
        match into.get_mut(key) {
            Some(existing) if values.is_empty() || existing.is_empty() => existing.clear(),
            Some(existing) => {
                for v in values {
                    if !existing.contains(v) {
                        existing.push(v.clone());
                    }
                }
            }
            None => {
                into.insert(key.clone(), values.clone());
            }
        }
    }
}

/// Whether `value` may be sent under an `allowed_parameters` list: it
/// matches an entry, or it is a list (or a comma-separated string) whose
/// every element matches one (Vault's `valueInAllowedParameterList`).
///
/// Stricter than Vault for comma-separated strings: Vault first tries the
/// whole string against the globs, so `dev-*` admits `"dev-a,root"`, which
/// an engine reading the field as a list takes as two values. Sigil only
/// admits such a string whole when an entry is exactly that string.
fn allowed_value(value: &Value, list: &[Value]) -> bool {
    if list.is_empty() {
        return true;
    }
    match value {
        Value::String(s) if s.contains(',') => {
            list.contains(value) || comma_parts(s).all(|p| in_list(&p, list))
        }
        Value::Array(items) => in_list(value, list) || items.iter().all(|v| in_list(v, list)),
        _ => in_list(value, list),
    }
}

/// Whether `value` is refused by a `denied_parameters` list: it matches an
/// entry, or any element of it as a list (or comma-separated string) does
/// (Vault's `valueInDeniedParameterList`).
fn denied_value(value: &Value, list: &[Value]) -> bool {
    if list.is_empty() || in_list(value, list) {
        return true;
    }
    match value {
        Value::Array(items) => items.iter().any(|v| in_list(v, list)),
        Value::String(s) if s.contains(',') => comma_parts(s).any(|p| in_list(&p, list)),
        _ => false,
    }
}

fn comma_parts(s: &str) -> impl Iterator<Item = Value> + '_ {
    s.split(',').map(|p| Value::String(p.trim().to_owned()))
}

/// A string entry matches string values as a glob; any other entry matches
/// an equal value.
fn in_list(value: &Value, list: &[Value]) -> bool {
    list.iter().any(|entry| match (entry, value) {
        (Value::String(pattern), Value::String(s)) => glob_match(pattern, s),
        (Value::String(_), _) => false,
        (entry, value) => entry == value,
    })
}

/// Vault's `GlobbedStringsMatch`: `*` at the start, the end or both makes a
/// suffix, prefix or substring match. A lone `*` (shorter than two bytes)
/// only matches itself; an empty list is how a policy says "any value".
pub(crate) fn glob_match(pattern: &str, value: &str) -> bool {
    if pattern.len() < 2 {
        return pattern == value;
    }
    match (pattern.strip_prefix('*'), pattern.strip_suffix('*')) {
        (Some(rest), Some(_)) => value.contains(&rest[..rest.len() - 1]),
        (Some(suffix), None) => value.ends_with(suffix),
        (None, Some(prefix)) => value.starts_with(prefix),
        (None, None) => pattern == value,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn data(v: Value) -> Data {
        match v {
            Value::Object(m) => m,
            _ => panic!("object expected"),
        }
    }

    fn rules(allowed: Value, denied: Value, required: &[&str]) -> ParameterRules {
        let map = |v: Value| -> BTreeMap<String, Vec<Value>> {
            serde_json::from_value(v).expect("map of lists")
        };
        ParameterRules {
            allowed: map(allowed),
            denied: map(denied),
            required: required.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn globs() {
        assert!(glob_match("foo*", "foobar"));
        assert!(glob_match("*bar", "foobar"));
        assert!(glob_match("*oba*", "foobar"));
        assert!(!glob_match("*x*", "foobar"));
        assert!(glob_match("*", "*"));
        assert!(!glob_match("*", "anything"));
        assert!(glob_match("**", "anything"));
        assert!(glob_match("exact", "exact"));
    }

    #[test]
    fn allowed_values_and_keys() {
        let r = rules(json!({"role": ["dev-*", "ops"], "ttl": []}), json!({}), &[]);
        assert!(
            r.check(&data(json!({"role": "dev-1", "ttl": "1h"})))
                .is_ok()
        );
        assert!(r.check(&data(json!({"ROLE": "ops"}))).is_ok());
        assert_eq!(
            r.check(&data(json!({"role": "admin"}))),
            Err(DenyReason::ParameterNotAllowed("role".into()))
        );
        assert_eq!(
            r.check(&data(json!({"other": 1}))),
            Err(DenyReason::ParameterNotAllowed("other".into()))
        );
        // Every element of a list (or comma-separated string) must match.
        assert!(r.check(&data(json!({"role": ["dev-a", "ops"]}))).is_ok());
        assert!(r.check(&data(json!({"role": ["dev-a", "root"]}))).is_err());
        assert!(r.check(&data(json!({"role": "dev-a, ops"}))).is_ok());
        assert!(r.check(&data(json!({"role": "dev-a,root"}))).is_err());
        let exact = rules(json!({"k": ["a,b", "c*"]}), json!({}), &[]);
        assert!(exact.check(&data(json!({"k": "a,b"}))).is_ok());
        assert!(exact.check(&data(json!({"k": "c1, c2"}))).is_ok());
        assert!(exact.check(&data(json!({"k": "c1,d"}))).is_err());
        assert!(r.check(&data(json!({"role": ""}))).is_err());
        assert!(r.check(&Data::new()).is_ok());
    }

    #[test]
    fn star_key_and_typed_values() {
        let any = rules(json!({"*": []}), json!({}), &[]);
        assert!(any.check(&data(json!({"x": 1, "y": "z"}))).is_ok());
        let mixed = rules(json!({"*": [], "n": [3, true]}), json!({}), &[]);
        assert!(mixed.check(&data(json!({"x": 1, "n": 3}))).is_ok());
        assert!(mixed.check(&data(json!({"n": true}))).is_ok());
        assert!(mixed.check(&data(json!({"n": 4}))).is_err());
        assert!(mixed.check(&data(json!({"n": "3"}))).is_err());
    }

    #[test]
    fn denied_beats_allowed() {
        let r = rules(
            json!({"*": []}),
            json!({"policies": ["*root*"], "secret": []}),
            &[],
        );
        assert!(r.check(&data(json!({"policies": "dev"}))).is_ok());
        assert_eq!(
            r.check(&data(json!({"policies": ["dev", "root"]}))),
            Err(DenyReason::ParameterDenied("policies".into()))
        );
        assert!(r.check(&data(json!({"policies": "dev,root"}))).is_err());
        assert!(r.check(&data(json!({"Secret": "x"}))).is_err());
        let all = rules(json!({}), json!({"*": []}), &[]);
        assert!(all.check(&data(json!({"a": 1}))).is_err());
        assert!(all.check(&Data::new()).is_ok());
    }

    #[test]
    fn required() {
        let r = rules(json!({}), json!({}), &["name"]);
        assert_eq!(
            r.check(&Data::new()),
            Err(DenyReason::RequiredParameterMissing("name".into()))
        );
        assert!(r.check(&data(json!({"name": "x"}))).is_ok());
    }

    #[test]
    fn merge_follows_vault() {
        let mut a = rules(json!({"a": ["1"], "b": []}), json!({"d": ["x"]}), &["r1"]);
        let b = rules(
            json!({"a": ["2"], "b": ["3"], "c": ["4"]}),
            json!({"d": []}),
            &["r1", "r2"],
        );
        a.merge(&b);
        assert_eq!(
            a,
            rules(
                json!({"a": ["1", "2"], "b": [], "c": ["4"]}),
                json!({"d": []}),
                &["r1", "r2"]
            )
        );
    }
}
