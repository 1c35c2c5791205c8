//! The multi-cell fixture: several [`Cell`]s, each its own Raft group with
//! its own CA, keys and root token, federated through their `[federation]`
//! configuration. Every cross-cell link goes through a [`Proxy`]: cell `a`'s
//! nodes reach node `k` of cell `b` only through proxy `k` of link
//! `(a, b)`, so a scenario can partition any two cells, both ways.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::Error;
use crate::cell::{Cell, CellOptions};
use crate::proxy::Proxy;

/// A running federation. Dropping it kills every node.
/// The names fixtures give cells, in order.
const CELL_NAMES: [&str; 5] = ["eu-west", "us-east", "ap-south", "eu-central", "us-west"];

/// The first `n` cell names (1 to 5).
pub fn cell_names(n: usize) -> &'static [&'static str] {
    &CELL_NAMES[..n.clamp(1, CELL_NAMES.len())]
}

#[derive(Debug)]
pub struct Federation {
    pub cells: Vec<Cell>,
    /// `(from, to)` → one proxy per node of `to`, which `from`'s nodes dial.
    links: BTreeMap<(usize, usize), Vec<Proxy>>,
}

/// One node's view of its control-plane replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaView {
    pub version_vector: Value,
    pub digest: String,
}

impl Federation {
    /// Starts cells `ids`, each of `nodes` nodes under `dir/<id>`, all
    /// federated with each other, each initialised and unsealed on its own.
    pub async fn start(
        sigil: &Path,
        dir: &Path,
        ids: &[&str],
        nodes: usize,
        sync_interval_ms: u64,
    ) -> Result<Self, Error> {
        let mut cells = Vec::new();
        for id in ids {
            let mut o = CellOptions::new(nodes, sigil.to_path_buf(), dir.join(id));
            o.cell_id = (*id).to_owned();
            o.max_staleness_ms = 250;
            cells.push(Cell::prepare(o).await?);
        }
        let mut links = BTreeMap::new();
        for a in 0..cells.len() {
            for (b, cell) in cells.iter().enumerate() {
                if a == b {
                    continue;
                }
                let mut proxies = Vec::new();
                for n in &cell.nodes {
                    let listen = "127.0.0.1:0"
                        .parse()
                        .map_err(|_| Error::Fixture("addr".into()))?;
                    proxies.push(
                        Proxy::start(listen, n.cluster)
                            .await
                            .map_err(|e| Error::Fixture(e.to_string()))?,
                    );
                }
                links.insert((a, b), proxies);
            }
        }
        for (a, cell) in cells.iter().enumerate() {
            // The mesh dials other cells' nodes by the addresses they
            // advertise: send those through this cell's proxies too.
            let overrides: Vec<String> = cells
                .iter()
                .enumerate()
                .filter(|(b, _)| *b != a)
                .flat_map(|(b, peer)| {
                    peer.nodes
                        .iter()
                        .zip(&links[&(a, b)])
                        .map(|(n, p)| format!("\"{}\" = \"{}\"", n.cluster, p.local_addr()))
                })
                .collect();
            let mut extra = format!(
                "[gossip]\ndial_overrides = {{ {} }}\n[federation]\nsync_interval_ms = {sync_interval_ms}\n",
                overrides.join(", ")
            );
            for (b, peer) in cells.iter().enumerate() {
                if a == b {
                    continue;
                }
                let addrs: Vec<String> = links[&(a, b)]
                    .iter()
                    .map(|p| format!("\"{}\"", p.local_addr()))
                    .collect();
                extra.push_str(&format!(
                    "[[federation.peers]]\ncell = \"{}\"\naddrs = [{}]\nca_file = {:?}\n",
                    peer.id(),
                    addrs.join(", "),
                    peer.ca_pem().display().to_string()
                ));
            }
            cell.configure(&extra)?;
        }
        for cell in &mut cells {
            cell.launch().await?;
        }
        Ok(Self { cells, links })
    }

    /// Cuts every link between cells `a` and `b`, both ways.
    pub fn partition(&self, a: usize, b: usize) {
        for key in [(a, b), (b, a)] {
            for p in self.links.get(&key).into_iter().flatten() {
                p.faults().partition();
            }
        }
    }

    /// Cuts cell `a` off from every other cell.
    pub fn isolate(&self, a: usize) {
        for b in 0..self.cells.len() {
            if a != b {
                self.partition(a, b);
            }
        }
    }

    /// Restores every cross-cell link.
    pub fn heal(&self) {
        for p in self.links.values().flatten() {
            p.faults().heal();
            p.faults().set_delay(Duration::ZERO);
        }
    }

    /// Delays every cross-cell link, each direction (inter-region latency).
    pub fn delay_all(&self, delay: Duration) {
        for p in self.links.values().flatten() {
            p.faults().set_delay(delay);
        }
    }

    /// Bytes carried across cells so far, both directions.
    pub fn cross_cell_bytes(&self) -> u64 {
        self.links
            .values()
            .flatten()
            .map(|p| {
                let s = p.stats();
                s.bytes_forward + s.bytes_backward
            })
            .sum()
    }

    /// Node `n` of cell `c`'s view of its own replica.
    pub async fn view(&self, c: usize, n: usize) -> Result<ReplicaView, Error> {
        let cell = &self.cells[c];
        let (code, body) = cell
            .call(
                n,
                "GET",
                "sys/control-plane/status?local=true",
                Some(&cell.root_token),
                &Value::Null,
            )
            .await?;
        if code != 200 {
            return Err(Error::Fixture(format!(
                "{}/{}: sys/control-plane/status: {code} {body}",
                cell.id(),
                cell.nodes[n].name
            )));
        }
        Ok(ReplicaView {
            version_vector: body["data"]["version_vector"].clone(),
            digest: body["data"]["state_digest"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        })
    }

    /// Every running node's view, by cell and node.
    pub async fn views(&self) -> Vec<(String, Result<ReplicaView, Error>)> {
        let mut out = Vec::new();
        for (c, cell) in self.cells.iter().enumerate() {
            for n in cell.running() {
                out.push((
                    format!("{}/{}", cell.id(), cell.nodes[n].name),
                    self.view(c, n).await,
                ));
            }
        }
        out
    }

    /// Waits until every running node of every cell holds the same replica
    /// (same version vector and state digest); returns how long it took,
    /// or the views that still differ after `timeout`.
    pub async fn converge(&self, timeout: Duration) -> Result<Duration, String> {
        let start = Instant::now();
        loop {
            let views = self.views().await;
            let first = views.first().and_then(|(_, v)| v.as_ref().ok()).cloned();
            let same =
                first.is_some() && views.iter().all(|(_, v)| v.as_ref().ok() == first.as_ref());
            if same {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                let lines: Vec<String> = views
                    .iter()
                    .map(|(who, v)| match v {
                        Ok(v) => format!(
                            "{who}: {} {}",
                            v.version_vector,
                            &v.digest[..12.min(v.digest.len())]
                        ),
                        Err(e) => format!("{who}: {e}"),
                    })
                    .collect();
                return Err(lines.join("; "));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Writes policy `name` with `text` through node `n` of cell `c`.
    pub async fn write_policy(
        &self,
        c: usize,
        n: usize,
        name: &str,
        text: &str,
    ) -> Result<(), Error> {
        let cell = &self.cells[c];
        let (code, body) = cell
            .call(
                n,
                "PUT",
                &format!("sys/policies/acl/{name}"),
                Some(&cell.root_token),
                &json!({ "policy": text }),
            )
            .await?;
        if code != 204 && code != 200 {
            return Err(Error::Fixture(format!(
                "{}: writing policy {name}: {code} {body}",
                cell.id()
            )));
        }
        Ok(())
    }

    /// Policy `name`'s text as node `n` of cell `c` serves it (`None`: 404).
    pub async fn policy(&self, c: usize, n: usize, name: &str) -> Result<Option<String>, Error> {
        let cell = &self.cells[c];
        let (code, body) = cell
            .call(
                n,
                "GET",
                &format!("sys/policies/acl/{name}"),
                Some(&cell.root_token),
                &Value::Null,
            )
            .await?;
        match code {
            200 => Ok(body["data"]["policy"].as_str().map(str::to_owned)),
            404 => Ok(None),
            _ => Err(Error::Fixture(format!(
                "{}: reading policy {name}: {code} {body}",
                cell.id()
            ))),
        }
    }
}
