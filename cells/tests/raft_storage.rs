//! What Raft writes to disk and accepts from peers:
//! - the Raft log, the state database and snapshots hold no plaintext
//!   secret, key or token, after real use of a node through its HTTP API;
//! - a corrupt snapshot (one flipped byte) is refused with `DATA_LOSS` and
//!   leaves the receiving node unchanged; the intact one installs;
//! - a join under a name another node already holds is refused, naming it;
//! - an operator's restore replaces the state on every replica at one log
//!   index, and a corrupt file is refused at its commit, changing nothing;
//! - concurrent writes share log entries, and every one is applied;
//! - undecodable AppendEntries, unary or streamed, are refused and change
//!   nothing.

mod common;

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
        cell.metrics()
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

/// A one-node cell named "a" under `dir`, founded and leading.
async fn leading_cell(dir: &Path) -> RaftCell {
    let (a, _) = plain_cell(dir, "a").await;
    assert!(a.found().await.expect("found"));
    wait_for(WAIT, || a.is_leader().then_some(())).expect("leader");
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_snapshots_are_refused_and_change_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let a = leading_cell(&tmp.path().join("a")).await;
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
    let vote = a.metrics().borrow().vote;
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
    let a = leading_cell(&tmp.path().join("a")).await;
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

/// An operator's restore goes through the log: the state goes back to the
/// exported file at one index, later writes land on top of it, a node that
/// joins afterwards replays the same restore from the log and ends up equal,
/// and a file with a flipped byte is refused at its commit by every replica
/// alike, changing nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restores_replace_the_state_at_one_index_and_a_bad_file_changes_nothing() {
    use sigil_cell::raft::CommandResult;
    let tmp = tempfile::tempdir().expect("tmp");
    let a = leading_cell(&tmp.path().join("a")).await;
    let store = ReplicatedStorage::new(a.clone());
    // Incompressible values, more than a restore piece in all, so a
    // restore takes several.
    let value = |i: u8| -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(i);
        (0..20_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    for i in 0..40u8 {
        store
            .apply(Batch::new().put(format!("k{i:03}"), value(i)))
            .await
            .expect("write");
    }
    let saved = tmp.path().join("saved.snap");
    let sm = a.state_machine().clone();
    let out = saved.clone();
    let (size, _) = tokio::task::spawn_blocking(move || sm.export(&out).map_err(|e| e.to_string()))
        .await
        .expect("join")
        .expect("export");
    assert!(size > 256 << 10, "{size} bytes: more than one piece");
    store
        .apply(
            Batch::new()
                .put("k000", b"newer".to_vec())
                .put("later", b"x".to_vec()),
        )
        .await
        .expect("write");

    // Read through the cache first, so stale entries would be there to serve.
    assert_eq!(store.get(b"k000").expect("get"), Some(b"newer".to_vec()));
    assert_eq!(store.get(b"later").expect("get"), Some(b"x".to_vec()));
    assert_eq!(store.get(b"after").expect("get"), None);

    let mut restores = a.state_machine().restores();
    let (result, index) = a.restore(&saved).await.expect("restore");
    assert_eq!(result, CommandResult::Applied);
    assert!(restores.has_changed().expect("watch"), "restore announced");
    restores.mark_unchanged();
    assert_eq!(a.applied().index(), index);
    let db = a.state_machine().db();
    assert_eq!(db.get(b"k000").expect("get"), Some(value(0)));
    assert_eq!(db.get(b"k039").expect("get"), Some(value(39)));
    assert_eq!(db.get(b"later").expect("get"), None, "later write undone");
    // The cache forgot the replaced state.
    assert_eq!(store.get(b"k000").expect("get"), Some(value(0)));
    assert_eq!(
        store.get(b"later").expect("get"),
        None,
        "no stale cached value"
    );
    store
        .apply(Batch::new().put("after", b"y".to_vec()))
        .await
        .expect("write after restore");

    // One flipped byte: the pieces go through, the commit is refused.
    let mut bad = std::fs::read(&saved).expect("read");
    let pos = bad.len() / 3;
    bad[pos] ^= 0x01;
    let bad_path = tmp.path().join("bad.snap");
    std::fs::write(&bad_path, &bad).expect("write");
    let (result, _) = a.restore(&bad_path).await.expect("proposed");
    match result {
        CommandResult::PreconditionFailed { key } => {
            assert!(key.starts_with("snapshot:"), "{key}")
        }
        other => panic!("a corrupt restore applied: {other:?}"),
    }
    assert!(!restores.has_changed().expect("watch"));
    let db = a.state_machine().db();
    assert_eq!(db.get(b"after").expect("get"), Some(b"y".to_vec()));
    assert_eq!(db.get(b"k000").expect("get"), Some(value(0)));
    assert_eq!(store.get(b"after").expect("get"), Some(b"y".to_vec()));

    // A node joining now replays both restores from the log.
    let (b, b_addr) = plain_cell(&tmp.path().join("b"), "b").await;
    a.add_member(
        node_id_of("b"),
        CellNode {
            name: "b".into(),
            cluster_addr: b_addr,
            api_addr: "http://127.0.0.1:2".into(),
        },
    )
    .await
    .expect("b joins");
    let target = a.applied().index();
    wait_for(WAIT, || (b.applied().index() >= target).then_some(())).expect("b catches up");
    let bdb = b.state_machine().db();
    for key in [&b"k000"[..], b"k017", b"later", b"after"] {
        assert_eq!(
            bdb.get(key).expect("get"),
            a.state_machine().db().get(key).expect("get"),
            "{}",
            String::from_utf8_lossy(key)
        );
    }
    a.shutdown().await;
    b.shutdown().await;
}

/// Reads go through the state machine's cache while writes are applied:
/// a reader never sees a key go back to an older value, and when the writes
/// stop the cache and RocksDB agree on every key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_reads_never_go_back_while_writes_are_applied() {
    let tmp = tempfile::tempdir().expect("tmp");
    let a = leading_cell(&tmp.path().join("a")).await;
    let store = ReplicatedStorage::new(a.clone());
    const KEYS: u64 = 4;
    const ROUNDS: u64 = 150;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for r in 0..3u64 {
        let store = store.clone();
        let done = done.clone();
        readers.push(std::thread::spawn(move || {
            let mut last = [0u64; KEYS as usize];
            let mut reads = 0u64;
            while !done.load(std::sync::atomic::Ordering::Acquire) || reads < 100 {
                let k = (reads + r) % KEYS;
                let seen = store
                    .get(format!("counter/{k}").as_bytes())
                    .expect("get")
                    .map_or(0, |v| u64::from_be_bytes(v.try_into().expect("8 bytes")));
                assert!(
                    seen >= last[k as usize],
                    "key {k} went back from {} to {seen}",
                    last[k as usize]
                );
                last[k as usize] = seen;
                reads += 1;
            }
            reads
        }));
    }
    // Writers on every key at once, so applies batch several commands.
    let mut writers = Vec::new();
    for k in 0..KEYS {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            for n in 1..=ROUNDS {
                store
                    .apply(Batch::new().put(format!("counter/{k}"), n.to_be_bytes().to_vec()))
                    .await
                    .expect("write");
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    done.store(true, std::sync::atomic::Ordering::Release);
    for r in readers {
        let reads = tokio::task::spawn_blocking(move || r.join().expect("reader"))
            .await
            .expect("join");
        assert!(reads >= 100);
    }
    let db = a.state_machine().db();
    for k in 0..KEYS {
        let key = format!("counter/{k}");
        let want = Some(ROUNDS.to_be_bytes().to_vec());
        assert_eq!(store.get(key.as_bytes()).expect("get"), want);
        assert_eq!(db.get(key.as_bytes()).expect("get"), want);
    }
    let stats = a.state_machine().cache_stats();
    assert!(stats.hits > 0 && stats.entries > 0, "{stats:?}");
    a.shutdown().await;
}

/// Concurrent writes share log entries: the batcher holds what queues while
/// an append is syncing and sends it as one entry. Every write is applied
/// once, in its own right, and far fewer entries than writes are appended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_log_entries_and_every_one_is_applied() {
    let tmp = tempfile::tempdir().expect("tmp");
    let a = leading_cell(&tmp.path().join("a")).await;
    let store = ReplicatedStorage::new(a.clone());
    // One write first, so the entries counted below are the batch's alone.
    store
        .apply(Batch::new().put("warm", b"up".to_vec()))
        .await
        .expect("write");
    let before = a.metrics().borrow().last_log_index.unwrap_or(0);
    const WRITES: usize = 400;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..WRITES {
        let store = store.clone();
        tasks.spawn(async move {
            store
                .apply(Batch::new().put(format!("c{i:04}"), vec![(i % 251) as u8; 64]))
                .await
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("task").expect("write");
    }
    let after = a.metrics().borrow().last_log_index.unwrap_or(0);
    let entries = after - before;
    assert!(
        entries >= 1 && (entries as usize) < WRITES / 4,
        "{WRITES} concurrent writes took {entries} log entries"
    );
    for i in 0..WRITES {
        let got = store.get(format!("c{i:04}").as_bytes()).expect("read");
        assert_eq!(got, Some(vec![(i % 251) as u8; 64]), "c{i:04}");
    }
}

/// Messages a peer cannot have meant are refused without harm: an
/// undecodable unary AppendEntries is `INVALID_ARGUMENT`, an undecodable
/// request on the pipelined stream ends that stream with no reply, and the
/// node goes on replicating and writing afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_append_entries_are_refused_and_change_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (b, b_addr) = plain_cell(&tmp.path().join("b"), "b").await;
    let mut client = ClusterClient::connect(format!("http://{b_addr}"))
        .await
        .expect("connect");
    let garbage = || pb::RaftPayload {
        payload: vec![0xff; 37].into(),
    };

    let err = client
        .append_entries(garbage())
        .await
        .expect_err("garbage refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    let replies = client
        .append_stream(futures::stream::iter(vec![garbage(), garbage()]))
        .await
        .expect("stream opens")
        .into_inner();
    let replies: Vec<_> =
        tokio::time::timeout(WAIT, futures::StreamExt::collect::<Vec<_>>(replies))
            .await
            .expect("the stream ends");
    assert!(
        replies.is_empty(),
        "no reply to an undecodable request: {replies:?}"
    );
    assert_eq!(b.applied().index(), 0, "nothing applied");
    assert!(b.metrics().borrow().current_leader.is_none());

    // The same node still founds a cell and takes writes.
    assert!(b.found().await.expect("found"));
    let store = ReplicatedStorage::new(b.clone());
    wait_for(WAIT, || b.is_leader().then_some(())).expect("leader");
    store
        .apply(Batch::new().put("after", "ok"))
        .await
        .expect("write after garbage");
    assert_eq!(
        b.state_machine().db().get(b"after").expect("get"),
        Some(b"ok".to_vec())
    );
    b.shutdown().await;
}
