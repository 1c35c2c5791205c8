//! The gRPC front end (`sigil.v1.Sys`) calls the same pipeline as HTTP and
//! maps errors to the right status codes.

mod common;

use sigil_proto::v1 as pb;
use sigil_proto::v1::sys_client::SysClient;
use tonic::Code;
use tonic::transport::Channel;

fn with_token<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("x-sigil-token", token.parse().expect("ascii token"));
    req
}

#[tokio::test]
async fn grpc_lifecycle_and_error_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = common::start_node(dir.path()).await;
    let channel = Channel::from_shared(format!("http://{}", running.grpc_addr))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut c = SysClient::new(channel);

    assert!(
        !c.init_status(pb::InitStatusRequest {})
            .await
            .expect("status")
            .into_inner()
            .initialized
    );
    let err = c
        .init(pb::InitRequest {
            secret_shares: 2,
            secret_threshold: 3,
            ..Default::default()
        })
        .await
        .expect_err("threshold > shares");
    assert_eq!(err.code(), Code::InvalidArgument);
    let init = c
        .init(pb::InitRequest {
            secret_shares: 3,
            secret_threshold: 2,
            ..Default::default()
        })
        .await
        .expect("init")
        .into_inner();
    assert_eq!(init.keys.len(), 3);
    let err = c
        .init(pb::InitRequest {
            secret_shares: 3,
            secret_threshold: 2,
            ..Default::default()
        })
        .await
        .expect_err("twice");
    assert_eq!(err.code(), Code::AlreadyExists);

    let err = c
        .key_status(with_token(pb::KeyStatusRequest {}, &init.root_token))
        .await
        .expect_err("sealed");
    assert_eq!(err.code(), Code::Unavailable);

    let err = c
        .unseal(pb::UnsealRequest {
            key: "zz".into(),
            reset: false,
        })
        .await
        .expect_err("bad share");
    assert_eq!(err.code(), Code::InvalidArgument);
    let st = c
        .unseal(pb::UnsealRequest {
            key: init.keys[0].clone(),
            reset: false,
        })
        .await
        .expect("1")
        .into_inner();
    assert_eq!((st.sealed, st.progress, st.t, st.n), (true, 1, 2, 3));
    let st = c
        .unseal(pb::UnsealRequest {
            key: init.keys_base64[1].clone(),
            reset: false,
        })
        .await
        .expect("2")
        .into_inner();
    assert!(!st.sealed);
    assert_eq!(st.r#type, "shamir");

    let err = c.seal(pb::SealRequest {}).await.expect_err("no token");
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = c
        .rotate(with_token(pb::RotateRequest {}, "hvs.not-a-real-token"))
        .await
        .expect_err("bad token");
    assert_eq!(err.code(), Code::PermissionDenied);

    let rotated = c
        .rotate(with_token(pb::RotateRequest {}, &init.root_token))
        .await
        .expect("rotate")
        .into_inner();
    assert_eq!(rotated.term, 2);
    let ks = c
        .key_status(with_token(pb::KeyStatusRequest {}, &init.root_token))
        .await
        .expect("ks")
        .into_inner();
    assert_eq!(ks.term, 2);
    let health = c
        .health(pb::HealthRequest {})
        .await
        .expect("health")
        .into_inner();
    assert!(health.initialized && !health.sealed);

    c.seal(with_token(pb::SealRequest {}, &init.root_token))
        .await
        .expect("seal");
    assert!(
        c.seal_status(pb::SealStatusRequest {})
            .await
            .expect("status")
            .into_inner()
            .sealed
    );
    // The same node seen over HTTP agrees: one pipeline.
    let v: serde_json::Value = reqwest::get(format!("{}/v1/sys/seal-status", running.http_url()))
        .await
        .expect("http")
        .json()
        .await
        .expect("json");
    assert_eq!(v["sealed"], true);
    running.shutdown().await;
}
