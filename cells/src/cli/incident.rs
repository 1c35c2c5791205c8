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
    /// Wait until every live node of every cell has applied the record,
    /// with a progress line; exit non-zero if they have not by
    /// --wait-timeout.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "30s")]
    pub wait_timeout: String,
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

/// Convergence as one line: `7/9 nodes (eu-west 3/3, us-east 3/3,
/// ap-south 1/3)`, and the unreachable members if any.
pub fn progress_line(c: &Value) -> String {
    let n = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let cells: Vec<String> = c
        .get("cells")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|cell| {
            format!(
                "{} {}/{}",
                cell.get("cell").and_then(Value::as_str).unwrap_or("?"),
                n(cell, "nodes_applied"),
                n(cell, "nodes_live")
            )
        })
        .collect();
    let mut line = format!(
        "{}/{} nodes ({})",
        n(c, "nodes_applied"),
        n(c, "nodes_live"),
        cells.join(", ")
    );
    let unreachable = c
        .get("unreachable")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    if unreachable > 0 {
        line.push_str(&format!("; {unreachable} unreachable"));
    }
    line
}

/// One record as a key/value table.
pub fn record_text(r: &Value) -> String {
    let mut rows = vec![
        ("ID".into(), s(r.get("id"))),
        ("Kind".into(), s(r.get("kind"))),
        ("Match".into(), target(r)),
        ("Reason".into(), s(r.get("reason"))),
        ("Issued at".into(), s(r.get("issued_at"))),
        ("Expires at".into(), s(r.get("expires_at"))),
        ("Lifted".into(), s(r.get("lifted"))),
        ("Enforced by this node".into(), s(r.get("enforced_here"))),
    ];
    if let Some(c) = r.get("convergence").filter(|c| c.is_object()) {
        rows.push(("Applied by".into(), progress_line(c)));
        let pending: Vec<String> = c
            .get("cells")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|cell| {
                cell.get("pending")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            })
            .map(|p| s(Some(&p)))
            .collect();
        if !pending.is_empty() {
            rows.push(("Pending".into(), pending.join(", ")));
        }
    }
    output::kv_table(&rows)
}

/// Polls the record until every live node applied it, printing progress
/// on stderr; fails after `timeout`.
async fn wait_for(
    client: &Client,
    id: &str,
    issued_ms: u64,
    timeout: std::time::Duration,
) -> Outcome {
    use std::io::{IsTerminal, Write};
    let started = std::time::Instant::now();
    let tty = std::io::stderr().is_terminal();
    let mut shown = String::new();
    loop {
        let data = data_of(client.get(&format!("sys/revocations/{id}")).await?);
        let c = data.get("convergence").cloned().unwrap_or(Value::Null);
        if c.is_null() {
            return Err(Failure::Invalid(
                "this node does not run the revocation mesh ([gossip] enabled = false): convergence cannot be watched".into(),
            ));
        }
        let line = progress_line(&c);
        if line != shown {
            let mut err = std::io::stderr();
            if tty {
                let _ = write!(err, "\r\x1b[2Kconverging {id}: {line}");
            } else {
                let _ = writeln!(err, "converging {id}: {line}");
            }
            let _ = err.flush();
            shown = line;
        }
        if c.get("converged").and_then(Value::as_bool) == Some(true) {
            let last = c
                .get("cells")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|cell| cell.get("last_applied_ms").and_then(Value::as_u64))
                .max()
                .unwrap_or(issued_ms);
            if tty {
                eprintln!();
            }
            output::print(&format!(
                "Converged: every live node applied {id}, the last {} ms after it was issued.",
                last.saturating_sub(issued_ms)
            ));
            return Ok(ExitCode::SUCCESS);
        }
        if started.elapsed() >= timeout {
            if tty {
                eprintln!();
            }
            return Err(Failure::Invalid(format!(
                "not converged after {}: {shown}; `sigil incident status {id}` lists the pending nodes",
                crate::duration::format_go_duration(timeout)
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
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
            let timeout = crate::duration::parse_duration_str(&args.wait_timeout)
                .map_err(|e| Failure::Invalid(format!("--wait-timeout: {e}")))?;
            let client = Client::from_env(args.opts.address.as_deref())?;
            let data = data_of(client.put("sys/revocations", &body).await?);
            print(&args.opts, &data, record_text);
            if args.wait {
                let id = data.get("id").and_then(Value::as_str).unwrap_or_default();
                let issued = data
                    .get("issued_at_ms")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                return wait_for(&client, id, issued, timeout).await;
            }
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

    #[test]
    fn convergence_shows_per_cell_and_pending_nodes() {
        let c = json!({"nodes_live": 4, "nodes_applied": 3, "converged": false,
            "cells": [
                {"cell": "eu-west", "nodes_live": 2, "nodes_applied": 2, "pending": []},
                {"cell": "us-east", "nodes_live": 2, "nodes_applied": 1, "pending": ["us-east/n2"]}
            ],
            "unreachable": ["ap-south/n1"]});
        assert_eq!(
            progress_line(&c),
            "3/4 nodes (eu-west 2/2, us-east 1/2); 1 unreachable"
        );
        let r = json!({"id": "rev-1", "match": {"accessor": "a"}, "convergence": c});
        let t = record_text(&r);
        assert!(t.contains("us-east/n2"), "{t}");
        let b = revoke(&[
            "--accessor",
            "a",
            "--reason",
            "r",
            "--wait",
            "--wait-timeout",
            "5s",
        ])
        .expect("body");
        assert!(
            b.get("wait").is_none(),
            "--wait is the CLI's, not the API's"
        );
    }
}
