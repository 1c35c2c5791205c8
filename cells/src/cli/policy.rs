//! `sigil policy write|read|list|delete`, over `sys/policies/acl/`, as
//! Vault's `policy` commands.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::client::Client;
use super::input::Stdin;
use super::outcome::{self, Failure, Outcome};
use super::output;
use super::{ClientOpts, Format};

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Upload a policy from FILE, or from stdin with `-`.
    Write(WriteArgs),
    /// Print a policy's text (exit 2 when there is none).
    Read(NameArgs),
    /// List policy names.
    List(ClientOpts),
    /// Delete a policy.
    Delete(NameArgs),
    /// Check a policy file and rewrite it in canonical HCL (no server
    /// needed); a file that does not parse is left alone and the error
    /// names line and column.
    Fmt(FmtArgs),
}

#[derive(Debug, Args)]
pub struct FmtArgs {
    /// The policy file to format in place.
    file: std::path::PathBuf,
}

/// The canonical HCL form of a policy text.
pub fn format_policy(text: &str) -> Result<String, String> {
    crate::policy::Policy::parse("fmt", text)
        .map(|p| p.to_hcl())
        .map_err(|e| e.to_string())
}

#[derive(Debug, Args)]
pub struct WriteArgs {
    name: String,
    /// A policy file, or `-` for stdin.
    file: String,
    #[command(flatten)]
    opts: ClientOpts,
}

#[derive(Debug, Args)]
pub struct NameArgs {
    name: String,
    #[command(flatten)]
    opts: ClientOpts,
}

/// The API path of policy `name`, which must be a plain name.
pub fn policy_path(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty() || name.contains('/') {
        return Err(format!(
            "invalid policy name {name:?}: a non-empty name without '/'"
        ));
    }
    Ok(format!("sys/policies/acl/{name}"))
}

/// The policy text from `file` or stdin (`-`); empty text is refused.
pub fn policy_text(file: &str, stdin: &mut Stdin<'_>) -> Result<String, String> {
    let text = if file == "-" {
        stdin.read_all()?
    } else {
        std::fs::read_to_string(file).map_err(|e| format!("cannot read file {file:?}: {e}"))?
    };
    if text.trim().is_empty() {
        return Err(format!(
            "the policy in {} is empty",
            if file == "-" { "stdin" } else { file }
        ));
    }
    Ok(text)
}

fn client(opts: &ClientOpts) -> Result<Client, Failure> {
    Ok(Client::from_env(opts.address.as_deref())?)
}

pub async fn run(cmd: PolicyCommand, stdin: &mut Stdin<'_>) -> Outcome {
    match cmd {
        PolicyCommand::Fmt(a) => {
            let text = std::fs::read_to_string(&a.file)
                .map_err(|e| format!("cannot read file {}: {e}", a.file.display()))?;
            let formatted =
                format_policy(&text).map_err(|e| format!("{}: {e}", a.file.display()))?;
            std::fs::write(&a.file, formatted)
                .map_err(|e| format!("cannot write file {}: {e}", a.file.display()))?;
            output::print(&format!("Success! Formatted policy: {}", a.file.display()));
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Write(a) => {
            let path = policy_path(&a.name)?;
            let text = policy_text(&a.file, stdin)?;
            client(&a.opts)?
                .put(&path, &json!({ "policy": text }))
                .await?;
            if a.opts.format == Format::Table {
                output::print(&format!("Success! Uploaded policy: {}", a.name));
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Read(a) => {
            let path = policy_path(&a.name)?;
            let body = match client(&a.opts)?.get(&path).await {
                Ok(Some(body)) => body,
                Ok(None) => return no_policy(&a.name),
                Err(e) if outcome::is_not_found(&e) => return no_policy(&a.name),
                Err(e) => return Err(e.into()),
            };
            let data = body.get("data").cloned().unwrap_or(Value::Null);
            match a.opts.format {
                Format::Json => output::print(&output::json(&data)),
                Format::Table => output::print(
                    data.get("policy")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::List(opts) => {
            let body = match client(&opts)?.list("sys/policies/acl").await {
                Ok(body) => body.unwrap_or(Value::Null),
                Err(e) if outcome::is_not_found(&e) => Value::Null,
                Err(e) => return Err(e.into()),
            };
            output::print(&render_list(&body, opts.format));
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Delete(a) => {
            let path = policy_path(&a.name)?;
            client(&a.opts)?.delete(&path).await?;
            if a.opts.format == Format::Table {
                output::print(&format!("Success! Deleted policy: {}", a.name));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn no_policy(name: &str) -> Outcome {
    eprintln!("No policy named: {name}");
    Ok(ExitCode::from(2))
}

/// Names one per line (as `vault policy list`), or a JSON array.
pub fn render_list(body: &Value, format: Format) -> String {
    let keys: Vec<String> = body
        .pointer("/data/keys")
        .or_else(|| body.get("keys"))
        .or_else(|| body.get("policies"))
        .and_then(Value::as_array)
        .map(|a| a.iter().map(output::go_value).collect())
        .unwrap_or_default();
    match format {
        Format::Json => output::json(&json!(keys)),
        Format::Table => keys.join("\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert_eq!(policy_path("dev").expect("ok"), "sys/policies/acl/dev");
        assert!(policy_path("a/b").is_err());
        assert!(policy_path(" ").is_err());
    }

    #[test]
    fn text_comes_from_a_file_or_stdin() {
        let mut input = "path \"secret/*\" { capabilities = [\"read\"] }\n".as_bytes();
        let mut stdin = Stdin::new(&mut input);
        assert!(
            policy_text("-", &mut stdin)
                .expect("stdin")
                .starts_with("path")
        );
        let mut empty = "  \n".as_bytes();
        let mut stdin = Stdin::new(&mut empty);
        assert_eq!(
            policy_text("-", &mut stdin).expect_err("empty"),
            "the policy in stdin is empty"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("p.hcl");
        std::fs::write(&f, "path \"a\" {}").expect("write");
        let mut none = "".as_bytes();
        let mut stdin = Stdin::new(&mut none);
        assert_eq!(
            policy_text(f.to_str().expect("utf8"), &mut stdin).expect("file"),
            "path \"a\" {}"
        );
        assert!(
            policy_text("/nonexistent/p.hcl", &mut stdin)
                .expect_err("missing")
                .starts_with("cannot read file")
        );
    }

    #[test]
    fn lists_print_one_name_a_line() {
        let body = json!({ "data": { "keys": ["default", "dev", "root"] } });
        assert_eq!(render_list(&body, Format::Table), "default\ndev\nroot");
        assert_eq!(
            render_list(&body, Format::Json),
            "[\n  \"default\",\n  \"dev\",\n  \"root\"\n]"
        );
        let legacy = json!({ "policies": ["default"] });
        assert_eq!(render_list(&legacy, Format::Table), "default");
    }

    #[test]
    fn fmt_rewrites_valid_policies_and_names_the_error_position() {
        let messy = "path \"secret/*\"{capabilities=[\"read\",\"list\"]}\n";
        let out = format_policy(messy).expect("valid");
        assert!(out.contains("path \"secret/*\""), "{out}");
        assert_eq!(format_policy(&out).expect("idempotent"), out);
        let err = format_policy("path \"x\" {\n  capabilities = [\"read\"\n").expect_err("bad");
        assert!(err.contains("line") && err.contains("column"), "{err}");
    }
}
