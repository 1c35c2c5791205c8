//! Auth methods other than tokens: machines log in by what they are (a
//! SPIFFE ID, a Kubernetes service account, an AppRole credential pair)
//! and get a token that records that identity (docs/auth.md).
//!
//! - [`approle`]: a role ID and secret IDs, for machines and pipelines.
//! - [`jwt`]: signed JWTs verified offline against configured keys: SPIFFE
//!   JWT-SVIDs, Kubernetes service-account tokens, OIDC ID tokens.
//!
//! Each is an [`Engine`](crate::engine::Engine) mounted under `auth/`; its
//! login path needs no token, and a successful login returns a
//! [`LoginGrant`](crate::logical::LoginGrant) from which the pipeline
//! issues the token.

pub mod approle;
pub mod cidr;
pub use sigil_gossip::glob;
pub mod jwt;
pub mod token_params;

#[cfg(test)]
mod approle_tests;
#[cfg(test)]
mod jwt_tests;
