//! The cubbyhole: private storage for each token.
//!
//! Every token sees only its own subtree of the mount's view, keyed by the
//! keyed hash of the token ([`CallerInfo::token_hash`]), so not even a root
//! token can read another token's cubbyhole; the subtree goes when the token
//! is revoked ([`destroy_for_token`]). Within it the store is flat, as KV
//! version 1. Response wrapping keeps a wrapped response under the key
//! `response` of the wrapping token's cubbyhole ([`token_view`]), so the
//! wrapping token reads it back as `cubbyhole/response` like any other key.

use futures::future::BoxFuture;

use crate::api_error::ApiError;
use crate::engine::{CallerInfo, Engine, EngineCtx};
use crate::engines::flat::FlatStore;
use crate::logical::{Operation, Request, Response};
use crate::view::BarrierView;

#[derive(Debug, Clone, Copy, Default)]
pub struct CubbyholeEngine;

/// The subtree of the cubbyhole mount's `view` that belongs to the token
/// whose keyed hash is `token_hash`.
pub fn token_view(view: &BarrierView, token_hash: &str) -> Result<BarrierView, ApiError> {
    if token_hash.is_empty() || token_hash.contains('/') {
        return Err(ApiError::Internal("malformed token hash".into()));
    }
    view.sub(token_hash)
}

/// Removes everything in a token's cubbyhole (the token was revoked).
pub async fn destroy_for_token(view: &BarrierView, token_hash: &str) -> Result<(), ApiError> {
    token_view(view, token_hash)?.clear().await.map(|_| ())
}

fn store(view: &BarrierView, caller: Option<&CallerInfo>) -> Result<FlatStore, ApiError> {
    let caller = caller.ok_or(ApiError::PermissionDenied)?;
    Ok(FlatStore::new(token_view(view, &caller.token_hash)?))
}

impl Engine for CubbyholeEngine {
    fn kind(&self) -> &'static str {
        "cubbyhole"
    }

    fn exists(&self, ctx: &EngineCtx<'_>, _req: &Request) -> Result<Option<bool>, ApiError> {
        if ctx.path.is_empty() || ctx.path.ends_with('/') {
            return Ok(None);
        }
        store(&ctx.view, ctx.caller)?.exists(ctx.path).map(Some)
    }

    fn handle<'a>(
        &'a self,
        ctx: &'a EngineCtx<'a>,
        req: &'a Request,
    ) -> BoxFuture<'a, Result<Response, ApiError>> {
        Box::pin(async move {
            let store = store(&ctx.view, ctx.caller)?;
            match req.operation {
                Operation::Read => store
                    .read(ctx.path)?
                    .map(Response::data)
                    .ok_or_else(|| ApiError::NotFound("no value at this path".into())),
                op => store.serve_non_read(op, ctx.path, &req.data).await,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engines::testing::{Harness, data};
    use serde_json::json;

    #[tokio::test]
    async fn tokens_see_only_their_own_cubbyhole() {
        let h = Harness::new("cubbyhole/", "cubbyhole", &[]);
        let e = CubbyholeEngine;
        let alice = h.caller("alice");
        let bob = h.caller("bob");

        let put =
            Request::new(Operation::Create, "cubbyhole/secret").with_data(data(json!({"pw": "a"})));
        assert!(
            h.run_as(&e, "secret", &put, Some(&alice))
                .await
                .expect("ok")
                .is_empty()
        );
        let nested =
            Request::new(Operation::Create, "cubbyhole/dir/x").with_data(data(json!({"v": 1})));
        h.run_as(&e, "dir/x", &nested, Some(&alice))
            .await
            .expect("ok");

        let read = Request::new(Operation::Read, "cubbyhole/secret");
        let got = h
            .run_as(&e, "secret", &read, Some(&alice))
            .await
            .expect("ok");
        assert_eq!(got.data, Some(data(json!({"pw": "a"}))));
        assert!(matches!(
            h.run_as(&e, "secret", &read, Some(&bob)).await,
            Err(ApiError::NotFound(_))
        ));
        assert!(matches!(
            h.run_as(&e, "secret", &read, None).await,
            Err(ApiError::PermissionDenied)
        ));

        let list = Request::new(Operation::List, "cubbyhole/");
        let got = h.run_as(&e, "", &list, Some(&alice)).await.expect("ok");
        assert_eq!(got.data, Some(data(json!({"keys": ["dir/", "secret"]}))));
        assert!(matches!(
            h.run_as(&e, "", &list, Some(&bob)).await,
            Err(ApiError::NotFound(_))
        ));

        // Exists tells create from update per token.
        assert_eq!(
            e.exists(&h.ctx("secret", Some(&alice)), &put).expect("ok"),
            Some(true)
        );
        assert_eq!(
            e.exists(&h.ctx("secret", Some(&bob)), &put).expect("ok"),
            Some(false)
        );

        // An empty write is refused; a bad key is a 400.
        let empty = Request::new(Operation::Update, "cubbyhole/secret");
        assert!(matches!(
            h.run_as(&e, "secret", &empty, Some(&alice)).await,
            Err(ApiError::InvalidRequest(_))
        ));
        assert!(matches!(
            h.run_as(&e, "a//b", &put, Some(&alice)).await,
            Err(ApiError::InvalidRequest(_))
        ));

        // Revoking alice clears hers and leaves bob's alone.
        h.run_as(&e, "secret", &put, Some(&bob)).await.expect("ok");
        destroy_for_token(&h.view, &alice.token_hash)
            .await
            .expect("ok");
        assert!(matches!(
            h.run_as(&e, "secret", &read, Some(&alice)).await,
            Err(ApiError::NotFound(_))
        ));
        assert!(h.run_as(&e, "secret", &read, Some(&bob)).await.is_ok());

        let del = Request::new(Operation::Delete, "cubbyhole/secret");
        assert!(
            h.run_as(&e, "secret", &del, Some(&bob))
                .await
                .expect("ok")
                .is_empty()
        );
        assert!(h.run_as(&e, "secret", &read, Some(&bob)).await.is_err());
    }

    #[tokio::test]
    async fn a_wrapped_response_reads_back_as_an_ordinary_key() {
        let h = Harness::new("cubbyhole/", "cubbyhole", &[]);
        let wrapper = h.caller("wrapping-token");
        token_view(&h.view, &wrapper.token_hash)
            .expect("ok")
            .put_json("response", &json!({"response": "{\"data\":{}}"}))
            .await
            .expect("ok");
        let read = Request::new(Operation::Read, "cubbyhole/response");
        let got = h
            .run_as(&CubbyholeEngine, "response", &read, Some(&wrapper))
            .await
            .expect("ok");
        assert_eq!(got.data, Some(data(json!({"response": "{\"data\":{}}"}))));
    }
}
