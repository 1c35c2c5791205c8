//! From the syntax tree of `hcl.rs` to typed rules: the keys a policy may
//! use and what their values mean (docs/policies.md, "Syntax"; Vault's
//! `vault/policy.go`, `parsePaths`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value as Json;

use super::hcl::{self, Entry, Node, Pos, Value};
use super::{Capabilities, PathPattern, PathRule, PolicyError};

/// Parses a policy document into one rule per distinct pattern, in the
/// order the patterns first appear.
pub(crate) fn rules(src: &str) -> Result<Vec<PathRule>, PolicyError> {
    let entries = hcl::parse(src).map_err(|e| syntax(e.pos, e.message))?;
    let mut rules: Vec<PathRule> = Vec::new();
    let mut add = |rule: PathRule| match rules.iter_mut().find(|r| r.pattern == rule.pattern) {
        Some(existing) => existing.merge(&rule),
        None => rules.push(rule),
    };
    for entry in &entries {
        match entry.key.as_str() {
            // Vault reads a `name` key and then ignores it.
            "name" if entry.labels.is_empty() => match entry.value.value {
                Value::Str(_) => {}
                ref other => {
                    return Err(syntax(
                        entry.value.pos,
                        format!("\"name\" must be a string, found {}", other.kind()),
                    ));
                }
            },
            "path" => {
                for (pattern, pos, body) in path_blocks(entry)? {
                    add(block(pattern, pos, body)?);
                }
            }
            other => {
                return Err(syntax(entry.pos, format!("unknown key {other:?}")));
            }
        }
    }
    Ok(rules)
}

fn syntax(pos: Pos, message: impl Into<String>) -> PolicyError {
    PolicyError::Syntax {
        line: pos.line,
        column: pos.column,
        message: message.into(),
    }
}

/// The `(pattern, where, body)` of each block under a `path` key: HCL's
/// `path "p" { .. }`, or the nested `path = { "p" = { .. } }` that JSON
/// spells `"path": {"p": {..}}`, or a list of such objects.
fn path_blocks(entry: &Entry) -> Result<Vec<(&str, Pos, &Node)>, PolicyError> {
    match entry.labels.as_slice() {
        [(pattern, pos)] => return Ok(vec![(pattern.as_str(), *pos, &entry.value)]),
        [] => {}
        [_, (_, pos), ..] => return Err(syntax(*pos, "a path block takes one label")),
    }
    let objects: Vec<&Node> = match &entry.value.value {
        Value::List(items) => items.iter().collect(),
        _ => vec![&entry.value],
    };
    let mut blocks = Vec::new();
    for node in objects {
        let Value::Object(inner) = &node.value else {
            return Err(syntax(
                node.pos,
                format!(
                    "\"path\" must map patterns to blocks, found {}",
                    node.value.kind()
                ),
            ));
        };
        for e in inner {
            if let Some((_, pos)) = e.labels.first() {
                return Err(syntax(*pos, "unexpected label"));
            }
            blocks.push((e.key.as_str(), e.pos, &e.value));
        }
    }
    Ok(blocks)
}

/// Reads one `path` block.
fn block(pattern: &str, pattern_pos: Pos, body: &Node) -> Result<PathRule, PolicyError> {
    let fail = |pos: Pos, message: String| PolicyError::Rule {
        path: pattern.to_owned(),
        line: pos.line,
        column: pos.column,
        message,
    };
    let parsed = PathPattern::parse(pattern).map_err(|e| fail(pattern_pos, e.to_string()))?;
    let Value::Object(entries) = &body.value else {
        return Err(fail(
            body.pos,
            format!("expected a block, found {}", body.value.kind()),
        ));
    };
    let mut rule = PathRule::new(parsed);
    let mut seen: Vec<&str> = Vec::new();
    let mut caps = Capabilities::NONE;
    for e in entries {
        if let Some((_, pos)) = e.labels.first() {
            return Err(fail(*pos, format!("unexpected label after {:?}", e.key)));
        }
        if seen.contains(&e.key.as_str()) {
            return Err(fail(e.pos, format!("duplicate key {:?}", e.key)));
        }
        seen.push(&e.key);
        let v = &e.value;
        let at = |message: String| fail(v.pos, format!("{}: {message}", e.key));
        match e.key.as_str() {
            "comment" => {
                string(v).map_err(at)?;
            }
            "policy" => {
                let name = string(v).map_err(at)?;
                caps = caps.union(
                    legacy_policy(name)
                        .ok_or_else(|| fail(v.pos, format!("invalid policy {name:?}")))?,
                );
            }
            "capabilities" => {
                for item in list(v).map_err(at)? {
                    let name = string(item).map_err(|m| fail(item.pos, m))?;
                    let c = Capabilities::from_name(name)
                        .ok_or_else(|| fail(item.pos, format!("invalid capability {name:?}")))?;
                    caps = caps.union(c);
                }
            }
            "allowed_parameters" => rule.parameters.allowed = parameter_map(v).map_err(at)?,
            "denied_parameters" => rule.parameters.denied = parameter_map(v).map_err(at)?,
            "required_parameters" => {
                for item in list(v).map_err(at)? {
                    let key = string(item).map_err(|m| fail(item.pos, m))?;
                    if key.contains('*') {
                        return Err(fail(
                            item.pos,
                            format!("required_parameters: wildcard is not permitted in {key:?}"),
                        ));
                    }
                    let key = key.to_lowercase();
                    if !rule.parameters.required.contains(&key) {
                        rule.parameters.required.push(key);
                    }
                }
            }
            "min_wrapping_ttl" => rule.min_wrapping_ttl = ttl(v).map_err(at)?,
            "max_wrapping_ttl" => rule.max_wrapping_ttl = ttl(v).map_err(at)?,
            "mfa_methods" | "control_group" => {
                return Err(fail(
                    e.pos,
                    format!(
                        "{:?} is a Vault Enterprise feature Sigil does not support",
                        e.key
                    ),
                ));
            }
            other => return Err(fail(e.pos, format!("unknown key {other:?}"))),
        }
    }
    if let (Some(min), Some(max)) = (rule.min_wrapping_ttl, rule.max_wrapping_ttl)
        && max < min
    {
        return Err(fail(
            body.pos,
            "max_wrapping_ttl cannot be less than min_wrapping_ttl".to_owned(),
        ));
    }
    if caps.is_deny() {
        // Vault stops reading a block at `deny`: nothing else in it counts.
        return Ok(PathRule::deny(rule.pattern));
    }
    rule.capabilities = caps;
    Ok(rule)
}

/// Vault's pre-0.5 `policy = "..."` shorthand (`vault/policy.go`). Current
/// Vault still maps `write` to create, read, update, delete and list, without
/// `patch`, and `sudo` to those plus sudo; Sigil does the same so a policy
/// means the same thing on both.
fn legacy_policy(name: &str) -> Option<Capabilities> {
    let read = Capabilities::READ | Capabilities::LIST;
    let write = read | Capabilities::CREATE | Capabilities::UPDATE | Capabilities::DELETE;
    match name {
        "deny" => Some(Capabilities::DENY),
        "read" => Some(read),
        "write" => Some(write),
        "sudo" => Some(write | Capabilities::SUDO),
        _ => None,
    }
}

fn string(node: &Node) -> Result<&str, String> {
    match &node.value {
        Value::Str(s) => Ok(s),
        other => Err(format!("expected a string, found {}", other.kind())),
    }
}

fn list(node: &Node) -> Result<&[Node], String> {
    match &node.value {
        Value::List(items) => Ok(items),
        other => Err(format!("expected a list, found {}", other.kind())),
    }
}

/// `{ "key" = ["value", ..] }`: keys lowercased; `*` is the only wildcard
/// key. Vault's JSON-pointer keys (`"/a/b"`) are refused rather than
/// silently never matching.
fn parameter_map(node: &Node) -> Result<BTreeMap<String, Vec<Json>>, String> {
    let Value::Object(entries) = &node.value else {
        return Err(format!("expected an object, found {}", node.value.kind()));
    };
    let mut out = BTreeMap::new();
    for e in entries {
        let key = e.key.to_lowercase();
        if key.contains('*') && key != "*" {
            return Err(format!(
                "parameter key {:?} cannot contain wildcards",
                e.key
            ));
        }
        if key.starts_with('/') {
            return Err(format!(
                "parameter key {:?}: JSON pointer keys are not supported",
                e.key
            ));
        }
        let mut values = Vec::new();
        for item in list(&e.value).map_err(|m| format!("parameter {:?}: {m}", e.key))? {
            values.push(match &item.value {
                Value::Str(s) => Json::String(s.clone()),
                Value::Number(n) => Json::Number(n.clone()),
                Value::Bool(b) => Json::Bool(*b),
                other => {
                    return Err(format!(
                        "parameter {:?}: values must be strings, numbers or booleans, found {}",
                        e.key,
                        other.kind()
                    ));
                }
            });
        }
        if out.insert(key, values).is_some() {
            return Err(format!("duplicate parameter {:?}", e.key));
        }
    }
    Ok(out)
}

/// A wrapping TTL: whole seconds as a number or string, `"<n>d"`, or a Go
/// duration (`"1h30m"`, `"1.5s"`), as Vault's `parseutil.ParseDurationSecond`
/// reads them. Zero means unset, as in Vault.
fn ttl(node: &Node) -> Result<Option<Duration>, String> {
    let d = match &node.value {
        Value::Number(n) => n
            .as_u64()
            .map(Duration::from_secs)
            .ok_or_else(|| format!("invalid duration {n} (whole seconds expected)"))?,
        Value::Str(s) => parse_duration(s).ok_or_else(|| format!("invalid duration {s:?}"))?,
        other => return Err(format!("expected a duration, found {}", other.kind())),
    };
    Ok((!d.is_zero()).then_some(d))
}

pub(crate) fn parse_duration(s: &str) -> Option<Duration> {
    crate::duration::parse_duration_str(s).ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::policy::Policy;

    fn parse(text: &str) -> Vec<PathRule> {
        Policy::parse("t", text).expect("parses").rules
    }

    fn error(text: &str) -> String {
        Policy::parse("t", text).expect_err("fails").to_string()
    }

    const HCL: &str = r#"
# Application secrets.
path "secret/data/app/*" {
  capabilities = ["create", "read", "update", "patch", "delete", "list",]
  allowed_parameters = {
    "*" = []
    "Owner" = ["team-*", 7, true]
  }
  denied_parameters {
    "admin" = []
  }
  required_parameters = ["owner"]
  min_wrapping_ttl = "1m"
  max_wrapping_ttl = 3600
}

// Legacy shorthand, a leading slash, and `=` before the block.
path "/sys/mounts" = {
  policy = "sudo"
  comment = "mount management"
}

/* The same pattern again: merged. */
path "secret/data/app/*" {
  capabilities = ["sudo"]
  required_parameters = ["team"]
}

path "secret/+/locked" { capabilities = ["deny"], max_wrapping_ttl = 5 }
"#;

    #[test]
    fn hcl_constructs() {
        let rules = parse(HCL);
        assert_eq!(rules.len(), 3);
        let app = &rules[0];
        assert_eq!(app.pattern.as_str(), "secret/data/app/*");
        assert_eq!(
            app.capabilities.names().collect::<Vec<_>>(),
            [
                "create", "delete", "list", "patch", "read", "sudo", "update"
            ]
        );
        assert_eq!(app.parameters.allowed["*"], Vec::<Json>::new());
        assert_eq!(
            app.parameters.allowed["owner"],
            vec![json!("team-*"), json!(7), json!(true)]
        );
        assert_eq!(app.parameters.denied["admin"], Vec::<Json>::new());
        assert_eq!(app.parameters.required, ["owner", "team"]);
        assert_eq!(app.min_wrapping_ttl, Some(Duration::from_secs(60)));
        assert_eq!(app.max_wrapping_ttl, Some(Duration::from_secs(3600)));

        assert_eq!(rules[1].pattern.as_str(), "sys/mounts");
        assert_eq!(
            rules[1].capabilities.names().collect::<Vec<_>>(),
            ["create", "delete", "list", "read", "sudo", "update"]
        );
        // A deny block keeps nothing else, and is not read further.
        assert_eq!(
            rules[2],
            PathRule::deny(PathPattern::parse("secret/+/locked").expect("pattern"))
        );
    }

    #[test]
    fn json_form_gives_the_same_rules() {
        let json = r#"{
          "path": {
            "secret/data/app/*": {
              "capabilities": ["create", "read", "update", "patch", "delete", "list"],
              "allowed_parameters": {"*": [], "Owner": ["team-*", 7, true]},
              "denied_parameters": {"admin": []},
              "required_parameters": ["owner"],
              "min_wrapping_ttl": "1m",
              "max_wrapping_ttl": 3600
            },
            "/sys/mounts": {"policy": "sudo", "comment": "mount management"}
          },
          "name": "ignored"
        }"#;
        let extra = r#"{"path": [
            {"secret/data/app/*": {"capabilities": ["sudo"], "required_parameters": ["team"]}},
            {"secret/+/locked": {"capabilities": ["deny"]}}
        ]}"#;
        let mut rules = parse(json);
        for r in parse(extra) {
            match rules.iter_mut().find(|x| x.pattern == r.pattern) {
                Some(x) => x.merge(&r),
                None => rules.push(r),
            }
        }
        assert_eq!(rules, parse(HCL));
    }

    #[test]
    fn legacy_policy_values() {
        let caps = |p: &str| {
            parse(&format!("path \"a\" {{ policy = \"{p}\" }}"))[0]
                .capabilities
                .names()
                .collect::<Vec<_>>()
        };
        assert_eq!(caps("deny"), ["deny"]);
        assert_eq!(caps("read"), ["list", "read"]);
        assert_eq!(
            caps("write"),
            ["create", "delete", "list", "read", "update"]
        );
        assert_eq!(
            caps("sudo"),
            ["create", "delete", "list", "read", "sudo", "update"]
        );
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        assert_eq!(
            error("path \"a\" {\n  # c\n  capabilities [\"read\"]\n}"),
            "failed to parse policy: line 3, column 16: expected '=' or '{' after key \"capabilities\", found '['"
        );
        assert_eq!(
            error("\n\n  paths \"a\" {}"),
            "failed to parse policy: line 3, column 3: unknown key \"paths\""
        );
        assert_eq!(
            error("{\"path\": {\"a\": {\"capabilities\": [\"read\"]}}"),
            "failed to parse policy: line 1, column 43: unexpected end of input, expected '}'"
        );
    }

    #[test]
    fn semantic_errors_name_the_path_block() {
        assert_eq!(
            error("path \"a\" {\n  capabilities = [\"read\", \"reed\"]\n}"),
            "failed to parse policy: path \"a\" (line 2, column 27): invalid capability \"reed\""
        );
        assert_eq!(
            error("path \"a\" { capabilities = [\"root\"] }"),
            "failed to parse policy: path \"a\" (line 1, column 28): invalid capability \"root\""
        );
        assert_eq!(
            error("path \"secret/*/x\" {}"),
            "failed to parse policy: path \"secret/*/x\" (line 1, column 6): '*' is only allowed as the last character"
        );
        assert_eq!(
            error("path \"a\" {\n  max_wrapping_ttl = \"banana\"\n}"),
            "failed to parse policy: path \"a\" (line 2, column 22): max_wrapping_ttl: invalid duration \"banana\""
        );
        assert_eq!(
            error("path \"a\" {\n  capabilities = []\n  frobnicate = 1\n}"),
            "failed to parse policy: path \"a\" (line 3, column 3): unknown key \"frobnicate\""
        );
        assert_eq!(
            error("path \"a\" { policy = \"admin\" }"),
            "failed to parse policy: path \"a\" (line 1, column 21): invalid policy \"admin\""
        );
        for (text, needle) in [
            ("path \"a\" { capabilities = \"read\" }", "expected a list"),
            (
                "path \"a\" { capabilities = [] capabilities = [] }",
                "duplicate key",
            ),
            (
                "path \"a\" { min_wrapping_ttl = 60 max_wrapping_ttl = 30 }",
                "cannot be less",
            ),
            ("path \"a\" { min_wrapping_ttl = -1 }", "invalid duration"),
            (
                "path \"a\" { allowed_parameters = { \"a*\" = [] } }",
                "cannot contain wildcards",
            ),
            (
                "path \"a\" { allowed_parameters = { \"/a\" = [] } }",
                "JSON pointer",
            ),
            (
                "path \"a\" { allowed_parameters = { \"a\" = [[1]] } }",
                "strings, numbers or booleans",
            ),
            (
                "path \"a\" { required_parameters = [\"*\"] }",
                "wildcard is not permitted",
            ),
            ("path \"a\" { control_group = {} }", "Vault Enterprise"),
            ("path \"a+*\" {}", "'+*' is forbidden"),
            ("path \"a*b\" {}", "'*' is only allowed"),
            ("path \"a/+*\" {}", "'+*' is forbidden"),
            ("path \"a\" \"b\" {}", "one label"),
            ("path \"a\" = \"x\"", "expected a block"),
            ("path = \"x\"", "must map patterns to blocks"),
            ("name = 1", "must be a string"),
        ] {
            let e = error(text);
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn empty_and_comment_only_policies_have_no_rules() {
        assert!(parse("").is_empty());
        assert!(parse("# nothing\n// here\n/* at all */").is_empty());
        assert!(parse("{}").is_empty());
        assert!(parse("path \"a\" {}")[0].capabilities.is_empty());
    }

    #[test]
    fn durations() {
        let s = Duration::from_secs;
        assert_eq!(parse_duration("300"), Some(s(300)));
        assert_eq!(parse_duration("300s"), Some(s(300)));
        assert_eq!(parse_duration("15m"), Some(s(900)));
        assert_eq!(parse_duration("1h30m"), Some(s(5400)));
        assert_eq!(parse_duration("2d"), Some(s(172_800)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("7ns"), Some(Duration::from_nanos(7)));
        assert_eq!(parse_duration(""), Some(Duration::ZERO));
        for bad in [
            "banana",
            "1x",
            "-5s",
            "h",
            ".s",
            "1.2.3s",
            "99999999999999999999999h",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
