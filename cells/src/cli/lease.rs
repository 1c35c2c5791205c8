//! `sigil lease lookup|renew|revoke|list`, over `sys/leases/*`, as Vault's
//! `lease` commands (plus `list`, and a report of what a prefix revocation
//! could not revoke).

use std::process::ExitCode;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::client::Client;
use super::input;
use super::outcome::{Failure, Outcome};
use super::output::{self, emit};
use super::{ClientOpts, Format, SecretOpts};

#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    /// Show a lease: issue and expiry times, TTL, revocation attempts.
    Lookup(LookupArgs),
    /// Extend a lease (never past its maximum TTL).
    Renew(RenewArgs),
    /// Revoke a lease, or every lease under a prefix (-prefix).
    Revoke(RevokeArgs),
    /// List lease IDs one level under PREFIX (needs sudo).
    List(ListArgs),
}

#[derive(Debug, Args)]
pub struct LookupArgs {
    lease_id: String,
    #[command(flatten)]
    opts: SecretOpts,
}

#[derive(Debug, Args)]
pub struct RenewArgs {
    lease_id: String,
    /// Requested extension (seconds or a duration such as 1h); the server
    /// may grant less.
    #[arg(long, short = 'i')]
    increment: Option<String>,
    #[command(flatten)]
    opts: SecretOpts,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// A lease ID, or with -prefix a path prefix (`database/creds/app`).
    id: String,
    /// Revoke every lease whose ID starts with the argument (needs sudo).
    #[arg(long)]
    prefix: bool,
    /// With -prefix: delete the leases even when revoking their secrets
    /// fails (the secrets may outlive them; needs sudo).
    #[arg(long)]
    force: bool,
    /// Wait for the revocation (`-sync=false` queues it and returns).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value_t = true)]
    sync: bool,
    #[command(flatten)]
    opts: ClientOpts,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    prefix: String,
    #[command(flatten)]
    opts: ClientOpts,
}

/// One request a lease command makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub method: Method,
    pub path: String,
    pub body: Value,
}

fn clean(id: &str) -> Result<&str, String> {
    let id = id.trim_matches('/');
    if id.is_empty() {
        return Err("give a lease ID".into());
    }
    Ok(id)
}

pub fn renew_call(id: &str, increment: &Option<String>) -> Result<Call, String> {
    let mut body = Map::new();
    body.insert("lease_id".into(), json!(clean(id)?));
    if let Some(i) = increment {
        body.insert(
            "increment".into(),
            json!(input::parse_duration("increment", i)?),
        );
    }
    Ok(Call {
        method: Method::PUT,
        path: "sys/leases/renew".into(),
        body: Value::Object(body),
    })
}

pub fn revoke_call(a: &RevokeArgs) -> Result<Call, String> {
    let id = clean(&a.id)?;
    match (a.prefix, a.force, a.sync) {
        (false, true, _) => Err("-force needs -prefix".into()),
        (true, true, false) => Err("-force is always synchronous; drop -sync=false".into()),
        (true, true, true) => Ok(Call {
            method: Method::PUT,
            path: format!("sys/leases/revoke-force/{id}"),
            body: json!({}),
        }),
        (true, false, sync) => Ok(Call {
            method: Method::PUT,
            path: format!("sys/leases/revoke-prefix/{id}"),
            body: json!({ "sync": sync }),
        }),
        (false, false, sync) => Ok(Call {
            method: Method::PUT,
            path: "sys/leases/revoke".into(),
            body: json!({ "lease_id": id, "sync": sync }),
        }),
    }
}

/// What a prefix revocation printed and whether it is a failure: leases it
/// could not revoke make the command fail (exit 1) after the report.
pub fn revoke_report(prefix: &str, body: &Value) -> (String, Option<String>) {
    let data = body.get("data").unwrap_or(&Value::Null);
    let revoked = data.get("revoked").and_then(Value::as_u64).unwrap_or(0);
    let failed = data.get("failed").and_then(Value::as_u64).unwrap_or(0);
    let mut text = format!("Revoked {revoked} leases with prefix: {prefix}");
    if failed == 0 {
        return (format!("Success! {text}"), None);
    }
    let rows: Vec<Vec<String>> = data
        .get("failures")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|f| {
            vec![
                output::go_value(f.get("lease_id").unwrap_or(&Value::Null)),
                output::go_value(f.get("error").unwrap_or(&Value::Null)),
            ]
        })
        .collect();
    text.push_str("\n\n");
    text.push_str(&output::table(&["Lease ID", "Error"], rows));
    let err = format!(
        "{failed} leases could not be revoked; each is retried with backoff (see `sigil lease lookup`)"
    );
    (text, Some(err))
}

pub async fn run(cmd: LeaseCommand) -> Outcome {
    match cmd {
        LeaseCommand::Lookup(a) => {
            let id = clean(&a.lease_id)?.to_owned();
            let client = a.opts.client()?;
            let body = client
                .put("sys/leases/lookup", &json!({ "lease_id": id }))
                .await?
                .ok_or_else(|| Failure::Invalid("empty answer from sys/leases/lookup".into()))?;
            let out = a.opts.output();
            emit(&out, &out.secret(&body)?);
            Ok(ExitCode::SUCCESS)
        }
        LeaseCommand::Renew(a) => {
            let call = renew_call(&a.lease_id, &a.increment)?;
            let client = a.opts.client()?;
            let body = client
                .call(call.method, &call.path, Some(&call.body))
                .await?
                .ok_or_else(|| Failure::Invalid("empty answer from sys/leases/renew".into()))?;
            let out = a.opts.output();
            emit(&out, &out.secret(&body)?);
            Ok(ExitCode::SUCCESS)
        }
        LeaseCommand::Revoke(a) => {
            let call = revoke_call(&a)?;
            let client = Client::from_env(a.opts.address.as_deref())?;
            let body = client
                .call(call.method, &call.path, Some(&call.body))
                .await?;
            if a.opts.format == Format::Json {
                output::print(&output::json(body.as_ref().unwrap_or(&Value::Null)));
                return Ok(ExitCode::SUCCESS);
            }
            if !a.sync {
                output::print("All revocation operations queued successfully!");
                return Ok(ExitCode::SUCCESS);
            }
            if !a.prefix {
                output::print(&format!("Success! Revoked lease: {}", clean(&a.id)?));
                return Ok(ExitCode::SUCCESS);
            }
            let (text, failed) = revoke_report(clean(&a.id)?, &body.unwrap_or(Value::Null));
            output::print(&text);
            match failed {
                None => Ok(ExitCode::SUCCESS),
                Some(e) => Err(Failure::Invalid(e)),
            }
        }
        LeaseCommand::List(a) => {
            let prefix = a.prefix.trim_start_matches('/');
            let client = Client::from_env(a.opts.address.as_deref())?;
            let path = format!("sys/leases/lookup/{prefix}");
            let body = match client.list(&path).await {
                Ok(b) => b.unwrap_or(Value::Null),
                Err(e) if super::outcome::is_not_found(&e) => {
                    return super::outcome::absent(&path);
                }
                Err(e) => return Err(e.into()),
            };
            match a.opts.format {
                Format::Json => output::print(&output::json(
                    body.pointer("/data/keys").unwrap_or(&Value::Null),
                )),
                Format::Table => {
                    let keys: Vec<Vec<String>> = body
                        .pointer("/data/keys")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .map(|k| vec![output::go_value(k)])
                        .collect();
                    output::print(&output::table(&["Keys"], keys));
                }
            }
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
        cmd: LeaseCommand,
    }

    fn parse(words: &str) -> Result<LeaseCommand, clap::Error> {
        let args = super::super::normalize_args(
            std::iter::once("t")
                .chain(words.split_whitespace())
                .map(String::from),
        );
        P::try_parse_from(args).map(|p| p.cmd)
    }

    fn revoke(words: &str) -> Result<Call, String> {
        match parse(&format!("revoke {words}")).expect("parse") {
            LeaseCommand::Revoke(a) => revoke_call(&a),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn revoke_picks_the_endpoint_from_vault_flags() {
        let one = revoke("database/creds/app/abc").expect("ok");
        assert_eq!(one.path, "sys/leases/revoke");
        assert_eq!(
            one.body,
            json!({"lease_id": "database/creds/app/abc", "sync": true})
        );
        let queued = revoke("-sync=false database/creds/app/abc").expect("ok");
        assert_eq!(queued.body["sync"], false);
        let prefix = revoke("-prefix database/creds/").expect("ok");
        assert_eq!(prefix.path, "sys/leases/revoke-prefix/database/creds");
        assert_eq!(prefix.body, json!({"sync": true}));
        let force = revoke("-prefix -force database/creds").expect("ok");
        assert_eq!(force.path, "sys/leases/revoke-force/database/creds");
        assert_eq!(revoke("-force x").expect_err("bad"), "-force needs -prefix");
        assert!(revoke("-prefix -force -sync=false x").is_err());
        assert_eq!(revoke("/").expect_err("bad"), "give a lease ID");
    }

    #[test]
    fn renew_checks_the_increment_before_sending() {
        let call = renew_call("db/creds/r/x", &Some("1h".into())).expect("ok");
        assert_eq!(
            call.body,
            json!({"lease_id": "db/creds/r/x", "increment": 3600})
        );
        assert!(renew_call("db/creds/r/x", &Some("soon".into())).is_err());
        assert_eq!(
            renew_call("db/creds/r/x", &None).expect("ok").body,
            json!({"lease_id": "db/creds/r/x"})
        );
    }

    #[test]
    fn a_partial_prefix_revocation_prints_its_failures_and_fails() {
        let ok = json!({"data": {"revoked": 3, "failed": 0, "failures": []}});
        let (text, err) = revoke_report("db/creds", &ok);
        assert_eq!(text, "Success! Revoked 3 leases with prefix: db/creds");
        assert!(err.is_none());
        let partial = json!({"data": {"revoked": 2, "failed": 1, "failures": [
            {"lease_id": "db/creds/a/1", "error": "database \"pg\" is unreachable"}
        ]}});
        let (text, err) = revoke_report("db/creds", &partial);
        assert!(
            text.starts_with("Revoked 2 leases with prefix: db/creds"),
            "{text}"
        );
        assert!(
            text.contains("db/creds/a/1") && text.contains("unreachable"),
            "{text}"
        );
        assert!(
            err.expect("a failure")
                .starts_with("1 leases could not be revoked")
        );
    }
}
