//! How client commands print answers, following Vault's CLI so that scripts
//! and eyes used to it keep working: `Key    Value` tables with data keys
//! sorted, Go-style `%v` values (`[a b]`, `map[k:v]`, `<nil>`), durations as
//! `768h`/`1h30m`, `-field` printing one raw value, and `--format json`
//! printing the server's answer unchanged.
//!
//! Everything here returns strings; the commands print them.

use std::io::{IsTerminal, Write};

use serde_json::{Map, Value};

use super::Format;

/// How one command prints: the `--format` and an optional `-field`.
#[derive(Debug, Clone, Default)]
pub struct Output {
    pub format: Format,
    pub field: Option<String>,
}

impl Output {
    pub fn new(format: Format, field: Option<String>) -> Self {
        Self { format, field }
    }

    /// A whole answer: the field when `-field` is set (looked up as Vault
    /// does: auth, wrap and lease fields, then `data`), else the envelope as
    /// a table or JSON.
    pub fn secret(&self, body: &Value) -> Result<String, String> {
        let data = body.get("data").cloned().unwrap_or(Value::Null);
        self.secret_with_data(body, &data)
    }

    /// As [`Output::secret`], with `-field` looking in `data` (a KV v2
    /// answer keeps its secret in `data.data`).
    pub fn secret_with_data(&self, body: &Value, data: &Value) -> Result<String, String> {
        if let Some(name) = &self.field {
            return self.field(body, data, name);
        }
        Ok(match self.format {
            Format::Json => json(body),
            Format::Table => secret_table(body),
        })
    }

    /// `-field=NAME`: the value alone, raw for tables (a string without
    /// quotes), JSON for `--format json`.
    pub fn field(&self, body: &Value, data: &Value, name: &str) -> Result<String, String> {
        let value = field_value(body, data, name)
            .ok_or_else(|| format!("field {name:?} not present in secret"))?;
        Ok(match self.format {
            Format::Json => json(&value),
            Format::Table => go_value(&value),
        })
    }
}

/// Writes `text` to stdout with one trailing newline.
pub fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", text.trim_end_matches('\n'));
}

/// Writes a `-field` value exactly: with a newline on a terminal, without
/// one when piped, so `$(sigil kv get -field=pw ...)` and `> file` get the
/// value's bytes (as Vault does).
pub fn print_raw(text: &str) {
    let mut out = std::io::stdout().lock();
    if std::io::stdout().is_terminal() {
        let _ = writeln!(out, "{text}");
    } else {
        let _ = write!(out, "{text}");
    }
    let _ = out.flush();
}

/// Prints a rendered answer: raw for `-field`, else as a block.
pub fn emit(output: &Output, text: &str) {
    if output.field.is_some() {
        print_raw(text);
    } else {
        print(text);
    }
}

pub fn json(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// A value as Go's `%v` prints it, which is what Vault's tables show.
pub fn go_value(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(go_value).collect();
            format!("[{}]", parts.join(" "))
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{k}:{}", go_value(&m[k])))
                .collect();
            format!("map[{}]", parts.join(" "))
        }
    }
}

/// A list of strings as Go's `%q` prints a `[]string`: `["a" "b"]`.
fn quoted_list(v: Option<&Value>) -> String {
    let items: Vec<String> = v
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|x| format!("{:?}", go_value(x))).collect())
        .unwrap_or_default();
    format!("[{}]", items.join(" "))
}

/// Seconds as Go prints a `time.Duration`, trimmed as Vault's
/// `humanDuration` does: `768h`, `1h30m`, `45s`, `0s`.
pub fn human_duration(secs: u64) -> String {
    if secs == 0 {
        return "0s".into();
    }
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{s}s"));
    if let Some(trimmed) = out.strip_suffix("m0s") {
        out = format!("{trimmed}m");
    }
    if let Some(i) = out.find("h0m") {
        out.replace_range(i + 1..i + 3, "");
    }
    out
}

/// A TTL-looking value (seconds as a number or numeric string) as a
/// duration; anything else unchanged.
fn duration_value(v: &Value) -> String {
    let secs = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    };
    secs.map_or_else(|| go_value(v), human_duration)
}

/// Vault shows keys named like TTLs or periods as durations.
fn looks_like_ttl(key: &str) -> bool {
    key == "ttl" || key.ends_with("_ttl") || key == "period" || key.ends_with("_period")
}

/// Columns aligned with four spaces between them, as Vault's `columnize`.
pub fn columns(rows: &[Vec<String>]) -> String {
    let ncols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..ncols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[c] - cell.chars().count();
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 4));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A table with a header row and a dashed rule under it.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut all = vec![
        header.iter().map(|h| (*h).to_owned()).collect(),
        header.iter().map(|h| "-".repeat(h.len())).collect(),
    ];
    all.extend(rows);
    columns(&all)
}

/// `Key    Value` rows.
pub fn kv_table(rows: &[(String, String)]) -> String {
    table(
        &["Key", "Value"],
        rows.iter()
            .map(|(k, v)| vec![k.clone(), v.clone()])
            .collect(),
    )
}

/// `== Title ==` padded with `=` to `width`, as Vault heads KV sections.
pub fn section_header(title: &str, width: usize) -> String {
    let pad = width.saturating_sub(title.len() + 2).max(4) / 2;
    let eq = "=".repeat(pad);
    format!("{eq} {title} {eq}")
}

/// A headed section around a rendered table.
pub fn section(title: &str, body: &str) -> String {
    let width = body.lines().map(|l| l.chars().count()).max().unwrap_or(0);
    format!("{}\n{}", section_header(title, width), body)
}

/// The sorted rows of a data map, TTL-like keys as durations.
pub fn data_rows(data: &Value) -> Vec<(String, String)> {
    let Some(map) = data.as_object() else {
        return Vec::new();
    };
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    keys.into_iter()
        .map(|k| {
            let v = &map[k];
            let shown = if looks_like_ttl(k) {
                duration_value(v)
            } else {
                go_value(v)
            };
            (k.clone(), shown)
        })
        .collect()
}

fn u64_of(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn str_of(v: &Value, key: &str) -> String {
    v.get(key).map(go_value).unwrap_or_default()
}

fn present(v: &Value, key: &str) -> Option<Value> {
    v.get(key).filter(|x| !x.is_null()).cloned()
}

/// The rows Vault's `OutputSecret` shows: lease, then auth (token), then
/// wrap info, then the sorted data.
pub fn secret_rows(body: &Value) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    let lease = u64_of(body, "lease_duration");
    if lease > 0 {
        let lease_id = str_of(body, "lease_id");
        if lease_id.is_empty() {
            rows.push(("refresh_interval".into(), human_duration(lease)));
        } else {
            rows.push(("lease_id".into(), lease_id));
            rows.push(("lease_duration".into(), human_duration(lease)));
            rows.push(("lease_renewable".into(), str_of(body, "renewable")));
        }
    }
    if let Some(auth) = present(body, "auth") {
        rows.extend(token_rows(&auth));
    }
    if let Some(wrap) = present(body, "wrap_info") {
        rows.extend(wrap_rows(&wrap));
    }
    rows.extend(data_rows(body.get("data").unwrap_or(&Value::Null)));
    rows
}

/// `auth` of a login or token answer, as `vault token create` shows it.
pub fn token_rows(auth: &Value) -> Vec<(String, String)> {
    let lease = u64_of(auth, "lease_duration");
    let mut rows = vec![
        ("token".into(), str_of(auth, "client_token")),
        ("token_accessor".into(), str_of(auth, "accessor")),
        (
            "token_duration".into(),
            if lease == 0 {
                "∞".into()
            } else {
                human_duration(lease)
            },
        ),
        ("token_renewable".into(), str_of(auth, "renewable")),
        (
            "token_policies".into(),
            quoted_list(auth.get("token_policies")),
        ),
        (
            "identity_policies".into(),
            quoted_list(auth.get("identity_policies")),
        ),
        ("policies".into(), quoted_list(auth.get("policies"))),
    ];
    if let Some(meta) = auth.get("metadata").and_then(Value::as_object) {
        let mut keys: Vec<&String> = meta.keys().collect();
        keys.sort();
        for k in keys {
            rows.push((format!("token_meta_{k}"), go_value(&meta[k])));
        }
    }
    rows
}

/// `wrap_info` rows, named (with their colons) as Vault names them.
pub fn wrap_rows(wrap: &Value) -> Vec<(String, String)> {
    let mut rows = vec![
        ("wrapping_token:".into(), str_of(wrap, "token")),
        ("wrapping_accessor:".into(), str_of(wrap, "accessor")),
        (
            "wrapping_token_ttl:".into(),
            human_duration(u64_of(wrap, "ttl")),
        ),
        (
            "wrapping_token_creation_time:".into(),
            str_of(wrap, "creation_time"),
        ),
        (
            "wrapping_token_creation_path:".into(),
            str_of(wrap, "creation_path"),
        ),
    ];
    let wrapped = str_of(wrap, "wrapped_accessor");
    if !wrapped.is_empty() {
        rows.push(("wrapped_accessor:".into(), wrapped));
    }
    rows
}

/// The server's warnings, as Vault heads its tables with them.
fn warnings(body: &Value) -> String {
    let list: Vec<String> = body
        .get("warnings")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(go_value).collect())
        .unwrap_or_default();
    if list.is_empty() {
        return String::new();
    }
    let mut out = String::from("WARNING! The following warnings were returned from Sigil:\n\n");
    for w in list {
        out.push_str(&format!("  * {w}\n"));
    }
    out.push('\n');
    out
}

/// A whole answer as Vault's table formatter shows it.
pub fn secret_table(body: &Value) -> String {
    let rows = secret_rows(body);
    let mut out = warnings(body);
    if !rows.is_empty() {
        out.push_str(&kv_table(&rows));
    }
    out
}

/// Vault's `PrintRawField` lookup: auth fields when there is an `auth`,
/// wrap fields when there is a `wrap_info`, lease fields otherwise; then
/// `data`.
pub fn field_value(body: &Value, data: &Value, name: &str) -> Option<Value> {
    let from = |obj: &Value, key: &str| obj.get(key).cloned();
    let special = if let Some(auth) = present(body, "auth") {
        match name {
            "token" => from(&auth, "client_token"),
            "token_accessor" => from(&auth, "accessor"),
            "token_duration" => from(&auth, "lease_duration"),
            "token_renewable" => from(&auth, "renewable"),
            "token_policies" | "identity_policies" | "policies" => from(&auth, name),
            _ => None,
        }
    } else if let Some(wrap) = present(body, "wrap_info") {
        match name.trim_end_matches(':') {
            "wrapping_token" => from(&wrap, "token"),
            "wrapping_accessor" => from(&wrap, "accessor"),
            "wrapping_token_ttl" => from(&wrap, "ttl"),
            "wrapping_token_creation_time" => from(&wrap, "creation_time"),
            "wrapping_token_creation_path" => from(&wrap, "creation_path"),
            "wrapped_accessor" => from(&wrap, "wrapped_accessor"),
            _ => None,
        }
    } else {
        match name {
            "refresh_interval" | "lease_duration" => from(body, "lease_duration"),
            "lease_id" => from(body, "lease_id"),
            "lease_renewable" => from(body, "renewable"),
            _ => None,
        }
    };
    special
        .or_else(|| data.get(name).cloned())
        .filter(|v| !v.is_null())
}

/// The `keys` of a list answer, as `vault list` shows them (`Keys` then
/// one per line; JSON: the array).
pub fn list(body: &Value, format: Format) -> String {
    let keys = body
        .pointer("/data/keys")
        .cloned()
        .unwrap_or(Value::Array(Vec::new()));
    match format {
        Format::Json => json(&keys),
        Format::Table => {
            let rows = keys
                .as_array()
                .map(|a| a.iter().map(|k| vec![go_value(k)]).collect())
                .unwrap_or_default();
            table(&["Keys"], rows)
        }
    }
}

/// The object of a legacy `sys/*` answer: `data` when present, else the
/// top level (which carries the same keys), without the envelope.
pub fn legacy_data(body: &Value) -> Map<String, Value> {
    if let Some(d) = body.get("data").and_then(Value::as_object) {
        return d.clone();
    }
    const ENVELOPE: [&str; 9] = [
        "request_id",
        "lease_id",
        "renewable",
        "lease_duration",
        "data",
        "wrap_info",
        "warnings",
        "auth",
        "mount_type",
    ];
    body.as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !ENVELOPE.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn go_values_print_like_vault() {
        assert_eq!(go_value(&json!(null)), "<nil>");
        assert_eq!(go_value(&json!("s")), "s");
        assert_eq!(go_value(&json!(3)), "3");
        assert_eq!(go_value(&json!(["a", 1])), "[a 1]");
        assert_eq!(
            go_value(&json!({"b": 2, "a": {"c": true}})),
            "map[a:map[c:true] b:2]"
        );
        assert_eq!(
            quoted_list(Some(&json!(["default", "p"]))),
            r#"["default" "p"]"#
        );
        assert_eq!(quoted_list(None), "[]");
    }

    #[test]
    fn durations_print_like_go() {
        assert_eq!(human_duration(0), "0s");
        assert_eq!(human_duration(45), "45s");
        assert_eq!(human_duration(90), "1m30s");
        assert_eq!(human_duration(120), "2m");
        assert_eq!(human_duration(3600), "1h");
        assert_eq!(human_duration(5400), "1h30m");
        // Vault trims "h0m" wherever it is.
        assert_eq!(human_duration(3605), "1h5s");
        assert_eq!(human_duration(2_764_800), "768h");
    }

    #[test]
    fn data_tables_sort_keys_and_show_ttls_as_durations() {
        let body = json!({"lease_duration": 2_764_800, "lease_id": "", "data": {"b": "2", "a": "1", "ttl": 3600}});
        assert_eq!(
            secret_table(&body),
            "Key                 Value\n\
             ---                 -----\n\
             refresh_interval    768h\n\
             a                   1\n\
             b                   2\n\
             ttl                 1h\n"
        );
    }

    #[test]
    fn leases_show_their_id() {
        let body = json!({"lease_duration": 60, "lease_id": "db/creds/x/1", "renewable": true, "data": {}});
        let rows = secret_rows(&body);
        assert_eq!(
            rows,
            [
                ("lease_id".to_owned(), "db/creds/x/1".to_owned()),
                ("lease_duration".to_owned(), "1m".to_owned()),
                ("lease_renewable".to_owned(), "true".to_owned())
            ]
        );
    }

    fn token_body() -> Value {
        json!({
            "request_id": "r", "lease_id": "", "lease_duration": 0, "renewable": false, "data": null,
            "auth": {
                "client_token": "hvs.abc", "accessor": "acc1", "policies": ["default", "dev"],
                "token_policies": ["default", "dev"], "identity_policies": null,
                "metadata": {"user": "ann"}, "lease_duration": 3600, "renewable": true
            }
        })
    }

    #[test]
    fn token_answers_render_as_vault_token_create() {
        assert_eq!(
            secret_table(&token_body()),
            "Key                  Value\n\
             ---                  -----\n\
             token                hvs.abc\n\
             token_accessor       acc1\n\
             token_duration       1h\n\
             token_renewable      true\n\
             token_policies       [\"default\" \"dev\"]\n\
             identity_policies    []\n\
             policies             [\"default\" \"dev\"]\n\
             token_meta_user      ann\n"
        );
        let mut root = token_body();
        root["auth"]["lease_duration"] = json!(0);
        assert!(secret_table(&root).contains("token_duration       ∞\n"));
    }

    #[test]
    fn fields_are_raw_values() {
        let out = Output::new(Format::Table, Some("token".into()));
        assert_eq!(out.secret(&token_body()).expect("field"), "hvs.abc");
        let out = Output::new(Format::Table, Some("policies".into()));
        assert_eq!(out.secret(&token_body()).expect("field"), "[default dev]");
        let out = Output::new(Format::Json, Some("policies".into()));
        assert_eq!(
            out.secret(&token_body()).expect("field"),
            "[\n  \"default\",\n  \"dev\"\n]"
        );
        let body = json!({"lease_duration": 0, "data": {"pw": "a\nb", "n": 2}});
        let out = Output::new(Format::Table, Some("pw".into()));
        assert_eq!(out.secret(&body).expect("field"), "a\nb");
        let out = Output::new(Format::Table, Some("nope".into()));
        assert_eq!(
            out.secret(&body).expect_err("missing"),
            "field \"nope\" not present in secret"
        );
    }

    fn wrapped() -> Value {
        json!({
            "request_id": "r", "lease_id": "", "lease_duration": 0, "renewable": false, "data": null,
            "wrap_info": {
                "token": "hvs.wrap", "accessor": "wacc", "ttl": 300,
                "creation_time": "2026-01-01T00:00:00Z", "creation_path": "secret/data/app",
                "wrapped_accessor": ""
            }
        })
    }

    #[test]
    fn wrap_info_renders_as_vault_does() {
        assert_eq!(
            secret_table(&wrapped()),
            "Key                              Value\n\
             ---                              -----\n\
             wrapping_token:                  hvs.wrap\n\
             wrapping_accessor:               wacc\n\
             wrapping_token_ttl:              5m\n\
             wrapping_token_creation_time:    2026-01-01T00:00:00Z\n\
             wrapping_token_creation_path:    secret/data/app\n"
        );
        let out = Output::new(Format::Table, Some("wrapping_token".into()));
        assert_eq!(out.secret(&wrapped()).expect("field"), "hvs.wrap");
        let out = Output::new(Format::Json, None);
        let printed: Value =
            serde_json::from_str(&out.secret(&wrapped()).expect("json")).expect("parse");
        assert_eq!(printed, wrapped());
    }

    #[test]
    fn warnings_head_the_table() {
        let body = json!({"warnings": ["careful"], "data": {"a": "1"}});
        assert!(secret_table(&body).starts_with(
            "WARNING! The following warnings were returned from Sigil:\n\n  * careful\n\nKey"
        ));
    }

    #[test]
    fn lists_show_keys() {
        let body = json!({"data": {"keys": ["a", "b/"]}});
        assert_eq!(list(&body, Format::Table), "Keys\n----\na\nb/\n");
        assert_eq!(list(&body, Format::Json), "[\n  \"a\",\n  \"b/\"\n]");
    }

    #[test]
    fn sections_are_headed_with_equal_signs() {
        let body = kv_table(&[("version".into(), "1".into())]);
        assert_eq!(
            section("Data", &body),
            "===== Data =====\nKey        Value\n---        -----\nversion    1\n"
        );
        assert_eq!(
            section_header("Secret Path", 30),
            "======== Secret Path ========"
        );
    }

    #[test]
    fn legacy_answers_drop_the_envelope() {
        let body = json!({"request_id": "r", "lease_id": "", "secret/": {"type": "kv"}});
        assert_eq!(
            Value::Object(legacy_data(&body)),
            json!({"secret/": {"type": "kv"}})
        );
        let body = json!({"data": {"x/": {"type": "kv"}}, "x/": {"type": "kv"}});
        assert_eq!(
            Value::Object(legacy_data(&body)),
            json!({"x/": {"type": "kv"}})
        );
    }
}
