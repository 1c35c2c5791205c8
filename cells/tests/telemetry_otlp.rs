//! With `[telemetry] otlp_endpoint` set, a server exports a span for every
//! request over OTLP/gRPC, and no span carries a token, a key share or a
//! request body. The collector here is a minimal in-test OTLP trace service.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message as _;

#[derive(Clone, Default)]
struct Collector {
    received: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.received
            .lock()
            .expect("lock")
            .push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[test]
fn requests_are_exported_as_spans_without_secrets() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let collector = Collector::default();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let collector_addr = listener.local_addr().expect("addr");
    {
        let svc = TraceServiceServer::new(collector.clone());
        rt.spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
        });
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let config = common::write_config(
        dir.path(),
        &format!(
            "[telemetry]\notlp_endpoint = \"http://{collector_addr}\"\nservice_name = \"sigil-test\"\n"
        ),
    );
    let mut server = common::ServerProcess::start(&config, &[]);
    let (code, init) = common::put_json(
        &server.http_url,
        "sys/init",
        r#"{"secret_shares":3,"secret_threshold":2}"#,
    );
    assert_eq!(code, 200);
    let keys = common::strings(&init, "keys");
    let root = init["root_token"].as_str().expect("root").to_owned();
    for k in &keys[..2] {
        common::put_json(
            &server.http_url,
            "sys/unseal",
            &format!(r#"{{"key":"{k}"}}"#),
        );
    }
    common::get_json(&server.http_url, "sys/seal-status");

    // SIGTERM: a graceful stop flushes the batch exporter.
    let term = std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(term.success());
    let exited = common::wait_for(Duration::from_secs(20), || {
        server.child.try_wait().ok().flatten()
    });
    assert!(
        exited.is_some_and(|s| s.success()),
        "server exits cleanly on SIGTERM"
    );
    server.kill();

    let spans = common::wait_for(Duration::from_secs(10), || {
        let got = collector.received.lock().expect("lock");
        let names: Vec<(String, Vec<String>)> = got
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
            .map(|s| {
                let attrs = s
                    .attributes
                    .iter()
                    .map(|a| {
                        format!(
                            "{}={:?}",
                            a.key,
                            a.value.as_ref().and_then(|v| v.value.clone())
                        )
                    })
                    .collect();
                (s.name.clone(), attrs)
            })
            .collect();
        (names.iter().filter(|(n, _)| n == "http_request").count() >= 4).then_some(names)
    })
    .expect("http request spans exported");
    assert!(
        spans
            .iter()
            .any(|(_, attrs)| attrs.iter().any(|a| a.contains("/v1/sys/unseal"))),
        "spans carry the path: {spans:?}"
    );
    assert!(
        spans
            .iter()
            .any(|(_, attrs)| attrs.iter().any(|a| a.starts_with("status=")))
    );

    // Nothing secret anywhere in what was exported.
    let exported: Vec<u8> = collector
        .received
        .lock()
        .expect("lock")
        .iter()
        .flat_map(|r| r.encode_to_vec())
        .collect();
    let text = String::from_utf8_lossy(&exported);
    assert!(text.contains("sigil-test"), "service name exported");
    for secret in keys.iter().chain(std::iter::once(&root)) {
        assert!(
            !text.contains(secret.as_str()),
            "a secret reached the telemetry export"
        );
    }
}
