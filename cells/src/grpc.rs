//! The gRPC front end: `sigil.v1.Sys`, a thin adapter over [`Node`].
//!
//! The token travels in the `x-sigil-token` metadata key (or
//! `authorization: Bearer <token>`). Errors carry the gRPC code that
//! [`ApiError::grpc_code`] assigns.

mod convert;
mod logical;
mod revocations;

pub use logical::LogicalService;
pub use revocations::RevocationsService;

use std::sync::Arc;

use sigil_hsm::SecretString;
use sigil_proto::v1 as pb;
use sigil_proto::v1::sys_server::{Sys, SysServer};
use tonic::{Request, Response, Status};

use crate::api_error::ApiError;
use crate::node::{Caller, Node};
use crate::seal::InitParams;

/// The `Sys` service of one node.
#[derive(Debug, Clone)]
pub struct SysService {
    node: Arc<Node>,
}

impl SysService {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    pub fn into_server(self, max_message: usize) -> SysServer<Self> {
        SysServer::new(self)
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(max_message)
    }
}

/// The token from `x-sigil-token` (or `x-vault-token`, or
/// `authorization: Bearer`).
pub(crate) fn token_from(md: &tonic::metadata::MetadataMap) -> Option<SecretString> {
    md.get("x-sigil-token")
        .or_else(|| md.get("x-vault-token"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| {
            md.get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_owned)
        })
        .filter(|t| !t.is_empty())
        .map(SecretString::new)
}

fn caller<T>(req: &Request<T>) -> Caller {
    Caller {
        token: token_from(req.metadata()),
        remote_addr: req.remote_addr(),
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn reply<T>(r: Result<T, ApiError>) -> Reply<T> {
    r.map(Response::new).map_err(Status::from)
}

#[tonic::async_trait]
impl Sys for SysService {
    #[tracing::instrument(name = "grpc.Sys/Init", skip_all)]
    async fn init(&self, req: Request<pb::InitRequest>) -> Reply<pb::InitResponse> {
        let r = req.into_inner();
        reply(
            self.node
                .init(InitParams {
                    secret_shares: r.secret_shares,
                    secret_threshold: r.secret_threshold,
                    recovery_shares: r.recovery_shares,
                    recovery_threshold: r.recovery_threshold,
                    root_token: None,
                })
                .await
                .map(|o| convert::init_response(&o)),
        )
    }

    #[tracing::instrument(name = "grpc.Sys/InitStatus", skip_all)]
    async fn init_status(
        &self,
        _: Request<pb::InitStatusRequest>,
    ) -> Reply<pb::InitStatusResponse> {
        reply(Ok(pb::InitStatusResponse {
            initialized: self.node.init_status(),
        }))
    }

    #[tracing::instrument(name = "grpc.Sys/Unseal", skip_all)]
    async fn unseal(&self, req: Request<pb::UnsealRequest>) -> Reply<pb::SealStatusResponse> {
        let r = req.into_inner();
        let key = (!r.key.is_empty()).then_some(r.key.as_str());
        reply(
            self.node
                .unseal(key, r.reset)
                .await
                .map(|s| convert::seal_status(&s)),
        )
    }

    #[tracing::instrument(name = "grpc.Sys/Seal", skip_all)]
    async fn seal(&self, req: Request<pb::SealRequest>) -> Reply<pb::SealResponse> {
        let c = caller(&req);
        reply(self.node.seal(&c).await.map(|()| pb::SealResponse {}))
    }

    #[tracing::instrument(name = "grpc.Sys/SealStatus", skip_all)]
    async fn seal_status(
        &self,
        _: Request<pb::SealStatusRequest>,
    ) -> Reply<pb::SealStatusResponse> {
        reply(Ok(convert::seal_status(&self.node.seal_status())))
    }

    #[tracing::instrument(name = "grpc.Sys/Health", skip_all)]
    async fn health(&self, _: Request<pb::HealthRequest>) -> Reply<pb::HealthResponse> {
        reply(Ok(convert::health(&self.node.health())))
    }

    #[tracing::instrument(name = "grpc.Sys/Leader", skip_all)]
    async fn leader(&self, _: Request<pb::LeaderRequest>) -> Reply<pb::LeaderResponse> {
        reply(self.node.leader().map(|l| pb::LeaderResponse {
            ha_enabled: l.ha_enabled,
            is_self: l.is_self,
            leader_address: l.leader_address,
            leader_cluster_address: l.leader_cluster_address,
        }))
    }

    #[tracing::instrument(name = "grpc.Sys/RekeyInit", skip_all)]
    async fn rekey_init(
        &self,
        req: Request<pb::RekeyInitRequest>,
    ) -> Reply<pb::RekeyStatusResponse> {
        let r = req.into_inner();
        reply(
            self.node
                .rekey_init(r.recovery, r.secret_shares, r.secret_threshold)
                .await
                .map(|s| convert::rekey_status(&s)),
        )
    }

    #[tracing::instrument(name = "grpc.Sys/RekeyUpdate", skip_all)]
    async fn rekey_update(
        &self,
        req: Request<pb::RekeyUpdateRequest>,
    ) -> Reply<pb::RekeyUpdateResponse> {
        let r = req.into_inner();
        reply(
            self.node
                .rekey_update(r.recovery, &r.nonce, &r.key)
                .await
                .map(|s| convert::rekey_update(&s)),
        )
    }

    #[tracing::instrument(name = "grpc.Sys/RekeyStatus", skip_all)]
    async fn rekey_status(
        &self,
        req: Request<pb::RekeyStatusRequest>,
    ) -> Reply<pb::RekeyStatusResponse> {
        reply(
            self.node
                .rekey_status(req.into_inner().recovery)
                .map(|s| convert::rekey_status(&s)),
        )
    }

    #[tracing::instrument(name = "grpc.Sys/RekeyCancel", skip_all)]
    async fn rekey_cancel(
        &self,
        req: Request<pb::RekeyCancelRequest>,
    ) -> Reply<pb::RekeyCancelResponse> {
        reply(
            self.node
                .rekey_cancel(req.into_inner().recovery)
                .map(|()| pb::RekeyCancelResponse {}),
        )
    }

    #[tracing::instrument(name = "grpc.Sys/GenerateRootInit", skip_all)]
    async fn generate_root_init(
        &self,
        req: Request<pb::GenerateRootInitRequest>,
    ) -> Reply<pb::GenerateRootStatusResponse> {
        let otp = req.into_inner().otp;
        reply(
            self.node
                .generate_root_init((!otp.is_empty()).then_some(otp))
                .map(|s| convert::generate_root(&s)),
        )
    }

    #[tracing::instrument(name = "grpc.Sys/GenerateRootUpdate", skip_all)]
    async fn generate_root_update(
        &self,
        req: Request<pb::GenerateRootUpdateRequest>,
    ) -> Reply<pb::GenerateRootStatusResponse> {
        let r = req.into_inner();
        reply(
            self.node
                .generate_root_update(&r.nonce, &r.key)
                .await
                .map(|s| convert::generate_root(&s)),
        )
    }

    #[tracing::instrument(name = "grpc.Sys/GenerateRootStatus", skip_all)]
    async fn generate_root_status(
        &self,
        _: Request<pb::GenerateRootStatusRequest>,
    ) -> Reply<pb::GenerateRootStatusResponse> {
        reply(
            self.node
                .generate_root_status()
                .map(|s| convert::generate_root(&s)),
        )
    }

    #[tracing::instrument(name = "grpc.Sys/GenerateRootCancel", skip_all)]
    async fn generate_root_cancel(
        &self,
        _: Request<pb::GenerateRootCancelRequest>,
    ) -> Reply<pb::GenerateRootCancelResponse> {
        reply(
            self.node
                .generate_root_cancel()
                .map(|()| pb::GenerateRootCancelResponse {}),
        )
    }

    #[tracing::instrument(name = "grpc.Sys/Rotate", skip_all)]
    async fn rotate(&self, req: Request<pb::RotateRequest>) -> Reply<pb::RotateResponse> {
        let c = caller(&req);
        reply(
            self.node
                .rotate(&c)
                .await
                .map(|k| pb::RotateResponse { term: k.term }),
        )
    }

    #[tracing::instrument(name = "grpc.Sys/KeyStatus", skip_all)]
    async fn key_status(&self, req: Request<pb::KeyStatusRequest>) -> Reply<pb::KeyStatusResponse> {
        let c = caller(&req);
        reply(
            self.node
                .key_status(&c)
                .await
                .map(|k| pb::KeyStatusResponse {
                    term: k.term,
                    install_time: k.install_time_unix,
                    encryptions: k.encryptions,
                }),
        )
    }
}
