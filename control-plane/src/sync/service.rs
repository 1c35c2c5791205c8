//! The serving side of `sigil.federation.v1.Federation`, on any node.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use sigil_proto::federation::v1 as pb;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::session::{Reply, Serving};
use super::status::SyncStatus;
use super::store::{Store, StoreError};
use super::wire;
use crate::model::CellId;

/// Turns a stream's transport identity (its request extensions, where the
/// cluster port puts the verified peer certificate) into the calling cell,
/// or refuses the stream.
pub type Authorize = Arc<dyn Fn(&tonic::Extensions) -> Result<CellId, Status> + Send + Sync>;

/// The most ops in one reply.
const BATCH: usize = 512;

/// Replies queued per stream before the serving task waits for the caller.
const QUEUE: usize = 16;

pub struct FederationService<S> {
    store: Arc<S>,
    authorize: Authorize,
    status: Arc<SyncStatus>,
    shutdown: watch::Receiver<bool>,
}

impl<S> std::fmt::Debug for FederationService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FederationService").finish_non_exhaustive()
    }
}

impl<S: Store> FederationService<S> {
    pub fn new(store: Arc<S>, authorize: Authorize, status: Arc<SyncStatus>) -> Self {
        Self {
            store,
            authorize,
            status,
            shutdown: watch::Sender::new(false).subscribe(),
        }
    }

    /// Ends every open stream once `shutdown` turns true: a stream lives as
    /// long as its caller wants, and a server shutting down gracefully
    /// would otherwise wait for callers in other cells to leave.
    pub fn with_shutdown(mut self, shutdown: watch::Receiver<bool>) -> Self {
        self.shutdown = shutdown;
        self
    }

    pub fn into_server(self) -> pb::federation_server::FederationServer<Self> {
        pb::federation_server::FederationServer::new(self)
            .max_decoding_message_size(wire::MAX_PAYLOAD_BYTES + 1024)
            .max_encoding_message_size(wire::MAX_PAYLOAD_BYTES + 1024)
    }
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<pb::SyncReply, Status>> + Send>>;

#[tonic::async_trait]
impl<S: Store> pb::federation_server::Federation for FederationService<S> {
    type SyncStream = ReplyStream;

    async fn sync(
        &self,
        req: Request<Streaming<pb::SyncRequest>>,
    ) -> Result<Response<Self::SyncStream>, Status> {
        let peer = (self.authorize)(req.extensions())?;
        let inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(serve(
            self.store.clone(),
            self.status.clone(),
            peer,
            inbound,
            tx,
            self.shutdown.clone(),
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Runs one stream until the caller leaves, sends something malformed, or
/// this node cannot read its replica.
async fn serve<S: Store>(
    store: Arc<S>,
    status: Arc<SyncStatus>,
    peer: CellId,
    mut inbound: Streaming<pb::SyncRequest>,
    tx: mpsc::Sender<Result<pb::SyncReply, Status>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut serving = Serving::new(BATCH);
    let mut changes = store.changes();
    tracing::debug!(peer = %peer, "control-plane sync stream opened");
    loop {
        let replies = tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(m)) => match wire::request_from_pb(&m) {
                    Ok(req) => store.read(|r| serving.on_request(r, &req)).await,
                    Err(e) => {
                        tracing::warn!(peer = %peer, error = %e, "control-plane sync request refused");
                        let _ = tx.send(Err(Status::invalid_argument(e.to_string()))).await;
                        return;
                    }
                },
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(peer = %peer, error = %e, "control-plane sync stream ended");
                    return;
                }
            },
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                store.read(|r| serving.on_change(r)).await
            }
            () = tx.closed() => return,
            () = closing(&mut shutdown) => {
                let _ = tx.send(Err(Status::unavailable("the node is shutting down"))).await;
                return;
            }
        };
        let replies = match replies {
            Ok(r) => r,
            Err(e) => {
                let status_code = match e {
                    StoreError::Refused(m) => Status::invalid_argument(m),
                    StoreError::Unavailable(m) => Status::unavailable(m),
                };
                let _ = tx.send(Err(status_code)).await;
                return;
            }
        };
        for reply in replies {
            let (entries, states) = match &reply {
                Reply::Entries(es) => (es.len() as u64, 0),
                Reply::State(_) => (0, 1),
                Reply::Digest(_) => (0, 0),
            };
            let msg = wire::reply_to_pb(&reply);
            status.sent(entries, states, wire::payload_len(&msg) as u64);
            if tx.send(Ok(msg)).await.is_err() {
                return;
            }
        }
    }
    tracing::debug!(peer = %peer, "control-plane sync stream closed by the peer");
}

/// Resolves when `shutdown` turns true; never, if its sender is gone
/// without having said so.
async fn closing(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}
