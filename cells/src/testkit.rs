//! Support for tests and benchmarks that need a real service beside a node:
//! a throwaway PostgreSQL server in a temporary directory, on a random
//! loopback port, and a JWT issuer. Not used by a running node.

pub mod jwt;
pub mod postgres;
