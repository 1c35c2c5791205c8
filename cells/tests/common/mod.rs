//! Helpers shared by the integration tests: in-process nodes and real
//! `sigil server` processes on loopback ports chosen by the OS.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sigil_cell::config::Config;
use sigil_cell::server::{self, Running};

/// Config text for a node in `dir` on ephemeral loopback ports.
pub fn config_text(dir: &Path, extra: &str) -> String {
    format!(
        "node_id = \"test\"\ndata_dir = {:?}\ndisable_mlock = true\n[listener]\nhttp_addr = \"127.0.0.1:0\"\ngrpc_addr = \"127.0.0.1:0\"\n{extra}",
        dir.display().to_string()
    )
}

/// An in-process Shamir node, uninitialised.
pub async fn start_node(dir: &Path) -> Running {
    let config = Config::parse(&config_text(dir, "")).expect("config");
    server::start(&config).await.expect("start")
}

/// A `sigil server` process. Killed on drop.
pub struct ServerProcess {
    pub child: Child,
    pub http_url: String,
    pub grpc_addr: String,
    pub stderr: Arc<Mutex<String>>,
}

impl ServerProcess {
    /// Starts `sigil server --config` with `config`, extra environment, and
    /// waits for its "listening" line.
    pub fn start(config_path: &Path, envs: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sigil"));
        cmd.arg("server")
            .arg("--config")
            .arg(config_path)
            .env("SIGIL_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn sigil server");
        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let err = child.stderr.take().expect("stderr");
            let sink = stderr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    let mut s = sink.lock().expect("lock");
                    s.push_str(&line);
                    s.push('\n');
                }
            });
        }
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("sigil server listening: ") {
                    let _ = tx.send(rest.to_owned());
                }
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "server did not start; stderr:\n{}",
                    stderr.lock().expect("lock")
                );
            }
        };
        let mut http_url = String::new();
        let mut grpc_addr = String::new();
        for part in line.split_whitespace() {
            if let Some(v) = part.strip_prefix("http=") {
                http_url = v.to_owned();
            } else if let Some(v) = part.strip_prefix("grpc=") {
                grpc_addr = v.to_owned();
            }
        }
        Self {
            child,
            http_url,
            grpc_addr,
            stderr,
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("lock").clone()
    }

    /// Stops the process (SIGKILL: nothing acknowledged may depend on a
    /// graceful exit).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `f` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("sigil.toml");
    std::fs::write(&path, config_text(&dir.join("data"), extra)).expect("write config");
    path
}

/// `GET {base}/v1/{path}` over a plain loopback connection; the JSON body.
/// (Blocking and dependency-free, for tests that drive processes.)
pub fn get_json(base: &str, path: &str) -> serde_json::Value {
    request(base, "GET", path, "").1
}

/// `PUT {base}/v1/{path}` with a JSON body; the status and JSON body.
pub fn put_json(base: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    request(base, "PUT", path, body)
}

fn request(base: &str, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    call(base, method, path, None, body)
}

/// One HTTP/1.1 request with an optional `X-Vault-Token`; the status and the
/// JSON body (`Null` when there is none).
pub fn call(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let host = base.strip_prefix("http://").expect("plain http base url");
    let mut s = std::net::TcpStream::connect(host).expect("connect");
    let auth = token
        .map(|t| format!("X-Vault-Token: {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} /v1/{path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut buf = String::new();
    s.read_to_string(&mut buf).expect("read");
    let code = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let body = buf.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    (
        code,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

/// Runs the hvac lifecycle script; fails with its output when it fails.
pub fn run_hvac(args: &[&str]) -> serde_json::Value {
    run_hvac_script("lifecycle.py", args)
}

/// Runs `tests/hvac/<script>`; fails with its output when it fails, else
/// returns the JSON object on its last line.
pub fn run_hvac_script(script: &str, args: &[&str]) -> serde_json::Value {
    let script = format!("{}/tests/hvac/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 must be installed (the README's test command installs it and hvac)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "hvac script failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    serde_json::from_str(stdout.lines().last().unwrap_or("{}")).expect("script's last line is JSON")
}

/// The strings of the JSON array at `v[key]` (e.g. the `keys` of an init answer).
pub fn strings(v: &serde_json::Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} is an array in {v}"))
        .iter()
        .map(|k| k.as_str().expect("string").to_owned())
        .collect()
}

/// Initialises (one share) and unseals the node at `base`; returns the root
/// token.
pub fn init_unseal(base: &str) -> String {
    let (code, out) = put_json(
        base,
        "sys/init",
        r#"{"secret_shares":1,"secret_threshold":1}"#,
    );
    assert_eq!(code, 200, "{out}");
    let key = strings(&out, "keys").remove(0);
    let (code, status) = put_json(base, "sys/unseal", &format!(r#"{{"key":"{key}"}}"#));
    assert_eq!(code, 200, "{status}");
    assert_eq!(status["sealed"], false);
    out["root_token"].as_str().expect("root token").to_owned()
}

/// Like [`call`], with extra request headers; also returns the response
/// headers (lower-cased names).
pub fn call_with_headers(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> (
    u16,
    std::collections::BTreeMap<String, String>,
    serde_json::Value,
) {
    use std::io::{Read, Write};
    let host = base.strip_prefix("http://").expect("plain http base url");
    let mut s = std::net::TcpStream::connect(host).expect("connect");
    let mut extra = token
        .map(|t| format!("X-Vault-Token: {t}\r\n"))
        .unwrap_or_default();
    for (k, v) in headers {
        extra.push_str(&format!("{k}: {v}\r\n"));
    }
    write!(
        s,
        "{method} /v1/{path} HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut buf = String::new();
    s.read_to_string(&mut buf).expect("read");
    let (head, body) = buf.split_once("\r\n\r\n").unwrap_or((&buf, ""));
    let mut lines = head.lines();
    let code = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (
        code,
        headers,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

/// The config of node `name` of cell `test-cell` in `dir`, with a
/// certificate from `ca`, joining through `join` when given; `raft_extra`
/// lines go into its `[raft]` table and `tail` after everything (more
/// tables).
pub fn cell_node_config(
    dir: &Path,
    name: &str,
    ca: &sigil_cell::cluster_pki::CellCa,
    join: Option<&str>,
    raft_extra: &str,
    tail: &str,
) -> Config {
    use sigil_cell::cluster_pki::{CellId, NodeId};
    let cert = ca
        .issue_node(
            &CellId::new("test-cell").expect("cell"),
            &NodeId::new(name).expect("node"),
            &["127.0.0.1".to_owned()],
        )
        .expect("issue");
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls).expect("mkdir");
    let (cert_path, key_path) = cert.write_to(&tls).expect("write cert");
    let ca_path = tls.join("ca.pem");
    std::fs::write(&ca_path, ca.certificate().pem()).expect("write ca");
    let join = join
        .map(|a| format!("retry_join = [\"{a}\"]\n"))
        .unwrap_or_default();
    let text = format!(
        "node_id = \"{name}\"\ndata_dir = {:?}\ndisable_mlock = true\n\
         [listener]\nhttp_addr = \"127.0.0.1:0\"\ngrpc_addr = \"127.0.0.1:0\"\n\
         [cell]\nid = \"test-cell\"\n\
         [raft]\ncluster_addr = \"127.0.0.1:0\"\n{join}{raft_extra}\
         tls_ca_file = {:?}\ntls_cert_file = {:?}\ntls_key_file = {:?}\n{tail}",
        dir.join("data").display().to_string(),
        ca_path.display().to_string(),
        cert_path.display().to_string(),
        key_path.display().to_string(),
    );
    Config::parse(&text).expect("config")
}

/// Waits until every node of `nodes` sees `count` voters in its cell.
pub fn wait_voters(nodes: &[&Running], count: usize) {
    wait_for(Duration::from_secs(30), || {
        nodes
            .iter()
            .all(|n| {
                n.node
                    .cell()
                    .is_some_and(|c| c.membership().membership().voter_ids().count() == count)
            })
            .then_some(())
    })
    .unwrap_or_else(|| panic!("{count} voters never seen by every node"));
}
