//! The Rust Vault client `vaultrs` drives a real `sigil server` process:
//! health and status through every phase, init, unseal, seal.

mod common;

use vaultrs::client::{Client as _, VaultClient, VaultClientSettingsBuilder};
use vaultrs::sys::{self, ServerStatus};

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

#[tokio::test]
async fn vaultrs_drives_the_seal_lifecycle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = common::write_config(dir.path(), "");
    let server = common::ServerProcess::start(&config, &[]);
    let mut c = client(&server.http_url, "");

    assert!(matches!(
        sys::status(&c).await.expect("status"),
        ServerStatus::UNINITIALIZED
    ));

    let init = sys::start_initialization(&c, 5, 3, None)
        .await
        .expect("init");
    assert_eq!(init.keys.len(), 5);
    assert_eq!(init.keys_base64.len(), 5);
    assert!(matches!(
        sys::status(&c).await.expect("status"),
        ServerStatus::SEALED
    ));

    let r = sys::unseal(&c, Some(init.keys[0].clone()), None, None)
        .await
        .expect("unseal 1");
    assert!(r.sealed);
    assert_eq!((r.progress, r.threshold, r.n_shares), (1, 3, 5));
    // A reset through the client clears progress.
    let r = sys::unseal(&c, None, Some(true), None)
        .await
        .expect("reset");
    assert_eq!(r.progress, 0);
    for key in &init.keys_base64[2..5] {
        sys::unseal(&c, Some(key.clone()), None, None)
            .await
            .expect("unseal");
    }
    assert!(matches!(
        sys::status(&c).await.expect("status"),
        ServerStatus::OK
    ));
    let health = sys::health(&c).await.expect("health");
    assert!(health.initialized && !health.sealed && !health.standby);
    assert_eq!(health.replication_dr_mode, "disabled");
    assert!(health.cluster_id.is_some_and(|id| id.len() == 36));

    // Seal needs the root token.
    assert!(sys::seal(&c).await.is_err(), "no token, no seal");
    assert!(matches!(
        sys::status(&c).await.expect("status"),
        ServerStatus::OK
    ));
    c.set_token(&init.root_token);
    sys::seal(&c).await.expect("seal");
    assert!(matches!(
        sys::status(&c).await.expect("status"),
        ServerStatus::SEALED
    ));
}
