//! `sigil secrets enable|disable|list|tune|move` over `sys/mounts` and
//! `sys/remount`, and `sigil auth enable|disable|list` over `sys/auth`, as
//! Vault's commands.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use super::client::Client;
use super::input;
use super::outcome::{Failure, Outcome};
use super::output;
use super::{ClientOpts, Format};

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Mount a secrets engine of TYPE (at -path, default TYPE/).
    Enable(SecretsEnableArgs),
    /// Unmount the engine at PATH, deleting its data.
    Disable(PathArgs),
    /// List mounted secrets engines.
    List(ListArgs),
    /// Change a mount's TTLs, description or options.
    Tune(TuneArgs),
    /// Move a mount and its data from SRC to DST.
    Move(MoveArgs),
}

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Enable an auth method of TYPE (at -path, default TYPE/).
    Enable(MountArgs),
    /// Disable the auth method at PATH, revoking its tokens.
    Disable(PathArgs),
    /// List enabled auth methods.
    List(ListArgs),
}

/// What `secrets enable` and `auth enable` share.
#[derive(Debug, Args)]
pub struct MountArgs {
    /// The engine or method type (`kv`, `transit`, `userpass`...).
    r#type: String,
    /// Where to mount it (default: the type).
    #[arg(long)]
    path: Option<String>,
    #[arg(long)]
    description: Option<String>,
    #[arg(long)]
    default_lease_ttl: Option<String>,
    #[arg(long)]
    max_lease_ttl: Option<String>,
    /// Keep the mount to this cluster (not replicated).
    #[arg(long)]
    local: bool,
    /// Enable the mount in every federated cell; each cell keeps its own
    /// data and keys under it.
    #[arg(long)]
    global: bool,
    #[arg(long)]
    seal_wrap: bool,
    /// `key=value` engine options, repeatable.
    #[arg(long)]
    options: Vec<String>,
    #[command(flatten)]
    opts: ClientOpts,
}

#[derive(Debug, Args)]
pub struct SecretsEnableArgs {
    /// The KV version (`-version=2` is `-options=version=2`).
    #[arg(long)]
    version: Option<u32>,
    #[command(flatten)]
    mount: MountArgs,
}

/// A single PATH argument (disable a mount, an auth method or an audit
/// device).
#[derive(Debug, Args)]
pub struct PathArgs {
    pub(super) path: String,
    #[command(flatten)]
    pub(super) opts: ClientOpts,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Show every column: TTLs, replication, seal wrap, options, UUIDs.
    #[arg(long)]
    detailed: bool,
    #[command(flatten)]
    opts: ClientOpts,
}

#[derive(Debug, Args)]
pub struct TuneArgs {
    path: String,
    #[arg(long)]
    default_lease_ttl: Option<String>,
    #[arg(long)]
    max_lease_ttl: Option<String>,
    #[arg(long)]
    description: Option<String>,
    /// `key=value` engine options, repeatable.
    #[arg(long)]
    options: Vec<String>,
    #[command(flatten)]
    opts: ClientOpts,
}

#[derive(Debug, Args)]
pub struct MoveArgs {
    src: String,
    dst: String,
    #[command(flatten)]
    opts: ClientOpts,
}

/// A mount path as the API keys it: no leading slash, one trailing slash.
pub fn mount_path(p: &str) -> Result<String, String> {
    let p = p.trim_matches('/');
    if p.is_empty() {
        return Err("empty mount path".into());
    }
    Ok(format!("{p}/"))
}

fn ttls(
    default_ttl: &Option<String>,
    max_ttl: &Option<String>,
) -> Result<Map<String, Value>, String> {
    let mut config = Map::new();
    if let Some(t) = default_ttl {
        config.insert(
            "default_lease_ttl".into(),
            json!(input::parse_duration("default-lease-ttl", t)?),
        );
    }
    if let Some(t) = max_ttl {
        config.insert(
            "max_lease_ttl".into(),
            json!(input::parse_duration("max-lease-ttl", t)?),
        );
    }
    Ok(config)
}

/// The mount path and body of `secrets enable`/`auth enable`; `version` is
/// the KV version of `secrets enable -version`.
pub fn enable_body(a: &MountArgs, version: Option<u32>) -> Result<(String, Value), String> {
    let path = mount_path(a.path.as_deref().unwrap_or(&a.r#type))?;
    let mut options = input::parse_pairs("options", &a.options)?;
    if let Some(v) = version {
        options.insert("version".into(), json!(v.to_string()));
    }
    let mut body = json!({
        "type": a.r#type,
        "description": a.description.clone().unwrap_or_default(),
        "config": ttls(&a.default_lease_ttl, &a.max_lease_ttl)?,
        "local": a.local,
        "seal_wrap": a.seal_wrap,
    });
    if !options.is_empty() {
        body["options"] = Value::Object(options);
    }
    if a.global {
        body["global"] = json!(true);
    }
    Ok((path, body))
}

/// The body of `secrets tune`: only what was given.
pub fn tune_body(a: &TuneArgs) -> Result<Value, String> {
    let mut body = ttls(&a.default_lease_ttl, &a.max_lease_ttl)?;
    if let Some(d) = &a.description {
        body.insert("description".into(), json!(d));
    }
    if !a.options.is_empty() {
        body.insert(
            "options".into(),
            Value::Object(input::parse_pairs("options", &a.options)?),
        );
    }
    if body.is_empty() {
        return Err(
            "nothing to tune: give -default-lease-ttl, -max-lease-ttl, -description or -options"
                .into(),
        );
    }
    Ok(Value::Object(body))
}

/// Secrets engines or auth methods, for their messages and API paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Secrets,
    Auth,
}

impl Kind {
    fn api(self) -> &'static str {
        match self {
            Kind::Secrets => "sys/mounts",
            Kind::Auth => "sys/auth",
        }
    }
}

fn ttl_cell(config: &Value, key: &str) -> String {
    match config.get(key).and_then(Value::as_u64) {
        None | Some(0) => "system".into(),
        Some(s) => output::human_duration(s),
    }
}

/// `secrets list`/`auth list` tables, sorted by path, as Vault lays them out.
pub fn mounts_table(mounts: &Map<String, Value>, kind: Kind, detailed: bool) -> String {
    let mut paths: Vec<&String> = mounts
        .iter()
        .filter(|(_, m)| m.get("type").is_some())
        .map(|(p, _)| p)
        .collect();
    paths.sort();
    let cell = |m: &Value, k: &str| m.get(k).map(output::go_value).unwrap_or_default();
    if !detailed {
        let rows = paths
            .iter()
            .map(|p| {
                let m = &mounts[*p];
                vec![
                    (*p).clone(),
                    cell(m, "type"),
                    cell(m, "accessor"),
                    cell(m, "description"),
                ]
            })
            .collect();
        return output::table(&["Path", "Type", "Accessor", "Description"], rows);
    }
    let rows = paths
        .iter()
        .map(|p| {
            let m = &mounts[*p];
            let config = m.get("config").cloned().unwrap_or(Value::Null);
            let local = m.get("local").and_then(Value::as_bool).unwrap_or(false);
            let global = m.get("global").and_then(Value::as_bool).unwrap_or(false);
            let mut row = vec![
                (*p).clone(),
                cell(m, "type"),
                cell(m, "accessor"),
                ttl_cell(&config, "default_lease_ttl"),
                ttl_cell(&config, "max_lease_ttl"),
            ];
            if kind == Kind::Secrets {
                row.push(cell(&config, "force_no_cache"));
            }
            row.extend([
                if global {
                    "global"
                } else if local {
                    "local"
                } else {
                    "replicated"
                }
                .to_owned(),
                cell(m, "seal_wrap"),
                cell(m, "external_entropy_access"),
                cell(m, "options"),
                cell(m, "description"),
                cell(m, "uuid"),
            ]);
            row
        })
        .collect();
    let mut header = vec!["Path", "Plugin", "Accessor", "Default TTL", "Max TTL"];
    if kind == Kind::Secrets {
        header.push("Force No Cache");
    }
    header.extend([
        "Replication",
        "Seal Wrap",
        "External Entropy Access",
        "Options",
        "Description",
        "UUID",
    ]);
    output::table(&header, rows)
}

fn client(opts: &ClientOpts) -> Result<Client, Failure> {
    Ok(Client::from_env(opts.address.as_deref())?)
}

fn success(opts: &ClientOpts, msg: String) -> Outcome {
    if opts.format == Format::Table {
        output::print(&msg);
    }
    Ok(ExitCode::SUCCESS)
}

async fn enable(a: &MountArgs, version: Option<u32>, kind: Kind) -> Outcome {
    let (path, body) = enable_body(a, version)?;
    client(&a.opts)?
        .put(
            &format!("{}/{}", kind.api(), path.trim_end_matches('/')),
            &body,
        )
        .await?;
    let msg = match kind {
        Kind::Secrets => format!(
            "Success! Enabled the {} secrets engine at: {path}",
            a.r#type
        ),
        Kind::Auth => format!("Success! Enabled {} auth method at: {path}", a.r#type),
    };
    success(&a.opts, msg)
}

async fn disable(a: &PathArgs, kind: Kind) -> Outcome {
    let path = mount_path(&a.path)?;
    client(&a.opts)?
        .delete(&format!("{}/{}", kind.api(), path.trim_end_matches('/')))
        .await?;
    let msg = match kind {
        Kind::Secrets => format!("Success! Disabled the secrets engine (if it existed) at: {path}"),
        Kind::Auth => format!("Success! Disabled the auth method (if it existed) at: {path}"),
    };
    success(&a.opts, msg)
}

async fn list(a: &ListArgs, kind: Kind) -> Outcome {
    let body = client(&a.opts)?
        .get(kind.api())
        .await?
        .unwrap_or(Value::Null);
    let mounts = output::legacy_data(&body);
    match a.opts.format {
        Format::Json => output::print(&output::json(&Value::Object(mounts))),
        Format::Table => output::print(&mounts_table(&mounts, kind, a.detailed)),
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run_secrets(cmd: SecretsCommand) -> Outcome {
    match cmd {
        SecretsCommand::Enable(a) => enable(&a.mount, a.version, Kind::Secrets).await,
        SecretsCommand::Disable(a) => disable(&a, Kind::Secrets).await,
        SecretsCommand::List(a) => list(&a, Kind::Secrets).await,
        SecretsCommand::Tune(a) => {
            let body = tune_body(&a)?;
            let path = mount_path(&a.path)?;
            client(&a.opts)?
                .put(&format!("sys/mounts/{path}tune"), &body)
                .await?;
            success(
                &a.opts,
                format!("Success! Tuned the secrets engine at: {path}"),
            )
        }
        SecretsCommand::Move(a) => {
            let (from, to) = (mount_path(&a.src)?, mount_path(&a.dst)?);
            let answer = client(&a.opts)?
                .put("sys/remount", &json!({ "from": from, "to": to }))
                .await?;
            let migration = answer
                .as_ref()
                .and_then(|b| {
                    b.pointer("/data/migration_id")
                        .or_else(|| b.get("migration_id"))
                })
                .and_then(Value::as_str)
                .map(str::to_owned);
            match (a.opts.format, answer, migration) {
                (Format::Json, Some(body), _) => {
                    output::print(&output::json(&body));
                    Ok(ExitCode::SUCCESS)
                }
                (_, _, Some(id)) => success(
                    &a.opts,
                    format!(
                        "Success! Started moving secrets engine {from} to {to}, with migration ID {id}"
                    ),
                ),
                _ => success(
                    &a.opts,
                    format!("Success! Moved secrets engine {from} to: {to}"),
                ),
            }
        }
    }
}

pub async fn run_auth(cmd: AuthCommand) -> Outcome {
    match cmd {
        AuthCommand::Enable(a) => enable(&a, None, Kind::Auth).await,
        AuthCommand::Disable(a) => disable(&a, Kind::Auth).await,
        AuthCommand::List(a) => list(&a, Kind::Auth).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct P {
        #[command(subcommand)]
        cmd: SecretsCommand,
    }

    fn parse(words: &str) -> SecretsCommand {
        let args = super::super::normalize_args(
            std::iter::once("s")
                .chain(words.split_whitespace())
                .map(String::from),
        );
        P::try_parse_from(args).expect("parse").cmd
    }

    #[test]
    fn enable_bodies_follow_vault_flags() {
        let SecretsCommand::Enable(a) = parse(
            "enable -path=secret/ -description=app -version=2 -default-lease-ttl=1h -max-lease-ttl=768h \
             -local -seal-wrap -options=x=y kv",
        ) else {
            panic!("enable")
        };
        let (path, body) = enable_body(&a.mount, a.version).expect("ok");
        assert_eq!(path, "secret/");
        assert_eq!(
            body,
            json!({
                "type": "kv", "description": "app",
                "config": { "default_lease_ttl": 3600, "max_lease_ttl": 2_764_800 },
                "local": true, "seal_wrap": true, "options": { "x": "y", "version": "2" }
            })
        );
        let SecretsCommand::Enable(g) = parse("enable -global -path=payments-db database") else {
            panic!("enable")
        };
        let (path, body) = enable_body(&g.mount, g.version).expect("ok");
        assert_eq!(path, "payments-db/");
        assert_eq!(body["global"], true);
        assert!(!a.mount.global, "not global unless asked");
        let SecretsCommand::Enable(a) = parse("enable transit") else {
            panic!("enable")
        };
        let (path, body) = enable_body(&a.mount, a.version).expect("ok");
        assert_eq!(path, "transit/");
        assert!(body.get("options").is_none());
        let SecretsCommand::Enable(a) = parse("enable -default-lease-ttl=long kv") else {
            panic!("enable")
        };
        assert!(
            enable_body(&a.mount, a.version)
                .expect_err("bad ttl")
                .contains("-default-lease-ttl")
        );
    }

    #[test]
    fn tune_sends_only_what_changes() {
        let SecretsCommand::Tune(a) = parse("tune -max-lease-ttl=2h -options=version=2 secret")
        else {
            panic!("tune")
        };
        assert_eq!(
            tune_body(&a).expect("ok"),
            json!({ "max_lease_ttl": 7200, "options": { "version": "2" } })
        );
        let SecretsCommand::Tune(a) = parse("tune secret") else {
            panic!("tune")
        };
        assert!(
            tune_body(&a)
                .expect_err("nothing")
                .starts_with("nothing to tune")
        );
    }

    #[test]
    fn mount_paths_get_one_trailing_slash() {
        assert_eq!(mount_path("/a/b/").expect("ok"), "a/b/");
        assert!(mount_path("/").is_err());
    }

    fn mounts() -> Map<String, Value> {
        json!({
            "secret/": { "type": "kv", "accessor": "kv_1", "description": "app secrets", "local": false,
                "seal_wrap": false, "external_entropy_access": false, "uuid": "u1",
                "options": { "version": "2" },
                "config": { "default_lease_ttl": 0, "max_lease_ttl": 3600, "force_no_cache": false } },
            "cubbyhole/": { "type": "cubbyhole", "accessor": "cubbyhole_1", "description": "per-token", "local": true,
                "seal_wrap": false, "external_entropy_access": false, "uuid": "u0", "options": null,
                "config": { "default_lease_ttl": 0, "max_lease_ttl": 0, "force_no_cache": false } }
        })
        .as_object()
        .cloned()
        .expect("object")
    }

    #[test]
    fn list_tables_sort_by_path() {
        assert_eq!(
            mounts_table(&mounts(), Kind::Secrets, false),
            "Path          Type         Accessor       Description\n\
             ----          ----         --------       -----------\n\
             cubbyhole/    cubbyhole    cubbyhole_1    per-token\n\
             secret/       kv           kv_1           app secrets\n"
        );
        let detailed = mounts_table(&mounts(), Kind::Secrets, true);
        let lines: Vec<&str> = detailed.lines().collect();
        assert!(lines[0].starts_with(
            "Path          Plugin       Accessor       Default TTL    Max TTL    Force No Cache"
        ));
        assert!(
            lines[2].contains("system         system") && lines[2].contains("local"),
            "{detailed}"
        );
        assert!(
            lines[3].contains("1h")
                && lines[3].contains("replicated")
                && lines[3].contains("map[version:2]")
        );
        assert!(!mounts_table(&mounts(), Kind::Auth, true).contains("Force No Cache"));
    }
}
