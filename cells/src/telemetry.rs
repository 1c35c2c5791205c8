//! Logging and tracing: `tracing` to stderr (text or JSON), and spans
//! exported over OTLP/gRPC through `opentelemetry` when an endpoint is set.
//!
//! Spans carry request metadata only (method, path, status, operation);
//! tokens, keys, shares and request bodies are never recorded.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogConfig, TelemetryConfig};

/// Flushes and stops span export when dropped.
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown()
        {
            eprintln!("telemetry shutdown: {e}");
        }
    }
}

/// Installs the global subscriber. Call once, inside a Tokio runtime when an
/// OTLP endpoint is set (the exporter runs on it).
pub fn init(log: &LogConfig, telemetry: &TelemetryConfig) -> Result<TelemetryGuard, String> {
    // openraft narrates every election and replication step at `info`;
    // Sigil logs the events operators act on itself, so openraft speaks at
    // `warn` unless a directive names it.
    let directives = |level: &str| {
        if level.contains("openraft") {
            level.to_owned()
        } else {
            format!("{level},openraft=warn")
        }
    };
    let filter = std::env::var("SIGIL_LOG")
        .ok()
        .map(|l| EnvFilter::try_new(directives(&l)))
        .unwrap_or_else(|| EnvFilter::try_new(directives(&log.level)))
        .map_err(|e| format!("log.level: {e}"))?;
    let fmt = if log.json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        // Colour only for a person at a terminal, never into log files.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .boxed()
    };
    let mut guard = TelemetryGuard::default();
    let otel = match &telemetry.otlp_endpoint {
        None => None,
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build()
                .map_err(|e| format!("telemetry.otlp_endpoint: {e}"))?;
            let resource = opentelemetry_sdk::Resource::builder()
                .with_service_name(
                    telemetry
                        .service_name
                        .clone()
                        .unwrap_or_else(|| "sigil".into()),
                )
                .build();
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource)
                .build();
            let tracer = provider.tracer("sigil");
            guard.provider = Some(provider);
            Some(tracing_opentelemetry::layer().with_tracer(tracer))
        }
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(|e| format!("cannot install the log subscriber: {e}"))?;
    Ok(guard)
}
