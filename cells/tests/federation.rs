//! Two federated cells, each one in-process node with its own CA, keys and
//! root token: the control plane carries policies between them over the
//! mutual-TLS cluster port, and the port admits only what the
//! configuration trusts.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{call, init_unseal};
use sigil_cell::cluster_pki::{
    CellCa, CellId, ClusterConnector, NodeCertificate, NodeId, federation_client_config,
};
use sigil_cell::config::Config;
use sigil_cell::server::{self, Running};
use sigil_proto::cluster::v1 as cluster_pb;
use sigil_proto::federation::v1 as fed_pb;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A cell's CA and its one node's certificate, written under `dir`.
struct CellFiles {
    id: String,
    ca: CellCa,
    ca_pem: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    cluster: String,
}

fn cell_files(dir: &Path, id: &str) -> CellFiles {
    let ca = CellCa::generate(&CellId::new(id).expect("cell")).expect("ca");
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls).expect("mkdir");
    let node = issue(&ca, id);
    let (cert, key) = node.write_to(&tls).expect("write cert");
    let ca_pem = tls.join("ca.pem");
    std::fs::write(&ca_pem, ca.certificate().pem()).expect("write ca");
    CellFiles {
        id: id.to_owned(),
        ca,
        ca_pem,
        cert,
        key,
        cluster: format!("127.0.0.1:{}", free_port()),
    }
}

fn issue(ca: &CellCa, cell: &str) -> NodeCertificate {
    ca.issue_node(
        &CellId::new(cell).expect("cell"),
        &NodeId::new("node-1").expect("node"),
        &["127.0.0.1".to_owned()],
    )
    .expect("issue")
}

fn config(dir: &Path, me: &CellFiles, peers: &[&CellFiles]) -> Config {
    config_with(dir, me, peers, |p| p.cluster.clone(), "")
}

/// A node's configuration; `sync_addr` gives the address its federation
/// peers are listed at, `extra` is appended.
fn config_with(
    dir: &Path,
    me: &CellFiles,
    peers: &[&CellFiles],
    sync_addr: impl Fn(&CellFiles) -> String,
    extra: &str,
) -> Config {
    let peers: String = peers
        .iter()
        .map(|p| {
            format!(
                "[[federation.peers]]\ncell = \"{}\"\naddrs = [\"{}\"]\nca_file = {:?}\n",
                p.id,
                sync_addr(p),
                p.ca_pem.display().to_string()
            )
        })
        .collect();
    let text = format!(
        "node_id = \"node-1\"\ndata_dir = {:?}\ndisable_mlock = true\n\
         [listener]\nhttp_addr = \"127.0.0.1:0\"\ngrpc_addr = \"127.0.0.1:0\"\n\
         [cell]\nid = \"{}\"\n\
         [raft]\ncluster_addr = \"{}\"\n\
         tls_ca_file = {:?}\ntls_cert_file = {:?}\ntls_key_file = {:?}\n\
         [federation]\nsync_interval_ms = 200\n{peers}{extra}",
        dir.join("data").display().to_string(),
        me.id,
        me.cluster,
        me.ca_pem.display().to_string(),
        me.cert.display().to_string(),
        me.key.display().to_string(),
    );
    Config::parse(&text).expect("config")
}

struct Federation {
    _dirs: Vec<tempfile::TempDir>,
    files: Vec<CellFiles>,
    nodes: Vec<Running>,
    roots: Vec<String>,
}

/// `ids` as cells that all federate with each other, initialised and unsealed.
async fn federation(ids: &[&str]) -> Federation {
    federation_with(ids, None).await
}

/// As [`federation`]; with `blackhole`, every federation peer is listed at
/// that address (which accepts connections and never answers), so
/// control-plane sync cannot run, and the mesh is seeded with the real
/// cluster addresses through `[[gossip.seeds]]`.
async fn federation_with(ids: &[&str], blackhole: Option<&str>) -> Federation {
    let dirs: Vec<tempfile::TempDir> = ids
        .iter()
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let files: Vec<CellFiles> = ids
        .iter()
        .zip(&dirs)
        .map(|(id, d)| cell_files(d.path(), id))
        .collect();
    let mut nodes = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let peers: Vec<&CellFiles> = files.iter().filter(|p| p.id != f.id).collect();
        let c = match blackhole {
            None => config(dirs[i].path(), f, &peers),
            Some(hole) => {
                let seeds: String = peers
                    .iter()
                    .map(|p| {
                        format!(
                            "[[gossip.seeds]]\ncell = \"{}\"\naddr = \"{}\"\n",
                            p.id, p.cluster
                        )
                    })
                    .collect();
                config_with(dirs[i].path(), f, &peers, |_| hole.to_owned(), &seeds)
            }
        };
        nodes.push(server::start(&c).await.expect("start"));
    }
    let mut roots = Vec::new();
    for n in &nodes {
        let base = n.http_url();
        let root = tokio::task::spawn_blocking(move || init_unseal(&base))
            .await
            .expect("init");
        roots.push(root);
    }
    Federation {
        _dirs: dirs,
        files,
        nodes,
        roots,
    }
}

async fn http(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    let (base, method, path, token, body) = (
        base.to_owned(),
        method.to_owned(),
        path.to_owned(),
        token.map(str::to_owned),
        body.to_owned(),
    );
    tokio::task::spawn_blocking(move || call(&base, &method, &path, token.as_deref(), &body))
        .await
        .expect("call")
}

async fn until<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..300 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_policy_written_in_one_cell_is_enforced_in_the_other() {
    let fed = federation(&["eu-west", "us-east"]).await;
    let (a, b) = (fed.nodes[0].http_url(), fed.nodes[1].http_url());
    let (ra, rb) = (fed.roots[0].as_str(), fed.roots[1].as_str());

    // A secret that only cell B holds, and a token of B's with a policy
    // that exists nowhere yet.
    let (code, out) = http(&b, "POST", "sys/mounts/kv", Some(rb), r#"{"type":"kv"}"#).await;
    assert_eq!(code, 204, "{out}");
    let (code, out) = http(&b, "PUT", "kv/app", Some(rb), r#"{"user":"app"}"#).await;
    assert_eq!(code, 204, "{out}");
    let (code, out) = http(
        &b,
        "POST",
        "auth/token/create",
        Some(rb),
        r#"{"policies":["shared"]}"#,
    )
    .await;
    assert_eq!(code, 200, "{out}");
    let token = out["auth"]["client_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let (code, _) = http(&b, "GET", "kv/app", Some(&token), "").await;
    assert_eq!(code, 403, "no policy grants it yet");

    // The policy is written in A; B enforces it.
    let (code, out) = http(
        &a,
        "PUT",
        "sys/policies/acl/shared",
        Some(ra),
        r#"{"policy":"path \"kv/*\" { capabilities = [\"read\"] }"}"#,
    )
    .await;
    assert_eq!(code, 204, "{out}");
    let body = until("cell B enforces the policy written in A", async || {
        let (code, body) = http(&b, "GET", "kv/app", Some(&token), "").await;
        (code == 200).then_some(body)
    })
    .await;
    assert_eq!(body["data"]["user"], "app");
    let (code, out) = http(&b, "GET", "sys/policies/acl/shared", Some(rb), "").await;
    assert_eq!(code, 200, "{out}");
    assert!(
        out["data"]["policy"]
            .as_str()
            .unwrap_or("")
            .contains("kv/*")
    );

    // Deleting it in B takes it away in A too.
    let (code, out) = http(&b, "DELETE", "sys/policies/acl/shared", Some(rb), "").await;
    assert_eq!(code, 204, "{out}");
    until("the deletion reaches A", async || {
        let (code, _) = http(&a, "GET", "sys/policies/acl/shared", Some(ra), "").await;
        (code == 404).then_some(())
    })
    .await;

    // Each cell's status shows its peer's stream, and no lag once settled.
    let status = until("A's sync with B has settled", async || {
        let (code, s) = http(&a, "GET", "sys/control-plane/status", Some(ra), "").await;
        let peer = &s["data"]["peers"][0];
        (code == 200
            && peer["cell"] == "us-east"
            && peer["connected"].is_string()
            && peer["lag"].as_object().is_some_and(|l| l.is_empty()))
        .then_some(s)
    })
    .await;
    assert_eq!(status["data"]["cell"], "eu-west");
    assert!(status["data"]["version_vector"]["us-east"].as_u64() >= Some(1));

    // Both cells register themselves; every cell sees both.
    for (base, root) in [(&a, ra), (&b, rb)] {
        let cells = until("the registry lists both cells", async || {
            let (_, c) = http(base, "GET", "sys/control-plane/cells", Some(root), "").await;
            (c["data"]["keys"].as_array().map(Vec::len) == Some(2)).then_some(c)
        })
        .await;
        assert_eq!(cells["data"]["cells"]["eu-west"]["region"], "eu-west");
        assert!(
            cells["data"]["cells"]["us-east"]["cluster_addrs"][0]
                .as_str()
                .is_some_and(|s| s == fed.files[1].cluster)
        );
    }
    let (code, c) = http(&a, "GET", "sys/control-plane/conflicts", Some(ra), "").await;
    assert_eq!(code, 200, "{c}");
    assert_eq!(c["data"]["keys"], serde_json::json!([]));

    // The control plane's paths refuse what they do not serve.
    let (code, _) = http(&a, "PUT", "sys/control-plane/status", Some(ra), "{}").await;
    assert_eq!(code, 405);
    let (code, _) = http(&a, "GET", "sys/control-plane/nope", Some(ra), "").await;
    assert_eq!(code, 404);
    let (code, _) = http(&a, "GET", "sys/control-plane/status", None, "").await;
    assert_eq!(code, 403);

    for n in fed.nodes {
        n.shutdown().await;
    }
}

/// A channel to `target`'s cluster port presenting `node`, trusting `ca`
/// for a server of cell `cell`.
async fn dial(
    target: &str,
    ca: &CellCa,
    node: &NodeCertificate,
    cell: &str,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let tls = federation_client_config(ca.certificate(), node, &CellId::new(cell).expect("cell"))
        .expect("client tls");
    tonic::transport::Endpoint::from_shared(format!("http://{target}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(ClusterConnector::new(tls))
        .await
}

async fn open_sync(channel: tonic::transport::Channel) -> Result<(), tonic::Status> {
    let mut client = fed_pb::federation_client::FederationClient::new(channel);
    let mut replies = client
        .sync(futures::stream::iter(Vec::<fed_pb::SyncRequest>::new()))
        .await?
        .into_inner();
    // The stream opens; with no digest sent, nothing arrives yet.
    match tokio::time::timeout(Duration::from_millis(300), replies.message()).await {
        Ok(Err(s)) => Err(s),
        _ => Ok(()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cluster_port_admits_only_trusted_cells_and_only_to_sync_and_the_mesh() {
    let fed = federation(&["eu-west", "us-east"]).await;
    let a = &fed.files[0];
    let b = &fed.files[1];
    let b_node = issue(&b.ca, "us-east");

    // B's node, with B's CA: sync opens; A's Raft service refuses it.
    let channel = dial(&a.cluster, &a.ca, &b_node, "eu-west")
        .await
        .expect("a trusted peer connects");
    open_sync(channel.clone()).await.expect("sync is open to B");
    let mut raft = cluster_pb::cluster_client::ClusterClient::new(channel);
    let err = raft
        .vote(cluster_pb::RaftPayload {
            payload: vec![0u8; 4].into(),
        })
        .await
        .expect_err("B may not call A's Raft");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    assert!(err.message().contains("cell us-east"), "{err}");

    // The revocation mesh admits B's node, as itself only: a hello that
    // names another node or cell than its certificate is refused.
    let mut mesh = sigil_proto::mesh::v1::mesh_client::MeshClient::new(
        dial(&a.cluster, &a.ca, &b_node, "eu-west")
            .await
            .expect("connects"),
    );
    let hello = |cell: &str, node: &str| sigil_proto::mesh::v1::Frame {
        body: Some(sigil_proto::mesh::v1::frame::Body::Hello(
            sigil_proto::mesh::v1::Hello {
                cell: cell.into(),
                node: node.into(),
                gossip_addr: "127.0.0.1:9".into(),
            },
        )),
    };
    for (cell, node) in [("us-east", "node-2"), ("eu-west", "node-1")] {
        let err = mesh
            .exchange(futures::stream::iter(vec![hello(cell, node)]))
            .await
            .expect_err("a hello that lies");
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
        assert!(err.message().contains("us-east/node-1"), "{err}");
    }
    mesh.exchange(futures::stream::iter(vec![hello("us-east", "node-1")]))
        .await
        .expect("B's node, as itself, opens a mesh stream");

    // A certificate naming us-east from a CA that is not us-east's.
    let forger = CellCa::generate(&CellId::new("us-east").expect("cell")).expect("ca");
    let forged = issue(&forger, "us-east");
    let refused = match dial(&a.cluster, &a.ca, &forged, "eu-west").await {
        Err(_) => true,
        Ok(ch) => open_sync(ch).await.is_err(),
    };
    assert!(refused, "a forged us-east certificate is refused");
    // A cell A does not federate with, with a certificate from its own CA.
    let stranger_ca = CellCa::generate(&CellId::new("ap-south").expect("cell")).expect("ca");
    let stranger = issue(&stranger_ca, "ap-south");
    let refused = match dial(&a.cluster, &a.ca, &stranger, "eu-west").await {
        Err(_) => true,
        Ok(ch) => open_sync(ch).await.is_err(),
    };
    assert!(refused, "an unknown cell is refused");
    // B's CA issuing a certificate that claims cell eu-west cannot reach
    // A's Raft either: A's verifier checks eu-west names against A's CA.
    let impostor = issue(&b.ca, "eu-west");
    let refused = match dial(&a.cluster, &a.ca, &impostor, "eu-west").await {
        Err(_) => true,
        Ok(ch) => cluster_pb::cluster_client::ClusterClient::new(ch)
            .vote(cluster_pb::RaftPayload {
                payload: vec![0u8; 4].into(),
            })
            .await
            .is_err_and(|s| s.code() != tonic::Code::InvalidArgument),
    };
    assert!(refused, "another cell's CA cannot vouch for eu-west");

    // Nothing the refused callers did reached A's control plane.
    let ra = &fed.roots[0];
    let (code, s) = http(
        &fed.nodes[0].http_url(),
        "GET",
        "sys/control-plane/status",
        Some(ra),
        "",
    )
    .await;
    assert_eq!(code, 200, "{s}");
    for n in fed.nodes {
        n.shutdown().await;
    }
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_secret_written_in_one_cell_never_reaches_another() {
    let fed = federation(&["eu-west", "us-east"]).await;
    let (a, b) = (fed.nodes[0].http_url(), fed.nodes[1].http_url());
    let (ra, rb) = (fed.roots[0].as_str(), fed.roots[1].as_str());
    let canary = format!("canary-{}", std::process::id() ^ 0x5eed_cafe);
    // The same mount path in both cells, a secret only in A, and a policy
    // (which does cross) naming the path, so the two cells demonstrably sync.
    for (base, root) in [(&a, ra), (&b, rb)] {
        let (code, out) = http(
            base,
            "POST",
            "sys/mounts/kv",
            Some(root),
            r#"{"type":"kv"}"#,
        )
        .await;
        assert_eq!(code, 204, "{out}");
    }
    let (code, out) = http(
        &a,
        "PUT",
        "kv/payments",
        Some(ra),
        &format!(r#"{{"password":"{canary}"}}"#),
    )
    .await;
    assert_eq!(code, 204, "{out}");
    let (code, out) = http(
        &a,
        "PUT",
        "sys/policies/acl/payments",
        Some(ra),
        r#"{"policy":"path \"kv/payments\" { capabilities = [\"read\"] }"}"#,
    )
    .await;
    assert_eq!(code, 204, "{out}");
    until("the policy reaches B", async || {
        let (code, _) = http(&b, "GET", "sys/policies/acl/payments", Some(rb), "").await;
        (code == 200).then_some(())
    })
    .await;
    let (code, _) = http(&a, "GET", "kv/payments", Some(ra), "").await;
    assert_eq!(code, 200, "A serves its secret");
    let (code, _) = http(&b, "GET", "kv/payments", Some(rb), "").await;
    assert_eq!(code, 404, "B never had it");

    // Flush both nodes' state to disk, then look at every byte B keeps.
    for n in fed.nodes {
        n.shutdown().await;
    }
    let needle = canary.as_bytes();
    let b_files = files_under(fed._dirs[1].path());
    assert!(
        b_files.len() > 5,
        "B's data dir holds its files: {b_files:?}"
    );
    for f in &b_files {
        let bytes = std::fs::read(f).unwrap_or_default();
        assert!(
            !contains(&bytes, needle),
            "{} holds A's canary",
            f.display()
        );
    }
    // A keeps it only encrypted: no file of A's holds it in plaintext either.
    for f in files_under(fed._dirs[0].path()) {
        let bytes = std::fs::read(&f).unwrap_or_default();
        assert!(
            !contains(&bytes, needle),
            "{} holds the canary in plaintext",
            f.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_global_mount_exists_in_every_cell_each_with_its_own_data() {
    let fed = federation(&["eu-west", "us-east"]).await;
    let (a, b) = (fed.nodes[0].http_url(), fed.nodes[1].http_url());
    let (ra, rb) = (fed.roots[0].as_str(), fed.roots[1].as_str());

    // Bad input changes nothing.
    for body in [
        r#"{"type":"kv","global":"maybe"}"#,
        r#"{"type":"kv","global":true,"local":true}"#,
    ] {
        let (code, out) = http(&a, "POST", "sys/mounts/gkv", Some(ra), body).await;
        assert_eq!(code, 400, "{body}: {out}");
    }
    let (code, out) = http(
        &a,
        "POST",
        "sys/mounts/gkv",
        Some(ra),
        r#"{"type":"kv","global":true,"description":"shared layout"}"#,
    )
    .await;
    assert_eq!(code, 204, "{out}");
    let (code, out) = http(&a, "POST", "sys/mounts/lkv", Some(ra), r#"{"type":"kv"}"#).await;
    assert_eq!(code, 204, "{out}");
    let (code, out) = http(
        &a,
        "POST",
        "sys/auth/gapp",
        Some(ra),
        r#"{"type":"approle","global":true}"#,
    )
    .await;
    assert_eq!(code, 204, "{out}");

    let mounts = until("B has the global mounts", async || {
        let (_, m) = http(&b, "GET", "sys/mounts", Some(rb), "").await;
        let (_, auth) = http(&b, "GET", "sys/auth", Some(rb), "").await;
        (m["data"]["gkv/"]["global"] == true && auth["data"]["gapp/"]["type"] == "approle")
            .then_some(m)
    })
    .await;
    assert_eq!(mounts["data"]["gkv/"]["description"], "shared layout");
    assert!(mounts["data"]["lkv/"].is_null(), "a local mount stays home");

    // Each cell keeps its own data under the same mount.
    let (code, _) = http(&a, "PUT", "gkv/x", Some(ra), r#"{"v":"a"}"#).await;
    assert_eq!(code, 204);
    let (code, _) = http(&b, "PUT", "gkv/y", Some(rb), r#"{"v":"b"}"#).await;
    assert_eq!(code, 204);
    assert_eq!(http(&b, "GET", "gkv/x", Some(rb), "").await.0, 404);
    assert_eq!(http(&a, "GET", "gkv/y", Some(ra), "").await.0, 404);
    assert_eq!(http(&a, "GET", "gkv/x", Some(ra), "").await.0, 200);

    // Disabled in B, it leaves A too.
    let (code, out) = http(&b, "DELETE", "sys/mounts/gkv", Some(rb), "").await;
    assert_eq!(code, 204, "{out}");
    until("A's copy is disabled", async || {
        let (_, m) = http(&a, "GET", "sys/mounts", Some(ra), "").await;
        m["data"]["gkv/"].is_null().then_some(())
    })
    .await;
    let (_, m) = http(&a, "GET", "sys/mounts", Some(ra), "").await;
    assert!(!m["data"]["lkv/"].is_null(), "the local mount is untouched");

    for n in fed.nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transit_key_in_a_global_mount_has_different_material_in_each_cell() {
    let fed = federation(&["eu-west", "us-east"]).await;
    let (a, b) = (fed.nodes[0].http_url(), fed.nodes[1].http_url());
    let (ra, rb) = (fed.roots[0].as_str(), fed.roots[1].as_str());
    let (code, out) = http(
        &a,
        "POST",
        "sys/mounts/transit",
        Some(ra),
        r#"{"type":"transit","global":true}"#,
    )
    .await;
    assert_eq!(code, 204, "{out}");
    let (code, out) = http(&a, "POST", "transit/keys/payments", Some(ra), "{}").await;
    assert_eq!(code, 200, "{out}");
    until("B has the global transit mount", async || {
        let (_, m) = http(&b, "GET", "sys/mounts", Some(rb), "").await;
        (m["data"]["transit/"]["type"] == "transit").then_some(())
    })
    .await;
    // The mount crossed; A's key did not.
    let (code, _) = http(&b, "GET", "transit/keys/payments", Some(rb), "").await;
    assert_eq!(code, 404, "a transit key is never shared");
    let (code, out) = http(&b, "POST", "transit/keys/payments", Some(rb), "{}").await;
    assert_eq!(code, 200, "{out}");

    // "4111 1111 1111 1111" in base64.
    let plaintext = r#"{"plaintext":"NDExMSAxMTExIDExMTEgMTExMQ=="}"#;
    let mut ciphertexts = Vec::new();
    for (base, root) in [(&a, ra), (&b, rb)] {
        let (code, out) = http(
            base,
            "POST",
            "transit/encrypt/payments",
            Some(root),
            plaintext,
        )
        .await;
        assert_eq!(code, 200, "{out}");
        let ct = out["data"]["ciphertext"]
            .as_str()
            .expect("ciphertext")
            .to_owned();
        assert!(ct.starts_with("vault:v1:"), "{ct}");
        ciphertexts.push(ct);
    }
    for (i, (base, root)) in [(&a, ra), (&b, rb)].into_iter().enumerate() {
        let own = format!(r#"{{"ciphertext":"{}"}}"#, ciphertexts[i]);
        let (code, out) = http(base, "POST", "transit/decrypt/payments", Some(root), &own).await;
        assert_eq!(code, 200, "{out}");
        assert_eq!(out["data"]["plaintext"], "NDExMSAxMTExIDExMTEgMTExMQ==");
        // The other cell's ciphertext, under a key of the same name, type
        // and version, does not open: the key material differs.
        let other = format!(r#"{{"ciphertext":"{}"}}"#, ciphertexts[1 - i]);
        let (code, out) = http(base, "POST", "transit/decrypt/payments", Some(root), &other).await;
        assert_eq!(code, 400, "{out}");
        assert_eq!(out["errors"][0], "cipher: message authentication failed");
    }
    for n in fed.nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn roles_of_a_global_mount_are_shared_and_what_they_issue_is_not() {
    let fed = federation(&["eu-west", "us-east"]).await;
    let (a, b) = (fed.nodes[0].http_url(), fed.nodes[1].http_url());
    let (ra, rb) = (fed.roots[0].as_str(), fed.roots[1].as_str());
    for (path, body) in [
        ("sys/mounts/db", r#"{"type":"database","global":true}"#),
        ("sys/mounts/localdb", r#"{"type":"database"}"#),
        ("sys/auth/app", r#"{"type":"approle","global":true}"#),
        ("sys/auth/jwt", r#"{"type":"jwt","global":true}"#),
    ] {
        let (code, out) = http(&a, "POST", path, Some(ra), body).await;
        assert_eq!(code, 204, "{path}: {out}");
    }
    // Each cell's connection is its own (it holds that region's root
    // credentials); a shared database role needs one of its name.
    let pg = r#"{"plugin_name":"postgresql-database-plugin","connection_url":"postgresql://{{username}}:{{password}}@127.0.0.1:1/app","username":"root","password":"not-shared","verify_connection":false,"allowed_roles":"*"}"#;
    let (code, out) = http(&a, "POST", "db/config/pg", Some(ra), pg).await;
    assert_eq!(code, 204, "{out}");
    let (code, out) = http(&a, "POST", "localdb/config/pg", Some(ra), pg).await;
    assert_eq!(code, 204, "{out}");
    let writes = [
        (
            "db/roles/payments",
            r#"{"db_name":"pg","creation_statements":"CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}'","default_ttl":"1h","max_ttl":"24h"}"#,
        ),
        (
            "localdb/roles/payments",
            r#"{"db_name":"pg","creation_statements":"SELECT 1"}"#,
        ),
        (
            "auth/app/role/billing",
            r#"{"token_policies":["billing"],"secret_id_ttl":"10m","token_ttl":"20m"}"#,
        ),
        (
            "auth/jwt/role/workload",
            r#"{"role_type":"jwt","user_claim":"sub","bound_audiences":["payments"],"bound_claims":{"team":["a","b"]},"token_policies":["p1"]}"#,
        ),
    ];
    for (path, body) in writes {
        let (code, out) = http(&a, "POST", path, Some(ra), body).await;
        assert!(code == 204 || code == 200, "{path}: {code} {out}");
    }
    // Each shared role reads the same in B as in A, the database role once
    // B has a connection of the name it uses.
    until("B has the AppRole role", async || {
        let (code, _) = http(&b, "GET", "auth/app/role/billing", Some(rb), "").await;
        (code == 200).then_some(())
    })
    .await;
    let (code, _) = http(&b, "GET", "db/roles/payments", Some(rb), "").await;
    assert_eq!(code, 404, "no connection \"pg\" in B yet");
    let (code, _) = http(&b, "GET", "db/config/pg", Some(rb), "").await;
    assert_eq!(code, 404, "connections are never shared");
    let status = until("B's leader reports the role it cannot apply", async || {
        let (_, s) = http(&b, "GET", "sys/control-plane/status", Some(rb), "").await;
        s["data"]["roles_refused"]
            .as_object()
            .is_some_and(|m| !m.is_empty())
            .then_some(s)
    })
    .await;
    let why = &status["data"]["roles_refused"]["role db/payments"];
    assert!(
        why.as_str()
            .is_some_and(|w| w.contains("\"pg\" is not configured")),
        "{status}"
    );
    let (code, out) = http(&b, "POST", "db/config/pg", Some(rb), pg).await;
    assert_eq!(code, 204, "{out}");
    for path in [
        "db/roles/payments",
        "auth/app/role/billing",
        "auth/jwt/role/workload",
    ] {
        let (_, in_a) = http(&a, "GET", path, Some(ra), "").await;
        let in_b = until(&format!("B has {path}"), async || {
            let (code, out) = http(&b, "GET", path, Some(rb), "").await;
            (code == 200).then_some(out)
        })
        .await;
        assert_eq!(in_a["data"], in_b["data"], "{path}");
    }
    until("B no longer reports a refused role", async || {
        let (_, s) = http(&b, "GET", "sys/control-plane/status", Some(rb), "").await;
        (s["data"]["roles_refused"] == serde_json::json!({})).then_some(())
    })
    .await;
    // A local mount's role stays home (B has no such mount at all).
    let (code, _) = http(&b, "GET", "localdb/roles/payments", Some(rb), "").await;
    assert_ne!(code, 200);

    // What a role issues is each cell's own: B has its own role ID, and a
    // secret ID made in A does not log in to B.
    let (_, id_a) = http(&a, "GET", "auth/app/role/billing/role-id", Some(ra), "").await;
    let (_, id_b) = http(&b, "GET", "auth/app/role/billing/role-id", Some(rb), "").await;
    let (id_a, id_b) = (
        id_a["data"]["role_id"]
            .as_str()
            .expect("role id in A")
            .to_owned(),
        id_b["data"]["role_id"]
            .as_str()
            .expect("role id in B")
            .to_owned(),
    );
    assert_ne!(id_a, id_b);
    let (code, secret) = http(
        &a,
        "POST",
        "auth/app/role/billing/secret-id",
        Some(ra),
        "{}",
    )
    .await;
    assert_eq!(code, 200, "{secret}");
    let login = |role_id: &str| {
        format!(
            r#"{{"role_id":"{role_id}","secret_id":"{}"}}"#,
            secret["data"]["secret_id"].as_str().expect("secret id")
        )
    };
    let (code, out) = http(&a, "POST", "auth/app/login", None, &login(&id_a)).await;
    assert_eq!(code, 200, "{out}");
    assert_eq!(out["auth"]["policies"][1], "default", "{out}");
    let (code, _) = http(&b, "POST", "auth/app/login", None, &login(&id_b)).await;
    assert_eq!(code, 400, "A's secret ID is unknown in B");

    // Changed in B, the change reaches A; bad input changes nothing.
    let (code, out) = http(
        &b,
        "POST",
        "db/roles/payments",
        Some(rb),
        r#"{"default_ttl":"2h"}"#,
    )
    .await;
    assert_eq!(code, 204, "{out}");
    let (code, _) = http(
        &b,
        "POST",
        "db/roles/payments",
        Some(rb),
        r#"{"max_ttl":"bad"}"#,
    )
    .await;
    assert_eq!(code, 400);
    until("A has B's change", async || {
        let (_, out) = http(&a, "GET", "db/roles/payments", Some(ra), "").await;
        (out["data"]["default_ttl"] == 7200).then_some(())
    })
    .await;
    let (_, out) = http(&a, "GET", "db/roles/payments", Some(ra), "").await;
    assert_eq!(out["data"]["max_ttl"], 86400);

    // Deleted in A, gone from B.
    let (code, out) = http(&a, "DELETE", "auth/jwt/role/workload", Some(ra), "").await;
    assert_eq!(code, 204, "{out}");
    until("B deleted the role", async || {
        let (code, _) = http(&b, "GET", "auth/jwt/role/workload", Some(rb), "").await;
        (code == 404).then_some(())
    })
    .await;
    // The other roles are still there, in both cells.
    for base_root in [(&a, ra), (&b, rb)] {
        let (code, _) = http(
            base_root.0,
            "GET",
            "auth/app/role/billing",
            Some(base_root.1),
            "",
        )
        .await;
        assert_eq!(code, 200);
    }
    for n in fed.nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn namespaces_are_shared_and_a_namespaced_request_is_refused() {
    let fed = federation(&["eu-west", "us-east"]).await;
    let (a, b) = (fed.nodes[0].http_url(), fed.nodes[1].http_url());
    let (ra, rb) = (fed.roots[0].as_str(), fed.roots[1].as_str());
    let (code, out) = http(
        &a,
        "POST",
        "sys/namespaces/team",
        Some(ra),
        r#"{"custom_metadata":{"owner":"platform"}}"#,
    )
    .await;
    assert_eq!(code, 200, "{out}");
    assert_eq!(out["data"]["path"], "team/");
    let (code, out) = http(&a, "POST", "sys/namespaces/team/payments", Some(ra), "{}").await;
    assert_eq!(code, 200, "{out}");
    // Bad input changes nothing.
    for (path, body) in [
        ("sys/namespaces/nope/child", "{}"),
        ("sys/namespaces/sys", "{}"),
        ("sys/namespaces/a%20b", "{}"),
        ("sys/namespaces/x", r#"{"colour":"red"}"#),
    ] {
        let (code, out) = http(&a, "POST", path, Some(ra), body).await;
        assert_eq!(code, 400, "{path}: {out}");
    }
    let listed = until("B lists both namespaces", async || {
        let (code, out) = http(&b, "LIST", "sys/namespaces", Some(rb), "").await;
        (code == 200 && out["data"]["keys"] == serde_json::json!(["team/", "team/payments/"]))
            .then_some(out)
    })
    .await;
    assert_eq!(
        listed["data"]["key_info"]["team/"]["custom_metadata"]["owner"],
        "platform"
    );
    let (code, out) = http(
        &b,
        "PATCH",
        "sys/namespaces/team",
        Some(rb),
        r#"{"custom_metadata":{"owner":null,"tier":"gold"}}"#,
    )
    .await;
    assert_eq!(code, 200, "{out}");
    until("A sees B's change", async || {
        let (_, out) = http(&a, "GET", "sys/namespaces/team", Some(ra), "").await;
        (out["data"]["custom_metadata"] == serde_json::json!({"tier": "gold"})).then_some(())
    })
    .await;
    let (code, out) = http(&b, "DELETE", "sys/namespaces/team", Some(rb), "").await;
    assert_eq!(code, 400, "a namespace with children stays: {out}");
    let (code, _) = http(&b, "DELETE", "sys/namespaces/team/payments", Some(rb), "").await;
    assert_eq!(code, 204);
    until("A no longer has the child", async || {
        let (code, _) = http(&a, "GET", "sys/namespaces/team/payments", Some(ra), "").await;
        (code == 404).then_some(())
    })
    .await;

    // A request scoped to a namespace is refused, not served from the root;
    // the root namespace by name is fine.
    let base = a.clone();
    let root = ra.to_owned();
    let (scoped, rooted) = tokio::task::spawn_blocking(move || {
        let h = |ns: &str| {
            common::call_with_headers(
                &base,
                "GET",
                "sys/mounts",
                Some(&root),
                &[("X-Vault-Namespace", ns)],
                "",
            )
        };
        (h("team/"), h("root"))
    })
    .await
    .expect("calls");
    assert_eq!(scoped.0, 400, "{}", scoped.2);
    assert!(
        scoped.2["errors"][0]
            .as_str()
            .is_some_and(|e| e.contains("X-Vault-Namespace")),
        "{}",
        scoped.2
    );
    assert_eq!(rooted.0, 200, "{}", rooted.2);
    for n in fed.nodes {
        n.shutdown().await;
    }
}

async fn accessor_of(base: &str, token: &str) -> String {
    let (_, me) = http(base, "GET", "auth/token/lookup-self", Some(token), "").await;
    me["data"]["accessor"]
        .as_str()
        .expect("accessor")
        .to_owned()
}

/// Logs in through AppRole `role` at `base` and returns the client token.
async fn approle_login(base: &str, root: &str, role: &str) -> String {
    let (_, id) = http(
        base,
        "GET",
        &format!("auth/app/role/{role}/role-id"),
        Some(root),
        "",
    )
    .await;
    let (_, secret) = http(
        base,
        "POST",
        &format!("auth/app/role/{role}/secret-id"),
        Some(root),
        "{}",
    )
    .await;
    let body = format!(
        r#"{{"role_id":"{}","secret_id":"{}"}}"#,
        id["data"]["role_id"].as_str().expect("role id"),
        secret["data"]["secret_id"].as_str().expect("secret id")
    );
    let (code, out) = http(base, "POST", "auth/app/login", None, &body).await;
    assert_eq!(code, 200, "{out}");
    out["auth"]["client_token"]
        .as_str()
        .expect("token")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revocation_issued_in_one_cell_kills_tokens_in_every_cell() {
    let fed = federation(&["eu-west", "us-east"]).await;
    let (a, b) = (fed.nodes[0].http_url(), fed.nodes[1].http_url());
    let (ra, rb) = (fed.roots[0].as_str(), fed.roots[1].as_str());
    let (code, out) = http(
        &a,
        "POST",
        "sys/auth/app",
        Some(ra),
        r#"{"type":"approle","global":true}"#,
    )
    .await;
    assert_eq!(code, 204, "{out}");
    for role in ["billing", "search"] {
        let (code, out) = http(
            &a,
            "POST",
            &format!("auth/app/role/{role}"),
            Some(ra),
            r#"{"token_policies":["default"]}"#,
        )
        .await;
        assert_eq!(code, 204, "{out}");
    }
    until("B has both roles", async || {
        let (c1, _) = http(&b, "GET", "auth/app/role/billing", Some(rb), "").await;
        let (c2, _) = http(&b, "GET", "auth/app/role/search", Some(rb), "").await;
        (c1 == 200 && c2 == 200).then_some(())
    })
    .await;
    let billing_a = approle_login(&a, ra, "billing").await;
    let billing_b = approle_login(&b, rb, "billing").await;
    let search_b = approle_login(&b, rb, "search").await;
    let alive = async |base: &str, token: &str| {
        http(base, "GET", "auth/token/lookup-self", Some(token), "")
            .await
            .0
            == 200
    };
    assert!(alive(&a, &billing_a).await && alive(&b, &billing_b).await);

    // Bad input is refused and writes nothing.
    for body in [
        r#"{"reason":"x"}"#,
        r#"{"identity":"approle:billing","accessor":"a","reason":"x"}"#,
        r#"{"identity":"approle:billing"}"#,
        r#"{"identity":"*","reason":"x"}"#,
        r#"{"identity":"approle:billing","reason":"x","kind":"maybe"}"#,
        r#"{"identity":"approle:billing","reason":"x","ttl":"0s"}"#,
        r#"{"role":"billing","reason":"x"}"#,
        r#"{"identity":"approle:billing","reason":"x","colour":"red"}"#,
    ] {
        let (code, out) = http(&a, "POST", "sys/revocations", Some(ra), body).await;
        assert_eq!(code, 400, "{body}: {out}");
    }
    assert_eq!(
        http(&a, "LIST", "sys/revocations", Some(ra), "").await.0,
        404
    );
    // Only sudo may revoke.
    let (code, _) = http(
        &a,
        "POST",
        "sys/revocations",
        Some(&billing_a),
        r#"{"identity":"approle:billing","reason":"x"}"#,
    )
    .await;
    assert_eq!(code, 403);

    let (code, rev) = http(
        &a,
        "POST",
        "sys/revocations",
        Some(ra),
        r#"{"identity":"approle:billing","reason":"secret ID leaked in a build log"}"#,
    )
    .await;
    assert_eq!(code, 200, "{rev}");
    let id = rev["data"]["id"].as_str().expect("id").to_owned();
    assert_eq!(rev["data"]["enforced_here"], true);
    // Enforced in A at once, in B as soon as the record arrives; the
    // other identity keeps working throughout.
    assert!(!alive(&a, &billing_a).await, "dead in A when acknowledged");
    until("B enforces it", async || {
        (!alive(&b, &billing_b).await).then_some(())
    })
    .await;
    assert!(alive(&b, &search_b).await);
    let (code, shown) = http(&b, "GET", &format!("sys/revocations/{id}"), Some(rb), "").await;
    assert_eq!(code, 200, "{shown}");
    assert_eq!(shown["data"]["match"]["identity"], "approle:billing");
    assert_eq!(shown["data"]["enforced_here"], true);
    // Each cell's leader revokes the matching tokens in its own storage
    // (so they stay dead after the record expires), and reports it.
    let cleaned = until("B cleans up", async || {
        let (_, r) = http(&b, "GET", &format!("sys/revocations/{id}"), Some(rb), "").await;
        r["data"]["cleanup_here"]["tokens_revoked"]
            .as_u64()
            .filter(|n| *n >= 1)
    })
    .await;
    assert_eq!(cleaned, 1, "B held one billing token");
    let (code, _) = http(
        &b,
        "POST",
        "auth/token/lookup-accessor",
        Some(rb),
        &format!(r#"{{"accessor":"{}"}}"#, accessor_of(&b, &search_b).await),
    )
    .await;
    assert_eq!(code, 200, "the other identity's token is untouched");
    // A plain revocation lets new logins in, and cannot be lifted.
    let fresh = approle_login(&b, rb, "billing").await;
    assert!(
        alive(&b, &fresh).await,
        "a login after the revocation works"
    );
    let (code, out) = http(&a, "DELETE", &format!("sys/revocations/{id}"), Some(ra), "").await;
    assert_eq!(code, 400, "{out}");

    // A quarantine also refuses new logins, in every cell, until lifted.
    let (code, q) = http(
        &b,
        "POST",
        "sys/revocations",
        Some(rb),
        r#"{"kind":"quarantine","role":"auth/app/search","reason":"investigating"}"#,
    )
    .await;
    assert_eq!(code, 200, "{q}");
    let qid = q["data"]["id"].as_str().expect("id").to_owned();
    assert!(!alive(&b, &search_b).await);
    until("A refuses new search logins", async || {
        let (_, id) = http(&a, "GET", "auth/app/role/search/role-id", Some(ra), "").await;
        let (_, secret) = http(&a, "POST", "auth/app/role/search/secret-id", Some(ra), "{}").await;
        let body = format!(
            r#"{{"role_id":"{}","secret_id":"{}"}}"#,
            id["data"]["role_id"].as_str().unwrap_or_default(),
            secret["data"]["secret_id"].as_str().unwrap_or_default()
        );
        (http(&a, "POST", "auth/app/login", None, &body).await.0 == 403).then_some(())
    })
    .await;
    let (code, out) = http(
        &a,
        "DELETE",
        &format!("sys/revocations/{qid}"),
        Some(ra),
        "",
    )
    .await;
    assert_eq!(code, 204, "{out}");
    let again = approle_login(&a, ra, "search").await;
    assert!(alive(&a, &again).await, "lifted: logins work again");
    let (_, listed) = http(&b, "LIST", "sys/revocations", Some(rb), "").await;
    assert_eq!(
        listed["data"]["keys"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );
    // What each node did shows in its metrics.
    let (_, metrics) = http(&a, "GET", "sys/metrics", Some(ra), "").await;
    let counter = |name: &str| {
        metrics["data"]["Counters"]
            .as_array()
            .and_then(|c| c.iter().find(|x| x["Name"] == name))
            .and_then(|x| x["Count"].as_u64())
    };
    assert_eq!(counter("sigil.revocations.issued"), Some(1), "{metrics}");
    assert!(counter("sigil.revocation.tokens.refused").is_some_and(|n| n >= 1));
    assert!(counter("sigil.revocation.logins.refused").is_some_and(|n| n >= 1));
    for n in fed.nodes {
        n.shutdown().await;
    }
}

async fn pg_role_exists(pg: &sigil_cell::testkit::postgres::PgServer, user: &str) -> bool {
    let client = pg.client().await.expect("superuser client");
    let n: i64 = client
        .query_one("SELECT count(*) FROM pg_roles WHERE rolname = $1", &[&user])
        .await
        .expect("query")
        .get(0);
    n > 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoking_a_spiffe_pattern_drops_its_database_users_in_every_cell() {
    use sigil_cell::testkit::jwt::JwtIssuer;
    use sigil_cell::testkit::postgres::PgServer;
    const ISSUER: &str = "https://spire.prod.example";
    let pg = PgServer::start().await.expect("start PostgreSQL");
    let issuer = JwtIssuer::new();
    let fed = federation(&["eu-west", "us-east"]).await;
    let (a, b) = (fed.nodes[0].http_url(), fed.nodes[1].http_url());
    let (ra, rb) = (fed.roots[0].as_str(), fed.roots[1].as_str());
    let cells = [(a.as_str(), ra), (b.as_str(), rb)];
    for (path, body) in [
        (
            "sys/policies/acl/creds",
            r#"{"policy":"path \"db/creds/app\" { capabilities = [\"read\"] }"}"#.to_owned(),
        ),
        ("sys/auth/jwt", r#"{"type":"jwt","global":true}"#.to_owned()),
        (
            "sys/mounts/db",
            r#"{"type":"database","global":true}"#.to_owned(),
        ),
    ] {
        let (code, out) = http(&a, "POST", path, Some(ra), &body).await;
        assert_eq!(code, 204, "{path}: {out}");
    }
    until("B has both global mounts", async || {
        let (_, m) = http(&b, "GET", "sys/mounts", Some(rb), "").await;
        let (_, au) = http(&b, "GET", "sys/auth", Some(rb), "").await;
        (m["data"]["db/"]["type"] == "database" && au["data"]["jwt/"]["type"] == "jwt")
            .then_some(())
    })
    .await;
    // Each cell's own issuer trust and database connection.
    let jwt_config = serde_json::json!({
        "jwt_validation_pubkeys": [issuer.public_pem()],
        "bound_issuer": ISSUER,
    })
    .to_string();
    let pg_config = serde_json::json!({
        "plugin_name": "postgresql-database-plugin",
        "connection_url": pg.connection_url_template(),
        "username": pg.superuser(),
        "password": pg.password(),
        "allowed_roles": "*",
    })
    .to_string();
    for (base, root) in cells {
        let (code, out) = http(base, "POST", "auth/jwt/config", Some(root), &jwt_config).await;
        assert_eq!(code, 204, "{out}");
        let (code, out) = http(base, "POST", "db/config/pg", Some(root), &pg_config).await;
        assert_eq!(code, 204, "{out}");
    }
    for (path, body) in [
        (
            "auth/jwt/role/svid",
            r#"{"role_type":"jwt","user_claim":"sub","bound_audiences":["sigil"],"token_policies":["creds"]}"#,
        ),
        (
            "db/roles/app",
            r#"{"db_name":"pg","creation_statements":"CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';","default_ttl":"1h"}"#,
        ),
    ] {
        let (code, out) = http(&a, "POST", path, Some(ra), body).await;
        assert_eq!(code, 204, "{path}: {out}");
    }
    until("B has both roles", async || {
        let (r1, _) = http(&b, "GET", "auth/jwt/role/svid", Some(rb), "").await;
        let (r2, _) = http(&b, "GET", "db/roles/app", Some(rb), "").await;
        (r1 == 200 && r2 == 200).then_some(())
    })
    .await;

    // Two workloads log in to each cell with their JWT-SVIDs and take a
    // database user each.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let svid = |sub: &str| {
        issuer.sign(&serde_json::json!({
            "iss": ISSUER, "sub": sub, "aud": "sigil", "iat": now, "exp": now + 3600,
        }))
    };
    let mut tokens = std::collections::BTreeMap::new();
    let mut users = std::collections::BTreeMap::new();
    for (ci, (base, _)) in cells.iter().enumerate() {
        for ns in ["payments", "search"] {
            let body = serde_json::json!({
                "role": "svid",
                "jwt": svid(&format!("spiffe://prod.example/ns/{ns}/sa/api")),
            })
            .to_string();
            let (code, out) = http(base, "POST", "auth/jwt/login", None, &body).await;
            assert_eq!(code, 200, "{out}");
            let token = out["auth"]["client_token"]
                .as_str()
                .expect("token")
                .to_owned();
            let (code, creds) = http(base, "GET", "db/creds/app", Some(&token), "").await;
            assert_eq!(code, 200, "{creds}");
            let user = creds["data"]["username"].as_str().expect("user").to_owned();
            assert!(pg_role_exists(&pg, &user).await);
            tokens.insert((ci, ns), token);
            users.insert((ci, ns), user);
        }
    }

    // The other workload keeps using its tokens in both cells throughout.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bystander = {
        let stop = stop.clone();
        let searches: Vec<(String, String)> = cells
            .iter()
            .enumerate()
            .map(|(ci, (base, _))| ((*base).to_owned(), tokens[&(ci, "search")].clone()))
            .collect();
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, 0u32);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for (base, token) in &searches {
                    match http(base, "GET", "db/creds/app", Some(token), "").await.0 {
                        200 => ok += 1,
                        _ => failed += 1,
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (ok, failed)
        })
    };

    let (code, out) = http(
        &a,
        "POST",
        "sys/revocations",
        Some(ra),
        r#"{"identity":"spiffe://prod.example/ns/payments/*","reason":"payments node compromised"}"#,
    )
    .await;
    assert_eq!(code, 200, "{out}");
    for (ci, (base, _)) in cells.iter().enumerate() {
        let token = tokens[&(ci, "payments")].clone();
        until("the payments token is dead in every cell", async || {
            (http(base, "GET", "auth/token/lookup-self", Some(&token), "")
                .await
                .0
                == 403)
                .then_some(())
        })
        .await;
        let user = users[&(ci, "payments")].clone();
        until("its database user is dropped in every cell", async || {
            (!pg_role_exists(&pg, &user).await).then_some(())
        })
        .await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = bystander.await.expect("bystander");
    assert_eq!(
        failed, 0,
        "the search workload saw failures ({ok} succeeded)"
    );
    assert!(ok > 0);
    for ci in 0..cells.len() {
        assert!(
            pg_role_exists(&pg, &users[&(ci, "search")]).await,
            "the other workload's database user stays"
        );
    }
    for n in fed.nodes {
        n.shutdown().await;
    }
}

/// Sets up AppRole at `auth/app/` with role `billing` in a cell on its own
/// (not a global mount) and logs in through it.
fn with_token<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("x-sigil-token", token.parse().expect("token"));
    r
}

/// Sets up AppRole at `auth/app/` with role `billing` in a cell on its own
/// (not a global mount) and logs in through it.
async fn local_billing_login(base: &str, root: &str) -> String {
    let (code, out) = http(
        base,
        "POST",
        "sys/auth/app",
        Some(root),
        r#"{"type":"approle"}"#,
    )
    .await;
    assert_eq!(code, 204, "{out}");
    let (code, out) = http(
        base,
        "POST",
        "auth/app/role/billing",
        Some(root),
        r#"{"token_policies":["default"]}"#,
    )
    .await;
    assert_eq!(code, 204, "{out}");
    approle_login(base, root, "billing").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_mesh_carries_a_revocation_to_a_cell_that_sync_cannot_reach() {
    // Sync is pointed at a socket that never answers: only the mesh links
    // the two cells.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let hole_addr = hole.local_addr().expect("addr").to_string();
    let fed = federation_with(&["eu-west", "us-east"], Some(&hole_addr)).await;
    let (a, b) = (fed.nodes[0].http_url(), fed.nodes[1].http_url());
    let (ra, rb) = (fed.roots[0].as_str(), fed.roots[1].as_str());
    let token_b = local_billing_login(&b, rb).await;
    let alive = async |token: &str| {
        http(&b, "GET", "auth/token/lookup-self", Some(token), "")
            .await
            .0
            == 200
    };
    assert!(alive(&token_b).await);

    let (code, rev) = http(
        &a,
        "POST",
        "sys/revocations",
        Some(ra),
        r#"{"identity":"approle:billing","reason":"secret ID leaked"}"#,
    )
    .await;
    assert_eq!(code, 200, "{rev}");
    let id = rev["data"]["id"].as_str().expect("id").to_owned();
    until("B refuses the token", async || {
        (!alive(&token_b).await).then_some(())
    })
    .await;

    // B's leader committed the record it heard to B's own control plane:
    // B serves it (sync never ran), and says where it came from.
    let shown = until("B holds the record", async || {
        let (code, out) = http(&b, "GET", &format!("sys/revocations/{id}"), Some(rb), "").await;
        (code == 200).then_some(out)
    })
    .await;
    assert_eq!(shown["data"]["enforced_here"], true, "{shown}");
    let (code, _) = http(
        &a,
        "PUT",
        "sys/policy/only-in-a",
        Some(ra),
        r#"{"policy":"path \"x\" { capabilities = [\"read\"] }"}"#,
    )
    .await;
    assert_eq!(code, 204);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        http(&b, "GET", "sys/policy/only-in-a", Some(rb), "")
            .await
            .0,
        404,
        "sync must not be running in this test"
    );

    // Convergence, as A reports it: both nodes applied it, one per cell.
    let conv = until("A reports both nodes applied", async || {
        let (_, out) = http(&a, "GET", &format!("sys/revocations/{id}"), Some(ra), "").await;
        (out["data"]["convergence"]["converged"] == true).then_some(out)
    })
    .await;
    let c = &conv["data"]["convergence"];
    assert_eq!(c["nodes_live"], 2, "{c}");
    assert_eq!(c["nodes_applied"], 2, "{c}");
    let cells: Vec<&str> = c["cells"]
        .as_array()
        .expect("cells")
        .iter()
        .map(|x| x["cell"].as_str().expect("cell"))
        .collect();
    assert_eq!(cells, ["eu-west", "us-east"]);
    for x in c["cells"].as_array().expect("cells") {
        assert!(
            x["first_applied_ms"].as_u64().expect("first")
                >= rev["data"]["issued_at_ms"].as_u64().expect("issued") - 1_000
        );
    }

    // The same over gRPC: Watch ends with a converged update; without a
    // token it is refused, and an id that is not one is invalid.
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", fed.nodes[0].grpc_addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
    let mut client = sigil_proto::v1::revocations_client::RevocationsClient::new(channel);
    let mut stream = client
        .watch(with_token(
            sigil_proto::v1::WatchRequest {
                id: id.clone(),
                timeout_ms: 30_000,
            },
            ra,
        ))
        .await
        .expect("watch")
        .into_inner();
    let mut last = None;
    while let Some(update) = stream.message().await.expect("update") {
        last = Some(update);
    }
    let last = last.expect("at least one update");
    assert!(last.converged && last.nodes_applied == 2, "{last:?}");
    let err = client
        .watch(sigil_proto::v1::WatchRequest {
            id: id.clone(),
            timeout_ms: 0,
        })
        .await
        .expect_err("no token");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    let err = client
        .get(with_token(
            sigil_proto::v1::RevocationId { id: "../x".into() },
            ra,
        ))
        .await
        .expect_err("bad id");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    let got = client
        .get(with_token(
            sigil_proto::v1::RevocationId { id: id.clone() },
            ra,
        ))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.target_type, "identity");
    assert_eq!(got.target, "approle:billing");
    assert!(got.convergence.is_some_and(|c| c.converged));
    // Mesh streams end with their nodes.
    for n in fed.nodes {
        n.shutdown().await;
    }
    drop(hole);
}
