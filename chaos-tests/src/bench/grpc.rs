//! The gRPC client: the typed `sigil.v1.Kv` service.

use std::collections::BTreeMap;

use sigil_proto::v1::kv_client::KvClient;
use sigil_proto::v1::{KvGetRequest, KvPutRequest};
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use super::client::{ClientSpec, OP_TIMEOUT, OpError, describe};
use super::workload::KeySpace;

/// The metadata key that carries the token (`logical.proto`).
const TOKEN_KEY: &str = "x-sigil-token";

/// KV v2 over `sigil.v1.Kv`, on its own channel (HTTP/2 connection).
#[derive(Debug, Clone)]
pub struct GrpcKv {
    client: KvClient<Channel>,
    mount: String,
    keys: KeySpace,
    token: AsciiMetadataValue,
    /// `{"value": "<value>"}`, built once.
    data: prost_types::Struct,
}

impl GrpcKv {
    /// Connects a channel to `uri` (`http://host:port` or `https://...`).
    pub async fn connect(uri: &str, spec: &ClientSpec) -> Result<Self, String> {
        let mut endpoint = Endpoint::from_shared(uri.to_owned())
            .map_err(|e| describe(&e))?
            .tcp_nodelay(true)
            .timeout(OP_TIMEOUT);
        if uri.starts_with("https://") {
            let mut tls = ClientTlsConfig::new();
            if let Some(pem) = &spec.ca_cert {
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            endpoint = endpoint.tls_config(tls).map_err(|e| describe(&e))?;
        }
        let channel = endpoint.connect().await.map_err(|e| describe(&e))?;
        let mut token: AsciiMetadataValue = MetadataValue::try_from(spec.token.expose())
            .map_err(|_| "the token is not a valid gRPC metadata value".to_owned())?;
        token.set_sensitive(true);
        let value = prost_types::Value {
            kind: Some(prost_types::value::Kind::StringValue(spec.value.clone())),
        };
        Ok(Self {
            client: KvClient::new(channel),
            mount: spec.mount.clone(),
            keys: spec.keys.clone(),
            token,
            data: prost_types::Struct {
                fields: BTreeMap::from([("value".to_owned(), value)]),
            },
        })
    }

    /// `Kv.Get` of the latest version of key `key`.
    pub async fn read(&mut self, key: usize) -> Result<(), OpError> {
        let request = self.request(KvGetRequest {
            mount: self.mount.clone(),
            path: self.keys.path(key).to_owned(),
            version: 0,
        });
        self.client.get(request).await.map_err(status_error)?;
        Ok(())
    }

    /// `Kv.Put` of the run's value to key `key`.
    pub async fn write(&mut self, key: usize) -> Result<(), OpError> {
        let request = self.request(KvPutRequest {
            mount: self.mount.clone(),
            path: self.keys.path(key).to_owned(),
            data: Some(self.data.clone()),
            cas: None,
        });
        self.client.put(request).await.map_err(status_error)?;
        Ok(())
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert(TOKEN_KEY, self.token.clone());
        request
    }
}

fn status_error(status: tonic::Status) -> OpError {
    OpError(format!("gRPC {:?}: {}", status.code(), status.message()))
}
