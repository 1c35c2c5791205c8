//! What Raft writes to disk and accepts from peers:
//! - the Raft log, the state database and snapshots hold no plaintext
//!   secret, key or token, after real use of a node through its HTTP API;
//! - a corrupt snapshot (one flipped byte) is refused with `DATA_LOSS` and
//!   leaves the receiving node unchanged; the intact one installs;
//! - a join under a name another node already holds is refused, naming it.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{call, strings, wait_for};
use sigil_cell::config::Config;
use sigil_cell::raft::network::PlainConnector;
use sigil_cell::raft::replicated::ReplicatedStorage;
use sigil_cell::raft::service::ClusterService;
use sigil_cell::raft::{CellNode, RaftCell, RaftSettings, node_id_of};
use sigil_cell::server;
use sigil_cell::storage::{Batch, Storage};
use sigil_proto::cluster::v1 as pb;
use sigil_proto::cluster::v1::cluster_client::ClusterClient;

const WAIT: Duration = Duration::from_secs(20);

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_log_state_and_snapshots_hold_no_plaintext() {
    let tmp = tempfile::tempdir().expect("tmp");
    let text = format!(
        "node_id = \"n1\"\ndata_dir = {:?}\ndisable_mlock = true\n\
         [listener]\nhttp_addr = \"127.0.0.1:0\"\ngrpc_addr = \"127.0.0.1:0\"\n\
         [raft]\nsnapshot_every = 100\n",
        tmp.path().display().to_string()
    );
    let config = Config::parse(&text).expect("config");
    let node = server::start(&config).await.expect("start");
    let url = node.http_url();
    let (code, init) = call(
        &url,
        "PUT",
        "sys/init",
        None,
        r#"{"secret_shares":1,"secret_threshold":1}"#,
    );
    assert_eq!(code, 200, "{init}");
    let key = strings(&init, "keys").remove(0);
    let root = init["root_token"].as_str().expect("root").to_owned();
    let (code, _) = call(
        &url,
        "PUT",
        "sys/unseal",
        None,
        &format!(r#"{{"key":"{key}"}}"#),
    );
    assert_eq!(code, 200);
    let (code, _) = call(
        &url,
        "POST",
        "sys/mounts/secret",
        Some(&root),
        r#"{"type":"kv","options":{"version":"2"}}"#,
    );
    assert_eq!(code, 204);
    let canary = format!("canary-{}", uuid::Uuid::new_v4().simple());
    // Enough writes for two snapshots, every one carrying the canary.
    for i in 0..250 {
        let (code, body) = call(
            &url,
            "PUT",
            &format!("secret/data/c{i}"),
            Some(&root),
            &format!(r#"{{"data":{{"v":"{canary}-{i}"}}}}"#),
        );
        assert_eq!(code, 200, "{body}");
    }
    let (code, tok) = call(&url, "POST", "auth/token/create", Some(&root), "{}");
    assert_eq!(code, 200);
    let child = tok["auth"]["client_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let cell = node.node.cell().expect("cell").clone();
    wait_for(WAIT, || {
        cell.raft()
            .metrics()
            .borrow()
            .snapshot
            .filter(|s| s.index >= 200)
            .map(|_| ())
    })
    .expect("a snapshot after 200 entries");
    node.shutdown().await;

    let mut files = Vec::new();
    files_under(tmp.path(), &mut files);
    let snapshots: Vec<_> = files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "snap"))
        .collect();
    assert!(!snapshots.is_empty(), "a snapshot file is on disk");
    assert!(
        files.iter().any(|p| p.starts_with(tmp.path().join("raft"))),
        "the raft log is on disk"
    );
    let unseal = hex::decode(&key)
        .or_else(|_| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.decode(&key)
        })
        .expect("key bytes");
    let needles: Vec<(&str, Vec<u8>)> = vec![
        ("canary", canary.as_bytes().to_vec()),
        ("root token", root.as_bytes().to_vec()),
        ("child token", child.as_bytes().to_vec()),
        ("unseal key (text)", key.as_bytes().to_vec()),
        ("unseal key (bytes)", unseal),
    ];
    for path in &files {
        let bytes = std::fs::read(path).expect("read");
        for (what, needle) in &needles {
            assert!(
                !contains(&bytes, needle),
                "{what} found in plaintext in {}",
                path.display()
            );
        }
    }
}

/// A one-node cell over plain loopback TCP, serving its cluster API.
async fn plain_cell(dir: &Path, name: &str) -> (RaftCell, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let mut settings = RaftSettings::new(name, &addr, "http://127.0.0.1:1");
    settings.snapshot_every = 50;
    let cell = RaftCell::open(dir, settings, Arc::new(PlainConnector))
        .await
        .expect("open");
    let svc = ClusterService::new(cell.clone()).into_server();
    tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let _ = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(incoming)
            .await;
    });
    (cell, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_snapshots_are_refused_and_change_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (a, _) = plain_cell(&tmp.path().join("a"), "a").await;
    let mut members = BTreeMap::new();
    members.insert(a.id(), a.node().clone());
    assert!(a.bootstrap(members).await.expect("bootstrap"));
    wait_for(WAIT, || a.is_leader().then_some(())).expect("leader");
    let store = ReplicatedStorage::new(a.clone());
    for i in 0..120 {
        store
            .apply(Batch::new().put(format!("k{i:03}"), vec![i as u8; 100]))
            .await
            .expect("write");
    }
    a.raft().trigger().snapshot().await.expect("trigger");
    // The snapshot is recorded in current.json once it is complete.
    let (meta, snap, size): (sigil_cell::raft::SnapshotMeta, PathBuf, u64) = wait_for(WAIT, || {
        let bytes = std::fs::read(tmp.path().join("a/state/snapshots/current.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    })
    .expect("a snapshot");
    let good = std::fs::read(&snap).expect("read snapshot");
    assert_eq!(good.len() as u64, size);

    let (b, b_addr) = plain_cell(&tmp.path().join("b"), "b").await;
    let vote = a.raft().metrics().borrow().vote;
    let send = |bytes: Vec<u8>| {
        let addr = b_addr.clone();
        let meta = meta.clone();
        async move {
            let mut client = ClusterClient::connect(format!("http://{addr}"))
                .await
                .expect("connect");
            let header = postcard::to_stdvec(&(vote, meta, bytes.len() as u64)).expect("header");
            let chunks = vec![
                pb::SnapshotChunk {
                    header: header.into(),
                    data: Default::default(),
                },
                pb::SnapshotChunk {
                    header: Default::default(),
                    data: bytes.into(),
                },
            ];
            client.install_snapshot(futures::stream::iter(chunks)).await
        }
    };
    let mut bad = good.clone();
    let pos = bad.len() / 2;
    bad[pos] ^= 0x01;
    let err = send(bad).await.expect_err("corrupt snapshot refused");
    assert_eq!(err.code(), tonic::Code::DataLoss, "{err:?}");
    assert!(err.message().contains("checksum"), "{}", err.message());
    assert_eq!(b.applied().index(), 0, "refused snapshot changed nothing");
    assert_eq!(b.state_machine().db().get(b"k000").expect("get"), None);

    send(good).await.expect("intact snapshot installs");
    assert_eq!(b.applied().log_id, meta.last_log_id);
    assert_eq!(
        b.state_machine().db().get(b"k007").expect("get"),
        Some(vec![7u8; 100])
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_already_taken_cannot_join() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (a, _) = plain_cell(&tmp.path().join("a"), "a").await;
    let mut members = BTreeMap::new();
    members.insert(a.id(), a.node().clone());
    a.bootstrap(members).await.expect("bootstrap");
    wait_for(WAIT, || a.is_leader().then_some(())).expect("leader");
    let (_b, b_addr) = plain_cell(&tmp.path().join("b"), "b").await;
    let joined = a
        .add_member(
            node_id_of("b"),
            CellNode {
                name: "b".into(),
                cluster_addr: b_addr.clone(),
                api_addr: "http://127.0.0.1:2".into(),
            },
        )
        .await
        .expect("b joins");
    assert_eq!(joined.membership().voter_ids().count(), 2);
    // Another machine claiming the name "b".
    let err = a
        .add_member(
            node_id_of("b"),
            CellNode {
                name: "b".into(),
                cluster_addr: "127.0.0.1:9".into(),
                api_addr: "http://127.0.0.1:3".into(),
            },
        )
        .await
        .expect_err("name taken");
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    assert!(err.message().contains(&b_addr), "{}", err.message());
    assert_eq!(a.membership().membership().voter_ids().count(), 2);
    a.shutdown().await;
}
