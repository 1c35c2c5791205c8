//! The runtime over real gRPC streams on loopback (plain HTTP/2: the cell
//! supplies mutual TLS through its `Dialer` and `Authenticate`, tested
//! with the cell).

use std::sync::Mutex;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Endpoint, Server};

use super::*;
use crate::record::{Kind, Target};

struct PlainDialer;

impl Dialer for PlainDialer {
    fn dial(&self, addr: SocketAddr, _cell: &str) -> Result<tonic::transport::Channel, String> {
        Ok(Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .connect_lazy())
    }
}

#[derive(Default)]
struct Seen(Mutex<Vec<String>>);

impl Observer for Seen {
    fn enforce(&self, records: &[Revocation]) {
        lock(&self.0).extend(records.iter().map(|r| r.id.clone()));
    }
}

struct TestNode {
    mesh: Arc<Mesh>,
    seen: Arc<Seen>,
    server: tokio::task::JoinHandle<()>,
}

fn settings() -> MeshSettings {
    MeshSettings {
        membership_interval: Duration::from_millis(100),
        anti_entropy: Duration::from_millis(200),
        ..MeshSettings::default()
    }
}

async fn start(
    cell: &str,
    node: &str,
    seeds: Vec<(SocketAddr, String)>,
    authenticate: Authenticate,
    shutdown: watch::Receiver<bool>,
) -> TestNode {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Seen::default());
    let mesh = Mesh::start(
        Identity {
            cell: cell.into(),
            node: node.into(),
            addr,
        },
        settings(),
        seeds,
        Arc::new(PlainDialer),
        seen.clone(),
        shutdown.clone(),
    )
    .await
    .expect("mesh");
    let server = mesh.server(authenticate);
    let mut stop = shutdown;
    let server = tokio::spawn(async move {
        let _ = Server::builder()
            .add_service(server)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
    });
    TestNode { mesh, seen, server }
}

fn anyone() -> Authenticate {
    Arc::new(|_, _| Ok(()))
}

fn record(id: &str) -> Revocation {
    let now = now_ms();
    Revocation {
        id: id.into(),
        kind: Kind::Revoke,
        target: Target::Identity("spiffe://prod.example/ns/payments/*".into()),
        reason: "leaked".into(),
        issued_at_ms: now,
        expires_ms: now + 3_600_000,
        lifted: false,
    }
}

/// Polls `f` until it holds or 30 s pass (a bound on a hung test, not a
/// performance claim).
async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two cells of three nodes, each node knowing one seed, once every node
/// sees all six live.
async fn six(shutdown: &watch::Receiver<bool>) -> Vec<TestNode> {
    let first = start("a", "a1", Vec::new(), anyone(), shutdown.clone()).await;
    let seed = vec![(first.mesh.identity().addr, "a".to_owned())];
    let mut nodes = vec![first];
    for (cell, node) in [
        ("a", "a2"),
        ("a", "a3"),
        ("b", "b1"),
        ("b", "b2"),
        ("b", "b3"),
    ] {
        nodes.push(start(cell, node, seed.clone(), anyone(), shutdown.clone()).await);
    }
    eventually("every node sees five live peers", async || {
        for n in &nodes {
            if n.mesh.members().await.iter().filter(|m| m.live).count() < 6 {
                return false;
            }
        }
        true
    })
    .await;
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_learned_on_one_node_is_enforced_by_every_node_of_every_cell() {
    let (stop, shutdown) = watch::channel(false);
    let nodes = six(&shutdown).await;

    eventually("every node counts six live members", async || {
        nodes.iter().all(|n| n.mesh.live_members() == 6)
    })
    .await;
    nodes[0].mesh.learn(record("rev-1"), true).expect("valid");
    eventually("every other node enforced rev-1", async || {
        nodes[1..]
            .iter()
            .all(|n| lock(&n.seen.0).iter().any(|id| id == "rev-1"))
    })
    .await;
    // Each heard it once: duplicates go no further.
    for n in &nodes[1..] {
        assert_eq!(lock(&n.seen.0).len(), 1, "{:?}", n.mesh.identity());
        assert!(n.mesh.holds("rev-1"));
    }
    // The origin learned it from its cell, not from a peer.
    assert!(lock(&nodes[0].seen.0).is_empty());
    assert!(nodes[0].mesh.stats().rumours_sent.load(Ordering::Relaxed) > 0);

    // Every node's state reports when it applied the record.
    eventually("node b3 sees all six applications", async || {
        let apps = nodes[5].mesh.applications("rev-1").await;
        apps.len() == 6 && apps.iter().all(|a| a.applied_ms.is_some())
    })
    .await;
    let apps = nodes[5].mesh.applications("rev-1").await;
    let cells: std::collections::BTreeSet<&str> =
        apps.iter().map(|a| a.member.cell.as_str()).collect();
    assert_eq!(cells, ["a", "b"].into_iter().collect());

    // Shutting down ends every stream, so each server's graceful shutdown
    // completes (it waits for open calls).
    let _ = stop.send(true);
    for n in nodes {
        tokio::time::timeout(Duration::from_secs(30), n.server)
            .await
            .expect("the server stopped: no mesh stream held it open")
            .expect("server task");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_missed_the_rumours_catches_up_by_anti_entropy() {
    let (stop, shutdown) = watch::channel(false);
    let nodes = six(&shutdown).await;
    // Records spread and their rumours die out before the late node joins.
    for i in 0..5 {
        nodes[i % 6]
            .mesh
            .learn(record(&format!("early-{i}")), true)
            .expect("valid");
    }
    eventually("rumours stop", async || {
        nodes.iter().all(|n| lock(&n.mesh.core).spreading() == 0)
    })
    .await;
    let late = start(
        "c",
        "c1",
        vec![(nodes[3].mesh.identity().addr, "b".to_owned())],
        anyone(),
        shutdown.clone(),
    )
    .await;
    eventually("the late node holds all five records", async || {
        (0..5).all(|i| late.mesh.holds(&format!("early-{i}")))
    })
    .await;
    // Held means enforced: the observer ran before the record could be
    // passed on.
    assert_eq!(lock(&late.seen.0).len(), 5);
    eventually("the repairs are counted", async || {
        late.mesh.stats().records_repaired.load(Ordering::Relaxed) >= 5
    })
    .await;
    let _ = stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_that_fail_authentication_or_send_junk_change_nothing() {
    let (stop, shutdown) = watch::channel(false);
    let refuse_b: Authenticate = Arc::new(|_, hello: &pb::Hello| {
        if hello.cell == "b" {
            Err(Status::permission_denied("cell b is not trusted here"))
        } else {
            Ok(())
        }
    });
    let a = start("a", "a1", Vec::new(), refuse_b, shutdown.clone()).await;
    let addr = a.mesh.identity().addr;
    let channel = PlainDialer.dial(addr, "a").expect("dial");
    let mut client = pb::mesh_client::MeshClient::new(channel);

    // No hello first.
    let frames = vec![pb::Frame {
        body: Some(Body::Revocations(bytes::Bytes::from_static(b"junk"))),
    }];
    let err = client
        .exchange(tokio_stream::iter(frames))
        .await
        .expect_err("no hello");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");

    // A hello the authenticator refuses.
    let hello = |cell: &str, gossip_addr: &str| pb::Frame {
        body: Some(Body::Hello(pb::Hello {
            cell: cell.into(),
            node: "x".into(),
            gossip_addr: gossip_addr.into(),
        })),
    };
    let err = client
        .exchange(tokio_stream::iter(vec![hello("b", "127.0.0.1:1")]))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");

    // A hello with an address that is not one.
    let err = client
        .exchange(tokio_stream::iter(vec![hello("a", "not an address")]))
        .await
        .expect_err("bad address");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");

    // An accepted stream sending a message that does not decode, and one
    // with an invalid record: both refused whole.
    let mut bad = record("rev-bad");
    bad.id = String::new();
    let frames = vec![
        hello("a", "127.0.0.1:9"),
        pb::Frame {
            body: Some(Body::Revocations(bytes::Bytes::from_static(
                b"\xff\xff\xff",
            ))),
        },
        pb::Frame {
            body: Some(Body::Revocations(
                Message::Rumours(vec![record("rev-good"), bad])
                    .encode()
                    .into(),
            )),
        },
    ];
    let _replies = client
        .exchange(tokio_stream::iter(frames))
        .await
        .expect("accepted");
    eventually("both messages refused", async || {
        a.mesh.stats().messages_refused.load(Ordering::Relaxed) == 2
    })
    .await;
    assert!(!a.mesh.holds("rev-good"));
    assert!(lock(&a.seen.0).is_empty());
    let _ = stop.send(true);
}
