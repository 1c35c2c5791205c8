//! `sigil operator raft list-peers | remove-peer | step-down`: the cell's
//! membership, as `vault operator raft` shows and changes it.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::client::Client;
use super::fail;
use super::{ClientOpts, Format};

#[derive(Debug, Subcommand)]
pub enum RaftCommand {
    /// List the cell's members: node, address, state, voter.
    ListPeers(ClientOpts),
    /// Remove a member (by node id) from the cell.
    RemovePeer(RemovePeerArgs),
    /// Make the node at the address stop leading; another is elected.
    StepDown(ClientOpts),
}

#[derive(Debug, Args)]
pub struct RemovePeerArgs {
    /// The node id to remove.
    server_id: String,
    #[command(flatten)]
    opts: ClientOpts,
}

pub async fn run(cmd: RaftCommand) -> ExitCode {
    match cmd {
        RaftCommand::ListPeers(o) => list_peers(&o).await,
        RaftCommand::RemovePeer(a) => {
            write(
                &a.opts,
                "sys/storage/raft/remove-peer",
                json!({ "server_id": a.server_id }),
                "Peer removed.",
            )
            .await
        }
        RaftCommand::StepDown(o) => {
            write(&o, "sys/step-down", json!({}), "Success! Stepped down.").await
        }
    }
}

async fn list_peers(opts: &ClientOpts) -> ExitCode {
    let c = match Client::from_env(opts.address.as_deref()) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let v = match c.get("sys/storage/raft/configuration").await {
        Ok(Some(v)) => v,
        Ok(None) => return fail("no raft configuration"),
        Err(e) => return fail(e),
    };
    if opts.format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    let servers = v["data"]["config"]["servers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let text = |s: &Value, k: &str| s[k].as_str().unwrap_or_default().to_owned();
    let rows: Vec<[String; 4]> = servers
        .iter()
        .map(|s| {
            [
                text(s, "node_id"),
                text(s, "address"),
                if s["leader"] == true {
                    "leader"
                } else {
                    "follower"
                }
                .to_owned(),
                (s["voter"] == true).to_string(),
            ]
        })
        .collect();
    let head = ["Node", "Address", "State", "Voter"];
    let widths: Vec<usize> = (0..4)
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([head[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: [&str; 4]| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:w$}"))
            .collect();
        println!("{}", parts.join("    ").trim_end());
    };
    line(head);
    line(["----", "-------", "-----", "-----"]);
    for r in &rows {
        line([&r[0], &r[1], &r[2], &r[3]]);
    }
    ExitCode::SUCCESS
}

async fn write(opts: &ClientOpts, path: &str, body: Value, done: &str) -> ExitCode {
    let c = match Client::from_env(opts.address.as_deref()) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    match c.put(path, &body).await {
        Ok(_) => {
            if opts.format == Format::Table {
                println!("{done}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}
