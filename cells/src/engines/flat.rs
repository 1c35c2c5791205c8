//! A flat key/value store on a view: one JSON object per key, replaced
//! whole on every write. KV version 1 and the cubbyhole are this store on
//! different views (Vault's "passthrough" backend).

use crate::api_error::ApiError;
use crate::engines::list_response;
use crate::logical::{Data, Operation, Response};
use crate::view::{BarrierView, check_key};

/// The flat store on `view`. Keys are request paths relative to the mount;
/// they may contain `/` and then list as directories.
#[derive(Debug, Clone)]
pub struct FlatStore {
    view: BarrierView,
}

impl FlatStore {
    pub fn new(view: BarrierView) -> Self {
        Self { view }
    }

    pub fn exists(&self, key: &str) -> Result<bool, ApiError> {
        let key = parse_key(key)?;
        Ok(self.view.get(key)?.is_some())
    }

    pub fn read(&self, key: &str) -> Result<Option<Data>, ApiError> {
        if key.is_empty() {
            return Ok(None);
        }
        let key = parse_key(key)?;
        self.view.get_json(key)
    }

    /// Replaces the value at `key`; an empty body is refused, as in Vault.
    pub async fn write(&self, key: &str, data: &Data) -> Result<(), ApiError> {
        let key = parse_key(key)?;
        if data.is_empty() {
            return Err(ApiError::InvalidRequest("missing data fields".into()));
        }
        self.view.put_json(key, data).await
    }

    /// Deleting an absent key succeeds.
    pub async fn delete(&self, key: &str) -> Result<(), ApiError> {
        let key = parse_key(key)?;
        self.view.delete(key).await
    }

    /// Serves every operation but a read (KV version 1 adds a lease to its
    /// reads; the cubbyhole does not): list, write (create or update),
    /// delete; patch is not supported on a flat store.
    pub async fn serve_non_read(
        &self,
        op: Operation,
        path: &str,
        data: &Data,
    ) -> Result<Response, ApiError> {
        match op {
            Operation::List => self.list(path),
            Operation::Create | Operation::Update => {
                self.write(path, data).await?;
                Ok(Response::empty())
            }
            Operation::Delete => {
                self.delete(path).await?;
                Ok(Response::empty())
            }
            Operation::Read | Operation::Patch => Err(ApiError::UnsupportedOperation),
        }
    }

    /// Direct children of `dir` (empty for the root; a missing trailing `/`
    /// is added, as Vault does for lists).
    pub fn list(&self, dir: &str) -> Result<Response, ApiError> {
        list_response(self.keys(dir)?)
    }

    pub fn keys(&self, dir: &str) -> Result<Vec<String>, ApiError> {
        let dir = dir.strip_suffix('/').unwrap_or(dir);
        if dir.is_empty() {
            return self.view.list("");
        }
        parse_key(dir)?;
        self.view.list(&format!("{dir}/"))
    }

    pub fn view(&self) -> &BarrierView {
        &self.view
    }
}

/// A key named by a request: non-empty, no empty, `.` or `..` segments, no
/// control characters, no trailing `/`. Anything else is the caller's
/// mistake (400), never a storage error.
pub fn parse_key(key: &str) -> Result<&str, ApiError> {
    if key.ends_with('/') {
        return Err(ApiError::InvalidRequest(format!(
            "invalid key {key:?}: must not end in \"/\""
        )));
    }
    check_key(key)?;
    Ok(key)
}
