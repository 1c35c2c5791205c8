//! One long-lived gRPC stream per pair of nodes, carrying membership and
//! revocation frames both ways.
//!
//! A node sends to a peer on whichever stream with it is open: one it
//! dialled, or one the peer dialled (the reply half of the peer's call).
//! With none, it dials. Frames queue per peer and are dropped when the
//! queue is full or the peer is unreachable, as datagrams would be: both
//! protocols on top repeat themselves (membership every round, rumours for
//! several ticks, anti-entropy until digests agree).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt as _;
use sigil_proto::mesh::v1 as pb;
use sigil_proto::mesh::v1::frame::Body;
use sigil_proto::mesh::v1::mesh_client::MeshClient;
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tonic::transport::Channel;

/// The largest frame either end accepts (a repair of many records).
pub const MAX_FRAME_BYTES: usize = crate::broadcast::MAX_MESSAGE_BYTES + 1024;
/// Frames waiting for one peer before more are dropped.
const QUEUE: usize = 1024;
/// How long a peer that could not be reached is left alone before the
/// next frame for it dials again.
const REDIAL_AFTER: Duration = Duration::from_secs(1);

/// Who a node is on the mesh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub cell: String,
    pub node: String,
    /// The address its membership advertises: its cluster address.
    pub addr: SocketAddr,
}

impl Identity {
    /// The node's name on the mesh: `cell/node`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.cell, self.node)
    }
}

/// Opens channels to peers. Trust is the caller's: it knows which CA
/// vouches for which cell, and presents this node's certificate.
pub trait Dialer: Send + Sync + 'static {
    fn dial(&self, addr: SocketAddr, cell: &str) -> Result<Channel, String>;
}

/// Checks an incoming stream's `Hello` against what the transport
/// verified (the certificate's cell and node).
pub type Authenticate =
    Arc<dyn Fn(&tonic::Extensions, &pb::Hello) -> Result<(), Status> + Send + Sync>;

/// A payload from a peer, by the address its membership advertises.
#[derive(Debug)]
pub(crate) struct Inbound {
    pub from: SocketAddr,
    pub payload: Bytes,
}

/// Counters of what went over the streams.
#[derive(Debug, Default)]
pub struct LinkStats {
    pub frames_sent: AtomicU64,
    pub frames_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    /// Frames dropped: the peer's queue was full, or it had no known cell
    /// to dial it as.
    pub frames_dropped: AtomicU64,
    pub streams_opened: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The node's streams.
pub(crate) struct Links {
    me: Identity,
    dialer: Arc<dyn Dialer>,
    /// Peer address → its cell, from seeds, membership and hellos.
    cells: Mutex<HashMap<SocketAddr, String>>,
    out: Mutex<HashMap<SocketAddr, mpsc::Sender<pb::Frame>>>,
    failed: Mutex<HashMap<SocketAddr, Instant>>,
    membership: mpsc::Sender<Inbound>,
    revocations: mpsc::Sender<Inbound>,
    /// Ends every stream, both ways (a server's graceful shutdown waits
    /// for its streams to end).
    shutdown: watch::Receiver<bool>,
    pub(crate) stats: LinkStats,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links")
            .field("me", &self.me)
            .field("open", &lock(&self.out).len())
            .finish_non_exhaustive()
    }
}

pub type FrameStream = Pin<Box<dyn Stream<Item = Result<pb::Frame, Status>> + Send>>;

impl Links {
    pub(crate) fn new(
        me: Identity,
        dialer: Arc<dyn Dialer>,
        shutdown: watch::Receiver<bool>,
    ) -> (Arc<Self>, mpsc::Receiver<Inbound>, mpsc::Receiver<Inbound>) {
        let (membership, membership_rx) = mpsc::channel(QUEUE);
        let (revocations, revocations_rx) = mpsc::channel(QUEUE);
        let links = Arc::new(Self {
            me,
            dialer,
            cells: Mutex::new(HashMap::new()),
            out: Mutex::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
            membership,
            revocations,
            shutdown,
            stats: LinkStats::default(),
        });
        (links, membership_rx, revocations_rx)
    }

    /// Records which cell the node at `addr` belongs to (so it can be
    /// dialled with that cell's trust).
    pub(crate) fn learn_cell(&self, addr: SocketAddr, cell: &str) {
        let mut cells = lock(&self.cells);
        if cells.get(&addr).is_none_or(|c| c != cell) {
            cells.insert(addr, cell.to_owned());
        }
    }

    /// How many peers this node has a stream with.
    pub(crate) fn open_streams(&self) -> usize {
        lock(&self.out).values().filter(|t| !t.is_closed()).count()
    }

    /// Queues `body` for the peer at `to`; dials it if no stream is open.
    /// Returns whether it was queued.
    pub(crate) fn send(self: &Arc<Self>, to: SocketAddr, body: Body) -> bool {
        if to == self.me.addr {
            return false;
        }
        let len = body_len(&body);
        let tx = {
            let mut out = lock(&self.out);
            match out.get(&to) {
                Some(tx) if !tx.is_closed() => tx.clone(),
                _ => {
                    let cell = lock(&self.cells).get(&to).cloned();
                    let recently_failed = lock(&self.failed)
                        .get(&to)
                        .is_some_and(|t| t.elapsed() < REDIAL_AFTER);
                    let (Some(cell), false) = (cell, recently_failed) else {
                        self.stats.frames_dropped.fetch_add(1, Ordering::Relaxed);
                        return false;
                    };
                    let tx = self.dial(to, cell);
                    out.insert(to, tx.clone());
                    tx
                }
            }
        };
        match tx.try_send(pb::Frame { body: Some(body) }) {
            Ok(()) => {
                self.stats.frames_sent.fetch_add(1, Ordering::Relaxed);
                self.stats.bytes_sent.fetch_add(len, Ordering::Relaxed);
                true
            }
            Err(_) => {
                self.stats.frames_dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Opens a stream to `to` in the background; frames queue meanwhile.
    fn dial(self: &Arc<Self>, to: SocketAddr, cell: String) -> mpsc::Sender<pb::Frame> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let hello = pb::Frame {
            body: Some(Body::Hello(pb::Hello {
                cell: self.me.cell.clone(),
                node: self.me.node.clone(),
                gossip_addr: self.me.addr.to_string(),
            })),
        };
        // A new channel has room.
        let _ = tx.try_send(hello);
        let links = Arc::clone(self);
        let ours = tx.clone();
        let mut stop = self.shutdown.clone();
        tokio::spawn(async move {
            let ran = async {
                let channel = links.dialer.dial(to, &cell)?;
                let mut client = MeshClient::new(channel)
                    .max_decoding_message_size(MAX_FRAME_BYTES)
                    .max_encoding_message_size(MAX_FRAME_BYTES);
                let mut replies = client
                    .exchange(ReceiverStream::new(rx))
                    .await
                    .map_err(|s| s.message().to_owned())?
                    .into_inner();
                links.stats.streams_opened.fetch_add(1, Ordering::Relaxed);
                lock(&links.failed).remove(&to);
                while let Some(frame) = replies.message().await.map_err(|s| s.to_string())? {
                    links.dispatch(to, frame);
                }
                Ok::<(), String>(())
            };
            let ran = tokio::select! {
                r = ran => r,
                _ = stop.wait_for(|s| *s) => Ok(()),
            };
            if let Err(e) = ran {
                tracing::debug!(peer = %to, error = %e, "mesh stream to peer ended");
                lock(&links.failed).insert(to, Instant::now());
            }
            links.forget(to, &ours);
        });
        tx
    }

    /// Drops the stream to `to` if it is still `tx`.
    fn forget(&self, to: SocketAddr, tx: &mpsc::Sender<pb::Frame>) {
        let mut out = lock(&self.out);
        if out.get(&to).is_some_and(|t| t.same_channel(tx)) {
            out.remove(&to);
        }
    }

    /// Serves a stream a peer opened: its first frame must be a `Hello`
    /// that `authenticate` accepts.
    pub(crate) async fn accept(
        self: &Arc<Self>,
        extensions: &tonic::Extensions,
        mut incoming: tonic::Streaming<pb::Frame>,
        authenticate: &Authenticate,
    ) -> Result<FrameStream, Status> {
        let first = incoming
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("the stream closed before its hello"))?;
        let Some(Body::Hello(hello)) = first.body else {
            return Err(Status::invalid_argument(
                "the first frame of a mesh stream must be a hello",
            ));
        };
        authenticate(extensions, &hello)?;
        let from: SocketAddr = hello.gossip_addr.parse().map_err(|_| {
            Status::invalid_argument(format!(
                "hello: gossip_addr {:?} is not an IP:PORT address",
                hello.gossip_addr.chars().take(64).collect::<String>()
            ))
        })?;
        self.learn_cell(from, &hello.cell);
        let (tx, rx) = mpsc::channel(QUEUE);
        {
            // Replies go back on this stream unless one of ours is open.
            let mut out = lock(&self.out);
            if out.get(&from).is_none_or(|t| t.is_closed()) {
                out.insert(from, tx.clone());
            }
        }
        lock(&self.failed).remove(&from);
        self.stats.streams_opened.fetch_add(1, Ordering::Relaxed);
        let links = Arc::clone(self);
        let mut stop = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    m = incoming.message() => m,
                    _ = stop.wait_for(|s| *s) => break,
                };
                match next {
                    Ok(Some(frame)) => links.dispatch(from, frame),
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(peer = %from, error = %e, "mesh stream from peer ended");
                        break;
                    }
                }
            }
            links.forget(from, &tx);
        });
        let mut stop = self.shutdown.clone();
        let ends = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        Ok(Box::pin(
            ReceiverStream::new(rx).map(Ok).take_until(Box::pin(ends)),
        ))
    }

    fn dispatch(&self, from: SocketAddr, frame: pb::Frame) {
        let Some(body) = frame.body else {
            return;
        };
        self.stats.frames_received.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bytes_received
            .fetch_add(body_len(&body), Ordering::Relaxed);
        let (queue, payload) = match body {
            Body::Membership(b) => (&self.membership, b),
            Body::Revocations(b) => (&self.revocations, b),
            Body::Hello(_) => {
                tracing::debug!(peer = %from, "a second hello on a mesh stream is ignored");
                return;
            }
        };
        if queue.try_send(Inbound { from, payload }).is_err() {
            self.stats.frames_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn body_len(body: &Body) -> u64 {
    match body {
        Body::Membership(b) | Body::Revocations(b) => b.len() as u64,
        Body::Hello(h) => (h.cell.len() + h.node.len() + h.gossip_addr.len()) as u64,
    }
}
