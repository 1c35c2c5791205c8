//! The multi-process fixture: a real Sigil cell of `sigil server` processes
//! on loopback, with a fault-injecting [`Proxy`] on every node-to-node link.
//!
//! Node `i` reaches node `j`'s cluster port only through the proxy of link
//! `(i, j)` (the node's `raft.dial_overrides` point there), so a test can cut,
//! delay or hold any one direction between any two nodes. Certificates come
//! from `sigil operator cluster-ca` / `cluster-cert`, as an operator would
//! make them. Nodes are killed with SIGKILL and restarted on the same data
//! directory; a restarted node is unsealed again with the cell's key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::Error;
use crate::proxy::Proxy;

/// How long start-up steps may take before the fixture gives up.
const STARTUP: Duration = Duration::from_secs(60);

/// Settings of a fixture cell.
#[derive(Debug, Clone)]
pub struct CellOptions {
    pub nodes: usize,
    /// The `sigil` binary.
    pub sigil: PathBuf,
    /// Where the nodes' data, configs and logs go.
    pub dir: PathBuf,
    /// `raft.snapshot_every` for every node.
    pub snapshot_every: u64,
    /// `raft.max_staleness_ms`.
    pub max_staleness_ms: u64,
    /// The cell's id (`chaos` unless a federation names its cells).
    pub cell_id: String,
}

impl CellOptions {
    /// A cell named `chaos` of `nodes` nodes.
    pub fn new(nodes: usize, sigil: PathBuf, dir: PathBuf) -> Self {
        Self {
            nodes,
            sigil,
            dir,
            snapshot_every: 10_000,
            max_staleness_ms: 5_000,
            cell_id: "chaos".into(),
        }
    }
}

/// One node of the fixture.
#[derive(Debug)]
pub struct FixtureNode {
    pub name: String,
    pub http: SocketAddr,
    pub cluster: SocketAddr,
    pub dir: PathBuf,
    config: PathBuf,
    child: Option<Child>,
}

impl FixtureNode {
    pub fn url(&self) -> String {
        format!("http://{}", self.http)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("sigil.log")
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

/// A running cell. Dropping it kills every node.
#[derive(Debug)]
pub struct Cell {
    pub nodes: Vec<FixtureNode>,
    /// `(from, to)` → the proxy `from` dials to reach `to`.
    pub links: BTreeMap<(usize, usize), Proxy>,
    pub root_token: String,
    pub unseal_key: String,
    options: CellOptions,
    client: reqwest::Client,
}

impl Drop for Cell {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// A loopback address free now, for a node to listen on for the whole run,
/// restarts included. It is picked below Linux's ephemeral range (32768 and
/// up by default): a port the kernel hands out for `bind(0)` or an outgoing
/// connection could be taken by another test's client while the node that
/// owns it is down, and the node could not come back on it. A port is
/// handed out once per process: two fixtures of tests running at once
/// would otherwise both find a port free before either node binds it.
fn free_port() -> Result<SocketAddr, Error> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut handed_out = HANDED_OUT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let seed = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
    for _ in 0..200 {
        let mut x = seed.wrapping_add(NEXT.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed));
        x = (x ^ (x >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        let port = 20_000 + (x % 12_000) as u16;
        if handed_out.contains(&port) {
            continue;
        }
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            handed_out.insert(port);
            return l.local_addr().map_err(|e| Error::Fixture(e.to_string()));
        }
    }
    let l =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| Error::Fixture(e.to_string()))?;
    l.local_addr().map_err(|e| Error::Fixture(e.to_string()))
}

fn run_sigil(sigil: &Path, args: &[&str]) -> Result<(), Error> {
    let out = Command::new(sigil)
        .args(args)
        .output()
        .map_err(|e| Error::Fixture(format!("cannot run {}: {e}", sigil.display())))?;
    if !out.status.success() {
        return Err(Error::Fixture(format!(
            "sigil {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

impl Cell {
    /// Starts the cell: certificates, proxies, processes; founds it through
    /// node 0, initialises it (one unseal key), unseals every node, mounts
    /// KV version 2 at `secret/`, and waits until every node is a voter.
    pub async fn start(options: CellOptions) -> Result<Self, Error> {
        let mut cell = Self::prepare(options).await?;
        cell.configure("")?;
        cell.launch().await?;
        Ok(cell)
    }

    /// The cell CA's certificate (PEM file).
    pub fn ca_pem(&self) -> PathBuf {
        self.options.dir.join("ca").join("cluster-ca.pem")
    }

    pub fn id(&self) -> &str {
        &self.options.cell_id
    }

    /// Certificates, ports and the node-to-node proxies; nothing runs yet.
    pub async fn prepare(options: CellOptions) -> Result<Self, Error> {
        // reqwest's rustls needs the process-wide provider.
        crate::bench::install_crypto_provider();
        let n = options.nodes;
        let dir = options.dir.clone();
        let ca = dir.join("ca");
        let ca_s = ca.display().to_string();
        run_sigil(
            &options.sigil,
            &[
                "operator",
                "cluster-ca",
                "--cell",
                &options.cell_id,
                "--out",
                &ca_s,
            ],
        )?;
        let mut nodes = Vec::new();
        for i in 0..n {
            let name = format!("node-{}", i + 1);
            let ndir = dir.join(&name);
            let tls = ndir.join("tls").display().to_string();
            run_sigil(
                &options.sigil,
                &[
                    "operator",
                    "cluster-cert",
                    "--cell",
                    &options.cell_id,
                    "--node",
                    &name,
                    "--host",
                    "127.0.0.1",
                    "--ca-dir",
                    &ca_s,
                    "--out",
                    &tls,
                ],
            )?;
            nodes.push(FixtureNode {
                name,
                http: free_port()?,
                cluster: free_port()?,
                config: ndir.join("sigil.toml"),
                dir: ndir,
                child: None,
            });
        }
        let mut links = BTreeMap::new();
        for i in 0..n {
            for (j, target) in nodes.iter().enumerate() {
                if i != j {
                    let proxy = Proxy::start(
                        "127.0.0.1:0"
                            .parse()
                            .map_err(|_| Error::Fixture("addr".into()))?,
                        target.cluster,
                    )
                    .await
                    .map_err(|e| Error::Fixture(e.to_string()))?;
                    links.insert((i, j), proxy);
                }
            }
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::Fixture(e.to_string()))?;
        Ok(Cell {
            nodes,
            links,
            root_token: String::new(),
            unseal_key: String::new(),
            options,
            client,
        })
    }

    /// Writes every node's config; `extra` is appended to each (more tables).
    pub fn configure(&self, extra: &str) -> Result<(), Error> {
        let n = self.nodes.len();
        let (nodes, links, options) = (&self.nodes, &self.links, &self.options);
        let ca = options.dir.join("ca");
        for i in 0..n {
            let overrides: Vec<String> = (0..n)
                .filter(|j| *j != i)
                .map(|j| {
                    format!(
                        "\"{}\" = \"{}\"",
                        nodes[j].cluster,
                        links[&(i, j)].local_addr()
                    )
                })
                .collect();
            let join = if i == 0 {
                String::new()
            } else {
                format!("retry_join = [\"{}\"]\n", nodes[0].cluster)
            };
            let grpc = free_port()?;
            let node = &nodes[i];
            let text = format!(
                "node_id = \"{name}\"\ndata_dir = {data:?}\ndisable_mlock = true\n\
                 [listener]\nhttp_addr = \"{http}\"\ngrpc_addr = \"{grpc}\"\n\
                 [cell]\nid = \"{cell_id}\"\n\
                 [raft]\ncluster_addr = \"{cluster}\"\n{join}\
                 snapshot_every = {snap}\nmax_staleness_ms = {stale}\n\
                 dial_overrides = {{ {overrides} }}\n\
                 tls_ca_file = {cafile:?}\ntls_cert_file = {cert:?}\ntls_key_file = {key:?}\n{extra}",
                cell_id = options.cell_id,
                name = node.name,
                data = node.dir.join("data").display().to_string(),
                http = node.http,
                cluster = node.cluster,
                snap = options.snapshot_every,
                stale = options.max_staleness_ms,
                overrides = overrides.join(", "),
                cafile = ca.join("cluster-ca.pem").display().to_string(),
                cert = node.dir.join("tls/node.pem").display().to_string(),
                key = node.dir.join("tls/node-key.pem").display().to_string(),
            );
            std::fs::write(&node.config, text).map_err(|e| Error::Fixture(e.to_string()))?;
        }
        Ok(())
    }

    /// Starts every node, initialises the cell (one unseal key), unseals
    /// every node, mounts KV version 2 at `secret/` and waits until every
    /// node is a voter.
    pub async fn launch(&mut self) -> Result<(), Error> {
        let n = self.nodes.len();
        for i in 0..n {
            self.spawn(i)?;
        }
        for i in 0..n {
            self.wait_up(i).await?;
        }
        let init = self
            .call(
                0,
                "PUT",
                "sys/init",
                None,
                &json!({"secret_shares": 1, "secret_threshold": 1}),
            )
            .await?
            .1;
        self.unseal_key = init["keys"][0].as_str().unwrap_or_default().to_owned();
        self.root_token = init["root_token"].as_str().unwrap_or_default().to_owned();
        for i in 0..n {
            self.unseal(i).await?;
        }
        let (code, body) = self
            .call(
                0,
                "POST",
                "sys/mounts/secret",
                Some(&self.root_token.clone()),
                &json!({"type": "kv", "options": {"version": "2"}}),
            )
            .await?;
        if code != 204 {
            return Err(Error::Fixture(format!("mounting secret/: {code} {body}")));
        }
        self.wait_voters(n).await?;
        Ok(())
    }

    /// Starts node `i`'s process (not waiting for it).
    pub fn spawn(&mut self, i: usize) -> Result<(), Error> {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.log_path())
            .map_err(|e| Error::Fixture(e.to_string()))?;
        let err = log.try_clone().map_err(|e| Error::Fixture(e.to_string()))?;
        let child = Command::new(&self.options.sigil)
            .arg("server")
            .arg("--config")
            .arg(&node.config)
            .env("SIGIL_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| Error::Fixture(format!("cannot start {}: {e}", node.name)))?;
        node.child = Some(child);
        Ok(())
    }

    /// SIGKILL node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restarts node `i` on its data and unseals it.
    pub async fn restart(&mut self, i: usize) -> Result<(), Error> {
        self.spawn(i)?;
        self.wait_up(i).await?;
        self.unseal(i).await
    }

    /// Waits until node `i`'s API answers.
    pub async fn wait_up(&self, i: usize) -> Result<(), Error> {
        let deadline = Instant::now() + STARTUP;
        loop {
            if self
                .call(i, "GET", "sys/seal-status", None, &Value::Null)
                .await
                .is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Fixture(format!(
                    "{} did not start; log:\n{}",
                    self.nodes[i].name,
                    tail(&self.nodes[i].log())
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Unseals node `i` once it has learnt that the cell is initialised.
    pub async fn unseal(&self, i: usize) -> Result<(), Error> {
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Ok((200, s)) = self
                .call(i, "GET", "sys/seal-status", None, &Value::Null)
                .await
                && s["initialized"] == true
            {
                if s["sealed"] == false {
                    return Ok(());
                }
                let (code, body) = self
                    .call(
                        i,
                        "PUT",
                        "sys/unseal",
                        None,
                        &json!({ "key": self.unseal_key }),
                    )
                    .await?;
                if code == 200 && body["sealed"] == false {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(Error::Fixture(format!(
                    "{} did not unseal",
                    self.nodes[i].name
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `count` voters are configured, as a running node reports.
    pub async fn wait_voters(&self, count: usize) -> Result<(), Error> {
        let deadline = Instant::now() + STARTUP;
        loop {
            for i in self.running() {
                if let Ok(c) = self.configuration(i).await {
                    let voters = c.iter().filter(|s| s["voter"] == true).count();
                    if voters == count {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(Error::Fixture(format!(
                    "the cell did not reach {count} voters"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `sys/storage/raft/configuration` as node `i` sees it.
    pub async fn configuration(&self, i: usize) -> Result<Vec<Value>, Error> {
        let (code, c) = self
            .call(
                i,
                "GET",
                "sys/storage/raft/configuration",
                Some(&self.root_token),
                &Value::Null,
            )
            .await?;
        if code != 200 {
            return Err(Error::Fixture(format!("configuration: {code}")));
        }
        Ok(c["data"]["config"]["servers"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// The index of the node that node `i` believes leads.
    pub async fn leader_seen_by(&self, i: usize) -> Option<usize> {
        let servers = self.configuration(i).await.ok()?;
        let name = servers.iter().find(|s| s["leader"] == true)?["node_id"]
            .as_str()?
            .to_owned();
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Waits for a leader among the nodes in `among` that all of them agree
    /// on, other than `not`.
    pub async fn wait_leader(
        &self,
        among: &[usize],
        not: Option<usize>,
        timeout: Duration,
    ) -> Result<usize, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut seen = Vec::new();
            for &i in among {
                seen.push(self.leader_seen_by(i).await);
            }
            if let Some(Some(l)) = seen.first()
                && seen.iter().all(|s| *s == Some(*l))
                && Some(*l) != not
                && among.contains(l)
            {
                return Ok(*l);
            }
            if Instant::now() > deadline {
                return Err(Error::Fixture(format!(
                    "no agreed leader among {among:?}: {seen:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_running())
            .collect()
    }

    /// Cuts every link between `group` and the other nodes, both ways.
    pub fn isolate(&self, group: &[usize]) {
        for ((from, to), p) in &self.links {
            if group.contains(from) != group.contains(to) {
                p.faults().partition();
            }
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        for p in self.links.values() {
            p.faults().heal();
            p.faults().set_delay(Duration::ZERO);
        }
    }

    /// Delays every link into node `to`.
    pub fn delay_into(&self, to: usize, delay: Duration) {
        for ((_, t), p) in &self.links {
            if *t == to {
                p.faults().set_delay(delay);
            }
        }
    }

    /// One HTTP call to node `i`: the status and the JSON body (`Null` when
    /// there is none).
    pub async fn call(
        &self,
        i: usize,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> Result<(u16, Value), Error> {
        self.call_with(i, method, path, token, &[], body)
            .await
            .map(|(c, _, b)| (c, b))
    }

    /// [`Cell::call`] that must answer `want`; the body, or an error
    /// naming the call and what came back.
    pub async fn expect(
        &self,
        i: usize,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &Value,
        want: u16,
    ) -> Result<Value, Error> {
        let (code, out) = self.call(i, method, path, token, body).await?;
        if code == want {
            Ok(out)
        } else {
            Err(Error::Fixture(format!("{method} {path}: {code} {out}")))
        }
    }

    /// Logs in through AppRole `role` of the mount at `auth/<mount>/` (as
    /// root, fetching its role ID and a new secret ID) and returns the
    /// client token.
    pub async fn approle_login(&self, mount: &str, role: &str) -> Result<String, Error> {
        approle_login(
            &self.client,
            &self.nodes[0].url(),
            &self.root_token,
            mount,
            role,
        )
        .await
    }

    /// Like [`Cell::call`], with extra headers; also returns `X-Sigil-Index`.
    pub async fn call_with(
        &self,
        i: usize,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, String)],
        body: &Value,
    ) -> Result<(u16, u64, Value), Error> {
        let url = format!("{}/v1/{path}", self.nodes[i].url());
        request(&self.client, &url, method, token, headers, body).await
    }

    /// The process id of node `i`, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(std::process::Child::id)
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// One HTTP call to a node's API at `url`: the status, `X-Sigil-Index`, and
/// the body as JSON (`Null` when it is not).
pub async fn request(
    client: &reqwest::Client,
    url: &str,
    method: &str,
    token: Option<&str>,
    headers: &[(&str, String)],
    body: &Value,
) -> Result<(u16, u64, Value), Error> {
    let method = reqwest::Method::from_bytes(method.as_bytes())
        .map_err(|e| Error::Fixture(e.to_string()))?;
    let mut req = client.request(method, url);
    if let Some(t) = token {
        req = req.header("X-Vault-Token", t);
    }
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    if !body.is_null() {
        req = req.json(body);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| Error::Fixture(format!("{url}: {e}")))?;
    let code = resp.status().as_u16();
    let index = resp
        .headers()
        .get("x-sigil-index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let text = resp
        .text()
        .await
        .map_err(|e| Error::Fixture(e.to_string()))?;
    Ok((
        code,
        index,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    ))
}

/// Logs in through AppRole `role` of the mount at `auth/<mount>/` of the
/// node at `base` (as `root`, fetching its role ID and a new secret ID)
/// and returns the client token.
pub async fn approle_login(
    client: &reqwest::Client,
    base: &str,
    root: &str,
    mount: &str,
    role: &str,
) -> Result<String, Error> {
    let call = async |method: &str, path: String, token: Option<&str>, body: &Value| {
        let url = format!("{base}/v1/{path}");
        match request(client, &url, method, token, &[], body).await? {
            (200, _, out) => Ok(out),
            (code, _, out) => Err(Error::Fixture(format!("{method} {path}: {code} {out}"))),
        }
    };
    let id = call(
        "GET",
        format!("auth/{mount}/role/{role}/role-id"),
        Some(root),
        &Value::Null,
    )
    .await?;
    let secret = call(
        "POST",
        format!("auth/{mount}/role/{role}/secret-id"),
        Some(root),
        &json!({}),
    )
    .await?;
    let body = json!({"role_id": id["data"]["role_id"], "secret_id": secret["data"]["secret_id"]});
    let auth = call("POST", format!("auth/{mount}/login"), None, &body).await?;
    auth["auth"]["client_token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| Error::Fixture(format!("no token in {auth}")))
}
