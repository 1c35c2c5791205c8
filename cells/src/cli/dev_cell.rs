//! `sigil dev --nodes N`: a real N-node cell on loopback, one `sigil server`
//! process per node, founded, initialised and unsealed, for trying Sigil's
//! replication on one machine. Ctrl-C stops every node.
//!
//! The cell gets its own CA (written beside the nodes' data); node `i`
//! listens on `BASE+10(i-1)` (HTTP), `+1` (gRPC) and `+2` (cluster). The
//! topology JSON (`--topology-out`) is what `sigil-chaos` and scripts read:
//!
//! ```json
//! {"cells":[{"id":"dev","root_token":"...","unseal_keys":["..."],
//!   "nodes":[{"id":"node-1","http_addr":"http://127.0.0.1:8200",
//!             "grpc_addr":"127.0.0.1:8201","cluster_addr":"127.0.0.1:8202",
//!             "data_dir":"...","pid":1234}]}]}
//! ```

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{DevArgs, fail};
use crate::cluster_pki::{CellCa, CellId, NodeId};

const START_TIMEOUT: Duration = Duration::from_secs(60);

struct DevNode {
    name: String,
    http: String,
    grpc: String,
    cluster: String,
    dir: PathBuf,
    child: Child,
}

impl DevNode {
    fn url(&self) -> String {
        format!("http://{}", self.http)
    }
}

/// Stops every child on drop (Ctrl-C, errors, normal exit).
struct Nodes(Vec<DevNode>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for n in &mut self.0 {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(n.child.id()).unwrap_or(0));
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for n in &mut self.0 {
            while Instant::now() < deadline {
                if matches!(n.child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = n.child.kill();
            let _ = n.child.wait();
        }
    }
}

pub(super) async fn run(args: DevArgs) -> ExitCode {
    match start(&args).await {
        Ok((nodes, root, topology, _temp)) => {
            println!(
                "==> Sigil dev cell {:?} started: {} nodes. Do not use dev mode in production.",
                args.cell,
                nodes.0.len()
            );
            println!();
            for n in &nodes.0 {
                println!(
                    "    {:<8} HTTP {:<26} gRPC {:<16} cluster {:<16} pid {}",
                    n.name,
                    n.url(),
                    n.grpc,
                    n.cluster,
                    n.child.id()
                );
            }
            println!();
            println!("    export SIGIL_ADDR='{}'", nodes.0[0].url());
            println!("Root Token: {root}");
            if let Some(path) = &args.topology_out {
                println!("Topology:   {}", path.display());
            }
            println!();
            println!(
                "Any node serves any request; writes go to the leader. Ctrl-C stops the cell."
            );
            let _ = topology;
            wait_for_signal().await;
            drop(nodes);
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

type Started = (Nodes, String, Value, Option<tempfile::TempDir>);

async fn start(args: &DevArgs) -> Result<Started, String> {
    let (root_dir, temp) = match &args.data_dir {
        Some(d) => (d.clone(), None),
        None => {
            let t = tempfile::Builder::new()
                .prefix("sigil-dev-cell-")
                .tempdir()
                .map_err(|e| format!("cannot create a temporary data directory: {e}"))?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let cell = CellId::new(args.cell.clone()).map_err(|e| format!("--cell: {e}"))?;
    let ca = CellCa::generate(&cell).map_err(|e| e.to_string())?;
    let ca_dir = root_dir.join("cluster-ca");
    if !ca_dir.join("cluster-ca.pem").exists() {
        ca.write_to(&ca_dir).map_err(|e| e.to_string())?;
    }
    let ca = CellCa::load(
        &ca_dir.join("cluster-ca.pem"),
        &ca_dir.join("cluster-ca-key.pem"),
    )
    .map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the sigil binary: {e}"))?;
    let mut nodes = Nodes(Vec::new());
    for i in 0..args.nodes {
        let base = args
            .base_port
            .checked_add(u16::from(i) * 10)
            .filter(|b| *b < u16::MAX - 2)
            .ok_or("--base-port too high for this many nodes")?;
        let name = format!("node-{}", i + 1);
        let dir = root_dir.join(&name);
        let tls = dir.join("tls");
        std::fs::create_dir_all(&tls).map_err(|e| format!("{}: {e}", tls.display()))?;
        if !tls.join("node.pem").exists() {
            let cert = ca
                .issue_node(
                    &cell,
                    &NodeId::new(name.clone()).map_err(|e| e.to_string())?,
                    &["127.0.0.1".to_owned(), "localhost".to_owned()],
                )
                .map_err(|e| e.to_string())?;
            cert.write_to(&tls).map_err(|e| e.to_string())?;
        }
        let (http, grpc, cluster) = (
            format!("127.0.0.1:{base}"),
            format!("127.0.0.1:{}", base + 1),
            format!("127.0.0.1:{}", base + 2),
        );
        let join = match nodes.0.first() {
            Some(first) => format!("retry_join = [\"{}\"]\n", first.cluster),
            None => String::new(),
        };
        let config = format!(
            "node_id = \"{name}\"\ndata_dir = {data:?}\ndisable_mlock = {mlock}\n\
             [listener]\nhttp_addr = \"{http}\"\ngrpc_addr = \"{grpc}\"\n\
             [cell]\nid = \"{cell}\"\n\
             [raft]\ncluster_addr = \"{cluster}\"\n{join}\
             tls_ca_file = {ca:?}\ntls_cert_file = {cert:?}\ntls_key_file = {key:?}\n",
            data = dir.join("data").display().to_string(),
            mlock = args.disable_mlock,
            ca = ca_dir.join("cluster-ca.pem").display().to_string(),
            cert = tls.join("node.pem").display().to_string(),
            key = tls.join("node-key.pem").display().to_string(),
        );
        let config_path = dir.join("sigil.toml");
        std::fs::write(&config_path, config)
            .map_err(|e| format!("{}: {e}", config_path.display()))?;
        let log = std::fs::File::create(dir.join("sigil.log")).map_err(|e| e.to_string())?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(&exe)
            .arg("server")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        nodes.0.push(DevNode {
            name,
            http,
            grpc,
            cluster,
            dir,
            child,
        });
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    for n in &mut nodes.0 {
        wait_up(&client, n).await?;
    }
    // Initialise once, through the founding node; the others learn of it by
    // replication and are unsealed with the same key.
    let first = nodes.0[0].url();
    let mut init = json!({ "secret_shares": 1, "secret_threshold": 1 });
    if let Some(t) = &args.root_token {
        init["root_token"] = json!(t);
    }
    let status: Value = get(&client, &format!("{first}/v1/sys/seal-status")).await?;
    let (keys, root) = if status["initialized"] == true {
        return Err(format!(
            "the cell in {} is already initialised; unseal it with `sigil operator unseal`, or start with a fresh --data-dir",
            root_dir.display()
        ));
    } else {
        let out = send(&client, "PUT", &format!("{first}/v1/sys/init"), None, &init).await?;
        let keys: Vec<String> = out["keys"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|k| k.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let root = out["root_token"].as_str().unwrap_or_default().to_owned();
        (keys, root)
    };
    for n in &mut nodes.0 {
        let url = n.url();
        poll(n, "the cell's initialisation to replicate", || async {
            get(&client, &format!("{url}/v1/sys/seal-status"))
                .await
                .ok()
                .filter(|s| s["initialized"] == true)
        })
        .await?;
        for key in &keys {
            send(
                &client,
                "PUT",
                &format!("{url}/v1/sys/unseal"),
                None,
                &json!({ "key": key }),
            )
            .await?;
        }
    }
    send(
        &client,
        "POST",
        &format!("{first}/v1/sys/mounts/secret"),
        Some(&root),
        &json!({ "type": "kv", "options": { "version": "2" } }),
    )
    .await?;
    let want = nodes.0.len();
    let root_ref = root.clone();
    poll(&mut nodes.0[0], "every node to join as a voter", || async {
        let c: Value = send(
            &client,
            "GET",
            &format!("{first}/v1/sys/storage/raft/configuration"),
            Some(&root_ref),
            &Value::Null,
        )
        .await
        .ok()?;
        let servers = c["data"]["config"]["servers"].as_array()?;
        (servers.iter().filter(|s| s["voter"] == true).count() == want).then_some(c)
    })
    .await?;
    let topology = json!({
        "cells": [{
            "id": args.cell,
            "root_token": root,
            "unseal_keys": keys,
            "nodes": nodes.0.iter().map(|n| json!({
                "id": n.name,
                "http_addr": n.url(),
                "grpc_addr": n.grpc,
                "cluster_addr": n.cluster,
                "data_dir": n.dir.join("data"),
                "pid": n.child.id(),
            })).collect::<Vec<_>>(),
        }]
    });
    if let Some(path) = &args.topology_out {
        let text = serde_json::to_string_pretty(&topology).map_err(|e| e.to_string())?;
        write_private(path, &text)?;
    }
    Ok((nodes, root, topology, temp))
}

/// The topology holds the root token and unseal keys: owner-only.
fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}

async fn wait_up(client: &reqwest::Client, n: &mut DevNode) -> Result<(), String> {
    let url = format!("{}/v1/sys/seal-status", n.url());
    poll(n, "its API", || async { get(client, &url).await.ok() }).await?;
    Ok(())
}

/// Polls `f` until it yields, the node's process exits, or the start-up
/// timeout passes.
async fn poll<T, F, Fut>(n: &mut DevNode, what: &str, mut f: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if let Ok(Some(status)) = n.child.try_wait() {
            return Err(format!(
                "{} exited ({status}) while waiting for {what}; its log:\n{}",
                n.name,
                tail(&n.dir.join("sigil.log"))
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} did not reach {what} within {}s; its log:\n{}",
                n.name,
                START_TIMEOUT.as_secs(),
                tail(&n.dir.join("sigil.log"))
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

async fn get(client: &reqwest::Client, url: &str) -> Result<Value, String> {
    let r = client.get(url).send().await.map_err(|e| e.to_string())?;
    r.json().await.map_err(|e| e.to_string())
}

async fn send(
    client: &reqwest::Client,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: &Value,
) -> Result<Value, String> {
    let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
    let mut req = client.request(method, url);
    if let Some(t) = token {
        req = req.header("X-Vault-Token", t);
    }
    if !body.is_null() {
        req = req.json(body);
    }
    let resp = req.send().await.map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{url}: {status}: {text}"));
    }
    if text.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&text).map_err(|e| format!("{url}: {e}"))
}
