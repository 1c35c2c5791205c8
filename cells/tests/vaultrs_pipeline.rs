//! The Rust Vault client `vaultrs` drives the request pipeline of a real
//! `sigil server`: a KV version 2 mount and its secrets (versions,
//! check-and-set, metadata, delete/undelete/destroy), tokens (create, lookup,
//! renew, revoke, orphans) and ACL policies enforced on a child token.

mod common;

use std::collections::HashMap;

use vaultrs::api::kv2::requests::SetSecretRequestOptions;
use vaultrs::api::token::requests::CreateTokenRequest;
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;
use vaultrs::{kv2, sys, token};

fn client(url: &str, token: &str) -> VaultClient {
    VaultClient::new(
        VaultClientSettingsBuilder::default()
            .address(url)
            .token(token)
            .build()
            .expect("settings"),
    )
    .expect("client")
}

fn status(e: &ClientError) -> u16 {
    match e {
        ClientError::APIError { code, .. } => *code,
        // A 404 that carries a body (a deleted KV version) has no `errors`.
        ClientError::RestClientError {
            source: rustify::errors::ClientError::ServerResponseError { code, .. },
        } => *code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn vaultrs_drives_kv2_tokens_and_policies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = common::write_config(dir.path(), "");
    let server = common::ServerProcess::start(&config, &[]);
    let root = common::init_unseal(&server.http_url);
    let c = client(&server.http_url, &root);

    // A KV v2 mount, listed with the fields vaultrs parses.
    let mut opts = vaultrs::api::sys::requests::EnableEngineRequest::builder();
    opts.options(HashMap::from([("version".to_owned(), "2".to_owned())]));
    sys::mount::enable(&c, "apps", "kv", Some(&mut opts))
        .await
        .expect("enable kv v2");
    let mounts = sys::mount::list(&c).await.expect("list mounts");
    assert_eq!(mounts["apps/"].mount_type, "kv");

    // Secrets: versions, check-and-set, metadata.
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Db {
        user: String,
        password: String,
    }
    let one = Db {
        user: "app".into(),
        password: "vaultrs-pw-1".into(),
    };
    let meta = kv2::set(&c, "apps", "db", &one).await.expect("set");
    assert_eq!(meta.version, 1);
    let two = Db {
        user: "app".into(),
        password: "vaultrs-pw-2".into(),
    };
    kv2::set_with_options(&c, "apps", "db", &two, SetSecretRequestOptions { cas: 1 })
        .await
        .expect("cas 1");
    let err = kv2::set_with_options(&c, "apps", "db", &one, SetSecretRequestOptions { cas: 1 })
        .await
        .expect_err("stale cas");
    assert_eq!(status(&err), 400);
    let got: Db = kv2::read(&c, "apps", "db").await.expect("read");
    assert_eq!(got, two);
    let old: Db = kv2::read_version(&c, "apps", "db", 1)
        .await
        .expect("read v1");
    assert_eq!(old, one);
    let md = kv2::read_metadata(&c, "apps", "db")
        .await
        .expect("metadata");
    assert_eq!(md.current_version, 2);
    assert_eq!(md.versions.len(), 2);
    assert_eq!(
        kv2::list(&c, "apps", "").await.expect("list"),
        vec!["db".to_owned()]
    );
    kv2::delete_latest(&c, "apps", "db").await.expect("delete");
    let err = kv2::read::<Db>(&c, "apps", "db")
        .await
        .expect_err("deleted");
    assert_eq!(status(&err), 404);
    kv2::undelete_versions(&c, "apps", "db", vec![2])
        .await
        .expect("undelete");
    assert_eq!(kv2::read::<Db>(&c, "apps", "db").await.expect("read"), two);
    kv2::destroy_versions(&c, "apps", "db", vec![1])
        .await
        .expect("destroy");
    let err = kv2::read_version::<Db>(&c, "apps", "db", 1)
        .await
        .expect_err("destroyed");
    assert_eq!(status(&err), 404);

    // Policies: a child token may read, not write, and never see sys.
    sys::policy::set(
        &c,
        "apps-read",
        r#"path "apps/data/*" { capabilities = ["read"] }"#,
    )
    .await
    .expect("policy");
    assert!(
        sys::policy::list(&c)
            .await
            .expect("list")
            .policies
            .contains(&"apps-read".to_owned())
    );
    assert!(
        sys::policy::read(&c, "apps-read")
            .await
            .expect("read")
            .rules
            .contains("apps/data/*")
    );
    let mut req = CreateTokenRequest::builder();
    req.policies(vec!["apps-read".to_owned()]).ttl("1h");
    let auth = token::new(&c, Some(&mut req)).await.expect("token");
    assert!(auth.token_policies.contains(&"apps-read".to_owned()));
    assert_eq!(auth.lease_duration, 3600);
    let reader = client(&server.http_url, &auth.client_token);
    assert_eq!(
        kv2::read::<Db>(&reader, "apps", "db").await.expect("read"),
        two
    );
    let err = kv2::set(&reader, "apps", "db", &one)
        .await
        .expect_err("write refused");
    assert_eq!(status(&err), 403);
    let err = sys::mount::list(&reader).await.expect_err("sys refused");
    assert_eq!(status(&err), 403);

    // Token lifecycle.
    let looked = token::lookup(&c, &auth.client_token).await.expect("lookup");
    assert_eq!(looked.accessor, auth.accessor);
    assert!(!looked.orphan);
    let me = token::lookup_self(&reader).await.expect("lookup-self");
    assert_eq!(me.id, auth.client_token);
    let renewed = token::renew(&c, &auth.client_token, Some("2h"))
        .await
        .expect("renew");
    assert_eq!(renewed.lease_duration, 7200);
    let by_acc = token::lookup_accessor(&c, &auth.accessor)
        .await
        .expect("lookup-accessor");
    assert_eq!(by_acc.id, "");
    token::revoke(&c, &auth.client_token).await.expect("revoke");
    let err = kv2::read::<Db>(&reader, "apps", "db")
        .await
        .expect_err("revoked");
    assert_eq!(status(&err), 403);
    let orphan = token::new_orphan(&c, None).await.expect("orphan");
    assert!(orphan.orphan);
    token::revoke_accessor(&c, &orphan.accessor)
        .await
        .expect("revoke accessor");
    let err = token::lookup(&c, &orphan.client_token)
        .await
        .expect_err("gone");
    assert_eq!(status(&err), 403);
    token::tidy(&c).await.expect("tidy");

    sys::policy::delete(&c, "apps-read")
        .await
        .expect("delete policy");
    sys::mount::disable(&c, "apps").await.expect("disable");
    let err = kv2::read::<Db>(&c, "apps", "db")
        .await
        .expect_err("unmounted");
    assert_eq!(status(&err), 404);
}
