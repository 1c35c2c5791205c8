//! The transit engine: encryption as a service with named, versioned keys
//! that never leave the cell (docs/engines/transit.md).
//!
//! Paths, as Vault's transit engine serves them (hvac, vaultrs and the
//! Vault CLI call them unchanged):
//!
//! - `keys/` (list), `keys/:name` (create, read, delete),
//!   `keys/:name/config`, `keys/:name/rotate`;
//! - `encrypt/:name` (creates the key on first use when the caller's policy
//!   allows `create`), `decrypt/:name`, `rewrap/:name`, each with
//!   `batch_input`;
//! - `datakey/plaintext/:name`, `datakey/wrapped/:name`.
//!
//! **Sovereignty.** Keys are generated in the cell that serves the request
//! and stored only in its barrier. There is no export, backup or import
//! path, and `exportable` cannot be set. On a global mount every cell has a
//! key of the same name with different key material, so a ciphertext made
//! in one region opens only in that region.

use futures::future::BoxFuture;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::api_error::ApiError;
use crate::engine::{Engine, EngineCtx, unsupported_path};
use crate::engines::kv::KeyLocks;
use crate::logical::{Data, Operation, Request, Response};
use crate::params;
use crate::view::BarrierView;

pub mod keyring;

use keyring::{KeyType, Keyring, TransitError};

/// Most items in one `batch_input`.
pub const MAX_BATCH: usize = 10_000;
/// The least automatic rotation period, as in Vault.
const MIN_AUTO_ROTATE_S: u64 = 3_600;

impl From<TransitError> for ApiError {
    fn from(e: TransitError) -> Self {
        ApiError::InvalidRequest(e.to_string())
    }
}

#[derive(Debug, Default)]
pub struct TransitEngine {
    locks: KeyLocks,
}

impl TransitEngine {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Engine for TransitEngine {
    fn kind(&self) -> &'static str {
        "transit"
    }

    /// `encrypt/:name` for a key that does not exist yet creates it, so a
    /// policy must grant `create` for that (Vault's existence check).
    fn exists(&self, ctx: &EngineCtx<'_>, _req: &Request) -> Result<Option<bool>, ApiError> {
        let path = ctx.path.trim_end_matches('/');
        match path.split_once('/') {
            Some(("encrypt" | "keys", name)) if check_name(name).is_ok() => {
                Ok(Some(ctx.view.get(&key_path(name))?.is_some()))
            }
            _ => Ok(None),
        }
    }

    fn handle<'a>(
        &'a self,
        ctx: &'a EngineCtx<'a>,
        req: &'a Request,
    ) -> BoxFuture<'a, Result<Response, ApiError>> {
        Box::pin(self.route(ctx, req))
    }

    fn tick<'a>(&'a self, ctx: &'a EngineCtx<'a>) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(self.rotate_due(ctx))
    }
}

fn key_path(name: &str) -> String {
    format!("policy/{name}")
}

/// A key name: letters, digits, `_`, `-` and `.`, 1 to 128 bytes.
fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && name != "."
        && name != "..";
    if ok {
        Ok(())
    } else {
        Err(ApiError::InvalidRequest(format!(
            "invalid key name {:?}: use 1 to 128 letters, digits, '_', '-' or '.'",
            name.chars().take(64).collect::<String>()
        )))
    }
}

fn load(view: &BarrierView, name: &str) -> Result<Option<Keyring>, ApiError> {
    match view.get(&key_path(name))? {
        None => Ok(None),
        Some(raw) => serde_json::from_slice(&raw).map(Some).map_err(|e| {
            tracing::error!(key = %name, error = %e, "stored transit key does not decode");
            ApiError::Internal("stored entry is corrupt".into())
        }),
    }
}

/// Stores a keyring. The encoding holds key material, so it is built in a
/// zeroizing buffer sized up front (no reallocation leaves a copy behind).
async fn store(view: &BarrierView, name: &str, k: &Keyring) -> Result<(), ApiError> {
    let mut buf = Zeroizing::new(Vec::with_capacity(512 + 128 * k.latest_version as usize));
    serde_json::to_writer(&mut *buf, k)
        .map_err(|e| ApiError::Internal(format!("encoding key: {e}")))?;
    view.put(&key_path(name), &buf).await
}

fn not_found() -> ApiError {
    ApiError::InvalidRequest("encryption key not found".into())
}

/// A base64 field decoded into a zeroizing buffer (plaintexts are secrets).
fn b64_field(d: &Data, field: &str) -> Result<Option<Zeroizing<Vec<u8>>>, ApiError> {
    match d.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            let mut buf = Zeroizing::new(Vec::with_capacity(s.len()));
            B64.decode_vec(s, &mut buf).map_err(|_| {
                ApiError::InvalidRequest(format!("failed to base64-decode {field}"))
            })?;
            Ok(Some(buf))
        }
        Some(_) => Err(ApiError::InvalidRequest(format!(
            "invalid value for {field:?}: want a base64 string"
        ))),
    }
}

/// A version number field (`key_version`, `min_decryption_version`).
fn u32_field(d: &Data, field: &str) -> Result<Option<u32>, ApiError> {
    params::uint(d, field)?
        .map(|v| {
            u32::try_from(v)
                .map_err(|_| ApiError::InvalidRequest(format!("{field} is out of range")))
        })
        .transpose()
}

fn version_field(d: &Data) -> Result<Option<u32>, ApiError> {
    u32_field(d, "key_version")
}

/// Fields refused because they would need key derivation or convergent
/// encryption, which this engine does not offer.
fn refuse_derivation(d: &Data) -> Result<(), ApiError> {
    for f in ["context", "nonce", "derived", "convergent_encryption"] {
        let set = match d.get(f) {
            None | Some(Value::Null) => false,
            Some(Value::String(s)) => !s.is_empty() && s != "false",
            Some(Value::Bool(b)) => *b,
            Some(_) => true,
        };
        if set {
            return Err(ApiError::InvalidRequest(format!(
                "{f:?} is not supported: keys of this engine are not derived"
            )));
        }
    }
    Ok(())
}

/// The items of a request: its `batch_input`, or the request itself.
fn items(d: &Data) -> Result<(Vec<Data>, bool), ApiError> {
    match d.get("batch_input") {
        None | Some(Value::Null) => Ok((vec![d.clone()], false)),
        Some(Value::Array(list)) => {
            if list.is_empty() {
                return Err(ApiError::InvalidRequest(
                    "missing batch input to process".into(),
                ));
            }
            if list.len() > MAX_BATCH {
                return Err(ApiError::InvalidRequest(format!(
                    "batch_input has {} items; at most {MAX_BATCH} are allowed",
                    list.len()
                )));
            }
            list.iter()
                .map(|i| match i {
                    Value::Object(m) => Ok(m.clone()),
                    _ => Err(ApiError::InvalidRequest(
                        "batch_input must be a list of objects".into(),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(|v| (v, true))
        }
        Some(_) => Err(ApiError::InvalidRequest(
            "batch_input must be a list of objects".into(),
        )),
    }
}

/// Runs `each` on every item. A single request answers with the item's
/// result or error; a batch answers `batch_results`, each with its own
/// `error`, and is a 400 only when every item failed.
fn per_item(
    d: &Data,
    mut each: impl FnMut(&Data) -> Result<Data, ApiError>,
) -> Result<Response, ApiError> {
    let (list, batch) = items(d)?;
    if !batch {
        return each(&list[0]).map(Response::data);
    }
    let mut results = Vec::with_capacity(list.len());
    let mut failed = 0;
    let mut first_error = None;
    for item in &list {
        let mut out = match each(item) {
            Ok(out) => out,
            Err(e) => {
                failed += 1;
                let msg = e.to_string();
                first_error.get_or_insert_with(|| msg.clone());
                let mut m = Data::new();
                m.insert("error".into(), msg.into());
                m
            }
        };
        if let Some(r) = item.get("reference") {
            out.insert("reference".into(), r.clone());
        }
        results.push(Value::Object(out));
    }
    if failed == list.len() {
        return Err(ApiError::InvalidRequest(
            first_error.unwrap_or_else(|| "every batch item failed".into()),
        ));
    }
    let mut data = Data::new();
    data.insert("batch_results".into(), Value::Array(results));
    Ok(Response::data(data))
}

impl TransitEngine {
    async fn route(&self, ctx: &EngineCtx<'_>, req: &Request) -> Result<Response, ApiError> {
        let op = req.operation;
        let write = matches!(op, Operation::Create | Operation::Update);
        let path = ctx.path.trim_end_matches('/');
        let parts: Vec<&str> = path.split('/').collect();
        match (parts.as_slice(), op) {
            (["keys"], Operation::List | Operation::Read) => {
                crate::engines::list_response(ctx.view.list("policy/")?)
            }
            (["keys", name], Operation::Read) => {
                check_name(name)?;
                let k = load(&ctx.view, name)?.ok_or_else(|| ApiError::NotFound(String::new()))?;
                Ok(Response::from_json(describe(name, &k)))
            }
            (["keys", name], _) if write => self.create(ctx, req, name).await,
            (["keys", name], Operation::Delete) => self.delete(ctx, name).await,
            (["keys", name, "config"], _) if write => self.configure(ctx, req, name).await,
            (["keys", name, "rotate"], _) if write => self.rotate(ctx, name).await,
            (["encrypt", name], _) if write => self.encrypt(ctx, req, name).await,
            (["decrypt", name], _) if write => {
                let k = self.existing(ctx, name)?;
                decrypt(&k, &req.data)
            }
            (["rewrap", name], _) if write => {
                let k = self.existing(ctx, name)?;
                rewrap(&k, &req.data)
            }
            (["datakey", kind @ ("plaintext" | "wrapped"), name], _) if write => {
                let k = self.existing(ctx, name)?;
                datakey(&k, &req.data, *kind == "plaintext")
            }
            (["keys" | "encrypt" | "decrypt" | "rewrap" | "datakey", ..], _) => {
                Err(ApiError::UnsupportedOperation)
            }
            (["export" | "backup" | "restore" | "import", ..], _) => Err(ApiError::InvalidRequest(
                "transit keys never leave the cell that made them: no export, backup or import"
                    .into(),
            )),
            _ => Err(unsupported_path(ctx.mount, ctx.path)),
        }
    }

    fn existing(&self, ctx: &EngineCtx<'_>, name: &str) -> Result<Keyring, ApiError> {
        check_name(name)?;
        load(&ctx.view, name)?.ok_or_else(not_found)
    }

    fn now(ctx: &EngineCtx<'_>) -> i64 {
        ctx.now.unix_timestamp()
    }

    /// Creates a key; writing an existing key changes nothing (Vault's
    /// answer too) and shows it.
    async fn create(
        &self,
        ctx: &EngineCtx<'_>,
        req: &Request,
        name: &str,
    ) -> Result<Response, ApiError> {
        check_name(name)?;
        let d = &req.data;
        params::deny_unknown(
            d,
            &[
                "type",
                "exportable",
                "allow_plaintext_backup",
                "derived",
                "convergent_encryption",
                "auto_rotate_period",
            ],
        )?;
        refuse_derivation(d)?;
        refuse_export(d)?;
        let key_type = key_type_param(d)?;
        let period = auto_rotate_param(d)?.unwrap_or(0);
        let k = self.get_or_create(ctx, name, key_type, period).await?;
        Ok(Response::from_json(describe(name, &k)))
    }

    /// The key `name`, created with `key_type` and `period` if it does not
    /// exist yet.
    async fn get_or_create(
        &self,
        ctx: &EngineCtx<'_>,
        name: &str,
        key_type: KeyType,
        period: u64,
    ) -> Result<Keyring, ApiError> {
        let _guard = self.locks.lock(ctx.view.prefix(), name).await;
        if let Some(k) = load(&ctx.view, name)? {
            return Ok(k);
        }
        let mut k = Keyring::new(key_type, Self::now(ctx));
        k.auto_rotate_period = period;
        store(&ctx.view, name, &k).await?;
        Ok(k)
    }

    /// Changes the existing key `name` with `change`, under its lock, and
    /// shows it.
    async fn modify(
        &self,
        ctx: &EngineCtx<'_>,
        name: &str,
        change: impl FnOnce(&mut Keyring) -> Result<(), ApiError>,
    ) -> Result<Response, ApiError> {
        check_name(name)?;
        let _guard = self.locks.lock(ctx.view.prefix(), name).await;
        let mut k = load(&ctx.view, name)?.ok_or_else(not_found)?;
        change(&mut k)?;
        store(&ctx.view, name, &k).await?;
        Ok(Response::from_json(describe(name, &k)))
    }

    async fn delete(&self, ctx: &EngineCtx<'_>, name: &str) -> Result<Response, ApiError> {
        check_name(name)?;
        let _guard = self.locks.lock(ctx.view.prefix(), name).await;
        let Some(k) = load(&ctx.view, name)? else {
            return Ok(Response::empty());
        };
        if !k.deletion_allowed {
            return Err(ApiError::InvalidRequest(
                "deletion is not allowed for this key".into(),
            ));
        }
        ctx.view.delete(&key_path(name)).await?;
        Ok(Response::empty())
    }

    async fn configure(
        &self,
        ctx: &EngineCtx<'_>,
        req: &Request,
        name: &str,
    ) -> Result<Response, ApiError> {
        check_name(name)?;
        let d = &req.data;
        params::deny_unknown(
            d,
            &[
                "min_decryption_version",
                "min_encryption_version",
                "deletion_allowed",
                "exportable",
                "allow_plaintext_backup",
                "auto_rotate_period",
            ],
        )?;
        refuse_export(d)?;
        let period = auto_rotate_param(d)?;
        let min_decrypt = u32_field(d, "min_decryption_version")?;
        let min_encrypt = u32_field(d, "min_encryption_version")?;
        let deletion = params::boolean(d, "deletion_allowed")?;
        self.modify(ctx, name, |k| {
            k.set_bounds(
                min_decrypt.unwrap_or(k.min_decryption_version),
                min_encrypt.unwrap_or(k.min_encryption_version),
            )?;
            if let Some(v) = deletion {
                k.deletion_allowed = v;
            }
            if let Some(p) = period {
                k.auto_rotate_period = p;
            }
            Ok(())
        })
        .await
    }

    async fn rotate(&self, ctx: &EngineCtx<'_>, name: &str) -> Result<Response, ApiError> {
        let now = Self::now(ctx);
        self.modify(ctx, name, |k| Ok(k.rotate(now)?)).await
    }

    async fn encrypt(
        &self,
        ctx: &EngineCtx<'_>,
        req: &Request,
        name: &str,
    ) -> Result<Response, ApiError> {
        check_name(name)?;
        let d = &req.data;
        refuse_derivation(d)?;
        let k = match load(&ctx.view, name)? {
            Some(k) => k,
            // First use creates the key (the pipeline has checked the
            // caller may `create` here).
            None => self.get_or_create(ctx, name, key_type_param(d)?, 0).await?,
        };
        let outer_version = version_field(d)?;
        per_item(d, |item| {
            refuse_derivation(item)?;
            let plaintext = b64_field(item, "plaintext")?
                .ok_or_else(|| ApiError::InvalidRequest("missing plaintext to encrypt".into()))?;
            let aad = b64_field(item, "associated_data")?.unwrap_or_default();
            let version = version_field(item)?.or(outer_version);
            let (ct, v) = k.encrypt(version, &plaintext, &aad)?;
            let mut out = Data::new();
            out.insert("ciphertext".into(), ct.into());
            out.insert("key_version".into(), v.into());
            Ok(out)
        })
    }

    /// Rotates every key whose automatic rotation period has passed. Run
    /// by the cell's leader about once a second.
    async fn rotate_due(&self, ctx: &EngineCtx<'_>) -> Result<(), ApiError> {
        let now = Self::now(ctx);
        for name in ctx.view.list("policy/")? {
            if name.ends_with('/') {
                continue;
            }
            let due = |k: &Keyring| {
                k.auto_rotate_period > 0
                    && now.saturating_sub(k.latest_created())
                        >= i64::try_from(k.auto_rotate_period).unwrap_or(i64::MAX)
            };
            match load(&ctx.view, &name)? {
                Some(k) if due(&k) => {}
                _ => continue,
            }
            let _guard = self.locks.lock(ctx.view.prefix(), &name).await;
            let Some(mut k) = load(&ctx.view, &name)? else {
                continue;
            };
            if due(&k) {
                k.rotate(now)?;
                store(&ctx.view, &name, &k).await?;
                tracing::info!(key = %name, version = k.latest_version, "transit key rotated on schedule");
            }
        }
        Ok(())
    }
}

/// `exportable` and `allow_plaintext_backup` may only be false.
fn refuse_export(d: &Data) -> Result<(), ApiError> {
    for f in ["exportable", "allow_plaintext_backup"] {
        if params::boolean(d, f)? == Some(true) {
            return Err(ApiError::InvalidRequest(format!(
                "{f} cannot be set: transit keys never leave the cell that made them"
            )));
        }
    }
    Ok(())
}

/// The `type` of a key to create; `aes256-gcm96` when absent.
fn key_type_param(d: &Data) -> Result<KeyType, ApiError> {
    match params::string(d, "type")? {
        Some(t) if !t.is_empty() => Ok(KeyType::parse(&t)?),
        _ => Ok(KeyType::Aes256Gcm96),
    }
}

fn auto_rotate_param(d: &Data) -> Result<Option<u64>, ApiError> {
    match params::seconds(d, "auto_rotate_period")? {
        Some(p) if p != 0 && p < MIN_AUTO_ROTATE_S => Err(ApiError::InvalidRequest(
            "auto_rotate_period must be 0 to disable, or at least an hour".into(),
        )),
        other => Ok(other),
    }
}

fn decrypt(k: &Keyring, d: &Data) -> Result<Response, ApiError> {
    refuse_derivation(d)?;
    per_item(d, |item| {
        refuse_derivation(item)?;
        let ct = params::string(item, "ciphertext")?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ApiError::InvalidRequest("missing ciphertext to decrypt".into()))?;
        let aad = b64_field(item, "associated_data")?.unwrap_or_default();
        let (pt, _) = k.decrypt(&ct, &aad)?;
        let mut out = Data::new();
        out.insert("plaintext".into(), B64.encode(&*pt).into());
        Ok(out)
    })
}

fn rewrap(k: &Keyring, d: &Data) -> Result<Response, ApiError> {
    refuse_derivation(d)?;
    let outer_version = version_field(d)?;
    per_item(d, |item| {
        let ct = params::string(item, "ciphertext")?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ApiError::InvalidRequest("missing ciphertext to rewrap".into()))?;
        let aad = b64_field(item, "associated_data")?.unwrap_or_default();
        let (pt, _) = k.decrypt(&ct, &aad)?;
        let version = version_field(item)?.or(outer_version);
        let (ct, v) = k.encrypt(version, &pt, &aad)?;
        let mut out = Data::new();
        out.insert("ciphertext".into(), ct.into());
        out.insert("key_version".into(), v.into());
        Ok(out)
    })
}

fn datakey(k: &Keyring, d: &Data, with_plaintext: bool) -> Result<Response, ApiError> {
    params::deny_unknown(
        d,
        &["bits", "nonce", "context", "key_version", "associated_data"],
    )?;
    refuse_derivation(d)?;
    let bits = params::uint(d, "bits")?.unwrap_or(256);
    let len = match bits {
        128 | 256 | 512 => usize::try_from(bits / 8).unwrap_or(32),
        _ => {
            return Err(ApiError::InvalidRequest(
                "invalid bit length: use 128, 256 or 512".into(),
            ));
        }
    };
    let aad = b64_field(d, "associated_data")?.unwrap_or_default();
    let mut fresh = Zeroizing::new(vec![0u8; len]);
    aws_lc_rs::rand::fill(&mut fresh).expect("system random number generator failed");
    let (ct, v) = k.encrypt(version_field(d)?, &fresh, &aad)?;
    let mut out = json!({"ciphertext": ct, "key_version": v});
    if with_plaintext {
        out["plaintext"] = Value::String(B64.encode(&*fresh));
    }
    Ok(Response::from_json(out))
}

/// A key as `keys/:name` shows it: its policy and when each version was
/// made, never its key material.
fn describe(name: &str, k: &Keyring) -> Value {
    let keys: serde_json::Map<String, Value> = k
        .version_times()
        .map(|(v, t)| (v.to_string(), t.into()))
        .collect();
    json!({
        "name": name,
        "type": k.key_type.name(),
        "keys": keys,
        "latest_version": k.latest_version,
        "min_available_version": 0,
        "min_decryption_version": k.min_decryption_version,
        "min_encryption_version": k.min_encryption_version,
        "deletion_allowed": k.deletion_allowed,
        "exportable": false,
        "allow_plaintext_backup": false,
        "derived": false,
        "imported_key": false,
        "auto_rotate_period": k.auto_rotate_period,
        "supports_encryption": true,
        "supports_decryption": true,
        "supports_derivation": false,
        "supports_signing": false,
    })
}

#[cfg(test)]
mod tests;
