//! A prefix-scoped view of the barrier: the only storage an engine gets.
//!
//! Every key an engine passes is checked and then appended to the view's
//! prefix, so an engine can neither read nor write outside its mount's
//! subtree (docs/architecture.md, "Engines"). Storage keys are plain byte
//! strings with no path semantics, so once prefixed a key cannot "climb out";
//! the checks also refuse `.`/`..`/empty segments and control characters so
//! that stored keys stay meaningful when listed back.
//!
//! Reads are local. Writes are `async` because in a cell they are committed
//! through Raft before they return.

use serde::Serialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use crate::api_error::ApiError;
use crate::barrier::{Barrier, BarrierBatch};

#[derive(Debug, Clone)]
pub struct BarrierView {
    barrier: Barrier,
    /// Ends with `/`.
    prefix: String,
}

impl BarrierView {
    /// A view of everything under `prefix` (a trailing `/` is added).
    pub fn new(barrier: Barrier, prefix: &str) -> Self {
        let mut prefix = prefix.to_owned();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Self { barrier, prefix }
    }

    /// A narrower view under `sub` of this one.
    pub fn sub(&self, sub: &str) -> Result<Self, ApiError> {
        check_key(sub.trim_end_matches('/'))?;
        Ok(Self::new(
            self.barrier.clone(),
            &format!("{}{sub}", self.prefix),
        ))
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn get(&self, key: &str) -> Result<Option<Zeroizing<Vec<u8>>>, ApiError> {
        check_key(key)?;
        Ok(self.barrier.get(&self.full(key))?)
    }

    /// Reads and decodes a JSON value; a value that does not decode is
    /// corruption (an internal error), never the caller's fault.
    pub fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, ApiError> {
        match self.get(key)? {
            None => Ok(None),
            Some(raw) => serde_json::from_slice(&raw).map(Some).map_err(|e| {
                tracing::error!(key = %key, error = %e, "stored entry does not decode");
                ApiError::Internal("stored entry is corrupt".into())
            }),
        }
    }

    /// One level under `dir` (empty or ending in `/`): leaves, and
    /// sub-directories with a trailing `/`.
    pub fn list(&self, dir: &str) -> Result<Vec<String>, ApiError> {
        if !dir.is_empty() {
            check_key(dir.strip_suffix('/').unwrap_or(dir))?;
        }
        let mut d = dir.to_owned();
        if !d.is_empty() && !d.ends_with('/') {
            d.push('/');
        }
        Ok(self.barrier.list_dir(&self.full(&d))?)
    }

    pub fn batch(&self) -> ViewBatch {
        ViewBatch {
            view: self.clone(),
            batch: Some(self.barrier.batch()),
        }
    }

    /// Commits `batch` atomically.
    pub async fn commit(&self, batch: ViewBatch) -> Result<(), ApiError> {
        let b = batch
            .batch
            .ok_or_else(|| ApiError::Internal("batch already failed".into()))?;
        Ok(self.barrier.commit(b).await?)
    }

    pub async fn put(&self, key: &str, value: &[u8]) -> Result<(), ApiError> {
        let b = self.batch().put(key, value)?;
        self.commit(b).await
    }

    pub async fn put_json<T: Serialize>(&self, key: &str, value: &T) -> Result<(), ApiError> {
        let b = self.batch().put_json(key, value)?;
        self.commit(b).await
    }

    pub async fn delete(&self, key: &str) -> Result<(), ApiError> {
        let b = self.batch().delete(key)?;
        self.commit(b).await
    }

    /// Removes everything in the view (a mount being disabled).
    pub async fn clear(&self) -> Result<usize, ApiError> {
        Ok(self.barrier.delete_prefix(&self.prefix).await?)
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

/// An atomic group of writes within one view.
#[derive(Debug)]
pub struct ViewBatch {
    view: BarrierView,
    batch: Option<BarrierBatch>,
}

impl ViewBatch {
    pub fn put(mut self, key: &str, value: &[u8]) -> Result<Self, ApiError> {
        check_key(key)?;
        let full = self.view.full(key);
        let b = self.take()?;
        self.batch = Some(b.put(&full, value)?);
        Ok(self)
    }

    pub fn put_json<T: Serialize>(self, key: &str, value: &T) -> Result<Self, ApiError> {
        let raw = serde_json::to_vec(value)
            .map_err(|e| ApiError::Internal(format!("encoding entry: {e}")))?;
        self.put(key, &raw)
    }

    pub fn delete(mut self, key: &str) -> Result<Self, ApiError> {
        check_key(key)?;
        let full = self.view.full(key);
        let b = self.take()?;
        self.batch = Some(b.delete(&full));
        Ok(self)
    }

    fn take(&mut self) -> Result<BarrierBatch, ApiError> {
        self.batch
            .take()
            .ok_or_else(|| ApiError::Internal("batch already failed".into()))
    }
}

/// A key inside a view: non-empty, no empty, `.` or `..` segments, no
/// control characters, not ending in `/`.
pub fn check_key(key: &str) -> Result<(), ApiError> {
    let bad = |why: &str| {
        Err(ApiError::InvalidRequest(format!(
            "invalid key {key:?}: {why}"
        )))
    };
    if key.is_empty() {
        return bad("empty");
    }
    if key.chars().any(|c| c.is_control() || c == '\\') {
        return bad("control character or backslash");
    }
    if key
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return bad("empty or relative segment");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::barrier::BarrierConfig;
    use crate::storage::MemoryStorage;
    use crate::storage::wait;
    use sigil_hsm::SecretBytes;
    use std::sync::Arc;

    fn barrier() -> Barrier {
        let b = Barrier::new(Arc::new(MemoryStorage::new()), BarrierConfig::default());
        let init = b.initialize(&SecretBytes::random(32)).expect("init");
        wait(b.storage().apply(init)).expect("apply");
        b
    }

    #[tokio::test]
    async fn views_are_confined_to_their_prefix() {
        let b = barrier();
        let a = BarrierView::new(b.clone(), "mount/a");
        let other = BarrierView::new(b.clone(), "mount/ab/");
        a.put("x", b"1").await.expect("put");
        other.put("x", b"2").await.expect("put");
        assert_eq!(
            a.get("x").expect("get").map(|v| v.to_vec()),
            Some(b"1".to_vec())
        );
        assert_eq!(a.list("").expect("list"), ["x"]);
        for bad in ["", "../ab/x", "a/../../x", "a//b", "./x", "x\0", "x/"] {
            assert!(a.get(bad).is_err(), "{bad:?}");
            assert!(a.put(bad, b"v").await.is_err(), "{bad:?}");
        }
        assert_eq!(
            other.get("x").expect("get").map(|v| v.to_vec()),
            Some(b"2".to_vec())
        );
        a.clear().await.expect("clear");
        assert_eq!(a.get("x").expect("get"), None);
        assert!(other.get("x").expect("get").is_some());
    }

    #[tokio::test]
    async fn batches_commit_together_and_json_round_trips() {
        let b = barrier();
        let v = BarrierView::new(b, "m/");
        let sub = v.sub("d").expect("sub");
        let batch = sub
            .batch()
            .put_json("k", &serde_json::json!({"a": 1}))
            .expect("put")
            .put("l", b"raw")
            .expect("put");
        sub.commit(batch).await.expect("commit");
        let got: serde_json::Value = sub.get_json("k").expect("get").expect("present");
        assert_eq!(got["a"], 1);
        assert_eq!(v.list("").expect("list"), ["d/"]);
        assert_eq!(v.list("d/").expect("list"), ["k", "l"]);
        assert!(v.sub("../x").is_err());
    }
}
