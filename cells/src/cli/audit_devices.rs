//! `sigil audit enable|disable|list`, over `sys/audit`, as Vault's `audit`
//! commands.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use super::client::Client;
use super::input::{self, Stdin};
use super::mounts::{PathArgs, mount_path};
use super::outcome::{Failure, Outcome};
use super::output;
use super::{ClientOpts, Format};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Enable an audit device of TYPE with `key=value` options (`file_path=...`).
    Enable(EnableArgs),
    /// Disable the audit device at PATH.
    Disable(PathArgs),
    /// List audit devices (exit 2 when there are none).
    List(ListArgs),
    /// Check an audit log's hash chain offline; report the first break
    /// (exit 1) or `ok` (exit 0).
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The audit log file.
    file: std::path::PathBuf,
    /// The device path that wrote it (`file/`): also checks where chains
    /// start against that device's genesis hash.
    #[arg(long)]
    device: Option<String>,
    /// Print the whole report as JSON.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Debug, Args)]
pub struct EnableArgs {
    /// The device type (`file`, `socket`, `syslog`...).
    r#type: String,
    /// Device options as `key=value` (`key=@file`, `key=-` read a value).
    options: Vec<String>,
    /// Where to enable it (default: the type).
    #[arg(long)]
    path: Option<String>,
    #[arg(long)]
    description: Option<String>,
    /// Keep the device to this cluster (not replicated).
    #[arg(long)]
    local: bool,
    #[command(flatten)]
    opts: ClientOpts,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Add replication and options columns.
    #[arg(long)]
    detailed: bool,
    #[command(flatten)]
    opts: ClientOpts,
}

/// The path and body of `audit enable`; options must be plain strings.
pub fn enable_body(a: &EnableArgs, stdin: &mut Stdin<'_>) -> Result<(String, Value), String> {
    let path = mount_path(a.path.as_deref().unwrap_or(&a.r#type))?;
    let options = input::parse_data(&a.options, stdin)?;
    let options: Map<String, Value> = options
        .into_iter()
        .map(|(k, v)| match v {
            Value::String(_) => Ok((k, v)),
            other => Err(format!(
                "audit option {k:?} must be a single string, not {other}"
            )),
        })
        .collect::<Result<_, _>>()?;
    let body = json!({
        "type": a.r#type,
        "description": a.description.clone().unwrap_or_default(),
        "options": options,
        "local": a.local,
    });
    Ok((path, body))
}

/// `audit list` as Vault lays it out, sorted by path.
pub fn devices_table(devices: &Map<String, Value>, detailed: bool) -> String {
    let mut paths: Vec<&String> = devices
        .iter()
        .filter(|(_, d)| d.get("type").is_some())
        .map(|(p, _)| p)
        .collect();
    paths.sort();
    let cell = |d: &Value, k: &str| d.get(k).map(output::go_value).unwrap_or_default();
    let rows = paths
        .iter()
        .map(|p| {
            let d = &devices[*p];
            let mut row = vec![(*p).clone(), cell(d, "type"), cell(d, "description")];
            if detailed {
                let local = d.get("local").and_then(Value::as_bool).unwrap_or(false);
                row.push(if local { "local" } else { "replicated" }.to_owned());
                row.push(cell(d, "options"));
            }
            row
        })
        .collect();
    if detailed {
        output::table(
            &["Path", "Type", "Description", "Replication", "Options"],
            rows,
        )
    } else {
        output::table(&["Path", "Type", "Description"], rows)
    }
}

fn client(opts: &ClientOpts) -> Result<Client, Failure> {
    Ok(Client::from_env(opts.address.as_deref())?)
}

pub async fn run(cmd: AuditCommand, stdin: &mut Stdin<'_>) -> Outcome {
    match cmd {
        AuditCommand::Verify(a) => Ok(super::audit::verify_command(
            &a.file,
            a.device.as_deref(),
            a.format == Format::Json,
        )),
        AuditCommand::Enable(a) => {
            let (path, body) = enable_body(&a, stdin)?;
            client(&a.opts)?
                .put(&format!("sys/audit/{}", path.trim_end_matches('/')), &body)
                .await?;
            if a.opts.format == Format::Table {
                output::print(&format!(
                    "Success! Enabled the {} audit device at: {path}",
                    a.r#type
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Disable(a) => {
            let path = mount_path(&a.path)?;
            client(&a.opts)?
                .delete(&format!("sys/audit/{}", path.trim_end_matches('/')))
                .await?;
            if a.opts.format == Format::Table {
                output::print(&format!(
                    "Success! Disabled audit device (if it was enabled) at: {path}"
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::List(a) => {
            let body = client(&a.opts)?
                .get("sys/audit")
                .await?
                .unwrap_or(Value::Null);
            let devices = output::legacy_data(&body);
            if a.opts.format == Format::Json {
                output::print(&output::json(&Value::Object(devices)));
                return Ok(ExitCode::SUCCESS);
            }
            if !devices.values().any(|d| d.get("type").is_some()) {
                eprintln!("No audit devices are enabled.");
                return Ok(ExitCode::from(2));
            }
            output::print(&devices_table(&devices, a.detailed));
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct P {
        #[command(subcommand)]
        cmd: AuditCommand,
    }

    fn enable(words: &str, stdin: &str) -> Result<(String, Value), String> {
        let args = super::super::normalize_args(
            std::iter::once("a")
                .chain(words.split_whitespace())
                .map(String::from),
        );
        let AuditCommand::Enable(a) = P::try_parse_from(args).expect("parse").cmd else {
            panic!("enable")
        };
        let mut input = stdin.as_bytes();
        let mut stdin = Stdin::new(&mut input);
        enable_body(&a, &mut stdin)
    }

    #[test]
    fn enable_takes_options_as_pairs() {
        let (path, body) = enable(
            "enable -path=audit1 -description=main -local file file_path=/var/log/a.log mode=0600",
            "",
        )
        .expect("ok");
        assert_eq!(path, "audit1/");
        assert_eq!(
            body,
            json!({
                "type": "file", "description": "main", "local": true,
                "options": { "file_path": "/var/log/a.log", "mode": "0600" }
            })
        );
        let (path, body) = enable("enable file file_path=-", "/tmp/x.log").expect("ok");
        assert_eq!(path, "file/");
        assert_eq!(body["options"], json!({ "file_path": "/tmp/x.log" }));
        assert!(enable("enable file nonsense", "").is_err());
        assert!(
            enable("enable file a=1 a=2", "")
                .expect_err("array")
                .contains("single string")
        );
    }

    #[test]
    fn list_tables_follow_vault() {
        let devices = json!({
            "file/": { "type": "file", "description": "", "local": false, "options": { "file_path": "/x" } }
        })
        .as_object()
        .cloned()
        .expect("object");
        assert_eq!(
            devices_table(&devices, false),
            "Path     Type    Description\n----     ----    -----------\nfile/    file\n"
        );
        assert!(devices_table(&devices, true).contains("replicated     map[file_path:/x]"));
    }
}
