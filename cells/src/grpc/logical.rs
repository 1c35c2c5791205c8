//! `sigil.v1.Logical` (any operation on any path) and `sigil.v1.Kv` (typed
//! KV version 2): both build a [`logical::Request`] and hand it to the
//! pipeline, exactly as the HTTP front end does.

use std::sync::Arc;

use serde_json::{Value, json};
use sigil_proto::v1 as pb;
use sigil_proto::v1::kv_server::{Kv, KvServer};
use sigil_proto::v1::logical_server::{Logical, LogicalServer};
use tonic::{Request, Response, Status};

use super::convert::{json_to_struct, struct_to_json};
use crate::api_error::ApiError;
use crate::logical::{self, Consistency, Data, Operation, Outcome};
use crate::node::Node;

type Reply<T> = Result<Response<T>, Status>;

/// Both services of one node.
#[derive(Debug, Clone)]
pub struct LogicalService {
    node: Arc<Node>,
}

impl LogicalService {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    pub fn into_servers(self, max_message: usize) -> (LogicalServer<Self>, KvServer<Self>) {
        (
            LogicalServer::new(self.clone())
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(max_message),
            KvServer::new(self)
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(max_message),
        )
    }

    /// Runs a request; a 404-with-body outcome is NOT_FOUND on gRPC.
    async fn run(&self, req: logical::Request) -> Result<logical::Response, Status> {
        let resp = self.node.handle(req).await.map_err(Status::from)?;
        if resp.outcome == Outcome::NotFound {
            return Err(Status::not_found("version is deleted or destroyed"));
        }
        Ok(resp)
    }
}

/// The pipeline request for an RPC: token, wrap TTL and consistency from
/// metadata.
fn request<T>(
    rpc: &Request<T>,
    operation: Operation,
    path: &str,
    data: Data,
) -> Result<logical::Request, Status> {
    let md = rpc.metadata();
    let path = path.trim_start_matches('/');
    let mut r = logical::Request::new(operation, path);
    r.data = data;
    r.token = super::token_from(md);
    r.client_addr = rpc.remote_addr();
    let header = |name: &str| md.get(name).map(|v| v.to_str().unwrap_or(""));
    r.wrap_ttl = header("x-sigil-wrap-ttl")
        .map(|v| {
            logical::parse_wrap_ttl(v)
                .map_err(|e| Status::invalid_argument(format!("invalid x-sigil-wrap-ttl: {e}")))
        })
        .transpose()?;
    r.consistency =
        Consistency::from_headers(header("x-sigil-index"), header("x-sigil-consistency"))
            .map_err(Status::invalid_argument)?;
    Ok(r)
}

fn logical_response(id: String, r: logical::Response) -> pb::LogicalResponse {
    let wrapped = r.wrap_info.is_some();
    pb::LogicalResponse {
        request_id: id,
        data: r.data.filter(|_| !wrapped).map(|d| json_to_struct(&d)),
        auth: r.auth.map(|a| pb::Auth {
            client_token: a.client_token.expose().to_owned(),
            accessor: a.accessor,
            policies: a.policies,
            token_policies: a.token_policies,
            identity_policies: a.identity_policies,
            metadata: a.metadata.into_iter().collect(),
            lease_duration: a.lease_duration,
            renewable: a.renewable,
            entity_id: a.entity_id,
            token_type: a.token_type,
            orphan: a.orphan,
            num_uses: a.num_uses,
        }),
        lease: r.lease.map(|l| pb::Lease {
            lease_id: l.lease_id,
            ttl: l.ttl,
            renewable: l.renewable,
        }),
        wrap_info: r.wrap_info.map(|w| pb::WrapInfo {
            token: w.token.expose().to_owned(),
            accessor: w.accessor,
            ttl: w.ttl,
            creation_time: w.creation_time,
            creation_path: w.creation_path,
            wrapped_accessor: w.wrapped_accessor,
        }),
        warnings: r.warnings,
        mount_type: r.mount_type,
    }
}

impl LogicalService {
    async fn generic(
        &self,
        rpc: Request<pb::LogicalRequest>,
        op: Operation,
    ) -> Reply<pb::LogicalResponse> {
        let data = rpc
            .get_ref()
            .data
            .as_ref()
            .map(struct_to_json)
            .unwrap_or_default();
        let path = rpc.get_ref().path.clone();
        let mut req = request(&rpc, op, &path, data)?;
        if op == Operation::Patch {
            req.content_type = Some("application/merge-patch+json".into());
        }
        let id = req.id.clone();
        let resp = self.run(req).await?;
        let index = resp.index;
        Ok(with_index(logical_response(id, resp), index))
    }
}

#[tonic::async_trait]
impl Logical for LogicalService {
    async fn read(&self, rpc: Request<pb::LogicalRequest>) -> Reply<pb::LogicalResponse> {
        self.generic(rpc, Operation::Read).await
    }

    async fn write(&self, rpc: Request<pb::LogicalRequest>) -> Reply<pb::LogicalResponse> {
        self.generic(rpc, Operation::Update).await
    }

    async fn list(&self, rpc: Request<pb::LogicalRequest>) -> Reply<pb::LogicalResponse> {
        self.generic(rpc, Operation::List).await
    }

    async fn delete(&self, rpc: Request<pb::LogicalRequest>) -> Reply<pb::LogicalResponse> {
        self.generic(rpc, Operation::Delete).await
    }

    async fn patch(&self, rpc: Request<pb::LogicalRequest>) -> Reply<pb::LogicalResponse> {
        self.generic(rpc, Operation::Patch).await
    }
}

/// `mount` and `path` joined with `section` (`data`, `metadata`, `delete`),
/// rejecting empty parts.
fn kv_path(mount: &str, section: &str, path: &str, allow_empty: bool) -> Result<String, Status> {
    let mount = mount.trim_matches('/');
    if mount.is_empty() {
        return Err(Status::invalid_argument("mount is required"));
    }
    let path = path.trim_start_matches('/');
    if path.is_empty() && !allow_empty {
        return Err(Status::invalid_argument("path is required"));
    }
    Ok(format!("{mount}/{section}/{path}"))
}

fn version_metadata(m: &Value) -> pb::KvVersionMetadata {
    pb::KvVersionMetadata {
        version: m["version"].as_u64().unwrap_or(0),
        created_time: m["created_time"].as_str().unwrap_or_default().to_owned(),
        deletion_time: m["deletion_time"].as_str().unwrap_or_default().to_owned(),
        destroyed: m["destroyed"].as_bool().unwrap_or(false),
        custom_metadata: m["custom_metadata"]
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

fn no_data() -> Status {
    Status::internal("engine returned no data")
}

#[tonic::async_trait]
impl Kv for LogicalService {
    async fn get(&self, rpc: Request<pb::KvGetRequest>) -> Reply<pb::KvGetResponse> {
        let m = rpc.get_ref();
        let path = kv_path(&m.mount, "data", &m.path, false)?;
        let mut data = Data::new();
        if m.version > 0 {
            data.insert("version".into(), json!(m.version.to_string()));
        }
        let req = request(&rpc, Operation::Read, &path, data)?;
        let resp = self.run(req).await?;
        let index = resp.index;
        let body = resp.data.ok_or_else(no_data)?;
        let secret = body
            .get("data")
            .and_then(Value::as_object)
            .map(json_to_struct);
        Ok(with_index(
            pb::KvGetResponse {
                data: secret,
                metadata: Some(version_metadata(
                    body.get("metadata").unwrap_or(&Value::Null),
                )),
            },
            index,
        ))
    }

    async fn put(&self, rpc: Request<pb::KvPutRequest>) -> Reply<pb::KvPutResponse> {
        let m = rpc.get_ref();
        let path = kv_path(&m.mount, "data", &m.path, false)?;
        let secret = m.data.as_ref().map(struct_to_json).unwrap_or_default();
        let mut body = Data::new();
        body.insert("data".into(), Value::Object(secret));
        if let Some(cas) = m.cas {
            body.insert("options".into(), json!({ "cas": cas }));
        }
        let req = request(&rpc, Operation::Update, &path, body)?;
        let resp = self.run(req).await?;
        let index = resp.index;
        let meta = resp.data.map(Value::Object).ok_or_else(no_data)?;
        Ok(with_index(
            pb::KvPutResponse {
                metadata: Some(version_metadata(&meta)),
            },
            index,
        ))
    }

    async fn delete(&self, rpc: Request<pb::KvDeleteRequest>) -> Reply<pb::KvDeleteResponse> {
        let m = rpc.get_ref();
        let req = if m.versions.is_empty() {
            let path = kv_path(&m.mount, "data", &m.path, false)?;
            request(&rpc, Operation::Delete, &path, Data::new())?
        } else {
            let path = kv_path(&m.mount, "delete", &m.path, false)?;
            let mut body = Data::new();
            body.insert("versions".into(), json!(m.versions));
            request(&rpc, Operation::Update, &path, body)?
        };
        let resp = self.run(req).await?;
        Ok(with_index(pb::KvDeleteResponse {}, resp.index))
    }

    async fn list(&self, rpc: Request<pb::KvListRequest>) -> Reply<pb::KvListResponse> {
        let m = rpc.get_ref();
        let mut path = kv_path(&m.mount, "metadata", &m.path, true)?;
        if !path.ends_with('/') {
            path.push('/');
        }
        let req = request(&rpc, Operation::List, &path, Data::new())?;
        let (keys, index) = match self.node.handle(req).await {
            Ok(resp) => (
                resp.data
                    .and_then(|d| d.get("keys").cloned())
                    .and_then(|k| serde_json::from_value::<Vec<String>>(k).ok())
                    .unwrap_or_default(),
                resp.index,
            ),
            // An empty directory is an empty list, not an error, on gRPC.
            Err(ApiError::NotFound(_)) => (Vec::new(), self.node.applied_index()),
            Err(e) => return Err(e.into()),
        };
        Ok(with_index(pb::KvListResponse { keys }, index))
    }
}

/// A reply carrying `x-sigil-index` metadata: the log index the serving node
/// had applied, for read-your-writes on the next call.
fn with_index<T>(body: T, index: u64) -> Response<T> {
    let mut r = Response::new(body);
    if index > 0 {
        r.metadata_mut().insert("x-sigil-index", index.into());
    }
    r
}
