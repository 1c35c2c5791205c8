//! `sigil cells list` and `sigil control-plane status|conflicts`, over
//! `sys/control-plane/*`.

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::Value;

use super::client::Client;
use super::outcome::{Failure, Outcome};
use super::output;
use super::{ClientOpts, Format};

#[derive(Debug, Subcommand)]
pub enum CellsCommand {
    /// List the federation's cells, from this cell's registry.
    List(ClientOpts),
}

#[derive(Debug, Subcommand)]
pub enum ControlPlaneCommand {
    /// This cell's replica and its sync with each peer cell.
    Status(ClientOpts),
    /// Keys written concurrently in different cells, and the value in force.
    Conflicts(ClientOpts),
}

async fn read(opts: &ClientOpts, path: &str) -> Result<Value, Failure> {
    let client = Client::from_env(opts.address.as_deref())?;
    let body = client
        .get(path)
        .await?
        .ok_or_else(|| Failure::Invalid(format!("empty answer from {path}")))?;
    Ok(body.get("data").cloned().unwrap_or(Value::Null))
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        other => output::go_value(other),
    }
}

/// `origin:seq` pairs, in order.
fn vector(v: &Value) -> String {
    match v.as_object() {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(k, n)| format!("{k}:{}", s(n)))
            .collect::<Vec<_>>()
            .join(" "),
        _ => "-".into(),
    }
}

/// How long ago `ms` (since the epoch) was, for people: `1.2s ago`.
fn ago(ms: &Value, now: u64) -> String {
    match ms.as_u64() {
        Some(t) if now >= t => format!("{:.1}s ago", (now - t) as f64 / 1_000.0),
        Some(_) => "just now".into(),
        None => "never".into(),
    }
}

/// The registry as a table.
pub fn cells_table(data: &Value) -> String {
    let rows = data
        .get("cells")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(id, c)| {
            let list = |k: &str| {
                c.get(k)
                    .and_then(Value::as_array)
                    .map(|a| a.iter().map(s).collect::<Vec<_>>().join(","))
                    .unwrap_or_default()
            };
            let me = c.get("self").and_then(Value::as_bool) == Some(true);
            vec![
                if me {
                    format!("{id} (this cell)")
                } else {
                    id.clone()
                },
                s(c.get("region").unwrap_or(&Value::Null)),
                s(c.get("status").unwrap_or(&Value::Null)),
                list("api_addrs"),
                list("cluster_addrs"),
            ]
        })
        .collect();
    output::table(&["Cell", "Region", "Status", "API", "Cluster"], rows)
}

/// The status as a summary and a table of peers.
pub fn status_text(data: &Value) -> String {
    let get = |k: &str| data.get(k).unwrap_or(&Value::Null);
    let summary = output::kv_table(&[
        ("Cell".into(), s(get("cell"))),
        ("Version vector".into(), vector(get("version_vector"))),
        ("State digest".into(), s(get("state_digest"))),
        ("Clock".into(), s(get("hlc"))),
        ("Ops waiting".into(), s(get("pending"))),
        ("Ops sent".into(), s(get("entries_sent"))),
        ("Bytes sent".into(), s(get("bytes_sent"))),
    ]);
    let rows = get("peers")
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let f = |k: &str| p.get(k).unwrap_or(&Value::Null);
            let lag = match f("lag") {
                Value::Null => "unknown".into(),
                Value::Object(m) if m.is_empty() => "0".into(),
                other => vector(other),
            };
            vec![
                s(f("cell")),
                s(f("connected")),
                ago(f("last_sync_ms"), sigil_control_plane::sync::now_ms()),
                lag,
                s(f("entries_received")),
                s(f("last_error")),
            ]
        })
        .collect();
    let refused: Vec<Vec<String>> = get("roles_refused")
        .as_object()
        .into_iter()
        .flatten()
        .map(|(role, why)| vec![role.clone(), s(why)])
        .collect();
    let refused = if refused.is_empty() {
        String::new()
    } else {
        format!(
            "\n\nShared roles this cell cannot apply yet:\n{}",
            output::table(&["Role", "Reason"], refused)
        )
    };
    format!(
        "{summary}\n\n{}{refused}",
        output::table(
            &[
                "Peer",
                "Stream",
                "Last sync (ms)",
                "Behind",
                "Ops received",
                "Last error"
            ],
            rows
        )
    )
}

/// The conflicts as a table.
pub fn conflicts_table(data: &Value) -> String {
    let rows = data
        .get("conflicts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            let key = c.get("key").unwrap_or(&Value::Null);
            let name = ["name", "path", "id"]
                .iter()
                .find_map(|k| key.get(*k))
                .map(s)
                .unwrap_or_default();
            let origin = |v: &Value| s(v.get("origin").unwrap_or(&Value::Null));
            let losers = c
                .get("losers")
                .and_then(Value::as_array)
                .map(|l| l.iter().map(origin).collect::<Vec<_>>().join(","))
                .unwrap_or_default();
            vec![
                s(key.get("kind").unwrap_or(&Value::Null)),
                name,
                origin(c.get("winner").unwrap_or(&Value::Null)),
                losers,
            ]
        })
        .collect();
    output::table(
        &["Kind", "Name", "In force (cell)", "Outranked (cells)"],
        rows,
    )
}

pub async fn run_cells(cmd: CellsCommand) -> Outcome {
    let CellsCommand::List(opts) = cmd;
    let data = read(&opts, "sys/control-plane/cells").await?;
    match opts.format {
        Format::Json => output::print(&output::json(&data)),
        Format::Table => output::print(&cells_table(&data)),
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run_control_plane(cmd: ControlPlaneCommand) -> Outcome {
    let (opts, path, text): (_, _, fn(&Value) -> String) = match &cmd {
        ControlPlaneCommand::Status(o) => (o, "sys/control-plane/status", status_text),
        ControlPlaneCommand::Conflicts(o) => (o, "sys/control-plane/conflicts", conflicts_table),
    };
    let data = read(opts, path).await?;
    match opts.format {
        Format::Json => output::print(&output::json(&data)),
        Format::Table => output::print(&text(&data)),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_registry_and_status_print_every_cell_and_peer() {
        let cells = json!({"keys": ["eu-west", "us-east"], "cells": {
            "eu-west": {"region": "eu-west", "status": "active", "api_addrs": ["http://127.0.0.1:8200"], "cluster_addrs": ["127.0.0.1:8202"], "self": true},
            "us-east": {"region": "us-east-1", "status": "active", "api_addrs": [], "cluster_addrs": ["127.0.0.1:9202"], "self": false},
        }});
        let t = cells_table(&cells);
        assert!(t.contains("eu-west (this cell)"), "{t}");
        assert!(
            t.contains("us-east-1") && t.contains("127.0.0.1:9202"),
            "{t}"
        );

        let status = json!({"cell": "eu-west", "version_vector": {"eu-west": 4, "us-east": 2},
            "peers": [{"cell": "us-east", "connected": "127.0.0.1:9202", "lag": {"us-east": 3}, "entries_received": 2},
                      {"cell": "ap-south", "connected": null, "lag": null, "last_error": "connection refused"}]});
        let t = status_text(&status);
        assert!(t.contains("eu-west:4 us-east:2"), "{t}");
        assert!(t.contains("us-east:3"), "{t}");
        assert!(
            t.contains("unknown") && t.contains("connection refused"),
            "{t}"
        );
        assert!(!t.contains("cannot apply"), "{t}");
        let mut status = status;
        status["roles_refused"] = json!({"role db/payments": "database \"pg\" is not configured"});
        let t = status_text(&status);
        assert!(
            t.contains("cannot apply")
                && t.contains("role db/payments")
                && t.contains("\"pg\" is not configured"),
            "{t}"
        );
    }

    #[test]
    fn conflicts_name_the_key_and_the_cells() {
        let c = json!({"conflicts": [{"key": {"kind": "policy", "name": "payments"},
            "winner": {"origin": "us-east"}, "losers": [{"origin": "eu-west"}]}]});
        let t = conflicts_table(&c);
        assert!(
            t.contains("payments") && t.contains("us-east") && t.contains("eu-west"),
            "{t}"
        );
    }
}
