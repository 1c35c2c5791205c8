//! The built-in secrets engines.
//!
//! - [`kv`]: the key/value store, version 1 (one value per key) and version 2
//!   (versioned, with metadata, check-and-set and soft delete) on one engine,
//!   chosen by the mount's `version` option (docs/engines/kv.md).
//! - [`cubbyhole`]: per-token private storage, also where response wrapping
//!   keeps a wrapped response.
//! - [`database`]: dynamic and static PostgreSQL credentials.
//! - [`transit`]: encryption as a service under keys that never leave the
//!   cell.
//!
//! Both keep everything in the mount's [`BarrierView`](crate::view::BarrierView)
//! and nothing in memory, so any node that can read the view can serve them.

use std::sync::Arc;

use serde_json::Value;

use crate::api_error::ApiError;
use crate::auth::jwt::{Flavor, JwtEngine};
use crate::engine::Engine;
use crate::logical::{Data, Response};

pub mod cubbyhole;
pub mod database;
pub mod flat;
pub mod kv;
pub mod transit;

/// One instance of every built-in engine, for the pipeline's registry.
pub fn builtin() -> Vec<Arc<dyn Engine>> {
    #[allow(unused_mut)]
    let mut engines: Vec<Arc<dyn Engine>> = vec![
        Arc::new(kv::KvEngine::new()),
        Arc::new(cubbyhole::CubbyholeEngine),
        Arc::new(database::DatabaseEngine::new()),
        Arc::new(transit::TransitEngine::new()),
        Arc::new(crate::auth::approle::AppRoleEngine::new()),
        Arc::new(JwtEngine::new(Flavor::Jwt)),
        Arc::new(JwtEngine::new(Flavor::Kubernetes)),
    ];
    #[cfg(test)]
    engines.push(Arc::new(testing::LeaseTestEngine));
    engines
}

/// A list answer: `{"keys": [...]}`, or a 404 when there is nothing to list
/// (Vault answers an empty list with 404 and `{"errors":[]}`).
pub(crate) fn list_response(keys: Vec<String>) -> Result<Response, ApiError> {
    if keys.is_empty() {
        return Err(ApiError::NotFound("nothing to list".into()));
    }
    let mut data = Data::new();
    data.insert(
        "keys".into(),
        Value::Array(keys.into_iter().map(Value::String).collect()),
    );
    Ok(Response::data(data))
}

#[cfg(test)]
pub(crate) mod testing;
