//! `sigil status` and `sigil operator ...`.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::client::{CallError, Client};
use super::{ClientOpts, Format};

#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Initialise a node; prints the key shares and root token once.
    Init(InitArgs),
    /// Submit one unseal key share (prompted for when omitted), or -reset.
    Unseal(UnsealArgs),
    /// Seal the node (root token required).
    Seal(ClientOpts),
    /// Replace the unseal (or recovery) keys with a quorum of the current ones.
    Rekey(RekeyArgs),
    /// Generate a new root token with a quorum of unseal (or recovery) keys.
    GenerateRoot(GenerateRootArgs),
    /// Add a keyring term (root token required).
    Rotate(ClientOpts),
    /// Show the active keyring term (root token required).
    KeyStatus(ClientOpts),
    /// Make a cell's CA for the cluster port (offline).
    ClusterCa(super::cluster_certs::CaArgs),
    /// Issue a node certificate from a cell CA (offline).
    ClusterCert(super::cluster_certs::CertArgs),
    /// The cell's Raft membership: list-peers, remove-peer, step-down.
    Raft {
        #[command(subcommand)]
        command: super::raft_ops::RaftCommand,
    },
}

#[derive(Debug, Args)]
pub struct InitArgs {
    #[arg(long, default_value_t = 5)]
    key_shares: u32,
    #[arg(long, default_value_t = 3)]
    key_threshold: u32,
    #[arg(long, default_value_t = 0)]
    recovery_shares: u32,
    #[arg(long, default_value_t = 0)]
    recovery_threshold: u32,
    /// Only report whether the node is initialised (exit 0 yes, 2 no).
    #[arg(long)]
    status: bool,
    #[command(flatten)]
    opts: ClientOpts,
}

#[derive(Debug, Args)]
pub struct UnsealArgs {
    key: Option<String>,
    #[arg(long)]
    reset: bool,
    #[command(flatten)]
    opts: ClientOpts,
}

#[derive(Debug, Args)]
pub struct RekeyArgs {
    key: Option<String>,
    #[arg(long)]
    init: bool,
    #[arg(long)]
    cancel: bool,
    #[arg(long)]
    status: bool,
    #[arg(long)]
    nonce: Option<String>,
    #[arg(long, default_value_t = 5)]
    key_shares: u32,
    #[arg(long, default_value_t = 3)]
    key_threshold: u32,
    /// `barrier` (unseal keys / HSM-wrapped root key) or `recovery`.
    #[arg(long, default_value = "barrier", value_parser = ["barrier", "recovery"])]
    target: String,
    #[command(flatten)]
    opts: ClientOpts,
}

#[derive(Debug, Args)]
pub struct GenerateRootArgs {
    key: Option<String>,
    #[arg(long)]
    init: bool,
    #[arg(long)]
    cancel: bool,
    #[arg(long)]
    status: bool,
    #[arg(long)]
    nonce: Option<String>,
    /// With -init: the one-time password to use. With -decode: the OTP to decode with.
    #[arg(long)]
    otp: Option<String>,
    /// Decode an encoded root token with -otp and print it.
    #[arg(long)]
    decode: Option<String>,
    #[command(flatten)]
    opts: ClientOpts,
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("Error: {msg}");
    ExitCode::from(1)
}

fn client(opts: &ClientOpts) -> Result<Client, ExitCode> {
    Client::from_env(opts.address.as_deref()).map_err(fail)
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Prints `rows` as an aligned two-column table.
fn print_table(rows: &[(&str, String)]) {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    println!("{:width$}    Value", "Key");
    println!("{:width$}    -----", "---");
    for (k, v) in rows {
        println!("{k:width$}    {v}");
    }
}

fn s(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(x)) => x.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn seal_status_rows(v: &Value) -> Vec<(&'static str, String)> {
    let mut rows = vec![
        ("Seal Type", s(v, "type")),
        ("Initialized", s(v, "initialized")),
        ("Sealed", s(v, "sealed")),
        ("Total Shares", s(v, "n")),
        ("Threshold", s(v, "t")),
    ];
    if v.get("sealed") == Some(&Value::Bool(true)) {
        rows.push((
            "Unseal Progress",
            format!("{}/{}", s(v, "progress"), s(v, "t")),
        ));
        rows.push(("Unseal Nonce", s(v, "nonce")));
    }
    rows.push(("Version", s(v, "version")));
    rows.push(("Storage Type", s(v, "storage_type")));
    if v.get("cluster_name").is_some() {
        rows.push(("Cluster Name", s(v, "cluster_name")));
        rows.push(("Cluster ID", s(v, "cluster_id")));
    }
    rows
}

fn sealed_code(v: &Value) -> ExitCode {
    if v.get("sealed") == Some(&Value::Bool(true)) {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

fn show(opts: &ClientOpts, v: &Value, rows: Vec<(&str, String)>) {
    match opts.format {
        Format::Json => print_json(v),
        Format::Table => print_table(&rows),
    }
}

/// `sigil status`: exit 0 unsealed, 2 sealed, 1 error.
pub async fn status(opts: &ClientOpts) -> ExitCode {
    let c = match client(opts) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match c.get("sys/seal-status").await {
        Ok(Some(v)) => {
            show(opts, &v, seal_status_rows(&v));
            sealed_code(&v)
        }
        Ok(None) => fail("empty answer from sys/seal-status"),
        Err(e) => fail(e),
    }
}

pub async fn run(cmd: OperatorCommand) -> ExitCode {
    match cmd {
        OperatorCommand::Init(a) => init(a).await,
        OperatorCommand::Unseal(a) => unseal(a).await,
        OperatorCommand::Seal(o) => simple_write(&o, "sys/seal", "Success! Sealed the node.").await,
        OperatorCommand::Rotate(o) => rotate(&o).await,
        OperatorCommand::KeyStatus(o) => key_status(&o).await,
        OperatorCommand::Rekey(a) => rekey(a).await,
        OperatorCommand::GenerateRoot(a) => generate_root(a).await,
        OperatorCommand::ClusterCa(a) => super::cluster_certs::create_ca(a),
        OperatorCommand::ClusterCert(a) => super::cluster_certs::issue_cert(a),
        OperatorCommand::Raft { command } => super::raft_ops::run(command).await,
    }
}

async fn init(a: InitArgs) -> ExitCode {
    let c = match client(&a.opts) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if a.status {
        return match c.get("sys/init").await {
            Ok(Some(v)) if v.get("initialized") == Some(&Value::Bool(true)) => {
                println!("Sigil is initialized");
                ExitCode::SUCCESS
            }
            Ok(_) => {
                println!("Sigil is not initialized");
                ExitCode::from(2)
            }
            Err(e) => fail(e),
        };
    }
    // An HSM seal takes recovery keys: ask the node which seal it has.
    let seal_type = match c.get("sys/seal-status").await {
        Ok(Some(v)) => s(&v, "type"),
        Ok(None) => String::new(),
        Err(e) => return fail(e),
    };
    let body = if seal_type == "shamir" {
        json!({ "secret_shares": a.key_shares, "secret_threshold": a.key_threshold })
    } else {
        let (rs, rt) = if a.recovery_shares == 0 && a.recovery_threshold == 0 {
            (a.key_shares, a.key_threshold)
        } else {
            (a.recovery_shares, a.recovery_threshold)
        };
        json!({ "recovery_shares": rs, "recovery_threshold": rt })
    };
    let v = match c.put("sys/init", &body).await {
        Ok(Some(v)) => v,
        Ok(None) => return fail("empty answer from sys/init"),
        Err(e) => return fail(e),
    };
    if a.opts.format == Format::Json {
        print_json(&v);
        return ExitCode::SUCCESS;
    }
    let list = |k: &str| -> Vec<String> {
        v.get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    for (i, k) in list("keys_base64").iter().enumerate() {
        println!("Unseal Key {}: {k}", i + 1);
    }
    for (i, k) in list("recovery_keys_base64").iter().enumerate() {
        println!("Recovery Key {}: {k}", i + 1);
    }
    println!();
    println!("Initial Root Token: {}", s(&v, "root_token"));
    println!();
    if seal_type == "shamir" {
        println!(
            "Sigil initialized with {} key shares and a key threshold of {}. The node is sealed:\nsubmit {} of these keys with `sigil operator unseal` to unseal it.",
            a.key_shares, a.key_threshold, a.key_threshold
        );
    } else {
        println!(
            "Sigil initialized with an HSM seal and is unsealed. Recovery keys authorise rekey and generate-root;\nthey cannot decrypt anything. Store them apart from each other."
        );
    }
    ExitCode::SUCCESS
}

fn read_key_from_stdin(prompt: &str) -> Result<String, ExitCode> {
    use std::io::{BufRead, IsTerminal, Write};
    if std::io::stdin().is_terminal() {
        eprint!("{prompt}");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| fail(format!("cannot read the key: {e}")))?;
    let key = line.trim().to_owned();
    if key.is_empty() {
        return Err(fail("no key given"));
    }
    Ok(key)
}

async fn unseal(a: UnsealArgs) -> ExitCode {
    let c = match client(&a.opts) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let body = if a.reset {
        json!({ "reset": true })
    } else {
        let key = match a.key {
            Some(k) => k,
            None => match read_key_from_stdin("Unseal Key: ") {
                Ok(k) => k,
                Err(code) => return code,
            },
        };
        json!({ "key": key })
    };
    match c.put("sys/unseal", &body).await {
        Ok(Some(v)) => {
            show(&a.opts, &v, seal_status_rows(&v));
            sealed_code(&v)
        }
        Ok(None) => fail("empty answer from sys/unseal"),
        Err(e) => fail(e),
    }
}

async fn simple_write(opts: &ClientOpts, path: &str, done: &str) -> ExitCode {
    let c = match client(opts) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match c.put(path, &json!({})).await {
        Ok(_) => {
            if opts.format == Format::Table {
                println!("{done}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

async fn rotate(opts: &ClientOpts) -> ExitCode {
    let c = match client(opts) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(e) = c.put("sys/rotate", &json!({})).await {
        return fail(e);
    }
    match c.get("sys/key-status").await {
        Ok(Some(v)) => {
            let d = v.get("data").cloned().unwrap_or(Value::Null);
            match opts.format {
                Format::Json => print_json(&d),
                Format::Table => {
                    println!("Success! Rotated the keyring.");
                    print_table(&[
                        ("Key Term", s(&d, "term")),
                        ("Install Time", s(&d, "install_time")),
                    ]);
                }
            }
            ExitCode::SUCCESS
        }
        Ok(None) => fail("empty answer from sys/key-status"),
        Err(e) => fail(e),
    }
}

async fn key_status(opts: &ClientOpts) -> ExitCode {
    let c = match client(opts) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match c.get("sys/key-status").await {
        Ok(Some(v)) => {
            let d = v.get("data").cloned().unwrap_or(Value::Null);
            show(
                opts,
                &d,
                vec![
                    ("Key Term", s(&d, "term")),
                    ("Install Time", s(&d, "install_time")),
                    ("Encryption Count", s(&d, "encryptions")),
                ],
            );
            ExitCode::SUCCESS
        }
        Ok(None) => fail("empty answer from sys/key-status"),
        Err(e) => fail(e),
    }
}

async fn rekey(a: RekeyArgs) -> ExitCode {
    let c = match client(&a.opts) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let base = if a.target == "recovery" {
        "sys/rekey-recovery-key"
    } else {
        "sys/rekey"
    };
    let result = if a.cancel {
        c.delete(&format!("{base}/init"))
            .await
            .map(|_| json!({ "cancelled": true }))
    } else if a.init {
        c.put(
            &format!("{base}/init"),
            &json!({ "secret_shares": a.key_shares, "secret_threshold": a.key_threshold }),
        )
        .await
        .map(Option::unwrap_or_default)
    } else if a.status {
        c.get(&format!("{base}/init"))
            .await
            .map(Option::unwrap_or_default)
    } else {
        let Some(nonce) = a.nonce.clone() else {
            return fail(
                "missing -nonce: start with `sigil operator rekey -init` and pass its nonce",
            );
        };
        let key = match a.key.clone() {
            Some(k) => k,
            None => match read_key_from_stdin("Key: ") {
                Ok(k) => k,
                Err(code) => return code,
            },
        };
        c.put(
            &format!("{base}/update"),
            &json!({ "nonce": nonce, "key": key }),
        )
        .await
        .map(Option::unwrap_or_default)
    };
    let v = match result {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    if a.opts.format == Format::Json || a.cancel {
        if a.cancel {
            println!("Success! Canceled rekeying (if it was started)");
        } else {
            print_json(&v);
        }
        return ExitCode::SUCCESS;
    }
    if v.get("complete") == Some(&Value::Bool(true)) {
        let keys: Vec<String> = v
            .get("keys_base64")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        for (i, k) in keys.iter().enumerate() {
            println!("Key {}: {k}", i + 1);
        }
        println!();
        println!("Rekey complete. The previous keys no longer work; distribute the new ones.");
    } else {
        print_table(&[
            ("Nonce", s(&v, "nonce")),
            ("Started", s(&v, "started")),
            (
                "Rekey Progress",
                format!("{}/{}", s(&v, "progress"), s(&v, "required")),
            ),
            ("New Shares", s(&v, "n")),
            ("New Threshold", s(&v, "t")),
        ]);
    }
    ExitCode::SUCCESS
}

async fn generate_root(a: GenerateRootArgs) -> ExitCode {
    if let Some(encoded) = &a.decode {
        let Some(otp) = &a.otp else {
            return fail("-decode needs -otp");
        };
        return match crate::seal::decode_with_otp(encoded, otp) {
            Some(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            None => fail(
                "cannot decode: the encoded token and the otp do not match in length or encoding",
            ),
        };
    }
    let c = match client(&a.opts) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let result = if a.cancel {
        c.delete("sys/generate-root/attempt")
            .await
            .map(|_| json!({}))
    } else if a.init {
        let body = match &a.otp {
            Some(otp) => json!({ "otp": otp }),
            None => json!({}),
        };
        c.put("sys/generate-root/attempt", &body)
            .await
            .map(Option::unwrap_or_default)
    } else if a.status {
        c.get("sys/generate-root/attempt")
            .await
            .map(Option::unwrap_or_default)
    } else {
        let Some(nonce) = a.nonce.clone() else {
            return fail(
                "missing -nonce: start with `sigil operator generate-root -init` and pass its nonce",
            );
        };
        let key = match a.key.clone() {
            Some(k) => k,
            None => match read_key_from_stdin("Key: ") {
                Ok(k) => k,
                Err(code) => return code,
            },
        };
        c.put(
            "sys/generate-root/update",
            &json!({ "nonce": nonce, "key": key }),
        )
        .await
        .map(Option::unwrap_or_default)
    };
    let v = match result {
        Ok(v) => v,
        Err(CallError::Http(h)) => return fail(h.message()),
        Err(e) => return fail(e),
    };
    if a.cancel {
        println!("Success! Root token generation canceled (if it was started)");
        return ExitCode::SUCCESS;
    }
    let mut rows = vec![
        ("Nonce", s(&v, "nonce")),
        ("Started", s(&v, "started")),
        (
            "Progress",
            format!("{}/{}", s(&v, "progress"), s(&v, "required")),
        ),
        ("Complete", s(&v, "complete")),
    ];
    if !s(&v, "otp").is_empty() {
        rows.push(("OTP", s(&v, "otp")));
    }
    rows.push(("OTP Length", s(&v, "otp_length")));
    if !s(&v, "encoded_token").is_empty() {
        rows.push(("Encoded Token", s(&v, "encoded_token")));
    }
    show(&a.opts, &v, rows);
    ExitCode::SUCCESS
}
