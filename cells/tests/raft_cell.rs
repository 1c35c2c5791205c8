//! A three-node cell, in process, on loopback: nodes join over mutual TLS,
//! the cell is initialised once and each node unsealed with the same keys,
//! writes sent to a follower are forwarded to the leader, reads carrying the
//! returned index see the write on every node, health tells the leader from
//! performance standbys, and the cell keeps serving after its leader stops.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{call, call_with_headers, strings, wait_for};
use sigil_cell::cluster_pki::{CellCa, CellId, NodeId};
use sigil_cell::config::Config;
use sigil_cell::server::{self, Running};

const WAIT: Duration = Duration::from_secs(20);

fn node_config(dir: &Path, name: &str, ca: &CellCa, join: Option<&str>) -> Config {
    common::cell_node_config(dir, name, ca, join, "", "")
}

/// `node_config`, with `raft_extra` lines added to its `[raft]` table.
fn node_config_with(
    dir: &Path,
    name: &str,
    ca: &CellCa,
    join: Option<&str>,
    raft_extra: &str,
) -> Config {
    common::cell_node_config(dir, name, ca, join, raft_extra, "")
}

fn members(base: &str, token: &str) -> usize {
    let (code, body) = call(
        base,
        "GET",
        "sys/storage/raft/configuration",
        Some(token),
        "",
    );
    assert_eq!(code, 200, "{body}");
    body["data"]["config"]["servers"]
        .as_array()
        .map_or(0, |s| s.len())
}

fn leader_of(nodes: &[&Running]) -> Option<usize> {
    nodes
        .iter()
        .position(|n| n.node.cell().is_some_and(|c| c.is_leader()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_replicate_forward_and_survive_the_leader() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ca = CellCa::generate(&CellId::new("test-cell").expect("cell")).expect("ca");

    let n1 = server::start(&node_config(&tmp.path().join("n1"), "n1", &ca, None))
        .await
        .expect("start n1");
    let seed = n1.node.cell().expect("cell").node().cluster_addr.clone();
    let n2 = server::start(&node_config(&tmp.path().join("n2"), "n2", &ca, Some(&seed)))
        .await
        .expect("start n2");
    let n3 = server::start(&node_config(&tmp.path().join("n3"), "n3", &ca, Some(&seed)))
        .await
        .expect("start n3");
    let urls: Vec<String> = [&n1, &n2, &n3].iter().map(|n| n.http_url()).collect();

    // Joins complete in the background; every node sees three voters.
    common::wait_voters(&[&n1, &n2, &n3], 3);

    // Initialise through a follower; unseal every node with the same keys.
    let (code, init) = call(
        &urls[1],
        "PUT",
        "sys/init",
        None,
        r#"{"secret_shares":3,"secret_threshold":2}"#,
    );
    assert_eq!(code, 200, "{init}");
    let keys = strings(&init, "keys");
    let root = init["root_token"].as_str().expect("root").to_owned();
    for url in &urls {
        // The init reaches the other nodes by replication.
        wait_for(WAIT, || {
            let (_, s) = call(url, "GET", "sys/seal-status", None, "");
            (s["initialized"] == true).then_some(())
        })
        .expect("initialised everywhere");
        for key in &keys[..2] {
            let (code, s) = call(
                url,
                "PUT",
                "sys/unseal",
                None,
                &format!(r#"{{"key":"{key}"}}"#),
            );
            assert_eq!(code, 200, "{s}");
        }
        let (_, s) = call(url, "GET", "sys/seal-status", None, "");
        assert_eq!(s["sealed"], false, "{url}: {s}");
    }
    assert_eq!(members(&urls[2], &root), 3);

    // Health: 200 on the leader, 473 on followers.
    let leader = leader_of(&[&n1, &n2, &n3]).expect("a leader");
    for (i, url) in urls.iter().enumerate() {
        let (code, _) = call(url, "GET", "sys/health", None, "");
        assert_eq!(code, if i == leader { 200 } else { 473 }, "{url}");
    }

    // Writes on a follower are forwarded; the returned index makes reads
    // on every node see them.
    let follower = (leader + 1) % 3;
    let (code, body) = call(
        &urls[follower],
        "POST",
        "sys/mounts/secret",
        Some(&root),
        r#"{"type":"kv","options":{"version":"2"}}"#,
    );
    assert_eq!(code, 204, "{body}");
    let (code, headers, body) = call_with_headers(
        &urls[follower],
        "PUT",
        "secret/data/app",
        Some(&root),
        &[],
        r#"{"data":{"password":"hunter2"}}"#,
    );
    assert_eq!(code, 200, "{body} {headers:?}");
    let index: u64 = headers["x-sigil-index"].parse().expect("index");
    assert!(index > 0);
    assert_eq!(headers["x-vault-index"], headers["x-sigil-index"]);
    for url in &urls {
        let (code, _, body) = call_with_headers(
            url,
            "GET",
            "secret/data/app",
            Some(&root),
            &[("X-Sigil-Index", &index.to_string())],
            "",
        );
        assert_eq!(code, 200, "{url}: {body}");
        assert_eq!(body["data"]["data"]["password"], "hunter2", "{url}");
        let (code, _, body) = call_with_headers(
            url,
            "GET",
            "secret/data/app",
            Some(&root),
            &[("X-Sigil-Consistency", "linearizable")],
            "",
        );
        assert_eq!(code, 200, "{url}: {body}");
        assert_eq!(body["data"]["data"]["password"], "hunter2", "{url}");
    }
    // Raft figures in `sys/metrics`: the leader proposed the writes (batched
    // into entries), every node synced its log and applied them.
    let figure = |url: &str, kind: &str, name: &str| -> u64 {
        let (code, m) = call(url, "GET", "sys/metrics", Some(&root), "");
        assert_eq!(code, 200, "{m}");
        let field = if kind == "Gauges" { "Value" } else { "Count" };
        m["data"][kind]
            .as_array()
            .and_then(|a| a.iter().find(|g| g["Name"] == name))
            .and_then(|g| g[field].as_u64())
            .unwrap_or_else(|| panic!("{name} missing from {url} metrics: {m}"))
    };
    for (i, url) in urls.iter().enumerate() {
        let leading = figure(url, "Gauges", "sigil.raft.is.leader");
        assert_eq!(leading, u64::from(i == leader), "{url}");
        assert!(
            figure(url, "Gauges", "sigil.raft.applied.index") >= index,
            "{url}"
        );
        assert!(figure(url, "Counters", "sigil.raft.log.syncs") > 0, "{url}");
    }
    let proposals = figure(&urls[leader], "Counters", "sigil.raft.proposals");
    assert!(proposals >= 2, "the mount and the write: {proposals}");
    assert!(figure(&urls[leader], "Counters", "sigil.raft.proposed.commands") >= proposals);

    // A policy written through one node applies on another.
    let (code, body) = call(
        &urls[follower],
        "PUT",
        "sys/policies/acl/reader",
        Some(&root),
        r#"{"policy":"path \"secret/data/*\" { capabilities = [\"read\"] }"}"#,
    );
    assert_eq!(code, 204, "{body}");
    let (code, tok) = call(
        &urls[leader],
        "POST",
        "auth/token/create",
        Some(&root),
        r#"{"policies":["reader"]}"#,
    );
    assert_eq!(code, 200, "{tok}");
    let reader = tok["auth"]["client_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let other = (leader + 2) % 3;
    let (code, _, body) = call_with_headers(
        &urls[other],
        "GET",
        "secret/data/app",
        Some(&reader),
        &[("X-Sigil-Consistency", "linearizable")],
        "",
    );
    assert_eq!(code, 200, "{body}");
    let (code, _) = call(
        &urls[other],
        "PUT",
        "secret/data/app",
        Some(&reader),
        r#"{"data":{"x":"y"}}"#,
    );
    assert_eq!(code, 403);

    // The operator's view: list-peers, a bad remove-peer, step-down.
    let sigil = |url: &str, args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_sigil"))
            .args(args)
            .env("SIGIL_ADDR", url)
            .env("SIGIL_TOKEN", &root)
            .output()
            .expect("run sigil")
    };
    let out = sigil(&urls[other], &["operator", "raft", "list-peers"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for name in ["n1", "n2", "n3"] {
        assert!(text.contains(name), "{text}");
    }
    assert_eq!(text.matches("leader").count(), 1, "{text}");
    let out = sigil(
        &urls[other],
        &["operator", "raft", "remove-peer", "no-such-node"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no server"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(
        members(&urls[other], &root),
        3,
        "a refused removal changes nothing"
    );
    let out = sigil(&urls[other], &["operator", "raft", "step-down"]);
    assert_eq!(out.status.code(), Some(1), "a follower cannot step down");
    let out = sigil(&urls[leader], &["operator", "raft", "step-down"]);
    assert!(out.status.success(), "{out:?}");
    let stepped = {
        let all = [&n1, &n2, &n3];
        wait_for(WAIT, || leader_of(&all).filter(|l| *l != leader)).expect("another leader")
    };
    assert_ne!(stepped, leader);
    let leader = stepped;

    // Snapshot save and restore, through followers. The saved file holds
    // only ciphertext.
    let snap = tmp.path().join("cell.snap");
    let follower = (leader + 1) % 3;
    let out = sigil(
        &urls[follower],
        &[
            "operator",
            "raft",
            "snapshot",
            "save",
            snap.to_str().expect("utf-8"),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let saved = std::fs::read(&snap).expect("snapshot saved");
    assert!(saved.len() > 1024, "{} bytes", saved.len());
    assert!(
        !saved.windows(b"hunter2".len()).any(|w| w == b"hunter2"),
        "the snapshot holds the secret in plaintext"
    );
    let (code, body) = call(
        &urls[leader],
        "PUT",
        "secret/data/app",
        Some(&root),
        r#"{"data":{"password":"changed"}}"#,
    );
    assert_eq!(code, 200, "{body}");
    let read_everywhere = |want: &str| {
        for url in &urls {
            let (code, _, body) = call_with_headers(
                url,
                "GET",
                "secret/data/app",
                Some(&root),
                &[("X-Sigil-Consistency", "linearizable")],
                "",
            );
            assert_eq!(code, 200, "{url}: {body}");
            assert_eq!(body["data"]["data"]["password"], want, "{url}");
        }
    };
    // A flipped byte: refused with a one-line reason, nothing changes.
    let bad = tmp.path().join("bad.snap");
    let mut flipped = saved.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    std::fs::write(&bad, &flipped).expect("write");
    let out = sigil(
        &urls[follower],
        &[
            "operator",
            "raft",
            "snapshot",
            "restore",
            bad.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not intact"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    read_everywhere("changed");
    // Without sudo: refused before the body is read.
    let (code, _) = call(
        &urls[follower],
        "POST",
        "sys/storage/raft/snapshot",
        Some(&reader),
        "not a snapshot",
    );
    assert_eq!(code, 403);
    let (code, _) = call(
        &urls[follower],
        "GET",
        "sys/storage/raft/snapshot",
        Some(&reader),
        "",
    );
    assert_eq!(code, 403);
    // The real one: every node goes back to the saved state, and keeps
    // writing and reading under the restored keyring.
    let out = sigil(
        &urls[follower],
        &[
            "operator",
            "raft",
            "snapshot",
            "restore",
            snap.to_str().expect("utf-8"),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    read_everywhere("hunter2");
    let (code, body) = call(
        &urls[follower],
        "PUT",
        "secret/data/after-restore",
        Some(&root),
        r#"{"data":{"k":"restored"}}"#,
    );
    assert_eq!(code, 200, "{body}");
    for url in &urls {
        let (code, _, body) = call_with_headers(
            url,
            "GET",
            "secret/data/after-restore",
            Some(&root),
            &[("X-Sigil-Consistency", "linearizable")],
            "",
        );
        assert_eq!(code, 200, "{url}: {body}");
        assert_eq!(body["data"]["data"]["k"], "restored", "{url}");
    }

    // Stop the leader: the other two elect a new one and keep serving.
    let mut nodes = vec![Some(n1), Some(n2), Some(n3)];
    let old = nodes[leader].take().expect("leader");
    old.shutdown().await;
    let rest: Vec<&Running> = nodes.iter().flatten().collect();
    wait_for(WAIT, || leader_of(&rest).map(|_| ())).expect("a new leader");
    let survivor = rest[0].http_url();
    let (code, body) = call(
        &survivor,
        "PUT",
        "secret/data/after",
        Some(&root),
        r#"{"data":{"k":"v"}}"#,
    );
    assert_eq!(code, 200, "{body}");
    let (code, _, body) = call_with_headers(
        &rest[1].http_url(),
        "GET",
        "secret/data/after",
        Some(&root),
        &[("X-Sigil-Consistency", "linearizable")],
        "",
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["data"]["data"]["k"], "v");
    for n in nodes.into_iter().flatten() {
        n.shutdown().await;
    }
}

/// A node whose certificate comes from another CA, or names another cell,
/// cannot join: the attempt fails at the TLS handshake with a reason, and the
/// cell's membership does not change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_of_another_ca_or_cell_cannot_join() {
    use sigil_cell::raft::tls::{ClusterTls, TlsSource};
    use sigil_cell::raft::{RaftCell, RaftSettings};

    let tmp = tempfile::tempdir().expect("tmp");
    let ca = CellCa::generate(&CellId::new("test-cell").expect("cell")).expect("ca");
    let n1 = server::start(&node_config(&tmp.path().join("n1"), "n1", &ca, None))
        .await
        .expect("start n1");
    let cell = n1.node.cell().expect("cell").clone();
    let seed = cell.node().cluster_addr.clone();
    wait_for(WAIT, || cell.is_leader().then_some(())).expect("leader");

    let intruder = |name: &str, issuer: &CellCa, cell_id: &str| {
        let dir = tmp.path().join(name);
        let cert = issuer
            .issue_node(
                &CellId::new(cell_id).expect("cell"),
                &NodeId::new(name).expect("node"),
                &["127.0.0.1".to_owned()],
            )
            .expect("issue");
        let tls = dir.join("tls");
        std::fs::create_dir_all(&tls).expect("mkdir");
        let (cert_path, key_path) = cert.write_to(&tls).expect("write");
        // It trusts the real cell CA, so only the cell's side refuses it.
        std::fs::write(tls.join("ca.pem"), ca.certificate().pem()).expect("ca");
        let source = TlsSource::Files {
            ca: tls.join("ca.pem"),
            cert: cert_path,
            key: key_path,
        };
        (dir, source)
    };
    let other_ca = CellCa::generate(&CellId::new("test-cell").expect("cell")).expect("ca");
    let other_cell_ca = CellCa::generate(&CellId::new("elsewhere").expect("cell")).expect("ca");
    for (name, issuer, cell_id) in [
        ("rogue", &other_ca, "test-cell"),
        ("stranger", &other_cell_ca, "elsewhere"),
    ] {
        let (dir, source) = intruder(name, issuer, cell_id);
        let tls = ClusterTls::load(&source, cell_id, name).expect("tls");
        let settings = RaftSettings::new(name, "127.0.0.1:1", "http://127.0.0.1:1");
        let joiner = RaftCell::open(
            &dir.join("data"),
            settings,
            tls.connector().expect("connector"),
        )
        .await
        .expect("open");
        let err = joiner.try_join(&seed).await.expect_err("refused");
        // The reason (the cell's TLS alert, or this node's own check of the
        // cell's certificate), not just "connection closed".
        assert!(
            err.contains("refused this node's certificate")
                || err.contains("peer certificate names cell"),
            "{name}: {err}"
        );
        joiner.shutdown().await;
    }
    assert_eq!(cell.membership().membership().nodes().count(), 1);
    n1.shutdown().await;
}

/// A node started with `bootstrap = false` belongs to no cell: bad join
/// requests are refused with a reason and change nothing, a join through a
/// member's cluster address makes it a voter, and a second join is refused.
/// Another waiting node, initialised instead, founds a cell of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiting_node_joins_through_the_api_or_founds_a_cell_at_init() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ca = CellCa::generate(&CellId::new("test-cell").expect("cell")).expect("ca");
    let n1 = server::start(&node_config(&tmp.path().join("n1"), "n1", &ca, None))
        .await
        .expect("start n1");
    let seed = n1.node.cell().expect("cell").node().cluster_addr.clone();
    let waiting = |name: &str| {
        node_config_with(
            &tmp.path().join(name),
            name,
            &ca,
            None,
            "bootstrap = false\n",
        )
    };
    let n2 = server::start(&waiting("n2")).await.expect("start n2");
    let n2_url = n2.http_url();
    assert!(!n2.node.cell().expect("cell").is_member());

    for (body, want) in [
        ("{}", "leader_cluster_addr is required"),
        (
            r#"{"leader_api_addr":"http://127.0.0.1:8200"}"#,
            "leader_cluster_addr",
        ),
        (r#"{"leader_cluster_addr":"not-an-address"}"#, "IP:PORT"),
        (
            r#"{"leader_cluster_addr":"127.0.0.1:1","extra":1}"#,
            "extra",
        ),
    ] {
        let (code, err) = call(&n2_url, "POST", "sys/storage/raft/join", None, body);
        assert_eq!(code, 400, "{body}: {err}");
        assert!(
            err["errors"][0].as_str().unwrap_or("").contains(want),
            "{body}: {err}"
        );
    }
    assert!(!n2.node.cell().expect("cell").is_member());

    let (code, body) = call(
        &n2_url,
        "POST",
        "sys/storage/raft/join",
        None,
        &format!(r#"{{"leader_cluster_addr":"{seed}"}}"#),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["joined"], true);
    wait_for(WAIT, || {
        (n1.node
            .cell()
            .expect("cell")
            .membership()
            .membership()
            .voter_ids()
            .count()
            == 2)
            .then_some(())
    })
    .expect("two voters");
    let (code, err) = call(
        &n2_url,
        "POST",
        "sys/storage/raft/join",
        None,
        &format!(r#"{{"leader_cluster_addr":"{seed}"}}"#),
    );
    assert_eq!(code, 400, "{err}");
    assert!(
        err["errors"][0]
            .as_str()
            .unwrap_or("")
            .contains("already a member"),
        "{err}"
    );

    // Initialised instead of joined: a one-node cell of its own.
    let n3 = server::start(&waiting("n3")).await.expect("start n3");
    let (code, init) = call(
        &n3.http_url(),
        "PUT",
        "sys/init",
        None,
        r#"{"secret_shares":1,"secret_threshold":1}"#,
    );
    assert_eq!(code, 200, "{init}");
    let cell = n3.node.cell().expect("cell");
    assert!(cell.is_member());
    assert_eq!(cell.membership().membership().voter_ids().count(), 1);
    for n in [n1, n2, n3] {
        n.shutdown().await;
    }
}
