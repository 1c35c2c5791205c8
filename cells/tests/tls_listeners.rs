//! With `tls_cert_file`/`tls_key_file` set, both listeners speak TLS only
//! (rustls with the aws-lc-rs provider), and plain text is refused.

mod common;

use std::path::Path;

use sigil_cell::config::Config;
use sigil_proto::v1 as pb;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

fn self_signed(dir: &Path) -> (String, std::path::PathBuf, std::path::PathBuf) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("cert");
    let cert_pem = cert.cert.pem();
    let cert_path = dir.join("tls.crt");
    let key_path = dir.join("tls.key");
    std::fs::write(&cert_path, &cert_pem).expect("write cert");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write key");
    (cert_pem, cert_path, key_path)
}

#[tokio::test]
async fn both_listeners_serve_tls() {
    let _ = rustls::crypto::CryptoProvider::install_default(
        rustls::crypto::aws_lc_rs::default_provider(),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca_pem, cert, key) = self_signed(dir.path());
    let text = common::config_text(
        &dir.path().join("data"),
        &format!(
            "tls_cert_file = {:?}\ntls_key_file = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        ),
    );
    let config = Config::parse(&text).expect("config");
    let running = sigil_cell::server::start(&config).await.expect("start");
    assert!(running.http_url().starts_with("https://"));

    let https = reqwest::Client::builder()
        .use_preconfigured_tls(
            sigil_cell::tls::client_config(Some(&cert), false).expect("client tls"),
        )
        .build()
        .expect("client");
    let url = format!(
        "https://localhost:{}/v1/sys/health",
        running.http_addr.port()
    );
    let resp = https.get(&url).send().await.expect("https request");
    assert_eq!(resp.status().as_u16(), 501, "uninitialised, over TLS");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = reqwest::get(format!("http://{}/v1/sys/health", running.http_addr)).await;
    assert!(plain.is_err() || plain.is_ok_and(|r| !r.status().is_success()));

    let channel = Channel::from_shared(format!("https://localhost:{}", running.grpc_addr.port()))
        .expect("uri")
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca_pem))
                .domain_name("localhost"),
        )
        .expect("tls config")
        .connect()
        .await
        .expect("grpc over tls");
    let mut c = pb::sys_client::SysClient::new(channel);
    let st = c
        .init_status(pb::InitStatusRequest {})
        .await
        .expect("init status")
        .into_inner();
    assert!(!st.initialized);
    running.shutdown().await;
}

#[test]
fn plain_text_off_loopback_is_refused() {
    let text = "node_id = \"n\"\ndata_dir = \"/tmp/x\"\n[listener]\nhttp_addr = \"0.0.0.0:8200\"\n";
    let err = Config::parse(text).expect_err("plain text on 0.0.0.0");
    assert!(err.to_string().contains("listener.http_addr"), "{err}");
}
