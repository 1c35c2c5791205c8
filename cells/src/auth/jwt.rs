//! JWT auth: tokens signed by a workload identity provider (SPIFFE,
//! Kubernetes, an OIDC issuer), verified offline against configured keys.

pub mod claims;
pub mod verify;
