//! A node for tests of the pipeline and what plugs into it: in memory,
//! initialised and unsealed, with helpers to call it as root or as another
//! token, from a chosen address.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sigil_hsm::SecretString;

use crate::api_error::ApiError;
use crate::barrier::{Barrier, BarrierConfig};
use crate::lease::LeaseSettings;
use crate::logical::{Data, Operation, Request, Response};
use crate::node::Node;
use crate::seal::{InitParams, SealBackend, SealManager};
use crate::storage::MemoryStorage;

/// An unsealed in-memory node and its root token.
pub(crate) struct TestNode {
    pub node: Arc<Node>,
    pub root: SecretString,
}

impl TestNode {
    pub async fn new(settings: LeaseSettings) -> Self {
        let barrier = Barrier::new(Arc::new(MemoryStorage::new()), BarrierConfig::default());
        let seal = SealManager::open(barrier, SealBackend::Shamir, None).expect("seal");
        let out = seal
            .init(InitParams {
                secret_shares: 1,
                secret_threshold: 1,
                ..InitParams::default()
            })
            .expect("init");
        seal.unseal(out.keys[0].clone()).expect("unseal");
        let node = Node::with_settings(
            seal,
            "127.0.0.1:0".into(),
            None,
            settings,
            sigil_control_plane::CellId::new("dev").expect("cell id"),
            Vec::new(),
        );
        Self {
            node,
            root: out.root_token,
        }
    }

    /// A node with the `lease-test` engine mounted at `db/`.
    pub async fn with_lease_test(settings: LeaseSettings) -> Self {
        let t = Self::new(settings).await;
        t.ok(
            Operation::Update,
            "sys/mounts/db",
            json!({"type": "lease-test"}),
        )
        .await;
        t
    }

    /// A request from `addr` (for CIDR-bound credentials).
    pub async fn call_from(
        &self,
        addr: &str,
        token: Option<&SecretString>,
        op: Operation,
        path: &str,
        body: Value,
    ) -> Result<Response, ApiError> {
        let data = match body {
            Value::Object(m) => m,
            _ => Data::new(),
        };
        let mut req = Request::new(op, path)
            .with_data(data)
            .with_token(token.cloned());
        req.client_addr = Some(addr.parse().expect("socket address"));
        self.node.handle(req).await
    }

    pub async fn call_as(
        &self,
        token: &SecretString,
        op: Operation,
        path: &str,
        body: Value,
    ) -> Result<Response, ApiError> {
        let data = match body {
            Value::Object(m) => m,
            _ => Data::new(),
        };
        self.node
            .handle(
                Request::new(op, path)
                    .with_data(data)
                    .with_token(Some(token.clone())),
            )
            .await
    }

    pub async fn call(&self, op: Operation, path: &str, body: Value) -> Result<Response, ApiError> {
        self.call_as(&self.root.clone(), op, path, body).await
    }

    pub async fn ok(&self, op: Operation, path: &str, body: Value) -> Response {
        self.call(op, path, body)
            .await
            .unwrap_or_else(|e| panic!("{op} {path}: {e}"))
    }

    pub fn mount_uuid(&self) -> String {
        futures::executor::block_on(self.node.pipeline())
            .expect("pipeline")
            .router()
            .get(crate::mounts::Table::Secrets, "db")
            .expect("db mount")
            .uuid
            .clone()
    }

    /// A lease from `db/creds/<name>`: its ID and the user it stands for.
    pub async fn creds(&self, token: &SecretString, name: &str, body: Value) -> (String, String) {
        let resp = self
            .call_as(token, Operation::Read, &format!("db/creds/{name}"), body)
            .await
            .expect("creds");
        let lease = resp.lease.expect("a lease");
        let user = resp.data.expect("data")["username"]
            .as_str()
            .expect("user")
            .to_owned();
        (lease.lease_id, user)
    }

    pub async fn lookup(&self, id: &str) -> Result<Value, ApiError> {
        self.call(
            Operation::Update,
            "sys/leases/lookup",
            json!({"lease_id": id}),
        )
        .await
        .map(|r| Value::Object(r.data.unwrap_or_default()))
    }

    pub async fn token(&self, policies: &[&str]) -> SecretString {
        let r = self
            .ok(
                Operation::Update,
                "auth/token/create",
                json!({"policies": policies, "ttl": "1h"}),
            )
            .await;
        r.auth.expect("auth").client_token
    }

    /// Revokes `token` as itself, the way a workload gives up its token.
    pub async fn revoke_self(&self, token: &SecretString) {
        self.call_as(
            token,
            Operation::Update,
            "auth/token/revoke-self",
            json!({}),
        )
        .await
        .expect("revoke-self");
    }

    /// Runs expiration rounds until `done` holds (or 10 s pass).
    pub async fn expire_until(&self, mut done: impl FnMut() -> bool) {
        let p = self.node.pipeline().await.expect("pipeline");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "expiration did not get there");
            p.expire_due().await.expect("round");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
