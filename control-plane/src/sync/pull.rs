//! The pulling side: a cell's leader keeps one stream open to each peer
//! cell and applies what arrives.

use std::sync::Arc;
use std::time::Duration;

use sigil_proto::federation::v1 as pb;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::now_ms;
use super::session::{Reply, Request};
use super::status::SyncStatus;
use super::store::Store;
use super::wire;
use crate::model::CellId;

/// A peer cell and the cluster-port addresses of its nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub cell: CellId,
    pub addrs: Vec<String>,
}

/// A channel to a peer's cluster port (mutual TLS, trusting that peer's CA).
pub type Dial = Arc<dyn Fn(&str) -> Result<Channel, String> + Send + Sync>;

/// How often to send a digest and how to back off after a failure.
#[derive(Clone, Copy, Debug)]
pub struct PullSettings {
    /// How often the caller repeats its digest: repair and lag reporting.
    pub digest_every: Duration,
    /// The first pause after a failed stream; doubled up to `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
}

impl Default for PullSettings {
    fn default() -> Self {
        Self {
            digest_every: Duration::from_secs(2),
            retry_min: Duration::from_millis(200),
            retry_max: Duration::from_secs(5),
        }
    }
}

/// Pulls from `peer` while `active` is true (this node leads its cell and is
/// unsealed), trying the peer's addresses in turn. Runs until `active`'s
/// sender is dropped.
pub async fn pull<S: Store>(
    store: Arc<S>,
    peer: Peer,
    dial: Dial,
    mut active: watch::Receiver<bool>,
    status: Arc<SyncStatus>,
    settings: PullSettings,
) {
    let mut next = 0usize;
    let mut pause = settings.retry_min;
    loop {
        if active.wait_for(|a| *a).await.is_err() {
            return;
        }
        if peer.addrs.is_empty() {
            status.update(&peer.cell, |s| {
                s.last_error = Some("no addresses configured".into());
            });
            return;
        }
        let addr = peer.addrs[next % peer.addrs.len()].clone();
        next = next.wrapping_add(1);
        let outcome = stream(
            &*store,
            &peer.cell,
            &addr,
            &dial,
            &mut active,
            &status,
            settings,
        )
        .await;
        status.update(&peer.cell, |s| s.connected = None);
        match outcome {
            Ok(()) => pause = settings.retry_min,
            Err(e) => {
                tracing::warn!(peer = %peer.cell, %addr, error = %e, "control-plane sync with a peer cell failed; retrying");
                status.update(&peer.cell, |s| s.last_error = Some(e));
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    r = active.changed() => if r.is_err() { return },
                }
                pause = (pause * 2).min(settings.retry_max);
            }
        }
    }
}

/// One stream: `Ok` when this node stopped being active, `Err` why it
/// ended otherwise.
async fn stream<S: Store>(
    store: &S,
    peer: &CellId,
    addr: &str,
    dial: &Dial,
    active: &mut watch::Receiver<bool>,
    status: &SyncStatus,
    settings: PullSettings,
) -> Result<(), String> {
    let channel = dial(addr)?;
    let mut client = pb::federation_client::FederationClient::new(channel)
        .max_decoding_message_size(wire::MAX_PAYLOAD_BYTES + 1024)
        .max_encoding_message_size(wire::MAX_PAYLOAD_BYTES + 1024);
    let (tx, rx) = mpsc::channel(4);
    send_digest(store, &tx).await?;
    let mut replies = client
        .sync(ReceiverStream::new(rx))
        .await
        .map_err(|s| format!("{addr}: {}: {}", s.code(), s.message()))?
        .into_inner();
    status.update(peer, |s| {
        s.connected = Some(addr.to_owned());
        s.last_error = None;
    });
    tracing::info!(peer = %peer, %addr, "control-plane sync stream open");
    let mut tick = tokio::time::interval(settings.digest_every);
    tick.reset();
    loop {
        tokio::select! {
            msg = replies.message() => {
                let m = match msg {
                    Ok(Some(m)) => m,
                    Ok(None) => return Err(format!("{addr} closed the stream")),
                    Err(s) => return Err(format!("{addr}: {}: {}", s.code(), s.message())),
                };
                let bytes = wire::payload_len(&m) as u64;
                let reply = wire::reply_from_pb(&m).map_err(|e| e.to_string())?;
                match reply {
                    Reply::Entries(entries) => {
                        let n = entries.len() as u64;
                        let receipt = store.receive(entries).await.map_err(|e| format!("ops from {peer}: {e}"))?;
                        for (origin, ahead) in &receipt.clock_warnings {
                            tracing::warn!(peer = %peer, %origin, error = %ahead, "control-plane op timestamped in the future");
                        }
                        status.update(peer, |s| {
                            s.entries_received += n;
                            s.bytes_received += bytes;
                            s.last_sync_ms = Some(now_ms());
                        });
                    }
                    Reply::State(state) => {
                        store.merge_snapshot(*state).await.map_err(|e| format!("state from {peer}: {e}"))?;
                        tracing::info!(peer = %peer, "merged a peer cell's whole control-plane state");
                        status.update(peer, |s| {
                            s.states_received += 1;
                            s.bytes_received += bytes;
                            s.last_sync_ms = Some(now_ms());
                        });
                    }
                    Reply::Digest(d) => status.update(peer, |s| {
                        s.peer_applied = Some(d.applied);
                        s.bytes_received += bytes;
                        s.last_sync_ms = Some(now_ms());
                    }),
                }
            }
            _ = tick.tick() => send_digest(store, &tx).await?,
            r = active.changed() => {
                if r.is_err() || !*active.borrow() {
                    return Ok(());
                }
            }
        }
    }
}

async fn send_digest<S: Store>(
    store: &S,
    tx: &mpsc::Sender<pb::SyncRequest>,
) -> Result<(), String> {
    let digest = store
        .read(|r| r.digest())
        .await
        .map_err(|e| e.to_string())?;
    tx.send(wire::request_to_pb(&Request { digest }))
        .await
        .map_err(|_| "the stream closed".to_owned())
}
