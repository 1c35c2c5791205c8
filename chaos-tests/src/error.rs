//! The harness's one error type.

use crate::bench::{Target, Transport};

/// Why a bench could not run. Failed operations *during* a measured level are
/// not errors of this kind: they are counted in the level's row (see
/// [`crate::bench::OpError`]). These are the fatal ones: bad configuration,
/// a server that cannot be reached or set up, a listener that cannot bind.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A command-line option or configuration value is invalid.
    #[error("invalid {key}: {problem}")]
    Config {
        /// The option, e.g. `--clients`.
        key: &'static str,
        /// What is wrong with it.
        problem: String,
    },

    /// A client could not be built or could not connect.
    #[error("{target} over {transport}: cannot connect to {endpoint}: {reason}")]
    Connect {
        target: Target,
        transport: Transport,
        endpoint: String,
        reason: String,
    },

    /// Writing the keys a workload needs failed, so measuring would only
    /// count errors.
    #[error("{target} over {transport}: setup failed writing {mount}/{path}: {reason}")]
    Setup {
        target: Target,
        transport: Transport,
        mount: String,
        path: String,
        reason: String,
    },

    /// The in-process bare servers could not start.
    #[error("cannot start the bare servers: {0}")]
    Bare(#[source] std::io::Error),

    /// The multi-process fixture could not set up or control its cell.
    #[error("fixture: {0}")]
    Fixture(String),
}
