//! `sigil.v1.Logical` and `sigil.v1.Kv` run the same pipeline as the HTTP
//! API: KV version 2 through both, a wrapped read, and every error mapped to
//! its status code (PermissionDenied, NotFound, InvalidArgument,
//! FailedPrecondition for check-and-set, Unavailable while sealed).

mod common;

use prost_types::value::Kind;
use sigil_proto::v1 as pb;
use sigil_proto::v1::kv_client::KvClient;
use sigil_proto::v1::logical_client::LogicalClient;
use sigil_proto::v1::sys_client::SysClient;
use tonic::Code;
use tonic::transport::Channel;

fn req<T>(msg: T, token: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut()
            .insert("x-sigil-token", t.parse().expect("ascii token"));
    }
    r
}

fn string_struct(pairs: &[(&str, &str)]) -> prost_types::Struct {
    prost_types::Struct {
        fields: pairs
            .iter()
            .map(|(k, v)| {
                (
                    (*k).to_owned(),
                    prost_types::Value {
                        kind: Some(Kind::StringValue((*v).to_owned())),
                    },
                )
            })
            .collect(),
    }
}

fn field<'a>(s: &'a prost_types::Struct, k: &str) -> Option<&'a Kind> {
    s.fields.get(k).and_then(|v| v.kind.as_ref())
}

#[tokio::test]
async fn kv_and_logical_over_grpc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = common::start_node(dir.path()).await;
    let channel = Channel::from_shared(format!("http://{}", running.grpc_addr))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut sys = SysClient::new(channel.clone());
    let mut kv = KvClient::new(channel.clone());
    let mut logical = LogicalClient::new(channel);

    // Sealed: every call is UNAVAILABLE.
    let init = sys
        .init(pb::InitRequest {
            secret_shares: 1,
            secret_threshold: 1,
            ..Default::default()
        })
        .await
        .expect("init")
        .into_inner();
    let root = init.root_token.as_str();
    let get = |path: &str, version: u64| pb::KvGetRequest {
        mount: "secret".into(),
        path: path.into(),
        version,
    };
    let err = kv
        .get(req(get("a", 0), Some(root)))
        .await
        .expect_err("sealed");
    assert_eq!(err.code(), Code::Unavailable);
    sys.unseal(pb::UnsealRequest {
        key: init.keys[0].clone(),
        reset: false,
    })
    .await
    .expect("unseal");

    // Mount KV v2 through the generic service.
    let mut mount = string_struct(&[("type", "kv")]);
    mount.fields.insert(
        "options".into(),
        prost_types::Value {
            kind: Some(Kind::StructValue(string_struct(&[("version", "2")]))),
        },
    );
    let written = logical
        .write(req(
            pb::LogicalRequest {
                path: "sys/mounts/secret".into(),
                data: Some(mount),
            },
            Some(root),
        ))
        .await
        .expect("mount")
        .into_inner();
    assert!(written.data.is_none());

    // Typed KV: put, get, versions, CAS, list, delete.
    let put = |path: &str, v: &str, cas: Option<u64>| pb::KvPutRequest {
        mount: "secret".into(),
        path: path.into(),
        data: Some(string_struct(&[("password", v)])),
        cas,
    };
    let meta = kv
        .put(req(put("app/db", "one", Some(0)), Some(root)))
        .await
        .expect("put")
        .into_inner()
        .metadata
        .expect("metadata");
    assert_eq!(meta.version, 1);
    kv.put(req(put("app/db", "two", Some(1)), Some(root)))
        .await
        .expect("put v2");
    let err = kv
        .put(req(put("app/db", "three", Some(1)), Some(root)))
        .await
        .expect_err("stale cas");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let got = kv
        .get(req(get("app/db", 0), Some(root)))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.metadata.expect("meta").version, 2);
    assert_eq!(
        field(&got.data.expect("data"), "password"),
        Some(&Kind::StringValue("two".into()))
    );
    let old = kv
        .get(req(get("app/db", 1), Some(root)))
        .await
        .expect("get v1")
        .into_inner();
    assert_eq!(
        field(&old.data.expect("data"), "password"),
        Some(&Kind::StringValue("one".into()))
    );
    let keys = kv
        .list(req(
            pb::KvListRequest {
                mount: "secret".into(),
                path: "app".into(),
            },
            Some(root),
        ))
        .await
        .expect("list")
        .into_inner()
        .keys;
    assert_eq!(keys, ["db"]);
    kv.delete(req(
        pb::KvDeleteRequest {
            mount: "secret".into(),
            path: "app/db".into(),
            versions: vec![],
        },
        Some(root),
    ))
    .await
    .expect("soft delete");
    let err = kv
        .get(req(get("app/db", 0), Some(root)))
        .await
        .expect_err("deleted");
    assert_eq!(err.code(), Code::NotFound);
    let err = kv
        .get(req(get("nothing", 0), Some(root)))
        .await
        .expect_err("absent");
    assert_eq!(err.code(), Code::NotFound);

    // Errors: no token, a bad token, bad input, a bad wrap TTL.
    for token in [None, Some("hvs.not-a-real-token")] {
        let err = kv
            .get(req(get("app/db", 1), token))
            .await
            .expect_err("no auth");
        assert_eq!(err.code(), Code::PermissionDenied);
    }
    let err = kv
        .get(req(
            pb::KvGetRequest {
                mount: String::new(),
                path: "x".into(),
                version: 0,
            },
            Some(root),
        ))
        .await
        .expect_err("no mount");
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = kv
        .get(req(get("a/../../x", 0), Some(root)))
        .await
        .expect_err("traversal");
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut bad_wrap = req(
        pb::LogicalRequest {
            path: "secret/data/app/db".into(),
            data: None,
        },
        Some(root),
    );
    bad_wrap
        .metadata_mut()
        .insert("x-sigil-wrap-ttl", "banana".parse().expect("ascii"));
    let err = logical.read(bad_wrap).await.expect_err("bad wrap ttl");
    assert_eq!(err.code(), Code::InvalidArgument);

    // A wrapped read returns wrap_info and no data; unwrapping gives it.
    let mut wrapped = req(
        pb::LogicalRequest {
            path: "secret/data/app/db".into(),
            data: Some(string_struct(&[("version", "1")])),
        },
        Some(root),
    );
    wrapped
        .metadata_mut()
        .insert("x-sigil-wrap-ttl", "5m".parse().expect("ascii"));
    let w = logical.read(wrapped).await.expect("wrapped").into_inner();
    assert!(w.data.is_none());
    let info = w.wrap_info.expect("wrap_info");
    assert_eq!(info.ttl, 300);
    let unwrapped = logical
        .write(req(
            pb::LogicalRequest {
                path: "sys/wrapping/unwrap".into(),
                data: None,
            },
            Some(&info.token),
        ))
        .await
        .expect("unwrap")
        .into_inner();
    let inner = unwrapped.data.expect("data");
    let Some(Kind::StructValue(secret)) = field(&inner, "data") else {
        panic!("unwrapped body has data: {inner:?}");
    };
    assert_eq!(
        field(secret, "password"),
        Some(&Kind::StringValue("one".into()))
    );
    let err = logical
        .write(req(
            pb::LogicalRequest {
                path: "sys/wrapping/unwrap".into(),
                data: None,
            },
            Some(&info.token),
        ))
        .await
        .expect_err("second unwrap");
    assert_eq!(err.code(), Code::InvalidArgument);

    // Generic list, patch and delete on any path.
    let listed = logical
        .list(req(
            pb::LogicalRequest {
                path: "secret/metadata/".into(),
                data: None,
            },
            Some(root),
        ))
        .await
        .expect("list")
        .into_inner();
    assert!(field(&listed.data.expect("data"), "keys").is_some());
    let mut patch = prost_types::Struct::default();
    patch.fields.insert(
        "data".into(),
        prost_types::Value {
            kind: Some(Kind::StructValue(string_struct(&[("extra", "e")]))),
        },
    );
    kv.put(req(put("p", "base", None), Some(root)))
        .await
        .expect("put");
    logical
        .patch(req(
            pb::LogicalRequest {
                path: "secret/data/p".into(),
                data: Some(patch),
            },
            Some(root),
        ))
        .await
        .expect("merge patch");
    let got = kv
        .get(req(get("p", 0), Some(root)))
        .await
        .expect("get")
        .into_inner();
    let data = got.data.expect("data");
    assert_eq!(field(&data, "extra"), Some(&Kind::StringValue("e".into())));
    assert_eq!(
        field(&data, "password"),
        Some(&Kind::StringValue("base".into()))
    );
    logical
        .delete(req(
            pb::LogicalRequest {
                path: "secret/metadata/p".into(),
                data: None,
            },
            Some(root),
        ))
        .await
        .expect("delete metadata");
    let err = kv
        .get(req(get("p", 0), Some(root)))
        .await
        .expect_err("gone");
    assert_eq!(err.code(), Code::NotFound);
    let err = logical
        .read(req(
            pb::LogicalRequest {
                path: "nomount/x".into(),
                data: None,
            },
            Some(root),
        ))
        .await
        .expect_err("unknown path");
    assert_eq!(err.code(), Code::NotFound);
    running.shutdown().await;
}
