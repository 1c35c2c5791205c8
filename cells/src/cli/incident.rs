//! `sigil incident revoke|status|list|lift`, over `sys/revocations`
//! (docs/runbooks/incident.md).

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use super::client::Client;
use super::outcome::{Failure, Outcome};
use super::output;
use super::{ClientOpts, Format};

#[derive(Debug, Subcommand)]
pub enum IncidentCommand {
    /// Revoke (or quarantine) what matches, in every cell.
    Revoke(RevokeArgs),
    /// One revocation record.
    Status {
        /// The record's id (`rev-...`).
        id: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Every revocation record this cell holds.
    List(ClientOpts),
    /// Lift a quarantine: new logins are let in again.
    Lift {
        id: String,
        #[command(flatten)]
        opts: ClientOpts,
    },
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// Identity pattern (`spiffe://prod.example/ns/payments/*`, `approle:billing`).
    #[arg(long)]
    pub identity: Option<String>,
    /// Token accessor.
    #[arg(long)]
    pub accessor: Option<String>,
    /// Every lease under this path.
    #[arg(long)]
    pub lease_prefix: Option<String>,
    /// One lease.
    #[arg(long)]
    pub lease_id: Option<String>,
    /// A role of a mount: MOUNT/ROLE (`auth/approle/billing`).
    #[arg(long)]
    pub role: Option<String>,
    /// A certificate serial number (hex).
    #[arg(long)]
    pub cert_serial: Option<String>,
    /// Why: shown wherever the record is.
    #[arg(long)]
    pub reason: String,
    /// Also refuse new logins of the identity or role until lifted.
    #[arg(long)]
    pub quarantine: bool,
    /// How long the record lives (default: the longest TTL a mount allows).
    #[arg(long)]
    pub ttl: Option<String>,
    #[command(flatten)]
    pub opts: ClientOpts,
}

impl RevokeArgs {
    /// The request body; exactly one target, or a one-line error.
    pub fn body(&self) -> Result<Value, Failure> {
        let targets: Vec<(&str, &String)> = [
            ("identity", &self.identity),
            ("accessor", &self.accessor),
            ("lease_prefix", &self.lease_prefix),
            ("lease_id", &self.lease_id),
            ("role", &self.role),
            ("cert_serial", &self.cert_serial),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
        .collect();
        let [(field, value)] = targets.as_slice() else {
            return Err(Failure::Invalid(
                "give exactly one of --identity, --accessor, --lease-prefix, --lease-id, --role, --cert-serial".into(),
            ));
        };
        let mut body = Map::new();
        body.insert((*field).into(), json!(value));
        body.insert("reason".into(), json!(self.reason));
        if self.quarantine {
            body.insert("kind".into(), json!("quarantine"));
        }
        if let Some(t) = &self.ttl {
            body.insert("ttl".into(), json!(t));
        }
        Ok(Value::Object(body))
    }
}

fn s(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".into(),
        Some(other) => output::go_value(other),
    }
}

fn target(r: &Value) -> String {
    r.get("match")
        .and_then(Value::as_object)
        .and_then(|m| m.iter().next())
        .map(|(k, v)| format!("{k}={}", s(Some(v))))
        .unwrap_or_else(|| "-".into())
}

/// One record as a key/value table.
pub fn record_text(r: &Value) -> String {
    output::kv_table(&[
        ("ID".into(), s(r.get("id"))),
        ("Kind".into(), s(r.get("kind"))),
        ("Match".into(), target(r)),
        ("Reason".into(), s(r.get("reason"))),
        ("Issued at".into(), s(r.get("issued_at"))),
        ("Expires at".into(), s(r.get("expires_at"))),
        ("Lifted".into(), s(r.get("lifted"))),
        ("Enforced by this node".into(), s(r.get("enforced_here"))),
    ])
}

/// Every record as a table.
pub fn list_table(data: &Value) -> String {
    let info = data.get("key_info").and_then(Value::as_object);
    let rows = data
        .get("keys")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|id| {
            let r = info.and_then(|i| i.get(id)).cloned().unwrap_or(Value::Null);
            vec![
                id.to_owned(),
                s(r.get("kind")),
                target(&r),
                s(r.get("issued_at")),
                s(r.get("lifted")),
                s(r.get("reason")),
            ]
        })
        .collect();
    output::table(
        &["ID", "Kind", "Match", "Issued at", "Lifted", "Reason"],
        rows,
    )
}

fn print(opts: &ClientOpts, data: &Value, text: fn(&Value) -> String) {
    match opts.format {
        Format::Json => output::print(&output::json(data)),
        Format::Table => output::print(&text(data)),
    }
}

fn data_of(body: Option<Value>) -> Value {
    body.and_then(|b| b.get("data").cloned())
        .unwrap_or(Value::Null)
}

pub async fn run(cmd: IncidentCommand) -> Outcome {
    match cmd {
        IncidentCommand::Revoke(args) => {
            let body = args.body()?;
            let client = Client::from_env(args.opts.address.as_deref())?;
            let data = data_of(client.put("sys/revocations", &body).await?);
            print(&args.opts, &data, record_text);
        }
        IncidentCommand::Status { id, opts } => {
            let client = Client::from_env(opts.address.as_deref())?;
            let data = data_of(client.get(&format!("sys/revocations/{id}")).await?);
            if data.is_null() {
                return Err(Failure::Invalid(format!("no revocation {id:?}")));
            }
            print(&opts, &data, record_text);
        }
        IncidentCommand::List(opts) => {
            let client = Client::from_env(opts.address.as_deref())?;
            let data = data_of(client.list("sys/revocations").await?);
            print(&opts, &data, list_table);
        }
        IncidentCommand::Lift { id, opts } => {
            let client = Client::from_env(opts.address.as_deref())?;
            client.delete(&format!("sys/revocations/{id}")).await?;
            output::print(&format!(
                "Success! Lifted {id}; new logins are let in again."
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: IncidentCommand,
    }

    fn revoke(args: &[&str]) -> Result<Value, Failure> {
        let mut argv = vec!["incident", "revoke"];
        argv.extend(args);
        match Cli::try_parse_from(argv).expect("parses").cmd {
            IncidentCommand::Revoke(r) => r.body(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn exactly_one_target_makes_a_body() {
        let b = revoke(&[
            "--identity",
            "spiffe://x/ns/p/*",
            "--reason",
            "leak",
            "--quarantine",
        ])
        .expect("body");
        assert_eq!(
            b,
            json!({"identity": "spiffe://x/ns/p/*", "reason": "leak", "kind": "quarantine"})
        );
        let b = revoke(&[
            "--role",
            "auth/approle/billing",
            "--reason",
            "r",
            "--ttl",
            "2h",
        ])
        .expect("body");
        assert_eq!(b["role"], "auth/approle/billing");
        assert_eq!(b["ttl"], "2h");
        assert!(b.get("kind").is_none());
        for bad in [
            vec!["--reason", "r"],
            vec!["--identity", "a", "--accessor", "b", "--reason", "r"],
        ] {
            assert!(matches!(revoke(&bad), Err(Failure::Invalid(_))), "{bad:?}");
        }
    }

    #[test]
    fn records_print_their_target_and_state() {
        let r = json!({"id": "rev-eu-1", "kind": "revoke", "match": {"identity": "approle:billing"},
            "reason": "leak", "issued_at": "2026-12-07T05:00:00Z", "lifted": false, "enforced_here": true});
        let t = record_text(&r);
        assert!(
            t.contains("identity=approle:billing") && t.contains("rev-eu-1"),
            "{t}"
        );
        let list = json!({"keys": ["rev-eu-1"], "key_info": {"rev-eu-1": r}});
        let t = list_table(&list);
        assert!(t.contains("rev-eu-1") && t.contains("leak"), "{t}");
    }
}
