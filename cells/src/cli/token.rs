//! `sigil token create|lookup|renew|revoke|capabilities`, over
//! `auth/token/*` and `sys/capabilities*`, as Vault's `token` commands.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::client::Client;
use super::input;
use super::outcome::{Failure, Outcome};
use super::output::{self, emit};
use super::{ClientOpts, Format, SecretOpts};

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token (a child of the caller's, an orphan, or from a role).
    Create(CreateArgs),
    /// Show a token's properties (the caller's when none is given).
    Lookup(LookupArgs),
    /// Extend a token's lease (the caller's when none is given).
    Renew(RenewArgs),
    /// Revoke a token and its children (-mode=orphan: only the token).
    Revoke(RevokeArgs),
    /// What a token may do on paths: `[TOKEN] PATH...` (the caller's with one argument).
    Capabilities(CapabilitiesArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// A policy to attach; repeatable or comma-separated.
    #[arg(long, value_delimiter = ',')]
    policy: Vec<String>,
    /// Initial TTL (seconds or a duration such as 1h).
    #[arg(long)]
    ttl: Option<String>,
    /// A cap on the TTL that renewals cannot pass.
    #[arg(long)]
    explicit_max_ttl: Option<String>,
    /// Make a periodic token renewable forever by this period.
    #[arg(long)]
    period: Option<String>,
    /// Whether the token may be renewed (`-renewable=false` to forbid).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    renewable: Option<bool>,
    /// Uses before the token is revoked (0: unlimited).
    #[arg(long)]
    num_uses: Option<u64>,
    /// Create a token with no parent (`auth/token/create-orphan`).
    #[arg(long)]
    orphan: bool,
    #[arg(long)]
    display_name: Option<String>,
    /// `key=value` metadata, repeatable.
    #[arg(long)]
    metadata: Vec<String>,
    /// Create from this token role (`auth/token/create/ROLE`).
    #[arg(long)]
    role: Option<String>,
    /// Leave out the `default` policy.
    #[arg(long)]
    no_default_policy: bool,
    /// `service` or `batch`.
    #[arg(long, value_parser = ["service", "batch"])]
    r#type: Option<String>,
    #[command(flatten)]
    opts: SecretOpts,
}

#[derive(Debug, Args)]
pub struct LookupArgs {
    token: Option<String>,
    /// The argument is an accessor, not a token.
    #[arg(long)]
    accessor: bool,
    #[command(flatten)]
    opts: SecretOpts,
}

#[derive(Debug, Args)]
pub struct RenewArgs {
    token: Option<String>,
    /// Requested extension (seconds or a duration); the server may grant less.
    #[arg(long, short = 'i')]
    increment: Option<String>,
    /// The argument is an accessor, not a token.
    #[arg(long)]
    accessor: bool,
    #[command(flatten)]
    opts: SecretOpts,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    token: Option<String>,
    /// Revoke the token the command runs with.
    #[arg(long = "self")]
    revoke_self: bool,
    /// The argument is an accessor, not a token.
    #[arg(long)]
    accessor: bool,
    /// `orphan`: revoke only the token; its children become orphans.
    #[arg(long, value_parser = ["orphan"])]
    mode: Option<String>,
    #[command(flatten)]
    opts: ClientOpts,
}

#[derive(Debug, Args)]
pub struct CapabilitiesArgs {
    /// `PATH`, or `TOKEN PATH...`.
    #[arg(required = true, num_args = 1..)]
    args: Vec<String>,
    /// The first argument is an accessor (`sys/capabilities-accessor`).
    #[arg(long)]
    accessor: bool,
    #[command(flatten)]
    opts: SecretOpts,
}

/// One request a token command makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub method: Method,
    pub path: String,
    pub body: Option<Value>,
}

impl Call {
    fn post(path: impl Into<String>, body: Value) -> Self {
        Self {
            method: Method::POST,
            path: path.into(),
            body: Some(body),
        }
    }
}

fn seconds(flag: &str, v: &Option<String>) -> Result<Option<u64>, String> {
    v.as_deref()
        .map(|t| input::parse_duration(flag, t))
        .transpose()
}

/// `token create`: the endpoint (`create`, `create-orphan`, `create/ROLE`)
/// and the body, checked before anything is sent.
pub fn create_call(a: &CreateArgs) -> Result<Call, String> {
    let mut body = Map::new();
    if !a.policy.is_empty() {
        body.insert("policies".into(), json!(a.policy));
    }
    for (key, flag, v) in [
        ("ttl", "ttl", &a.ttl),
        ("explicit_max_ttl", "explicit-max-ttl", &a.explicit_max_ttl),
        ("period", "period", &a.period),
    ] {
        if let Some(secs) = seconds(flag, v)? {
            body.insert(key.into(), json!(secs));
        }
    }
    if let Some(r) = a.renewable {
        body.insert("renewable".into(), json!(r));
    }
    if let Some(n) = a.num_uses {
        body.insert("num_uses".into(), json!(n));
    }
    if let Some(n) = &a.display_name {
        body.insert("display_name".into(), json!(n));
    }
    if !a.metadata.is_empty() {
        body.insert(
            "meta".into(),
            Value::Object(input::parse_pairs("metadata", &a.metadata)?),
        );
    }
    if a.no_default_policy {
        body.insert("no_default_policy".into(), json!(true));
    }
    if let Some(t) = &a.r#type {
        body.insert("type".into(), json!(t));
    }
    let path = match (&a.role, a.orphan) {
        (Some(_), true) => {
            return Err(
                "-role and -orphan conflict: a role decides whether its tokens are orphans".into(),
            );
        }
        (Some(role), false) => format!("auth/token/create/{}", role.trim_matches('/')),
        (None, true) => "auth/token/create-orphan".into(),
        (None, false) => "auth/token/create".into(),
    };
    Ok(Call::post(path, Value::Object(body)))
}

pub fn lookup_call(token: Option<&str>, accessor: bool) -> Result<Call, String> {
    Ok(match (token, accessor) {
        (None, true) => return Err("-accessor needs an accessor argument".into()),
        (None, false) => Call {
            method: Method::GET,
            path: "auth/token/lookup-self".into(),
            body: None,
        },
        (Some(acc), true) => Call::post("auth/token/lookup-accessor", json!({ "accessor": acc })),
        (Some(t), false) => Call::post("auth/token/lookup", json!({ "token": t })),
    })
}

pub fn renew_call(
    token: Option<&str>,
    accessor: bool,
    increment: &Option<String>,
) -> Result<Call, String> {
    let mut body = Map::new();
    if let Some(secs) = seconds("increment", increment)? {
        body.insert("increment".into(), json!(secs));
    }
    let path = match (token, accessor) {
        (None, true) => return Err("-accessor needs an accessor argument".into()),
        (None, false) => "auth/token/renew-self",
        (Some(acc), true) => {
            body.insert("accessor".into(), json!(acc));
            "auth/token/renew-accessor"
        }
        (Some(t), false) => {
            body.insert("token".into(), json!(t));
            "auth/token/renew"
        }
    };
    Ok(Call::post(path, Value::Object(body)))
}

pub fn revoke_call(
    token: Option<&str>,
    revoke_self: bool,
    accessor: bool,
    orphan: bool,
) -> Result<Call, String> {
    match (token, revoke_self, accessor, orphan) {
        (Some(_), true, _, _) => Err("-self takes no token argument".into()),
        (None, true, false, false) => Ok(Call::post("auth/token/revoke-self", json!({}))),
        (None, true, _, _) => Err("-self cannot be combined with -accessor or -mode".into()),
        (None, false, _, _) => Err("give a token to revoke, or -self".into()),
        (Some(_), false, true, true) => Err("-mode=orphan needs a token, not an accessor".into()),
        (Some(acc), false, true, false) => Ok(Call::post(
            "auth/token/revoke-accessor",
            json!({ "accessor": acc }),
        )),
        (Some(t), false, false, true) => Ok(Call::post(
            "auth/token/revoke-orphan",
            json!({ "token": t }),
        )),
        (Some(t), false, false, false) => {
            Ok(Call::post("auth/token/revoke", json!({ "token": t })))
        }
    }
}

/// `token capabilities`: one argument is a path for the caller's own token;
/// more are a token (or accessor) then paths.
pub fn capabilities_call(args: &[String], accessor: bool) -> Result<(Call, Vec<String>), String> {
    let clean = |p: &String| p.trim_matches('/').to_owned();
    match args {
        [] => Err("give a path".into()),
        [_] if accessor => Err("-accessor needs an accessor and at least one path".into()),
        [path] => {
            let paths = vec![clean(path)];
            Ok((
                Call::post("sys/capabilities-self", json!({ "paths": paths })),
                paths,
            ))
        }
        [who, rest @ ..] => {
            let paths: Vec<String> = rest.iter().map(clean).collect();
            let call = if accessor {
                Call::post(
                    "sys/capabilities-accessor",
                    json!({ "accessor": who, "paths": paths }),
                )
            } else {
                Call::post("sys/capabilities", json!({ "token": who, "paths": paths }))
            };
            Ok((call, paths))
        }
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().map(output::go_value).collect())
        .unwrap_or_default()
}

/// The capabilities per path: `data.PATH` (or the legacy top-level copy),
/// and `capabilities` for a single path.
pub fn capabilities_of(body: &Value, paths: &[String]) -> Vec<(String, Vec<String>)> {
    paths
        .iter()
        .map(|p| {
            let caps = body
                .pointer("/data")
                .and_then(|d| d.get(p))
                .or_else(|| body.get(p))
                .or_else(|| {
                    (paths.len() == 1)
                        .then(|| {
                            body.pointer("/data/capabilities")
                                .or_else(|| body.get("capabilities"))
                        })
                        .flatten()
                });
            (p.clone(), strings(caps))
        })
        .collect()
}

/// Vault prints `read, update` for one path; `PATH: caps` lines for more.
pub fn render_capabilities(caps: &[(String, Vec<String>)], format: Format) -> String {
    match (format, caps) {
        (Format::Json, [(_, one)]) => output::json(&json!(one)),
        (Format::Json, many) => output::json(&Value::Object(
            many.iter().map(|(p, c)| (p.clone(), json!(c))).collect(),
        )),
        (Format::Table, [(_, one)]) => one.join(", "),
        (Format::Table, many) => many
            .iter()
            .map(|(p, c)| format!("{p}: {}", c.join(", ")))
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

pub async fn run(cmd: TokenCommand) -> Outcome {
    match cmd {
        TokenCommand::Create(a) => {
            let call = create_call(&a)?;
            show_answer(&a.opts, call).await
        }
        TokenCommand::Lookup(a) => {
            let call = lookup_call(a.token.as_deref(), a.accessor)?;
            show_answer(&a.opts, call).await
        }
        TokenCommand::Renew(a) => {
            let call = renew_call(a.token.as_deref(), a.accessor, &a.increment)?;
            show_answer(&a.opts, call).await
        }
        TokenCommand::Revoke(a) => {
            let call = revoke_call(
                a.token.as_deref(),
                a.revoke_self,
                a.accessor,
                a.mode.is_some(),
            )?;
            let client = Client::from_env(a.opts.address.as_deref())?;
            client
                .call(call.method, &call.path, call.body.as_ref())
                .await?;
            if a.opts.format == Format::Table {
                output::print("Success! Revoked token (if it existed)");
            }
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::Capabilities(a) => {
            let (call, paths) = capabilities_call(&a.args, a.accessor)?;
            let client = a.opts.client()?;
            let body = client
                .call(call.method, &call.path, call.body.as_ref())
                .await?
                .unwrap_or(Value::Null);
            let out = a.opts.output();
            if out.field.is_some() || body.get("wrap_info").is_some_and(|w| !w.is_null()) {
                emit(&out, &out.secret(&body)?);
            } else {
                output::print(&render_capabilities(
                    &capabilities_of(&body, &paths),
                    out.format,
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Makes `call` and prints its answer as a secret (auth or data table).
async fn show_answer(opts: &SecretOpts, call: Call) -> Outcome {
    let client = opts.client()?;
    let out = opts.output();
    let body = client
        .call(call.method, &call.path, call.body.as_ref())
        .await?
        .ok_or_else(|| Failure::Invalid(format!("empty answer from {}", call.path)))?;
    emit(&out, &out.secret(&body)?);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct P {
        #[command(subcommand)]
        cmd: TokenCommand,
    }

    fn parse(words: &str) -> TokenCommand {
        let args = super::super::normalize_args(
            std::iter::once("t")
                .chain(words.split_whitespace())
                .map(String::from),
        );
        P::try_parse_from(args).expect("parse").cmd
    }

    fn create(words: &str) -> Result<Call, String> {
        match parse(&format!("create {words}")) {
            TokenCommand::Create(a) => create_call(&a),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn create_builds_the_body_from_vault_flags() {
        let call = create(
            "-policy=a -policy=b,c -ttl=1h -explicit-max-ttl=2h -period=30m -renewable=false \
             -num-uses=3 -display-name=ci -metadata=user=ann -metadata=team=ops -no-default-policy -type=service",
        )
        .expect("ok");
        assert_eq!(call.path, "auth/token/create");
        assert_eq!(
            call.body,
            Some(json!({
                "policies": ["a", "b", "c"], "ttl": 3600, "explicit_max_ttl": 7200, "period": 1800,
                "renewable": false, "num_uses": 3, "display_name": "ci",
                "meta": { "user": "ann", "team": "ops" }, "no_default_policy": true, "type": "service"
            }))
        );
        assert_eq!(create("").expect("ok").body, Some(json!({})));
        assert_eq!(
            create("-renewable").expect("ok").body,
            Some(json!({ "renewable": true }))
        );
    }

    #[test]
    fn create_picks_the_endpoint() {
        assert_eq!(
            create("-orphan").expect("ok").path,
            "auth/token/create-orphan"
        );
        assert_eq!(create("-role=ci").expect("ok").path, "auth/token/create/ci");
        assert!(create("-role=ci -orphan").is_err());
    }

    #[test]
    fn create_rejects_bad_input_before_sending() {
        assert_eq!(
            create("-ttl=forever").expect_err("bad"),
            "invalid -ttl value \"forever\": expected a number"
        );
        assert!(
            create("-metadata=nokey")
                .expect_err("bad")
                .contains("-metadata")
        );
    }

    #[test]
    fn lookup_renew_revoke_pick_self_token_or_accessor() {
        assert_eq!(
            lookup_call(None, false).expect("ok").path,
            "auth/token/lookup-self"
        );
        assert_eq!(lookup_call(None, false).expect("ok").method, Method::GET);
        assert_eq!(
            lookup_call(Some("t"), false).expect("ok").body,
            Some(json!({ "token": "t" }))
        );
        assert_eq!(
            lookup_call(Some("a"), true).expect("ok").path,
            "auth/token/lookup-accessor"
        );
        assert!(lookup_call(None, true).is_err());

        let r = renew_call(None, false, &Some("1h".into())).expect("ok");
        assert_eq!(
            (r.path.as_str(), r.body),
            ("auth/token/renew-self", Some(json!({ "increment": 3600 })))
        );
        let r = renew_call(Some("t"), false, &None).expect("ok");
        assert_eq!(
            (r.path.as_str(), r.body),
            ("auth/token/renew", Some(json!({ "token": "t" })))
        );
        let r = renew_call(Some("a"), true, &None).expect("ok");
        assert_eq!(r.path, "auth/token/renew-accessor");
        assert!(renew_call(None, false, &Some("x".into())).is_err());

        assert_eq!(
            revoke_call(None, true, false, false).expect("ok").path,
            "auth/token/revoke-self"
        );
        assert_eq!(
            revoke_call(Some("t"), false, false, false)
                .expect("ok")
                .path,
            "auth/token/revoke"
        );
        assert_eq!(
            revoke_call(Some("t"), false, false, true).expect("ok").path,
            "auth/token/revoke-orphan"
        );
        assert_eq!(
            revoke_call(Some("a"), false, true, false).expect("ok").path,
            "auth/token/revoke-accessor"
        );
        assert!(revoke_call(None, false, false, false).is_err());
        assert!(revoke_call(Some("t"), true, false, false).is_err());
        assert!(revoke_call(Some("a"), false, true, true).is_err());
    }

    #[test]
    fn capabilities_take_an_optional_token_then_paths() {
        let w = |s: &[&str]| s.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        let (c, paths) = capabilities_call(&w(&["secret/data/a"]), false).expect("ok");
        assert_eq!(c.path, "sys/capabilities-self");
        assert_eq!(paths, ["secret/data/a"]);
        let (c, paths) = capabilities_call(&w(&["hvs.x", "a/", "b"]), false).expect("ok");
        assert_eq!(c.path, "sys/capabilities");
        assert_eq!(
            c.body,
            Some(json!({ "token": "hvs.x", "paths": ["a", "b"] }))
        );
        assert_eq!(paths, ["a", "b"]);
        let (c, _) = capabilities_call(&w(&["acc", "a"]), true).expect("ok");
        assert_eq!(c.body, Some(json!({ "accessor": "acc", "paths": ["a"] })));
        assert!(capabilities_call(&w(&["a"]), true).is_err());
    }

    #[test]
    fn capabilities_render_like_vault() {
        let one = json!({ "capabilities": ["read", "list"], "a": ["read", "list"], "data": { "a": ["read", "list"] } });
        let caps = capabilities_of(&one, &["a".to_owned()]);
        assert_eq!(render_capabilities(&caps, Format::Table), "read, list");
        assert_eq!(
            render_capabilities(&caps, Format::Json),
            "[\n  \"read\",\n  \"list\"\n]"
        );
        let legacy = json!({ "capabilities": ["deny"] });
        assert_eq!(
            render_capabilities(&capabilities_of(&legacy, &["x".to_owned()]), Format::Table),
            "deny"
        );
        let many = json!({ "data": { "a": ["read"], "b": ["deny"] } });
        let caps = capabilities_of(&many, &["a".to_owned(), "b".to_owned()]);
        assert_eq!(
            render_capabilities(&caps, Format::Table),
            "a: read\nb: deny"
        );
    }
}
