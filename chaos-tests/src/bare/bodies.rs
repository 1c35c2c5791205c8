//! The fixed responses the bare servers send.

use std::collections::BTreeMap;

use bytes::Bytes;
use sigil_proto::v1::{KvGetResponse, KvPutResponse, KvVersionMetadata};

use crate::bench::value;

/// Shaped like Vault's (and Sigil's) responses so their sizes match.
const REQUEST_ID: &str = "3c8a7e5e-0f2b-4d4e-9a6b-1f2e3d4c5b6a";
const CREATED_TIME: &str = "2025-01-01T00:00:00.000000000Z";

/// Every response body, built once at start-up and cloned per request
/// (`Bytes` clones are reference counts).
#[derive(Debug, Clone)]
pub struct Bodies {
    /// `GET /v1/{mount}/data/{key}`.
    pub http_read: Bytes,
    /// `POST /v1/{mount}/data/{key}`.
    pub http_write: Bytes,
    pub grpc_get: KvGetResponse,
    pub grpc_put: KvPutResponse,
}

impl Bodies {
    /// Responses for reads of `value_size`-byte values.
    pub fn new(value_size: usize) -> Self {
        let value = value(value_size);
        let metadata = serde_json::json!({
            "created_time": CREATED_TIME,
            "custom_metadata": null,
            "deletion_time": "",
            "destroyed": false,
            "version": 1,
        });
        let envelope = |data: serde_json::Value| {
            let body = serde_json::json!({
                "request_id": REQUEST_ID,
                "lease_id": "",
                "renewable": false,
                "lease_duration": 0,
                "data": data,
                "wrap_info": null,
                "warnings": null,
                "auth": null,
                "mount_type": "kv",
            });
            Bytes::from(body.to_string())
        };
        let http_read = envelope(serde_json::json!({
            "data": { "value": value },
            "metadata": metadata,
        }));
        let http_write = envelope(metadata);

        let grpc_metadata = KvVersionMetadata {
            version: 1,
            created_time: CREATED_TIME.to_owned(),
            deletion_time: String::new(),
            destroyed: false,
            custom_metadata: Default::default(),
        };
        let data = prost_types::Struct {
            fields: BTreeMap::from([(
                "value".to_owned(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::StringValue(value)),
                },
            )]),
        };
        Self {
            http_read,
            http_write,
            grpc_get: KvGetResponse {
                data: Some(data),
                metadata: Some(grpc_metadata.clone()),
            },
            grpc_put: KvPutResponse {
                metadata: Some(grpc_metadata),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_body_is_vault_kv_v2_shaped() {
        let b = Bodies::new(10);
        let v: serde_json::Value = serde_json::from_slice(&b.http_read).expect("JSON");
        assert_eq!(v["data"]["data"]["value"], "abcdefghij");
        assert_eq!(v["data"]["metadata"]["version"], 1);
        let w: serde_json::Value = serde_json::from_slice(&b.http_write).expect("JSON");
        assert_eq!(w["data"]["version"], 1);
        // The value size carries through to the body size.
        assert_eq!(Bodies::new(1010).http_read.len(), b.http_read.len() + 1000);
    }
}
