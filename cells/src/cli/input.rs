//! Turning command-line words into request data, before anything is sent:
//! `key=value` pairs (with `@file` and `-` for stdin), `k=v` option lists and
//! durations. Every error is one line naming the offending argument.

use std::io::Read;

use serde_json::{Map, Value};

/// Where `-` reads from; the real stdin in the binary, a buffer in tests.
/// Stdin can be consumed once per command, as in Vault.
pub struct Stdin<'a> {
    reader: &'a mut dyn Read,
    used: bool,
}

impl std::fmt::Debug for Stdin<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stdin").field("used", &self.used).finish()
    }
}

impl<'a> Stdin<'a> {
    pub fn new(reader: &'a mut dyn Read) -> Self {
        Self {
            reader,
            used: false,
        }
    }

    /// All of stdin, as text; an error the second time.
    pub fn read_all(&mut self) -> Result<String, String> {
        if self.used {
            return Err("stdin (\"-\") can only be read once per command".into());
        }
        self.used = true;
        let mut text = String::new();
        self.reader
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read stdin: {e}"))?;
        Ok(text)
    }
}

fn read_file(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read file {path:?}: {e}"))
}

fn json_object(text: &str, source: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(format!("{source} must hold a JSON object")),
        Err(e) => Err(format!("{source} is not valid JSON: {e}")),
    }
}

/// Builds request data the way Vault's `write` does:
/// - a lone `-` is a JSON object read from stdin, `@file` a JSON object read
///   from a file;
/// - `key=value` sets a string; `key=@file` reads the value from a file,
///   `key=-` from stdin;
/// - a key given twice collects its values into an array.
pub fn parse_data(args: &[String], stdin: &mut Stdin<'_>) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for arg in args {
        if arg == "-" {
            let text = stdin.read_all()?;
            merge(&mut out, json_object(&text, "stdin")?);
            continue;
        }
        if let Some(path) = arg.strip_prefix('@')
            && !arg.contains('=')
        {
            let text = read_file(path)?;
            merge(&mut out, json_object(&text, &format!("file {path:?}"))?);
            continue;
        }
        let Some((key, raw)) = arg.split_once('=') else {
            return Err(format!(
                "invalid key/value pair {arg:?}: format must be key=value"
            ));
        };
        if key.is_empty() {
            return Err(format!("invalid key/value pair {arg:?}: empty key"));
        }
        let value = if raw == "-" {
            stdin.read_all()?
        } else if let Some(path) = raw.strip_prefix('@') {
            read_file(path)?
        } else {
            raw.to_owned()
        };
        insert(&mut out, key, Value::String(value));
    }
    Ok(out)
}

fn merge(out: &mut Map<String, Value>, from: Map<String, Value>) {
    for (k, v) in from {
        out.insert(k, v);
    }
}

fn insert(out: &mut Map<String, Value>, key: &str, value: Value) {
    match out.get_mut(key) {
        None => {
            out.insert(key.to_owned(), value);
        }
        Some(Value::Array(items)) => items.push(value),
        Some(existing) => {
            let first = existing.take();
            *existing = Value::Array(vec![first, value]);
        }
    }
}

/// `k=v` words of a repeatable flag (`-metadata`, `-custom-metadata`,
/// `-options`) as a string map; `flag` names the flag in errors. A later
/// repeat of a key wins.
pub fn parse_pairs(flag: &str, words: &[String]) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for w in words {
        match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                out.insert(k.to_owned(), Value::String(v.to_owned()));
            }
            _ => {
                return Err(format!(
                    "invalid -{flag} value {w:?}: format must be key=value"
                ));
            }
        }
    }
    Ok(out)
}

/// A duration flag as whole seconds: an integer (seconds) or a Go-style
/// duration (`"90s"`, `"1h30m"`, `"768h"`, also `"7d"`), as Vault's
/// `parseutil.ParseDurationSecond` accepts. `flag` names the flag in errors.
pub fn parse_duration(flag: &str, text: &str) -> Result<u64, String> {
    let bad = |why: &str| format!("invalid -{flag} value {text:?}: {why}");
    let t = text.trim();
    if t.is_empty() {
        return Err(bad("empty duration"));
    }
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(secs);
    }
    let mut nanos: u128 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| bad("missing unit (use s, m, h or d)"))?;
        if num_len == 0 {
            return Err(bad("expected a number"));
        }
        let (num, after) = rest.split_at(num_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            "d" => 86_400 * 1_000_000_000,
            _ => return Err(bad(&format!("unknown unit {unit:?}"))),
        };
        let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad("number too large"))?
        };
        let mut part = whole
            .checked_mul(scale)
            .ok_or_else(|| bad("duration too large"))?;
        let mut denom: u128 = 1;
        for d in frac.chars() {
            let digit = u128::from(d.to_digit(10).ok_or_else(|| bad("expected a number"))?);
            denom = denom.saturating_mul(10);
            part = part.saturating_add(digit * scale / denom);
        }
        nanos = nanos
            .checked_add(part)
            .ok_or_else(|| bad("duration too large"))?;
        rest = next;
    }
    u64::try_from(nanos / 1_000_000_000).map_err(|_| bad("duration too large"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn words(s: &[&str]) -> Vec<String> {
        s.iter().map(|w| (*w).to_owned()).collect()
    }

    fn data(args: &[&str], stdin: &str) -> Result<Value, String> {
        let mut input = stdin.as_bytes();
        let mut stdin = Stdin::new(&mut input);
        parse_data(&words(args), &mut stdin).map(Value::Object)
    }

    #[test]
    fn key_value_pairs_become_strings() {
        assert_eq!(
            data(&["a=1", "b=x=y", "c="], "").expect("ok"),
            json!({"a": "1", "b": "x=y", "c": ""})
        );
    }

    #[test]
    fn repeated_keys_collect_into_an_array() {
        assert_eq!(
            data(&["a=1", "a=2", "a=3"], "").expect("ok"),
            json!({"a": ["1", "2", "3"]})
        );
    }

    #[test]
    fn bad_pairs_name_the_argument() {
        let e = data(&["novalue"], "").expect_err("bad");
        assert_eq!(
            e,
            "invalid key/value pair \"novalue\": format must be key=value"
        );
        assert!(data(&["=v"], "").expect_err("bad").contains("empty key"));
    }

    #[test]
    fn values_come_from_files_and_stdin() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("cert.pem");
        std::fs::write(&file, "line1\nline2\n").expect("write");
        let at = format!("cert=@{}", file.display());
        assert_eq!(
            data(&[&at, "pw=-"], "s3cret\n").expect("ok"),
            json!({"cert": "line1\nline2\n", "pw": "s3cret\n"})
        );
        let missing = data(&["cert=@/nonexistent/x"], "").expect_err("missing");
        assert!(
            missing.starts_with("cannot read file \"/nonexistent/x\""),
            "{missing}"
        );
        assert!(!missing.contains('\n'));
    }

    #[test]
    fn lone_dash_reads_a_json_object_from_stdin() {
        assert_eq!(
            data(&["-"], r#"{"a": 1, "b": {"c": true}}"#).expect("ok"),
            json!({"a": 1, "b": {"c": true}})
        );
        assert!(
            data(&["-"], "[1]")
                .expect_err("array")
                .contains("JSON object")
        );
        assert!(
            data(&["-"], "{nope")
                .expect_err("bad json")
                .contains("not valid JSON")
        );
    }

    #[test]
    fn at_file_alone_reads_a_json_object() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("d.json");
        std::fs::write(&file, r#"{"k": "v"}"#).expect("write");
        let arg = format!("@{}", file.display());
        assert_eq!(
            data(&[&arg, "x=y"], "").expect("ok"),
            json!({"k": "v", "x": "y"})
        );
    }

    #[test]
    fn stdin_is_read_once() {
        let e = data(&["a=-", "b=-"], "x").expect_err("twice");
        assert!(e.contains("only be read once"), "{e}");
    }

    #[test]
    fn flag_pairs_keep_the_last_repeat() {
        let m = parse_pairs("custom-metadata", &words(&["a=1", "b=2", "a=3"])).expect("ok");
        assert_eq!(Value::Object(m), json!({"a": "3", "b": "2"}));
        assert_eq!(
            parse_pairs("metadata", &words(&["oops"])).expect_err("bad"),
            "invalid -metadata value \"oops\": format must be key=value"
        );
    }

    #[test]
    fn durations_parse_like_vault() {
        let d = |t: &str| parse_duration("ttl", t);
        assert_eq!(d("300"), Ok(300));
        assert_eq!(d("90s"), Ok(90));
        assert_eq!(d("1h30m"), Ok(5400));
        assert_eq!(d("768h"), Ok(2_764_800));
        assert_eq!(d("7d"), Ok(604_800));
        assert_eq!(d("1.5h"), Ok(5400));
        assert_eq!(d("1500ms"), Ok(1));
        assert_eq!(
            d("soon"),
            Err("invalid -ttl value \"soon\": expected a number".into())
        );
        assert!(d("5x").expect_err("unit").contains("unknown unit"));
        assert!(d("5").is_ok() && d("").is_err() && d("-5s").is_err());
        assert!(d("10").is_ok() && d("10 m").is_err());
    }
}
