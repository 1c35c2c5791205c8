//! `sigil dev --nodes N [--cells A,B,...]`: real N-node cells on loopback,
//! one `sigil server` process per node, each cell founded, initialised and
//! unsealed on its own (its own CA, unseal key and root token), and with
//! `--cells` federated with every other, for trying Sigil's replication and
//! control plane on one machine. Ctrl-C stops every node.
//!
//! Each cell gets its own CA (written beside its nodes' data); node `i` of
//! cell `j` (both from 0) listens on `BASE+100j+10i` (HTTP), `+1` (gRPC) and
//! `+2` (cluster). The
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
    cell: String,
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
            let cells: Vec<&str> = topology["cells"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["id"].as_str())
                .collect();
            println!(
                "==> Sigil dev {} {} started: {} nodes. Do not use dev mode in production.",
                if cells.len() > 1 { "cells" } else { "cell" },
                cells.join(", "),
                nodes.0.len()
            );
            println!();
            for n in &nodes.0 {
                println!(
                    "    {:<10} {:<8} HTTP {:<26} gRPC {:<16} cluster {:<16} pid {}",
                    n.cell,
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
            if cells.len() > 1 {
                println!(
                    "Each cell has its own root token and unseal key; the topology file lists them."
                );
            }
            if let Some(path) = &args.topology_out {
                println!("Topology:   {}", path.display());
            }
            println!();
            println!(
                "Any node serves any request; writes go to the leader. Ctrl-C stops the cell."
            );
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

/// One cell to start: its id, CA and nodes' addresses.
struct CellPlan {
    id: CellId,
    ca: CellCa,
    ca_pem: PathBuf,
    /// (name, http, grpc, cluster, dir) of each node.
    nodes: Vec<(String, String, String, String, PathBuf)>,
}

/// The cells to start: `--cells`, or the one `--cell`.
fn cell_ids(args: &DevArgs) -> Result<Vec<CellId>, String> {
    let names: Vec<String> = if args.cells.is_empty() {
        vec![args.cell.clone()]
    } else {
        args.cells.clone()
    };
    let mut ids: Vec<CellId> = Vec::new();
    for n in names {
        let id = CellId::new(n.trim()).map_err(|e| format!("--cells: {e}"))?;
        if ids.contains(&id) {
            return Err(format!("--cells: {id} is listed twice"));
        }
        ids.push(id);
    }
    if ids.len() > 9 {
        return Err("--cells: at most 9 cells".into());
    }
    Ok(ids)
}

fn plan(args: &DevArgs, root_dir: &Path, j: usize, id: CellId) -> Result<CellPlan, String> {
    let multi = !args.cells.is_empty();
    // One cell keeps the layout it always had; several get a directory each.
    let cell_dir = if multi {
        root_dir.join(id.as_str())
    } else {
        root_dir.to_path_buf()
    };
    let ca_dir = cell_dir.join("cluster-ca");
    if !ca_dir.join("cluster-ca.pem").exists() {
        CellCa::generate(&id)
            .and_then(|ca| ca.write_to(&ca_dir))
            .map_err(|e| e.to_string())?;
    }
    let ca_pem = ca_dir.join("cluster-ca.pem");
    let ca =
        CellCa::load(&ca_pem, &ca_dir.join("cluster-ca-key.pem")).map_err(|e| e.to_string())?;
    let mut nodes = Vec::new();
    for i in 0..usize::from(args.nodes) {
        let offset = u16::try_from(j * 100 + i * 10).map_err(|_| "too many nodes")?;
        let base = args
            .base_port
            .checked_add(offset)
            .filter(|b| *b < u16::MAX - 2)
            .ok_or("--base-port too high for this many nodes")?;
        let name = format!("node-{}", i + 1);
        nodes.push((
            name.clone(),
            format!("127.0.0.1:{base}"),
            format!("127.0.0.1:{}", base + 1),
            format!("127.0.0.1:{}", base + 2),
            cell_dir.join(&name),
        ));
    }
    Ok(CellPlan {
        id,
        ca,
        ca_pem,
        nodes,
    })
}

/// The `[federation]` section for a node of `me`: every other cell.
fn federation_section(plans: &[CellPlan], me: &CellId) -> String {
    let mut out = String::new();
    for p in plans.iter().filter(|p| p.id != *me) {
        let addrs: Vec<String> = p.nodes.iter().map(|n| format!("{:?}", n.3)).collect();
        out.push_str(&format!(
            "[[federation.peers]]\ncell = \"{}\"\naddrs = [{}]\nca_file = {:?}\n",
            p.id,
            addrs.join(", "),
            p.ca_pem.display().to_string()
        ));
    }
    out
}

fn spawn_node(
    args: &DevArgs,
    exe: &Path,
    plan: &CellPlan,
    i: usize,
    federation: &str,
) -> Result<DevNode, String> {
    let (name, http, grpc, cluster, dir) = plan.nodes[i].clone();
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls).map_err(|e| format!("{}: {e}", tls.display()))?;
    if !tls.join("node.pem").exists() {
        let cert = plan
            .ca
            .issue_node(
                &plan.id,
                &NodeId::new(name.clone()).map_err(|e| e.to_string())?,
                &["127.0.0.1".to_owned(), "localhost".to_owned()],
            )
            .map_err(|e| e.to_string())?;
        cert.write_to(&tls).map_err(|e| e.to_string())?;
    }
    let join = if i == 0 {
        String::new()
    } else {
        format!("retry_join = [\"{}\"]\n", plan.nodes[0].3)
    };
    let config = format!(
        "node_id = \"{name}\"\ndata_dir = {data:?}\ndisable_mlock = {mlock}\n\
         [listener]\nhttp_addr = \"{http}\"\ngrpc_addr = \"{grpc}\"\n\
         [cell]\nid = \"{cell}\"\n\
         [raft]\ncluster_addr = \"{cluster}\"\n{join}\
         tls_ca_file = {ca:?}\ntls_cert_file = {cert:?}\ntls_key_file = {key:?}\n{federation}",
        cell = plan.id,
        data = dir.join("data").display().to_string(),
        mlock = args.disable_mlock,
        ca = plan.ca_pem.display().to_string(),
        cert = tls.join("node.pem").display().to_string(),
        key = tls.join("node-key.pem").display().to_string(),
    );
    let config_path = dir.join("sigil.toml");
    std::fs::write(&config_path, config).map_err(|e| format!("{}: {e}", config_path.display()))?;
    let log = std::fs::File::create(dir.join("sigil.log")).map_err(|e| e.to_string())?;
    let err = log.try_clone().map_err(|e| e.to_string())?;
    let child = Command::new(exe)
        .arg("server")
        .arg("--config")
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start {} of {}: {e}", name, plan.id))?;
    Ok(DevNode {
        cell: plan.id.to_string(),
        name,
        http,
        grpc,
        cluster,
        dir,
        child,
    })
}

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
    let plans = cell_ids(args)?
        .into_iter()
        .enumerate()
        .map(|(j, id)| plan(args, &root_dir, j, id))
        .collect::<Result<Vec<_>, _>>()?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the sigil binary: {e}"))?;
    let mut nodes = Nodes(Vec::new());
    for p in &plans {
        let federation = federation_section(&plans, &p.id);
        for i in 0..p.nodes.len() {
            nodes.0.push(spawn_node(args, &exe, p, i, &federation)?);
        }
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    for n in &mut nodes.0 {
        wait_up(&client, n).await?;
    }
    let mut cells = Vec::new();
    let mut first_root = String::new();
    for p in &plans {
        let (keys, root) = bring_up(args, &client, &root_dir, &mut nodes, p).await?;
        if first_root.is_empty() {
            first_root = root.clone();
        }
        cells.push(json!({
            "id": p.id.to_string(),
            "root_token": root,
            "unseal_keys": keys,
            "nodes": nodes.0.iter().filter(|n| n.cell == p.id.as_str()).map(|n| json!({
                "id": n.name,
                "http_addr": n.url(),
                "grpc_addr": n.grpc,
                "cluster_addr": n.cluster,
                "data_dir": n.dir.join("data"),
                "pid": n.child.id(),
            })).collect::<Vec<_>>(),
        }));
    }
    let topology = json!({ "cells": cells });
    if let Some(path) = &args.topology_out {
        let text = serde_json::to_string_pretty(&topology).map_err(|e| e.to_string())?;
        write_private(path, &text)?;
    }
    Ok((nodes, first_root, topology, temp))
}

/// Initialises one cell through its founding node, unseals every node with
/// the same key, mounts `secret/` and waits for every node to vote. Each
/// cell gets its own keys and root token.
async fn bring_up(
    args: &DevArgs,
    client: &reqwest::Client,
    root_dir: &Path,
    nodes: &mut Nodes,
    plan: &CellPlan,
) -> Result<(Vec<String>, String), String> {
    let cell = plan.id.as_str();
    let first = format!("http://{}", plan.nodes[0].1);
    let mut init = json!({ "secret_shares": 1, "secret_threshold": 1 });
    if let Some(t) = &args.root_token {
        init["root_token"] = json!(t);
    }
    let status: Value = get(client, &format!("{first}/v1/sys/seal-status")).await?;
    if status["initialized"] == true {
        return Err(format!(
            "cell {cell} in {} is already initialised; unseal it with `sigil operator unseal`, or start with a fresh --data-dir",
            root_dir.display()
        ));
    }
    let out = send(client, "PUT", &format!("{first}/v1/sys/init"), None, &init).await?;
    let keys: Vec<String> = out["keys"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let root = out["root_token"].as_str().unwrap_or_default().to_owned();
    for n in nodes.0.iter_mut().filter(|n| n.cell == cell) {
        let url = n.url();
        poll(n, "the cell's initialisation to replicate", || async {
            get(client, &format!("{url}/v1/sys/seal-status"))
                .await
                .ok()
                .filter(|s| s["initialized"] == true)
        })
        .await?;
        for key in &keys {
            send(
                client,
                "PUT",
                &format!("{url}/v1/sys/unseal"),
                None,
                &json!({ "key": key }),
            )
            .await?;
        }
    }
    send(
        client,
        "POST",
        &format!("{first}/v1/sys/mounts/secret"),
        Some(&root),
        &json!({ "type": "kv", "options": { "version": "2" } }),
    )
    .await?;
    let want = plan.nodes.len();
    let root_ref = root.clone();
    let founder = nodes
        .0
        .iter_mut()
        .find(|n| n.cell == cell)
        .ok_or("no node started")?;
    poll(founder, "every node to join as a voter", || async {
        let c: Value = send(
            client,
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
    Ok((keys, root))
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
