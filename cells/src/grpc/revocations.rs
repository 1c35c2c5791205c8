//! `sigil.v1.Revocations`: `sys/revocations` over gRPC. Revoke, Get, List
//! and Lift go through the pipeline as the HTTP API's requests do (sudo on
//! `sys/revocations`, audit); Watch checks the same once, through a Get,
//! then streams the mesh's convergence reports.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sigil_proto::v1 as pb;
use sigil_proto::v1::revocations_server::{Revocations, RevocationsServer};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::logical::{self, Data, Operation};
use crate::mesh::Convergence;
use crate::node::Node;

/// How often Watch reads the mesh's reports.
const WATCH_POLL: Duration = Duration::from_millis(25);
/// Watch's default bound.
const WATCH_DEFAULT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct RevocationsService {
    node: Arc<Node>,
}

impl RevocationsService {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    pub fn into_server(self) -> RevocationsServer<Self> {
        RevocationsServer::new(self)
    }

    async fn run<T>(
        &self,
        rpc: &Request<T>,
        operation: Operation,
        path: &str,
        data: Data,
    ) -> Result<Data, Status> {
        let mut r = logical::Request::new(operation, path);
        r.data = data;
        r.token = super::token_from(rpc.metadata());
        r.client_addr = rpc.remote_addr();
        let resp = self.node.handle(r).await.map_err(Status::from)?;
        Ok(resp.data.unwrap_or_default())
    }
}

fn path_of(id: &str) -> Result<String, Status> {
    if id.is_empty() || id.contains('/') {
        return Err(Status::invalid_argument(
            "id must be a revocation id, such as rev-eu-west-0123456789abcdef",
        ));
    }
    Ok(format!("sys/revocations/{id}"))
}

fn record_of(d: &Data) -> pb::RevocationRecord {
    let s = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let (target_type, target) = d
        .get("match")
        .and_then(Value::as_object)
        .and_then(|m| m.iter().next())
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
        .unwrap_or_default();
    pb::RevocationRecord {
        id: s("id"),
        kind: s("kind"),
        target_type,
        target,
        reason: s("reason"),
        issued_at_ms: d.get("issued_at_ms").and_then(Value::as_u64).unwrap_or(0),
        expires_ms: d.get("expires_ms").and_then(Value::as_u64).unwrap_or(0),
        lifted: d.get("lifted").and_then(Value::as_bool).unwrap_or(false),
        enforced_here: d
            .get("enforced_here")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        convergence: d
            .get("convergence")
            .cloned()
            .and_then(|c| serde_json::from_value::<Convergence>(c).ok())
            .map(|c| convergence_of(&c)),
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

pub(crate) fn convergence_of(c: &Convergence) -> pb::Convergence {
    pb::Convergence {
        nodes_live: count(c.nodes_live),
        nodes_applied: count(c.nodes_applied),
        converged: c.converged,
        cells: c
            .cells
            .iter()
            .map(|cell| pb::CellConvergence {
                cell: cell.cell.clone(),
                nodes_live: count(cell.nodes_live),
                nodes_applied: count(cell.nodes_applied),
                first_applied_ms: cell.first_applied_ms.unwrap_or(0),
                last_applied_ms: cell.last_applied_ms.unwrap_or(0),
                pending: cell.pending.clone(),
            })
            .collect(),
        unreachable: c.unreachable.clone(),
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::Convergence, Status>> + Send>>;

#[tonic::async_trait]
impl Revocations for RevocationsService {
    #[tracing::instrument(name = "grpc.Revocations/Revoke", skip_all)]
    async fn revoke(
        &self,
        rpc: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevocationRecord>, Status> {
        use pb::revoke_request::Target;
        let r = rpc.get_ref();
        let (field, value) = match &r.target {
            Some(Target::Accessor(v)) => ("accessor", v),
            Some(Target::LeaseId(v)) => ("lease_id", v),
            Some(Target::LeasePrefix(v)) => ("lease_prefix", v),
            Some(Target::Identity(v)) => ("identity", v),
            Some(Target::Role(v)) => ("role", v),
            Some(Target::CertSerial(v)) => ("cert_serial", v),
            None => {
                return Err(Status::invalid_argument(
                    "give exactly one target: accessor, lease_id, lease_prefix, identity, role or cert_serial",
                ));
            }
        };
        let mut data = Data::new();
        data.insert(field.into(), json!(value));
        data.insert("reason".into(), json!(r.reason));
        if !r.kind.is_empty() {
            data.insert("kind".into(), json!(r.kind));
        }
        if r.ttl_seconds > 0 {
            data.insert("ttl".into(), json!(r.ttl_seconds));
        }
        let d = self
            .run(&rpc, Operation::Update, "sys/revocations", data)
            .await?;
        Ok(Response::new(record_of(&d)))
    }

    #[tracing::instrument(name = "grpc.Revocations/Get", skip_all)]
    async fn get(
        &self,
        rpc: Request<pb::RevocationId>,
    ) -> Result<Response<pb::RevocationRecord>, Status> {
        let path = path_of(&rpc.get_ref().id)?;
        let d = self.run(&rpc, Operation::Read, &path, Data::new()).await?;
        Ok(Response::new(record_of(&d)))
    }

    #[tracing::instrument(name = "grpc.Revocations/List", skip_all)]
    async fn list(
        &self,
        rpc: Request<pb::ListRevocationsRequest>,
    ) -> Result<Response<pb::ListRevocationsResponse>, Status> {
        let d = match self
            .run(&rpc, Operation::List, "sys/revocations", Data::new())
            .await
        {
            Ok(d) => d,
            // An empty list is a 404 on HTTP (Vault's convention); here it
            // is an empty answer.
            Err(s) if s.code() == tonic::Code::NotFound => Data::new(),
            Err(s) => return Err(s),
        };
        let records = d
            .get("key_info")
            .and_then(Value::as_object)
            .map(|m| {
                m.values()
                    .filter_map(Value::as_object)
                    .map(record_of)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Response::new(pb::ListRevocationsResponse { records }))
    }

    #[tracing::instrument(name = "grpc.Revocations/Lift", skip_all)]
    async fn lift(
        &self,
        rpc: Request<pb::RevocationId>,
    ) -> Result<Response<pb::RevocationRecord>, Status> {
        let path = path_of(&rpc.get_ref().id)?;
        self.run(&rpc, Operation::Delete, &path, Data::new())
            .await?;
        let d = self.run(&rpc, Operation::Read, &path, Data::new()).await?;
        Ok(Response::new(record_of(&d)))
    }

    type WatchStream = WatchStream;

    #[tracing::instrument(name = "grpc.Revocations/Watch", skip_all)]
    async fn watch(&self, rpc: Request<pb::WatchRequest>) -> Result<Response<WatchStream>, Status> {
        let id = rpc.get_ref().id.clone();
        let path = path_of(&id)?;
        // Authorised (and audited) as a read of the record.
        self.run(&rpc, Operation::Read, &path, Data::new()).await?;
        let Some(mesh) = self.node.revocations().mesh().cloned() else {
            return Err(Status::failed_precondition(
                "this node does not run the revocation mesh ([gossip] enabled = false)",
            ));
        };
        let bound = match rpc.get_ref().timeout_ms {
            0 => WATCH_DEFAULT,
            ms => Duration::from_millis(ms),
        };
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + bound;
            let mut last: Option<Convergence> = None;
            loop {
                let now = crate::mesh::convergence(&mesh, &id).await;
                if last.as_ref() != Some(&now) {
                    if tx.send(Ok(convergence_of(&now))).await.is_err() {
                        return;
                    }
                    if now.converged {
                        return;
                    }
                    last = Some(now);
                }
                if tokio::time::Instant::now() >= deadline {
                    let _ = tx
                        .send(Err(Status::deadline_exceeded(
                            "not every live node has applied the record yet",
                        )))
                        .await;
                    return;
                }
                tokio::time::sleep(WATCH_POLL).await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
