//! A mount on an in-memory barrier for engine tests.

use std::sync::Arc;

use serde_json::Value;
use sigil_hsm::SecretBytes;
use time::OffsetDateTime;

use crate::api_error::ApiError;
use crate::barrier::{Barrier, BarrierConfig};
use crate::engine::{CallerInfo, Engine, EngineCtx};
use crate::logical::{Data, Request, Response};
use crate::mounts::{MountEntry, Table};
use crate::storage::MemoryStorage;
use crate::view::BarrierView;

pub(crate) struct Harness {
    pub view: BarrierView,
    pub mount: MountEntry,
    pub now: OffsetDateTime,
    pub root: CallerInfo,
}

impl Harness {
    pub fn new(path: &str, kind: &str, options: &[(&str, &str)]) -> Self {
        let barrier = Barrier::new(Arc::new(MemoryStorage::new()), BarrierConfig::default());
        let init = barrier.initialize(&SecretBytes::random(32)).expect("ok");
        crate::storage::wait(barrier.storage().apply(init)).expect("ok");
        let mut mount = MountEntry::new(Table::Secrets, path, kind);
        for (k, v) in options {
            mount.options.insert((*k).into(), (*v).into());
        }
        let view = BarrierView::new(barrier, &mount.storage_prefix());
        Self {
            view,
            mount,
            now: OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).expect("ok"),
            root: Self::make_caller("root"),
        }
    }

    fn make_caller(name: &str) -> CallerInfo {
        CallerInfo {
            accessor: format!("acc-{name}"),
            token_hash: format!("hash{name}"),
            display_name: name.into(),
            policies: vec!["root".into()],
        }
    }

    pub fn caller(&self, name: &str) -> CallerInfo {
        Self::make_caller(name)
    }

    pub fn ctx<'a>(&'a self, path: &'a str, caller: Option<&'a CallerInfo>) -> EngineCtx<'a> {
        EngineCtx {
            view: self.view.clone(),
            mount: &self.mount,
            path,
            caller,
            now: self.now,
        }
    }

    pub async fn run_as(
        &self,
        engine: &dyn Engine,
        path: &str,
        req: &Request,
        caller: Option<&CallerInfo>,
    ) -> Result<Response, ApiError> {
        let ctx = self.ctx(path, caller);
        engine.handle(&ctx, req).await
    }

    /// Runs `req` as root at `now` plus `later_secs`.
    pub async fn run_at(
        &self,
        engine: &dyn Engine,
        path: &str,
        req: &Request,
        later_secs: i64,
    ) -> Result<Response, ApiError> {
        let mut ctx = self.ctx(path, Some(&self.root));
        ctx.now += time::Duration::seconds(later_secs);
        engine.handle(&ctx, req).await
    }

    pub async fn run(
        &self,
        engine: &dyn Engine,
        path: &str,
        req: &Request,
    ) -> Result<Response, ApiError> {
        self.run_as(engine, path, req, Some(&self.root)).await
    }
}

/// A JSON object literal as request or response data.
pub(crate) fn data(v: Value) -> Data {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}
