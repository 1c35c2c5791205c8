//! `sigil kv ...`: the key/value engine, either version, as Vault's `kv`
//! commands.
//!
//! Like Vault's CLI, each command first asks the node which mount holds the
//! path and which KV version it runs (`GET sys/internal/ui/mounts/PATH`:
//! `data.path`, `data.options.version`), then rewrites the path: version 1
//! uses `MOUNT/KEY`, version 2 `MOUNT/data/KEY`, `metadata/`, `delete/`,
//! `undelete/`, `destroy/`.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use super::client::{CallError, Client};
use super::input::{self, Stdin};
use super::outcome::{self, Failure, Outcome};
use super::output::{self, Output, emit};
use super::{Format, SecretOpts};

#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Read a secret (the latest version, or -version=N).
    Get(GetArgs),
    /// Write a secret: `key=value` pairs, `key=@file`, `key=-`, or `-` for a JSON object on stdin.
    Put(PutArgs),
    /// Update some keys of a secret (v2): a JSON merge patch, or -method=rw to read then write.
    Patch(PatchArgs),
    /// Delete the latest version (or -versions=1,2; v2 keeps them recoverable).
    Delete(VersionsArgs),
    /// Recover deleted versions (v2, -versions required).
    Undelete(VersionsArgs),
    /// Destroy versions for good (v2, -versions required).
    Destroy(VersionsArgs),
    /// List the keys under a path.
    List(ListArgs),
    /// A secret's metadata and versions (v2).
    Metadata {
        #[command(subcommand)]
        command: MetadataCommand,
    },
}

impl KvCommand {
    /// The v2 endpoint the command's main request goes to (on v1 every
    /// command uses the plain path).
    pub fn endpoint(&self) -> Endpoint {
        match self {
            KvCommand::Get(_) | KvCommand::Put(_) | KvCommand::Patch(_) => Endpoint::Data,
            KvCommand::Delete(a) if a.versions.is_empty() => Endpoint::Data,
            KvCommand::Delete(_) => Endpoint::Delete,
            KvCommand::Undelete(_) => Endpoint::Undelete,
            KvCommand::Destroy(_) => Endpoint::Destroy,
            KvCommand::List(_) | KvCommand::Metadata { .. } => Endpoint::Metadata,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum MetadataCommand {
    /// Show the metadata and every version's state.
    Get(KeyArgs),
    /// Set max versions, check-and-set, automatic deletion, custom metadata.
    Put(MetadataPutArgs),
    /// Delete the secret: metadata and every version.
    Delete(KeyArgs),
}

/// Where the secret is: `-mount=NAME KEY`, or `MOUNT/KEY`.
#[derive(Debug, Clone, Args)]
pub struct Location {
    /// The KV mount; the path argument is then a key inside it.
    #[arg(long)]
    mount: Option<String>,
}

#[derive(Debug, Args)]
pub struct KeyArgs {
    path: String,
    #[command(flatten)]
    at: Location,
    #[command(flatten)]
    opts: SecretOpts,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// A path (or, with -mount, a key prefix; empty for the mount's root).
    #[arg(default_value = "")]
    path: String,
    #[command(flatten)]
    at: Location,
    #[command(flatten)]
    opts: SecretOpts,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    path: String,
    /// The version to read (v2); the latest when omitted.
    #[arg(long)]
    version: Option<u64>,
    #[command(flatten)]
    at: Location,
    #[command(flatten)]
    opts: SecretOpts,
}

#[derive(Debug, Args)]
pub struct PutArgs {
    path: String,
    data: Vec<String>,
    /// Check-and-set (v2): write only if the current version is N (0: only if absent).
    #[arg(long)]
    cas: Option<u64>,
    #[command(flatten)]
    at: Location,
    #[command(flatten)]
    opts: SecretOpts,
}

#[derive(Debug, Args)]
pub struct PatchArgs {
    path: String,
    data: Vec<String>,
    /// Check-and-set: patch only if the current version is N.
    #[arg(long)]
    cas: Option<u64>,
    /// `patch` (an HTTP PATCH, the default) or `rw` (read, merge, write with cas).
    #[arg(long, default_value = "patch", value_parser = ["patch", "rw"])]
    method: String,
    #[command(flatten)]
    at: Location,
    #[command(flatten)]
    opts: SecretOpts,
}

#[derive(Debug, Args)]
pub struct VersionsArgs {
    path: String,
    /// Versions, comma-separated or repeated.
    #[arg(long, value_delimiter = ',')]
    versions: Vec<u64>,
    #[command(flatten)]
    at: Location,
    #[command(flatten)]
    opts: SecretOpts,
}

#[derive(Debug, Args)]
pub struct MetadataPutArgs {
    path: String,
    /// Versions to keep (0: the mount's setting).
    #[arg(long)]
    max_versions: Option<u64>,
    /// Require check-and-set on every write (`-cas-required=false` to lift).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    cas_required: Option<bool>,
    /// Delete versions this long after they are written (0: never).
    #[arg(long)]
    delete_version_after: Option<String>,
    /// `key=value`, repeatable.
    #[arg(long)]
    custom_metadata: Vec<String>,
    #[command(flatten)]
    at: Location,
    #[command(flatten)]
    opts: SecretOpts,
}

/// Which endpoint of a KV v2 mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Data,
    Metadata,
    Delete,
    Undelete,
    Destroy,
}

impl Endpoint {
    fn segment(self) -> &'static str {
        match self {
            Endpoint::Data => "data",
            Endpoint::Metadata => "metadata",
            Endpoint::Delete => "delete",
            Endpoint::Undelete => "undelete",
            Endpoint::Destroy => "destroy",
        }
    }
}

/// A secret's place: its mount (no slashes at the ends), its key in the
/// mount, and the mount's KV version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub mount: String,
    pub key: String,
    pub version: u8,
}

impl Target {
    /// The path to ask the node about (`sys/internal/ui/mounts/...`).
    pub fn preflight_path(mount_flag: Option<&str>, path: &str) -> String {
        let p = match mount_flag {
            Some(m) => m.trim_matches('/'),
            None => path.trim_matches('/'),
        };
        format!("sys/internal/ui/mounts/{p}")
    }

    /// From `-mount` or the path, and the preflight answer (`None` when the
    /// node has no such endpoint: then version 1, and the mount is the
    /// flag or the first segment of the path).
    pub fn resolve(
        mount_flag: Option<&str>,
        path: &str,
        preflight: Option<&Value>,
    ) -> Result<Self, String> {
        let path = path.trim_matches('/');
        let data = preflight.and_then(|p| p.get("data"));
        let version = match data.and_then(|d| d.pointer("/options/version")) {
            Some(Value::String(v)) => v.parse::<u8>().unwrap_or(1),
            Some(Value::Number(n)) => n.as_u64().and_then(|n| u8::try_from(n).ok()).unwrap_or(1),
            _ => 1,
        };
        let served_mount = data
            .and_then(|d| d.get("path"))
            .and_then(Value::as_str)
            .map(|m| m.trim_matches('/').to_owned())
            .filter(|m| !m.is_empty());
        if let Some(flag) = mount_flag {
            let mount = served_mount.unwrap_or_else(|| flag.trim_matches('/').to_owned());
            if mount.is_empty() {
                return Err("-mount must name a mount".into());
            }
            return Ok(Self {
                mount,
                key: path.to_owned(),
                version,
            });
        }
        let (mount, key) = match served_mount {
            Some(m) if path == m => (m, String::new()),
            Some(m) => match path.strip_prefix(&format!("{m}/")) {
                Some(rest) => (m, rest.to_owned()),
                None => {
                    return Err(format!(
                        "the node placed {path:?} in mount {m:?}, which is not a prefix of it"
                    ));
                }
            },
            None => match path.split_once('/') {
                Some((m, k)) => (m.to_owned(), k.to_owned()),
                None => (path.to_owned(), String::new()),
            },
        };
        if mount.is_empty() {
            return Err("missing path: give MOUNT/KEY or -mount=MOUNT KEY".into());
        }
        Ok(Self {
            mount,
            key,
            version,
        })
    }

    pub fn is_v2(&self) -> bool {
        self.version >= 2
    }

    /// The API path of `endpoint`: `MOUNT/KEY` on v1, `MOUNT/SEGMENT/KEY`
    /// on v2.
    pub fn api_path(&self, endpoint: Endpoint) -> String {
        let mut p = self.mount.clone();
        if self.is_v2() {
            p.push('/');
            p.push_str(endpoint.segment());
        }
        if !self.key.is_empty() {
            p.push('/');
            p.push_str(&self.key);
        }
        p
    }

    fn require_v2(&self, what: &str) -> Result<(), Failure> {
        if self.is_v2() {
            Ok(())
        } else {
            Err(Failure::Invalid(format!(
                "{what} needs a KV version 2 mount; {}/ is version 1",
                self.mount
            )))
        }
    }
}

/// Asks the node where `path` lives. Never wrapped: the wrap TTL is for the
/// command's own request.
async fn locate(client: &Client, at: &Location, path: &str) -> Result<Target, Failure> {
    let plain = client.clone().wrapping(None);
    let probe = Target::preflight_path(at.mount.as_deref(), path);
    let answer = match plain.get(&probe).await {
        Ok(v) => v,
        Err(e) if outcome::is_not_found(&e) => None,
        Err(CallError::Http(h)) if h.status == 403 => {
            return Err(Failure::Invalid(format!(
                "permission denied asking which mount holds {path:?} ({probe}): the token's policies must allow it"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    Ok(Target::resolve(at.mount.as_deref(), path, answer.as_ref())?)
}

/// The body of a v2 write: `{"data": ..., "options": {"cas": N}}`; a v1
/// write is the data itself.
pub fn write_body(target: &Target, data: Map<String, Value>, cas: Option<u64>) -> Value {
    if !target.is_v2() {
        return Value::Object(data);
    }
    let mut body = json!({ "data": data });
    if let Some(cas) = cas {
        body["options"] = json!({ "cas": cas });
    }
    body
}

/// `-method=rw`: the current data with the patch's keys replaced.
pub fn merged(current: &Value, patch: Map<String, Value>) -> Map<String, Value> {
    let mut out = current.as_object().cloned().unwrap_or_default();
    for (k, v) in patch {
        out.insert(k, v);
    }
    out
}

/// The body of `kv metadata put`: only the settings given.
pub fn metadata_body(a: &MetadataPutArgs) -> Result<Value, String> {
    let mut body = Map::new();
    if let Some(n) = a.max_versions {
        body.insert("max_versions".into(), json!(n));
    }
    if let Some(b) = a.cas_required {
        body.insert("cas_required".into(), json!(b));
    }
    if let Some(d) = &a.delete_version_after {
        body.insert(
            "delete_version_after".into(),
            json!(input::parse_duration("delete-version-after", d)?),
        );
    }
    if !a.custom_metadata.is_empty() {
        body.insert(
            "custom_metadata".into(),
            Value::Object(input::parse_pairs("custom-metadata", &a.custom_metadata)?),
        );
    }
    Ok(Value::Object(body))
}

/// Metadata rows as Vault shows them: an empty `deletion_time` is `n/a`.
fn metadata_rows(meta: &Value) -> Vec<(String, String)> {
    output::data_rows(meta)
        .into_iter()
        .map(|(k, v)| {
            if k == "deletion_time" && v.is_empty() {
                (k, "n/a".into())
            } else {
                (k, v)
            }
        })
        .collect()
}

/// `== Secret Path ==` then `== Metadata ==` sections (a v2 write or read).
pub fn path_and_metadata(path: &str, meta: &Value) -> String {
    format!(
        "{}\n{}",
        output::section("Secret Path", &format!("{path}\n")),
        output::section("Metadata", &output::kv_table(&metadata_rows(meta)))
    )
}

/// A v2 read as Vault's `kv get` shows it: path, metadata, then data.
pub fn v2_get_table(path: &str, body: &Value) -> String {
    let meta = body.pointer("/data/metadata").unwrap_or(&Value::Null);
    let data = body.pointer("/data/data").unwrap_or(&Value::Null);
    format!(
        "{}\n{}",
        path_and_metadata(path, meta),
        output::section("Data", &output::kv_table(&output::data_rows(data)))
    )
}

/// `kv metadata get`: the settings, then each version's state.
pub fn metadata_table(path: &str, body: &Value) -> String {
    let data = body.get("data").cloned().unwrap_or(Value::Null);
    let mut settings = data.as_object().cloned().unwrap_or_default();
    let versions = settings.remove("versions").unwrap_or(Value::Null);
    let mut out = format!(
        "{}\n{}",
        output::section("Metadata Path", &format!("{path}\n")),
        output::section(
            "Metadata",
            &output::kv_table(&metadata_rows(&Value::Object(settings)))
        )
    );
    if let Some(vs) = versions.as_object() {
        let mut numbers: Vec<(u64, &String)> = vs
            .keys()
            .map(|k| (k.parse().unwrap_or(u64::MAX), k))
            .collect();
        numbers.sort();
        for (_, k) in numbers {
            out.push('\n');
            out.push_str(&output::section(
                &format!("Version {k}"),
                &output::kv_table(&metadata_rows(&vs[k])),
            ));
        }
    }
    out
}

fn success(out: &Output, msg: String) {
    if out.format == Format::Table && out.field.is_none() {
        output::print(&msg);
    }
}

fn is_wrapped(body: &Value) -> bool {
    body.get("wrap_info").is_some_and(|w| !w.is_null())
}

pub async fn run(cmd: KvCommand, stdin: &mut Stdin<'_>) -> Outcome {
    let at = cmd.endpoint();
    match cmd {
        KvCommand::Get(a) => get(a, at).await,
        KvCommand::Put(a) => put(a, at, stdin).await,
        KvCommand::Patch(a) => patch(a, at, stdin).await,
        KvCommand::Delete(a) => delete(a, at).await,
        KvCommand::Undelete(a) | KvCommand::Destroy(a) => versions_op(a, at).await,
        KvCommand::List(a) => list(a, at).await,
        KvCommand::Metadata { command } => match command {
            MetadataCommand::Get(a) => metadata_get(a, at).await,
            MetadataCommand::Put(a) => metadata_put(a, at).await,
            MetadataCommand::Delete(a) => metadata_delete(a, at).await,
        },
    }
}

async fn get(a: GetArgs, endpoint: Endpoint) -> Outcome {
    let client = a.opts.client()?;
    let out = a.opts.output();
    let target = locate(&client, &a.at, &a.path).await?;
    let mut path = target.api_path(endpoint);
    if let Some(v) = a.version {
        target.require_v2("-version")?;
        path = format!("{path}?version={v}");
    }
    let shown = target.api_path(endpoint);
    let body = match client.get(&path).await {
        Ok(Some(body)) => body,
        Ok(None) => return outcome::absent(&shown),
        Err(CallError::Http(h)) if h.status == 404 => {
            // A deleted or destroyed version still answers its metadata.
            if target.is_v2() && out.field.is_none() && h.body.pointer("/data/metadata").is_some() {
                match out.format {
                    Format::Json => output::print(&output::json(&h.body)),
                    Format::Table => {
                        let meta = h.body.pointer("/data/metadata").unwrap_or(&Value::Null);
                        output::print(&path_and_metadata(&shown, meta));
                    }
                }
            }
            return outcome::absent(&shown);
        }
        Err(e) => return Err(e.into()),
    };
    let text = if is_wrapped(&body) || !target.is_v2() {
        out.secret(&body)?
    } else if out.field.is_some() {
        let data = body.pointer("/data/data").cloned().unwrap_or(Value::Null);
        out.secret_with_data(&body, &data)?
    } else {
        match out.format {
            Format::Json => output::json(&body),
            Format::Table => v2_get_table(&shown, &body),
        }
    };
    emit(&out, &text);
    Ok(ExitCode::SUCCESS)
}

/// Shows the answer of a v2 write (its metadata) or a v1 success line.
fn show_write(out: &Output, shown: &str, answer: Option<Value>) -> Outcome {
    match answer {
        Some(body) if is_wrapped(&body) || out.field.is_some() || out.format == Format::Json => {
            emit(out, &out.secret(&body)?);
        }
        Some(body) => {
            let meta = body.get("data").unwrap_or(&Value::Null);
            output::print(&path_and_metadata(shown, meta));
        }
        None => success(out, format!("Success! Data written to: {shown}")),
    }
    Ok(ExitCode::SUCCESS)
}

async fn put(a: PutArgs, endpoint: Endpoint, stdin: &mut Stdin<'_>) -> Outcome {
    let data = input::parse_data(&a.data, stdin)?;
    if data.is_empty() {
        return Err("must supply data".into());
    }
    let client = a.opts.client()?;
    let out = a.opts.output();
    let target = locate(&client, &a.at, &a.path).await?;
    if a.cas.is_some() {
        target.require_v2("-cas")?;
    }
    let path = target.api_path(endpoint);
    let answer = client.put(&path, &write_body(&target, data, a.cas)).await?;
    show_write(&out, &path, answer)
}

async fn patch(a: PatchArgs, endpoint: Endpoint, stdin: &mut Stdin<'_>) -> Outcome {
    let data = input::parse_data(&a.data, stdin)?;
    if data.is_empty() {
        return Err("must supply data".into());
    }
    let client = a.opts.client()?;
    let out = a.opts.output();
    let target = locate(&client, &a.at, &a.path).await?;
    target.require_v2("kv patch")?;
    let path = target.api_path(endpoint);
    let answer = if a.method == "rw" {
        // Read then write with check-and-set, so a concurrent writer makes
        // this fail instead of being overwritten.
        let plain = client.clone().wrapping(None);
        let current = match plain.get(&path).await {
            Ok(Some(body)) => body,
            Ok(None) => return outcome::absent(&path),
            Err(e) if outcome::is_not_found(&e) => return outcome::absent(&path),
            Err(e) => return Err(e.into()),
        };
        let version = current
            .pointer("/data/metadata/version")
            .and_then(Value::as_u64);
        let merged = merged(current.pointer("/data/data").unwrap_or(&Value::Null), data);
        client
            .put(&path, &write_body(&target, merged, a.cas.or(version)))
            .await?
    } else {
        match client.patch(&path, &write_body(&target, data, a.cas)).await {
            Err(e) if outcome::is_not_found(&e) => return outcome::absent(&path),
            other => other?,
        }
    };
    show_write(&out, &path, answer)
}

async fn delete(a: VersionsArgs, endpoint: Endpoint) -> Outcome {
    let client = a.opts.client()?;
    let out = a.opts.output();
    let target = locate(&client, &a.at, &a.path).await?;
    let path = target.api_path(endpoint);
    if a.versions.is_empty() {
        client.delete(&path).await?;
    } else {
        target.require_v2("-versions")?;
        client
            .put(&path, &json!({ "versions": a.versions }))
            .await?;
    }
    success(
        &out,
        format!("Success! Data deleted (if it existed) at: {path}"),
    );
    Ok(ExitCode::SUCCESS)
}

async fn versions_op(a: VersionsArgs, endpoint: Endpoint) -> Outcome {
    let name = endpoint.segment();
    if a.versions.is_empty() {
        return Err(Failure::Invalid(format!(
            "no versions given: use -versions=N[,M...] to say which to {name}"
        )));
    }
    let client = a.opts.client()?;
    let out = a.opts.output();
    let target = locate(&client, &a.at, &a.path).await?;
    target.require_v2(&format!("kv {name}"))?;
    let path = target.api_path(endpoint);
    client
        .put(&path, &json!({ "versions": a.versions }))
        .await?;
    success(&out, format!("Success! Data written to: {path}"));
    Ok(ExitCode::SUCCESS)
}

async fn list(a: ListArgs, endpoint: Endpoint) -> Outcome {
    let client = a.opts.client()?;
    let target = locate(&client, &a.at, &a.path).await?;
    let path = target.api_path(endpoint);
    match client.list(&path).await {
        Ok(Some(body)) if is_wrapped(&body) || a.opts.field.is_some() => {
            let out = a.opts.output();
            emit(&out, &out.secret(&body)?);
            Ok(ExitCode::SUCCESS)
        }
        Ok(Some(body)) if body.pointer("/data/keys").is_some() => {
            output::print(&output::list(&body, a.opts.client.format));
            Ok(ExitCode::SUCCESS)
        }
        Ok(_) => outcome::absent(&path),
        Err(e) if outcome::is_not_found(&e) => outcome::absent(&path),
        Err(e) => Err(e.into()),
    }
}

async fn metadata_get(a: KeyArgs, endpoint: Endpoint) -> Outcome {
    let client = a.opts.client()?;
    let out = a.opts.output();
    let target = locate(&client, &a.at, &a.path).await?;
    target.require_v2("kv metadata")?;
    let path = target.api_path(endpoint);
    let body = match client.get(&path).await {
        Ok(Some(body)) => body,
        Ok(None) => return outcome::absent(&path),
        Err(e) if outcome::is_not_found(&e) => return outcome::absent(&path),
        Err(e) => return Err(e.into()),
    };
    let text = if is_wrapped(&body) || out.field.is_some() || out.format == Format::Json {
        out.secret(&body)?
    } else {
        metadata_table(&path, &body)
    };
    emit(&out, &text);
    Ok(ExitCode::SUCCESS)
}

async fn metadata_put(a: MetadataPutArgs, endpoint: Endpoint) -> Outcome {
    let body = metadata_body(&a)?;
    let client = a.opts.client()?;
    let out = a.opts.output();
    let target = locate(&client, &a.at, &a.path).await?;
    target.require_v2("kv metadata")?;
    let path = target.api_path(endpoint);
    match client.put(&path, &body).await? {
        Some(answer) => emit(&out, &out.secret(&answer)?),
        None => success(&out, format!("Success! Data written to: {path}")),
    }
    Ok(ExitCode::SUCCESS)
}

async fn metadata_delete(a: KeyArgs, endpoint: Endpoint) -> Outcome {
    let client = a.opts.client()?;
    let out = a.opts.output();
    let target = locate(&client, &a.at, &a.path).await?;
    target.require_v2("kv metadata")?;
    let path = target.api_path(endpoint);
    client.delete(&path).await?;
    success(
        &out,
        format!("Success! Data deleted (if it existed) at: {path}"),
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ui_mounts(path: &str, version: Option<&str>) -> Value {
        let options = match version {
            Some(v) => json!({ "version": v }),
            None => Value::Null,
        };
        json!({ "data": { "path": path, "type": "kv", "options": options } })
    }

    fn target(mount: &str, key: &str, version: u8) -> Target {
        Target {
            mount: mount.into(),
            key: key.into(),
            version,
        }
    }

    #[test]
    fn the_path_splits_at_the_mount_the_node_names() {
        let v2 = ui_mounts("secret/", Some("2"));
        assert_eq!(
            Target::resolve(None, "secret/app/db", Some(&v2)),
            Ok(target("secret", "app/db", 2))
        );
        let deep = ui_mounts("team/kv/", Some("2"));
        assert_eq!(
            Target::resolve(None, "/team/kv/app/", Some(&deep)),
            Ok(target("team/kv", "app", 2))
        );
        assert_eq!(
            Target::resolve(None, "secret", Some(&v2)),
            Ok(target("secret", "", 2))
        );
        let v1 = ui_mounts("kv1/", None);
        assert_eq!(
            Target::resolve(None, "kv1/a", Some(&v1)),
            Ok(target("kv1", "a", 1))
        );
        assert!(Target::resolve(None, "other/a", Some(&v2)).is_err());
    }

    #[test]
    fn without_an_answer_the_first_segment_is_the_mount_and_v1_is_assumed() {
        assert_eq!(
            Target::resolve(None, "secret/app/db", None),
            Ok(target("secret", "app/db", 1))
        );
        assert!(Target::resolve(None, "", None).is_err());
    }

    #[test]
    fn the_mount_flag_makes_the_path_a_key() {
        let v2 = ui_mounts("secret/", Some("2"));
        assert_eq!(
            Target::resolve(Some("secret"), "app/db", Some(&v2)),
            Ok(target("secret", "app/db", 2))
        );
        assert_eq!(
            Target::resolve(Some("/kv/"), "a", None),
            Ok(target("kv", "a", 1))
        );
        assert_eq!(
            Target::preflight_path(Some("secret/"), "app/db"),
            "sys/internal/ui/mounts/secret"
        );
        assert_eq!(
            Target::preflight_path(None, "/secret/app/db"),
            "sys/internal/ui/mounts/secret/app/db"
        );
    }

    #[test]
    fn numeric_versions_count_too() {
        let v = json!({ "data": { "path": "s/", "options": { "version": 2 } } });
        assert_eq!(
            Target::resolve(None, "s/k", Some(&v)),
            Ok(target("s", "k", 2))
        );
    }

    #[test]
    fn v2_paths_are_rewritten_per_endpoint() {
        let t = target("secret", "app/db", 2);
        assert_eq!(t.api_path(Endpoint::Data), "secret/data/app/db");
        assert_eq!(t.api_path(Endpoint::Metadata), "secret/metadata/app/db");
        assert_eq!(t.api_path(Endpoint::Delete), "secret/delete/app/db");
        assert_eq!(t.api_path(Endpoint::Undelete), "secret/undelete/app/db");
        assert_eq!(t.api_path(Endpoint::Destroy), "secret/destroy/app/db");
        assert_eq!(
            target("secret", "", 2).api_path(Endpoint::Metadata),
            "secret/metadata"
        );
    }

    fn kv_command(words: &str) -> KvCommand {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct P {
            #[command(subcommand)]
            cmd: KvCommand,
        }
        let args = super::super::normalize_args(
            std::iter::once("kv")
                .chain(words.split_whitespace())
                .map(String::from),
        );
        P::try_parse_from(args).expect("parse").cmd
    }

    #[test]
    fn each_subcommand_goes_to_its_v2_endpoint() {
        let v2 = target("secret", "app/db", 2);
        let v1 = target("kv", "app/db", 1);
        for (line, want) in [
            ("get secret/app/db", "secret/data/app/db"),
            ("get -version=2 secret/app/db", "secret/data/app/db"),
            ("put secret/app/db a=1", "secret/data/app/db"),
            ("patch secret/app/db a=1", "secret/data/app/db"),
            ("patch -method=rw secret/app/db a=1", "secret/data/app/db"),
            ("delete secret/app/db", "secret/data/app/db"),
            ("delete -versions=1,2 secret/app/db", "secret/delete/app/db"),
            (
                "undelete -versions=1 secret/app/db",
                "secret/undelete/app/db",
            ),
            ("destroy -versions=1 secret/app/db", "secret/destroy/app/db"),
            ("list secret/app/db", "secret/metadata/app/db"),
            ("metadata get secret/app/db", "secret/metadata/app/db"),
            (
                "metadata put -max-versions=2 secret/app/db",
                "secret/metadata/app/db",
            ),
            ("metadata delete secret/app/db", "secret/metadata/app/db"),
        ] {
            let endpoint = kv_command(line).endpoint();
            assert_eq!(v2.api_path(endpoint), want, "{line}");
            assert_eq!(v1.api_path(endpoint), "kv/app/db", "{line}");
        }
    }

    #[test]
    fn v1_paths_are_plain() {
        let t = target("kv", "app/db", 1);
        for e in [Endpoint::Data, Endpoint::Metadata, Endpoint::Delete] {
            assert_eq!(t.api_path(e), "kv/app/db");
        }
        assert_eq!(target("kv", "", 1).api_path(Endpoint::Metadata), "kv");
        assert!(t.require_v2("kv undelete").is_err());
        assert!(target("kv", "a", 2).require_v2("kv undelete").is_ok());
    }

    #[test]
    fn write_bodies_wrap_data_on_v2_with_cas() {
        let data: Map<String, Value> = [("a".to_owned(), json!("1"))].into_iter().collect();
        assert_eq!(
            write_body(&target("s", "k", 2), data.clone(), Some(3)),
            json!({ "data": { "a": "1" }, "options": { "cas": 3 } })
        );
        assert_eq!(
            write_body(&target("s", "k", 2), data.clone(), None),
            json!({ "data": { "a": "1" } })
        );
        assert_eq!(
            write_body(&target("s", "k", 1), data, None),
            json!({ "a": "1" })
        );
    }

    #[test]
    fn read_write_patch_replaces_only_the_given_keys() {
        let patch: Map<String, Value> = [("b".to_owned(), json!("new"))].into_iter().collect();
        assert_eq!(
            Value::Object(merged(&json!({ "a": "1", "b": "old" }), patch)),
            json!({ "a": "1", "b": "new" })
        );
    }

    fn metadata_args(words: &[&str]) -> MetadataPutArgs {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct P {
            #[command(flatten)]
            a: MetadataPutArgs,
        }
        let args = super::super::normalize_args(
            std::iter::once("p")
                .chain(words.iter().copied())
                .map(String::from),
        );
        P::try_parse_from(args).expect("parse").a
    }

    #[test]
    fn metadata_put_sends_only_what_was_given() {
        let a = metadata_args(&[
            "-max-versions=5",
            "-cas-required",
            "-delete-version-after=1h",
            "-custom-metadata=owner=ann",
            "-custom-metadata=team=ops",
            "secret/app",
        ]);
        assert_eq!(
            metadata_body(&a).expect("ok"),
            json!({
                "max_versions": 5, "cas_required": true, "delete_version_after": 3600,
                "custom_metadata": { "owner": "ann", "team": "ops" }
            })
        );
        let a = metadata_args(&["-cas-required=false", "secret/app"]);
        assert_eq!(
            metadata_body(&a).expect("ok"),
            json!({ "cas_required": false })
        );
        let a = metadata_args(&["-delete-version-after=soon", "secret/app"]);
        assert!(
            metadata_body(&a)
                .expect_err("bad")
                .contains("-delete-version-after")
        );
        let a = metadata_args(&["-custom-metadata=nope", "secret/app"]);
        assert!(
            metadata_body(&a)
                .expect_err("bad")
                .contains("-custom-metadata")
        );
    }

    fn v2_read() -> Value {
        json!({
            "request_id": "r", "lease_id": "", "lease_duration": 0, "renewable": false,
            "data": {
                "data": { "password": "hunter2", "user": "app" },
                "metadata": {
                    "created_time": "2026-01-01T00:00:00Z", "custom_metadata": null,
                    "deletion_time": "", "destroyed": false, "version": 2
                }
            }
        })
    }

    #[test]
    fn v2_reads_render_path_metadata_and_data() {
        assert_eq!(
            v2_get_table("secret/data/app", &v2_read()),
            "== Secret Path ==\n\
             secret/data/app\n\
             \n\
             ============== Metadata ==============\n\
             Key                Value\n\
             ---                -----\n\
             created_time       2026-01-01T00:00:00Z\n\
             custom_metadata    <nil>\n\
             deletion_time      n/a\n\
             destroyed          false\n\
             version            2\n\
             \n\
             ====== Data ======\n\
             Key         Value\n\
             ---         -----\n\
             password    hunter2\n\
             user        app\n"
        );
    }

    #[test]
    fn v2_fields_come_from_the_secret_data() {
        let out = Output::new(Format::Table, Some("password".into()));
        let body = v2_read();
        let data = body.pointer("/data/data").cloned().expect("data");
        assert_eq!(
            out.secret_with_data(&body, &data).expect("field"),
            "hunter2"
        );
        let out = Output::new(Format::Table, Some("version".into()));
        assert!(out.secret_with_data(&body, &data).is_err());
    }

    #[test]
    fn metadata_lists_settings_then_versions_in_order() {
        let body = json!({ "data": {
            "cas_required": false, "current_version": 10, "max_versions": 0,
            "custom_metadata": { "owner": "ann" }, "delete_version_after": "0s",
            "versions": {
                "10": { "created_time": "t10", "deletion_time": "", "destroyed": false },
                "9": { "created_time": "t9", "deletion_time": "t", "destroyed": true }
            }
        }});
        let text = metadata_table("secret/metadata/app", &body);
        let v9 = text.find("Version 9").expect("v9");
        let v10 = text.find("Version 10").expect("v10");
        assert!(v9 < v10, "{text}");
        assert!(
            text.contains("custom_metadata         map[owner:ann]\n"),
            "{text}"
        );
        assert!(!text.lines().any(|l| l.starts_with("versions")), "{text}");
    }
}
