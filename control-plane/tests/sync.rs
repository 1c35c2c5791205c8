//! Sync between replicas over real tonic streams on loopback, with replicas
//! in memory (`MemoryStore`); the cells' own stores and mutual TLS are
//! tested in `cells/tests/federation.rs`.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use sigil_control_plane::model::PolicyDoc;
use sigil_control_plane::replica::Limits;
use sigil_control_plane::sync::{
    self, Dial, FederationService, MemoryStore, Peer, PullSettings, Reply, SyncStatus, wire,
};
use sigil_control_plane::{CellId, Entry, Key, Replica, Value};
use sigil_proto::federation::v1 as pb;
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

fn cell(s: &str) -> CellId {
    CellId::new(s).expect("cell")
}

fn store(id: &str, limits: Limits) -> Arc<MemoryStore> {
    Arc::new(MemoryStore::new(Replica::new(cell(id), limits)))
}

fn policy(name: &str, text: &str) -> (Key, Option<Value>) {
    (
        Key::Policy { name: name.into() },
        Some(Value::Policy(PolicyDoc { text: text.into() })),
    )
}

async fn listen() -> (tokio::net::TcpListener, SocketAddr) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let a = l.local_addr().expect("addr");
    (l, a)
}

/// Serves `store` to callers, every one of them taken to be `caller`.
async fn serve(store: Arc<MemoryStore>, caller: &str) -> SocketAddr {
    let caller = cell(caller);
    let authorize: sync::service::Authorize = Arc::new(move |_| Ok(caller.clone()));
    let svc = FederationService::new(store, authorize, Arc::new(SyncStatus::new())).into_server();
    let (l, addr) = listen().await;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
    );
    addr
}

fn dial() -> Dial {
    Arc::new(|addr: &str| {
        Ok(
            tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .map_err(|e| e.to_string())?
                .connect_lazy(),
        )
    })
}

fn settings() -> PullSettings {
    PullSettings {
        digest_every: Duration::from_millis(100),
        retry_min: Duration::from_millis(20),
        retry_max: Duration::from_millis(200),
    }
}

/// `store` pulls from `peer` at `addr` while `active` is true.
fn pull(
    store: Arc<MemoryStore>,
    peer: &str,
    addr: SocketAddr,
    active: watch::Receiver<bool>,
) -> Arc<SyncStatus> {
    let status = Arc::new(SyncStatus::new());
    tokio::spawn(sync::pull(
        store,
        Peer {
            cell: cell(peer),
            addrs: vec![addr.to_string()],
        },
        dial(),
        active,
        status.clone(),
        settings(),
    ));
    status
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn ops_flow_both_ways_and_through_a_cell_in_the_middle() {
    let (a, b, c) = (
        store("a", Limits::default()),
        store("b", Limits::default()),
        store("c", Limits::default()),
    );
    let (_on, active) = watch::channel(true);
    // a <-> b <-> c; a and c never talk directly.
    let a_addr = serve(a.clone(), "b").await;
    let b_for_a = serve(b.clone(), "a").await;
    let b_for_c = serve(b.clone(), "c").await;
    let c_addr = serve(c.clone(), "b").await;
    pull(b.clone(), "a", a_addr, active.clone());
    pull(a.clone(), "b", b_for_a, active.clone());
    pull(c.clone(), "b", b_for_c, active.clone());
    pull(b.clone(), "c", c_addr, active.clone());

    let (k, v) = policy("from-a", "path \"a\" {}");
    a.write(k, v).expect("write");
    let (k, v) = policy("from-c", "path \"c\" {}");
    c.write(k, v).expect("write");
    let (k, v) = policy("shared", "path \"b\" {}");
    b.write(k, v).expect("write");

    eventually("every replica holds every op", || {
        let d = a.replica().digest();
        d == b.replica().digest() && d == c.replica().digest() && d.applied.iter().count() == 3
    })
    .await;
    let c_state = c.replica();
    assert_eq!(
        c_state.state().get(&Key::Policy {
            name: "from-a".into()
        }),
        Some(Value::Policy(PolicyDoc {
            text: "path \"a\" {}".into()
        })),
        "relayed through b"
    );
}

#[tokio::test]
async fn a_cell_restarted_from_an_old_snapshot_is_sent_the_whole_state() {
    let limits = Limits {
        log_per_origin: 5,
        ..Limits::default()
    };
    let a = store("a", limits);
    let b = store("b", limits);
    let (on, active) = watch::channel(true);
    let a_addr = serve(a.clone(), "b").await;
    let status = pull(b.clone(), "a", a_addr, active.clone());
    for i in 0..3 {
        let (k, v) = policy(&format!("p{i}"), "path \"x\" {}");
        a.write(k, v).expect("write");
    }
    eventually("b has a's first ops", || {
        b.replica().applied() == a.replica().applied()
    })
    .await;
    let old = b.replica();
    on.send(false).expect("pause");

    // While b is away, a writes far more than its log keeps.
    for i in 3..40 {
        let (k, v) = policy(&format!("p{i}"), &format!("path \"{i}\" {{}}"));
        a.write(k, v).expect("write");
    }
    // b comes back from the old copy: its log gap is repaired by a whole state.
    let b2 = Arc::new(MemoryStore::new(old));
    let (_on2, active2) = watch::channel(true);
    let status2 = pull(b2.clone(), "a", a_addr, active2);
    eventually("the restarted b caught up", || {
        b2.replica().digest() == a.replica().digest()
    })
    .await;
    assert!(
        status2
            .peers()
            .get(&cell("a"))
            .is_some_and(|s| s.states_received >= 1),
        "caught up by a whole state: {:?}",
        status2.peers()
    );
    assert_eq!(b2.replica().state().len(), 40);
    assert!(
        status
            .peers()
            .get(&cell("a"))
            .is_some_and(|s| s.entries_received >= 3)
    );
}

/// A Federation server that answers every stream with fixed replies.
struct Scripted {
    replies: Vec<pb::SyncReply>,
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<pb::SyncReply, Status>> + Send>>;

#[tonic::async_trait]
impl pb::federation_server::Federation for Scripted {
    type SyncStream = ReplyStream;

    async fn sync(
        &self,
        _req: Request<Streaming<pb::SyncRequest>>,
    ) -> Result<Response<Self::SyncStream>, Status> {
        let replies: Vec<Result<pb::SyncReply, Status>> =
            self.replies.iter().cloned().map(Ok).collect();
        // Keep the stream open after the script, as a live peer would.
        let s =
            futures::StreamExt::chain(futures::stream::iter(replies), futures::stream::pending());
        Ok(Response::new(Box::pin(s)))
    }
}

async fn scripted(replies: Vec<pb::SyncReply>) -> SocketAddr {
    let (l, addr) = listen().await;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::federation_server::FederationServer::new(Scripted {
                replies,
            }))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
    );
    addr
}

fn ops_of(id: &str, n: usize) -> (Replica, Vec<Entry>) {
    let mut r = Replica::new(cell(id), Limits::default());
    let ops = (0..n)
        .map(|i| {
            let (k, v) = policy(&format!("p{i}"), "path \"x\" {}");
            r.originate(k, v, 1_000 + i as u64).expect("originate")
        })
        .collect();
    (r, ops)
}

#[tokio::test]
async fn a_malformed_or_forged_stream_is_refused_and_changes_nothing() {
    let (_, ops) = ops_of("a", 2);
    let mut forged = ops[1].clone();
    forged.put.stamped.origin = cell("z");
    let garbage = pb::SyncReply {
        body: Some(pb::sync_reply::Body::Entries(vec![0xff; 40].into())),
    };
    // A good op followed, in the same batch, by a forged one: the batch is refused whole.
    let mixed = wire::reply_to_pb(&Reply::Entries(vec![ops[0].clone(), forged]));
    for (what, reply, expect) in [
        ("garbage", garbage, "does not decode"),
        ("forged", mixed, "names another origin"),
    ] {
        let addr = scripted(vec![reply]).await;
        let b = store("b", Limits::default());
        let (_on, active) = watch::channel(true);
        let status = pull(b.clone(), "a", addr, active);
        eventually(&format!("the {what} stream is refused"), || {
            status
                .peers()
                .get(&cell("a"))
                .and_then(|s| s.last_error.clone())
                .is_some_and(|e| e.contains(expect))
        })
        .await;
        let r = b.replica();
        assert!(r.state().is_empty(), "{what}: nothing applied");
        assert_eq!(r.applied().iter().count(), 0, "{what}");
    }
}

#[tokio::test]
async fn a_replayed_stream_applies_each_op_once() {
    let (a, ops) = ops_of("a", 3);
    let once = wire::reply_to_pb(&Reply::Entries(ops.clone()));
    // The same ops again, then out of order, then a duplicate of the last.
    let replayed = wire::reply_to_pb(&Reply::Entries(vec![
        ops[2].clone(),
        ops[0].clone(),
        ops[1].clone(),
        ops[2].clone(),
    ]));
    let addr = scripted(vec![once.clone(), replayed, once]).await;
    let b = store("b", Limits::default());
    let (_on, active) = watch::channel(true);
    let status = pull(b.clone(), "a", addr, active);
    eventually("all replies handled", || {
        status
            .peers()
            .get(&cell("a"))
            .is_some_and(|s| s.entries_received == 10)
    })
    .await;
    let r = b.replica();
    assert_eq!(r.applied().get(&cell("a")), 3);
    assert_eq!(r.state(), a.state());
    assert_eq!(r.log(&cell("a")).count(), 3, "each op logged once");
}

#[tokio::test]
async fn a_malformed_request_ends_the_stream_with_invalid_argument() {
    let a = store("a", Limits::default());
    let addr = serve(a, "b").await;
    let mut client = pb::federation_client::FederationClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let bad = pb::SyncRequest {
        digest: vec![1, 2, 3].into(),
    };
    let mut replies = client
        .sync(futures::stream::iter(vec![bad]))
        .await
        .expect("stream opens")
        .into_inner();
    let err = replies.message().await.expect_err("refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(err.message().contains("does not decode"), "{err}");
}
