//! Sigil's wire definitions.
//!
//! This crate only owns the `.proto` files under `proto/` and the code that
//! `tonic-prost-build` generates from them. Conversions between generated
//! messages and domain types live in the crates that own those domain types,
//! so domain code never handles generated structs directly.

/// `sigil.v1`: the cell's regional gRPC API.
pub mod v1 {
    #![allow(
        missing_docs,
        missing_debug_implementations,
        clippy::all,
        unreachable_pub
    )]
    tonic::include_proto!("sigil.v1");
}

/// `sigil.cluster.v1`: the cell-internal cluster API (Raft and forwarding),
/// served only on the mutual-TLS cluster port.
pub mod cluster {
    pub mod v1 {
        #![allow(
            missing_docs,
            missing_debug_implementations,
            clippy::all,
            unreachable_pub
        )]
        tonic::include_proto!("sigil.cluster.v1");
    }
}

/// `sigil.federation.v1`: control-plane sync between cells, served on the
/// mutual-TLS cluster port to the cells a node's configuration trusts.
pub mod federation {
    pub mod v1 {
        #![allow(
            missing_docs,
            missing_debug_implementations,
            clippy::all,
            unreachable_pub
        )]
        tonic::include_proto!("sigil.federation.v1");
    }
}

/// `sigil.mesh.v1`: the revocation mesh (membership and revocation gossip)
/// between the nodes of every cell, on the mutual-TLS cluster port.
pub mod mesh {
    pub mod v1 {
        #![allow(
            missing_docs,
            missing_debug_implementations,
            clippy::all,
            unreachable_pub
        )]
        tonic::include_proto!("sigil.mesh.v1");
    }
}
