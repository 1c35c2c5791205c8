//! The bare tonic server: `sigil.v1.Kv` with fixed answers.

use std::net::TcpListener;

use sigil_proto::v1::kv_server::{Kv, KvServer};
use sigil_proto::v1::{
    KvDeleteRequest, KvDeleteResponse, KvGetRequest, KvGetResponse, KvListRequest, KvListResponse,
    KvPutRequest, KvPutResponse,
};
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use super::Bodies;

/// Serves `sigil.v1.Kv` until the runtime stops.
pub async fn serve(listener: TcpListener, bodies: Bodies) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("bare grpc server: cannot adopt listener: {e}");
            return;
        }
    };
    let served = tonic::transport::Server::builder()
        .add_service(KvServer::new(BareKv { bodies }))
        .serve_with_incoming(TcpIncoming::from(listener))
        .await;
    if let Err(e) = served {
        eprintln!("bare grpc server failed: {e}");
    }
}

/// Answers `Get` and `Put` with fixed responses; the bench uses no others.
#[derive(Debug)]
struct BareKv {
    bodies: Bodies,
}

#[tonic::async_trait]
impl Kv for BareKv {
    async fn get(&self, _: Request<KvGetRequest>) -> Result<Response<KvGetResponse>, Status> {
        Ok(Response::new(self.bodies.grpc_get.clone()))
    }

    async fn put(&self, _: Request<KvPutRequest>) -> Result<Response<KvPutResponse>, Status> {
        Ok(Response::new(self.bodies.grpc_put.clone()))
    }

    async fn delete(
        &self,
        _: Request<KvDeleteRequest>,
    ) -> Result<Response<KvDeleteResponse>, Status> {
        Err(Status::unimplemented(
            "the bare server answers Get and Put only",
        ))
    }

    async fn list(&self, _: Request<KvListRequest>) -> Result<Response<KvListResponse>, Status> {
        Err(Status::unimplemented(
            "the bare server answers Get and Put only",
        ))
    }
}
