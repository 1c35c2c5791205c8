//! `sigil operator cluster-ca` and `sigil operator cluster-cert`: make a
//! cell's CA and issue node certificates for the mutual-TLS cluster port
//! (docs/runbooks/cell-operations.md, "Certificates"). Offline commands: they
//! touch files, not a node.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::cluster_pki::{CellCa, CellId, NodeId};

#[derive(Debug, Args)]
pub struct CaArgs {
    /// The cell's id (a DNS label).
    #[arg(long)]
    cell: String,
    /// Directory for cluster-ca.pem and cluster-ca-key.pem (mode 0600).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, Args)]
pub struct CertArgs {
    /// The cell's id; must be the one the CA was made for.
    #[arg(long)]
    cell: String,
    /// The node's id (its `node_id`).
    #[arg(long)]
    node: String,
    /// IP address or DNS name peers dial; repeat for several.
    #[arg(long = "host", required = true)]
    hosts: Vec<String>,
    /// Directory holding cluster-ca.pem and cluster-ca-key.pem.
    #[arg(long)]
    ca_dir: PathBuf,
    /// Directory for node.pem and node-key.pem (mode 0600).
    #[arg(long)]
    out: PathBuf,
}

pub fn create_ca(a: CaArgs) -> ExitCode {
    let result = (|| -> Result<(PathBuf, PathBuf), String> {
        let cell = CellId::new(a.cell.clone()).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(&a.out).map_err(|e| format!("{}: {e}", a.out.display()))?;
        CellCa::generate(&cell)
            .and_then(|ca| ca.write_to(&a.out))
            .map_err(|e| e.to_string())
    })();
    match result {
        Ok((cert, key)) => {
            println!("Cell CA for {:?}:", a.cell);
            println!("  certificate: {}", cert.display());
            println!("  private key: {} (keep it offline)", key.display());
            ExitCode::SUCCESS
        }
        Err(e) => super::fail(e),
    }
}

pub fn issue_cert(a: CertArgs) -> ExitCode {
    let result = (|| -> Result<(PathBuf, PathBuf), String> {
        let cell = CellId::new(a.cell.clone()).map_err(|e| e.to_string())?;
        let node = NodeId::new(a.node.clone()).map_err(|e| e.to_string())?;
        let ca = CellCa::load(
            &a.ca_dir.join("cluster-ca.pem"),
            &a.ca_dir.join("cluster-ca-key.pem"),
        )
        .map_err(|e| e.to_string())?;
        std::fs::create_dir_all(&a.out).map_err(|e| format!("{}: {e}", a.out.display()))?;
        ca.issue_node(&cell, &node, &a.hosts)
            .and_then(|c| c.write_to(&a.out))
            .map_err(|e| e.to_string())
    })();
    match result {
        Ok((cert, key)) => {
            println!("Node certificate for {} in cell {}:", a.node, a.cell);
            println!("  certificate: {}", cert.display());
            println!("  private key: {}", key.display());
            ExitCode::SUCCESS
        }
        Err(e) => super::fail(e),
    }
}
