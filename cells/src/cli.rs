//! The `sigil` command line.
//!
//! `sigil server`/`sigil dev` run a node; the other commands are clients of
//! the HTTP API, reading `SIGIL_ADDR`/`SIGIL_TOKEN` (falling back to
//! `VAULT_ADDR`/`VAULT_TOKEN`). Flags may be written Vault-style with one dash
//! (`-key-shares 5`). Human output by default, `--format json` for scripts.
//! Exit codes: 0 ok, 1 error, 2 sealed (as `vault status`) or, for the
//! Vault-style client commands (`read`, `write`, `kv`, `token`, `policy`,
//! `secrets`, `auth`, `audit`, `lease`), absent (see `outcome`). Every client
//! command, with examples: `docs/cli.md`.

pub mod audit;
mod audit_devices;
mod client;
mod cluster_certs;
mod dev_cell;
mod federation;
mod generic;
mod incident;
mod input;
mod kv;
mod lease;
mod mounts;
mod operator;
mod outcome;
mod output;
mod policy;
mod raft_ops;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use client::Client;

use outcome::Failure;
use output::Output;

#[derive(Debug, Parser)]
#[command(
    name = "sigil",
    version,
    about = "Sigil: cell-based secrets and key-lifecycle platform"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Json,
}

/// Options every client command takes.
#[derive(Debug, Clone, Args)]
pub struct ClientOpts {
    /// Server address (default: $SIGIL_ADDR, $VAULT_ADDR, http://127.0.0.1:8200).
    #[arg(long, global = true)]
    pub address: Option<String>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Flags of commands that print an answer: `-field` and `-wrap-ttl`, plus
/// the client options.
#[derive(Debug, Clone, Args)]
pub struct SecretOpts {
    #[command(flatten)]
    pub client: ClientOpts,
    /// Print only this field's value, raw (no trailing newline when piped).
    #[arg(long)]
    pub field: Option<String>,
    /// Ask for the answer wrapped in a single-use token living this long
    /// (`X-Vault-Wrap-TTL`; seconds or a duration such as `5m`).
    #[arg(long)]
    pub wrap_ttl: Option<String>,
}

impl SecretOpts {
    pub fn output(&self) -> Output {
        Output::new(self.client.format, self.field.clone())
    }

    /// A client for these options; a bad `-wrap-ttl` fails here, before
    /// anything is sent.
    pub fn client(&self) -> Result<Client, Failure> {
        let wrap = match &self.wrap_ttl {
            Some(t) => Some(input::parse_duration("wrap-ttl", t)?.to_string()),
            None => None,
        };
        Ok(Client::from_env(self.client.address.as_deref())?.wrapping(wrap))
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node from a configuration file.
    Server {
        #[arg(long)]
        config: PathBuf,
    },
    /// Run a single, initialised and unsealed development node.
    Dev(DevArgs),
    /// Seal status of the node (exit code 2 when sealed).
    Status(ClientOpts),
    /// Operator commands: init, unseal, seal, rekey, generate-root, rotate, key-status.
    Operator {
        #[command(subcommand)]
        command: operator::OperatorCommand,
    },
    /// Read PATH (`key=value` pairs become query parameters); exit 2 when absent.
    Read(generic::PathArgs),
    /// Write `key=value` pairs (`key=@file`, `key=-`, or a lone `-` for a JSON object on stdin) to PATH.
    Write(generic::WriteArgs),
    /// Update PATH with a JSON merge patch of `key=value` pairs.
    Patch(generic::WriteArgs),
    /// List the keys under PATH; exit 2 when there are none.
    List(generic::ListArgs),
    /// Delete PATH (`key=value` pairs become query parameters).
    Delete(generic::PathArgs),
    /// Key/value secrets engine (v1 and v2).
    Kv {
        #[command(subcommand)]
        command: kv::KvCommand,
    },
    /// Create, look up, renew and revoke tokens; show capabilities.
    Token {
        #[command(subcommand)]
        command: token::TokenCommand,
    },
    /// ACL policies.
    Policy {
        #[command(subcommand)]
        command: policy::PolicyCommand,
    },
    /// Enable, disable, list, tune and move secrets engines.
    Secrets {
        #[command(subcommand)]
        command: mounts::SecretsCommand,
    },
    /// Enable, disable and list auth methods.
    Auth {
        #[command(subcommand)]
        command: mounts::AuthCommand,
    },
    /// Look up, renew and revoke leases (one, or every lease under a prefix).
    Lease {
        #[command(subcommand)]
        command: lease::LeaseCommand,
    },
    /// Enable, disable and list audit devices.
    Audit {
        #[command(subcommand)]
        command: audit_devices::AuditCommand,
    },
    /// The federation's cells, from this cell's registry.
    Cells {
        #[command(subcommand)]
        command: federation::CellsCommand,
    },
    /// This cell's control-plane replica: sync status and conflicts.
    #[command(name = "control-plane")]
    ControlPlane {
        #[command(subcommand)]
        command: federation::ControlPlaneCommand,
    },
    /// Revoke stolen credentials in every cell; watch and lift revocations.
    Incident {
        #[command(subcommand)]
        command: incident::IncidentCommand,
    },
}

#[derive(Debug, Args)]
pub struct DevArgs {
    #[arg(long, default_value = "127.0.0.1:8200")]
    pub http_addr: String,
    #[arg(long, default_value = "127.0.0.1:8201")]
    pub grpc_addr: String,
    /// Root token to create (default: random).
    #[arg(long)]
    pub root_token: Option<String>,
    /// Keep data here instead of a fresh temporary directory.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Skip mlockall (for hosts without CAP_IPC_LOCK).
    #[arg(long)]
    pub disable_mlock: bool,
    /// Run a cell of this many nodes, as separate processes on loopback
    /// (1 runs a single node in this process).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=7))]
    pub nodes: u8,
    /// The cell's id (with --nodes).
    #[arg(long, default_value = "dev")]
    pub cell: String,
    /// Run several federated cells (comma-separated ids, such as
    /// `eu-west,us-east`), each of --nodes nodes, each initialised and
    /// unsealed on its own; cell j's ports start at BASE+100j.
    #[arg(long, value_delimiter = ',')]
    pub cells: Vec<String>,
    /// First port of a multi-node cell: node i uses BASE+10(i-1) for HTTP,
    /// +1 for gRPC and +2 for its cluster port.
    #[arg(long, default_value_t = 8200)]
    pub base_port: u16,
    /// Write the cell's topology (addresses, pids, keys) as JSON here.
    #[arg(long)]
    pub topology_out: Option<PathBuf>,
}

/// Turns Vault-style `-flag` / `-flag=value` into `--flag` for clap. Single
/// letters (`-h`) and negative numbers are left alone.
pub fn normalize_args(args: impl IntoIterator<Item = String>) -> Vec<String> {
    args.into_iter()
        .enumerate()
        .map(|(i, a)| {
            let looks_long = a.len() > 2
                && a.starts_with('-')
                && !a.starts_with("--")
                && a.as_bytes()[1].is_ascii_alphabetic()
                && a[1..].split('=').next().is_some_and(|name| name.len() > 1);
            if i > 0 && looks_long {
                format!("-{a}")
            } else {
                a
            }
        })
        .collect()
}

/// Runs the CLI; the return value is the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse_from(normalize_args(std::env::args()));
    // One process-wide TLS provider: aws-lc-rs (the node's only crypto
    // library), whatever other providers dependencies compile in.
    let _ = rustls::crypto::CryptoProvider::install_default(
        rustls::crypto::aws_lc_rs::default_provider(),
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    // What `-` reads; nothing is read until a command asks.
    let mut stdin_reader = std::io::stdin();
    let mut stdin = input::Stdin::new(&mut stdin_reader);
    let finish = outcome::finish;
    match cli.command {
        Command::Server { config } => run_server(config).await,
        Command::Dev(args) => run_dev(args).await,
        Command::Status(opts) => operator::status(&opts).await,
        Command::Operator { command } => operator::run(command).await,
        Command::Read(a) => finish(generic::read(a).await),
        Command::Write(a) => finish(generic::write(a, &mut stdin, false).await),
        Command::Patch(a) => finish(generic::write(a, &mut stdin, true).await),
        Command::List(a) => finish(generic::list(a).await),
        Command::Delete(a) => finish(generic::delete(a).await),
        Command::Kv { command } => finish(kv::run(command, &mut stdin).await),
        Command::Token { command } => finish(token::run(command).await),
        Command::Policy { command } => finish(policy::run(command, &mut stdin).await),
        Command::Secrets { command } => finish(mounts::run_secrets(command).await),
        Command::Auth { command } => finish(mounts::run_auth(command).await),
        Command::Audit { command } => finish(audit_devices::run(command, &mut stdin).await),
        Command::Lease { command } => finish(lease::run(command).await),
        Command::Cells { command } => finish(federation::run_cells(command).await),
        Command::ControlPlane { command } => finish(federation::run_control_plane(command).await),
        Command::Incident { command } => finish(incident::run(command).await),
    }
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("Error: {msg}");
    ExitCode::from(1)
}

async fn run_server(path: PathBuf) -> ExitCode {
    let config = match crate::config::Config::load(&path) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let _telemetry = match crate::telemetry::init(&config.log, &config.telemetry) {
        Ok(g) => g,
        Err(e) => return fail(e),
    };
    if let Err(e) = crate::process::harden(config.disable_mlock) {
        return fail(e);
    }
    let running = match crate::server::start(&config).await {
        Ok(r) => r,
        Err(e) => return fail(format!("{e:#}")),
    };
    println!(
        "sigil server listening: http={} grpc={}",
        running.http_url(),
        running.grpc_addr
    );
    running.wait_for_signal().await;
    ExitCode::SUCCESS
}

async fn run_dev(args: DevArgs) -> ExitCode {
    if args.nodes > 1 || !args.cells.is_empty() {
        return dev_cell::run(args).await;
    }
    let (data_dir, _temp) = match &args.data_dir {
        Some(d) => (d.clone(), None),
        None => match tempfile::Builder::new().prefix("sigil-dev-").tempdir() {
            Ok(t) => (t.path().to_path_buf(), Some(t)),
            Err(e) => return fail(format!("cannot create a temporary data directory: {e}")),
        },
    };
    let text = format!(
        "node_id = \"dev\"\ndata_dir = {:?}\ndisable_mlock = {}\n[listener]\nhttp_addr = {:?}\ngrpc_addr = {:?}\n",
        data_dir.display().to_string(),
        args.disable_mlock,
        args.http_addr,
        args.grpc_addr
    );
    let config = match crate::config::Config::parse(&text) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let _telemetry = match crate::telemetry::init(&config.log, &config.telemetry) {
        Ok(g) => g,
        Err(e) => return fail(e),
    };
    if let Err(e) = crate::process::harden(config.disable_mlock) {
        return fail(e);
    }
    let running = match crate::server::start(&config).await {
        Ok(r) => r,
        Err(e) => return fail(format!("{e:#}")),
    };
    match running.dev_bootstrap(args.root_token).await {
        Err(e) => return fail(format!("{e:#}")),
        Ok(None) => {
            println!(
                "Dev node using existing data in {}; unseal it with `sigil operator unseal` if sealed.",
                data_dir.display()
            );
        }
        Ok(Some(out)) => {
            use base64::Engine as _;
            println!("==> Sigil dev server started. Do not use dev mode in production.");
            println!();
            println!("    HTTP API:    {}", running.http_url());
            println!("    gRPC API:    {}", running.grpc_addr);
            println!("    Data dir:    {}", data_dir.display());
            println!();
            println!("    export SIGIL_ADDR='{}'", running.http_url());
            println!();
            println!(
                "Unseal Key: {}",
                base64::engine::general_purpose::STANDARD.encode(out.keys[0].expose())
            );
            println!("Root Token: {}", out.root_token.expose());
            println!();
            println!("Dev mode keeps its single unseal key and root token only in this output.");
        }
    }
    running.wait_for_signal().await;
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_style_flags_become_long_flags() {
        let args = [
            "sigil",
            "operator",
            "init",
            "-key-shares",
            "5",
            "-key-threshold=3",
            "-h",
            "--format",
            "json",
            "-5",
        ]
        .map(String::from);
        assert_eq!(
            normalize_args(args),
            [
                "sigil",
                "operator",
                "init",
                "--key-shares",
                "5",
                "--key-threshold=3",
                "-h",
                "--format",
                "json",
                "-5"
            ]
        );
    }

    #[test]
    fn cli_parses_operator_commands() {
        let parse =
            |s: &str| Cli::try_parse_from(normalize_args(s.split_whitespace().map(String::from)));
        assert!(parse("sigil operator init -key-shares 5 -key-threshold 3").is_ok());
        assert!(parse("sigil operator unseal -reset").is_ok());
        assert!(parse("sigil operator rekey -init -key-shares 3 -key-threshold 2").is_ok());
        assert!(parse("sigil operator generate-root -decode abc -otp xyz").is_ok());
        assert!(parse("sigil status --format json").is_ok());
        assert!(parse("sigil operator frobnicate").is_err());
    }

    fn parse(line: &str) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(normalize_args(line.split_whitespace().map(String::from)))
    }

    #[test]
    fn cli_parses_every_client_command_with_vault_flags() {
        let ok = [
            "sigil read -field=password secret/app",
            "sigil read -format=json -wrap-ttl=5m secret/app ttl=1h",
            "sigil write secret/app a=1 b=@file c=-",
            "sigil write -force secret/app",
            "sigil write secret/app -",
            "sigil patch secret/app a=1",
            "sigil list -format=json secret/",
            "sigil delete secret/app",
            "sigil kv get -mount=secret -version=3 -field=pw app/db",
            "sigil kv get -wrap-ttl=300 secret/app/db",
            "sigil kv put -cas=0 secret/app a=1 b=2",
            "sigil kv put -mount=secret app -",
            "sigil kv patch -method=rw -cas=2 secret/app a=1",
            "sigil kv patch secret/app a=1",
            "sigil kv delete -versions=1,2 secret/app",
            "sigil kv delete secret/app",
            "sigil kv undelete -versions=1 -versions=2 secret/app",
            "sigil kv destroy -versions=3 secret/app",
            "sigil kv list secret/",
            "sigil kv list -mount=secret",
            "sigil kv metadata get secret/app",
            "sigil kv metadata put -max-versions=5 -cas-required -delete-version-after=1h -custom-metadata=a=1 -custom-metadata=b=2 secret/app",
            "sigil kv metadata put -cas-required=false secret/app",
            "sigil kv metadata delete -mount=secret app",
            "sigil token create -policy=a -policy=b -ttl=1h -explicit-max-ttl=2h -period=1h -renewable=false -num-uses=2 -orphan -display-name=x -metadata=k=v -no-default-policy",
            "sigil token create -role=ci -field=token",
            "sigil token create -wrap-ttl=1m",
            "sigil token lookup",
            "sigil token lookup -accessor abc",
            "sigil token lookup hvs.x",
            "sigil token renew -increment=1h",
            "sigil token renew -accessor abc",
            "sigil token revoke -self",
            "sigil token revoke -mode=orphan hvs.x",
            "sigil token revoke -accessor abc",
            "sigil token capabilities secret/data/a",
            "sigil token capabilities hvs.x secret/data/a sys/mounts",
            "sigil policy write dev ./dev.hcl",
            "sigil policy write dev -",
            "sigil policy read -format=json dev",
            "sigil policy list",
            "sigil policy delete dev",
            "sigil secrets enable -path=secret -version=2 kv",
            "sigil secrets enable -description=x -default-lease-ttl=1h -max-lease-ttl=2h -local -seal-wrap -options=a=b -options=c=d transit",
            "sigil secrets disable secret/",
            "sigil secrets list -detailed",
            "sigil secrets tune -default-lease-ttl=1h -max-lease-ttl=2h -description=x -options=version=2 secret",
            "sigil secrets move secret/ kv/",
            "sigil auth enable -path=up -description=users userpass",
            "sigil auth disable up",
            "sigil auth list -detailed -format=json",
            "sigil audit enable -path=a1 -description=main -local file file_path=/tmp/a.log",
            "sigil audit disable a1",
            "sigil audit list -detailed",
        ];
        for line in ok {
            if let Err(e) = parse(line) {
                panic!("{line}: {e}");
            }
        }
        let bad = [
            "sigil kv frobnicate secret/a",
            "sigil kv get",
            "sigil kv patch -method=merge secret/a a=1",
            "sigil kv delete -versions=x secret/a",
            "sigil token revoke -mode=path hvs.x",
            "sigil token capabilities",
            "sigil token create -type=weird",
            "sigil policy write dev",
            "sigil secrets move a",
        ];
        for line in bad {
            assert!(parse(line).is_err(), "{line} should not parse");
        }
    }

    #[test]
    fn vault_flags_reach_the_fields() {
        let Cli {
            command: Command::Read(a),
        } = parse("sigil read -field=pw -wrap-ttl=90s -format=json secret/app").expect("parse")
        else {
            panic!("read")
        };
        let out = a.opts().output();
        assert_eq!(out.field.as_deref(), Some("pw"));
        assert_eq!(out.format, Format::Json);
        assert_eq!(a.opts().wrap_ttl.as_deref(), Some("90s"));
    }

    #[test]
    fn a_bad_wrap_ttl_fails_before_any_request() {
        let Cli {
            command: Command::Read(a),
        } = parse("sigil read -wrap-ttl=soon secret/app").expect("parse")
        else {
            panic!("read")
        };
        let err = a.opts().client().expect_err("bad ttl");
        assert_eq!(
            err.message(),
            "invalid -wrap-ttl value \"soon\": expected a number"
        );
        assert_eq!(err.code(), 1);
    }
}
