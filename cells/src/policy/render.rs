//! Writing rules back out as HCL or JSON, in forms `parse.rs` reads back to
//! the same rules.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use serde_json::Value;

use super::PathRule;

pub(crate) fn hcl(rules: &[PathRule]) -> String {
    let mut out = String::new();
    for (i, rule) in rules.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(out, "path {} {{", quote(rule.pattern.as_str()));
        for (key, value) in fields(rule) {
            let _ = writeln!(out, "  {key} = {value}");
        }
        out.push_str("}\n");
    }
    out
}

pub(crate) fn json(rules: &[PathRule]) -> String {
    let blocks: Vec<String> = rules
        .iter()
        .map(|rule| {
            let body: Vec<String> = fields(rule)
                .into_iter()
                .map(|(key, value)| format!("{}: {value}", quote(key)))
                .collect();
            format!("{}: {{{}}}", quote(rule.pattern.as_str()), body.join(", "))
        })
        .collect();
    format!("{{\"path\": {{{}}}}}\n", blocks.join(", "))
}

/// Each key of a rule's block with its value, as text that is valid in
/// both syntaxes (JSON values, `:` between map keys and values).
fn fields(rule: &PathRule) -> Vec<(&'static str, String)> {
    let names: Vec<String> = rule.capabilities.names().map(quote).collect();
    let mut out = vec![("capabilities", format!("[{}]", names.join(", ")))];
    let params = &rule.parameters;
    if !params.allowed.is_empty() {
        out.push(("allowed_parameters", map(&params.allowed)));
    }
    if !params.denied.is_empty() {
        out.push(("denied_parameters", map(&params.denied)));
    }
    if !params.required.is_empty() {
        let keys: Vec<String> = params.required.iter().map(|k| quote(k)).collect();
        out.push(("required_parameters", format!("[{}]", keys.join(", "))));
    }
    if let Some(d) = rule.min_wrapping_ttl {
        out.push(("min_wrapping_ttl", duration(d)));
    }
    if let Some(d) = rule.max_wrapping_ttl {
        out.push(("max_wrapping_ttl", duration(d)));
    }
    out
}

fn map(m: &BTreeMap<String, Vec<Value>>) -> String {
    let entries: Vec<String> = m
        .iter()
        .map(|(k, vs)| {
            let values: Vec<String> = vs.iter().map(Value::to_string).collect();
            format!("{}: [{}]", quote(k), values.join(", "))
        })
        .collect();
    format!("{{{}}}", entries.join(", "))
}

/// Whole seconds as a number, anything finer as a Go duration string.
fn duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        d.as_secs().to_string()
    } else {
        format!("\"{}ns\"", d.as_nanos())
    }
}

/// A JSON string literal; the HCL reader takes the same escapes.
fn quote(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}
