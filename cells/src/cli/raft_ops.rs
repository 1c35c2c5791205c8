//! `sigil operator raft list-peers | join | remove-peer | step-down | snapshot`:
//! the cell's membership and state, as `vault operator raft` shows and
//! changes them.

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
    /// Join the node at the address (one started with `bootstrap = false`)
    /// to the cell a member's cluster address leads to.
    Join(JoinArgs),
    /// Remove a member (by node id) from the cell.
    RemovePeer(RemovePeerArgs),
    /// Make the node at the address stop leading; another is elected.
    StepDown(ClientOpts),
    /// Save the cell's state to a file, or replace it with one.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Write the cell's state (barrier ciphertext, checksummed) to FILE.
    Save(SnapshotFileArgs),
    /// Replace the whole cell's state with the snapshot in FILE.
    Restore(RestoreArgs),
}

#[derive(Debug, Args)]
pub struct SnapshotFileArgs {
    /// The snapshot file.
    file: std::path::PathBuf,
    #[command(flatten)]
    opts: ClientOpts,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The snapshot file.
    file: std::path::PathBuf,
    /// Restore even if the snapshot was sealed under another root key
    /// (every node then seals; unseal with that snapshot's keys).
    #[arg(long = "force", alias = "f")]
    force: bool,
    #[command(flatten)]
    opts: ClientOpts,
}

#[derive(Debug, Args)]
pub struct JoinArgs {
    /// A member's cluster address (its `raft.cluster_addr`), IP:PORT.
    leader_cluster_addr: String,
    #[command(flatten)]
    opts: ClientOpts,
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
        RaftCommand::Join(a) => {
            write(
                &a.opts,
                "sys/storage/raft/join",
                json!({ "leader_cluster_addr": a.leader_cluster_addr }),
                "Success! Joined the cell.",
            )
            .await
        }
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
        RaftCommand::Snapshot(SnapshotCommand::Save(a)) => snapshot_save(&a).await,
        RaftCommand::Snapshot(SnapshotCommand::Restore(a)) => snapshot_restore(&a).await,
    }
}

async fn snapshot_save(a: &SnapshotFileArgs) -> ExitCode {
    let c = match Client::from_env(a.opts.address.as_deref()) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    // Written beside the target and renamed, so a failed save never leaves
    // a partial file under the name asked for.
    let partial = a.file.with_extension("partial");
    match c.download("sys/storage/raft/snapshot", &partial).await {
        Ok(bytes) => {
            if let Err(e) = std::fs::rename(&partial, &a.file) {
                let _ = std::fs::remove_file(&partial);
                return fail(format!("{}: {e}", a.file.display()));
            }
            if a.opts.format == Format::Table {
                println!("Snapshot saved to {} ({bytes} bytes).", a.file.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            fail(e)
        }
    }
}

async fn snapshot_restore(a: &RestoreArgs) -> ExitCode {
    let c = match Client::from_env(a.opts.address.as_deref()) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let path = if a.force {
        "sys/storage/raft/snapshot-force"
    } else {
        "sys/storage/raft/snapshot"
    };
    match c.upload(path, &a.file).await {
        Ok(()) => {
            if a.opts.format == Format::Table {
                println!("Success! Snapshot restored from {}.", a.file.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
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
