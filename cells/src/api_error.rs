//! The one error type both front ends return, and its mapping to HTTP status
//! codes and gRPC status codes (the only place that mapping lives).

use crate::barrier::BarrierError;
use crate::seal::SealError;

#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum ApiError {
    /// Bad input: 400 / INVALID_ARGUMENT.
    #[error("{0}")]
    InvalidRequest(String),
    /// Bad, missing or insufficient token: 403 / PERMISSION_DENIED.
    #[error("permission denied")]
    PermissionDenied,
    /// 503 / UNAVAILABLE.
    #[error("Vault is sealed")]
    Sealed,
    /// The cell cannot serve this now (no leader, no quorum, this node too
    /// stale and the leader unreachable): 503 / UNAVAILABLE; retry.
    #[error("{0}")]
    Unavailable(String),
    /// A retryable conflict (another seal operation in flight): 400 /
    /// ABORTED. Vault answers these with 400 too.
    #[error("{0}")]
    Conflict(String),
    /// Already initialised: 400 / ALREADY_EXISTS.
    #[error("{0}")]
    AlreadyExists(String),
    /// A check-and-set precondition did not hold: 400 (as Vault) /
    /// FAILED_PRECONDITION.
    #[error("{0}")]
    CheckAndSet(String),
    /// Not initialised: 400 / FAILED_PRECONDITION.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Unknown path: 404 / NOT_FOUND.
    #[error("{0}")]
    NotFound(String),
    /// 405 / UNIMPLEMENTED.
    #[error("unsupported operation")]
    UnsupportedOperation,
    /// 413 / RESOURCE_EXHAUSTED.
    #[error("request body too large")]
    TooLarge,
    /// A system Sigil depends on (a database it manages) failed or could
    /// not be reached: 502 / UNAVAILABLE. The message names the system and
    /// the failure, never a credential.
    #[error("{0}")]
    Upstream(String),
    /// A quota was exceeded: 429 / RESOURCE_EXHAUSTED.
    #[error("{0}")]
    TooManyRequests(String),
    /// Our fault: 500 / INTERNAL. The message is safe to show (it never
    /// carries secrets) but details stay in the logs.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn http_status(&self) -> u16 {
        match self {
            ApiError::InvalidRequest(_)
            | ApiError::CheckAndSet(_)
            | ApiError::Conflict(_)
            | ApiError::AlreadyExists(_)
            | ApiError::FailedPrecondition(_) => 400,
            ApiError::PermissionDenied => 403,
            ApiError::NotFound(_) => 404,
            ApiError::UnsupportedOperation => 405,
            ApiError::TooLarge => 413,
            ApiError::TooManyRequests(_) => 429,
            ApiError::Upstream(_) => 502,
            ApiError::Internal(_) => 500,
            ApiError::Sealed | ApiError::Unavailable(_) => 503,
        }
    }

    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            ApiError::InvalidRequest(_) => tonic::Code::InvalidArgument,
            ApiError::PermissionDenied => tonic::Code::PermissionDenied,
            ApiError::Sealed | ApiError::Unavailable(_) => tonic::Code::Unavailable,
            ApiError::Conflict(_) => tonic::Code::Aborted,
            ApiError::AlreadyExists(_) => tonic::Code::AlreadyExists,
            ApiError::FailedPrecondition(_) | ApiError::CheckAndSet(_) => {
                tonic::Code::FailedPrecondition
            }
            ApiError::NotFound(_) => tonic::Code::NotFound,
            ApiError::UnsupportedOperation => tonic::Code::Unimplemented,
            ApiError::TooLarge | ApiError::TooManyRequests(_) => tonic::Code::ResourceExhausted,
            ApiError::Upstream(_) => tonic::Code::Unavailable,
            ApiError::Internal(_) => tonic::Code::Internal,
        }
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        tonic::Status::new(e.grpc_code(), e.to_string())
    }
}

impl From<SealError> for ApiError {
    fn from(e: SealError) -> Self {
        match e {
            SealError::Sealed | SealError::Barrier(BarrierError::Sealed) => ApiError::Sealed,
            SealError::Storage(crate::storage::StorageError::Unavailable(m))
            | SealError::Barrier(BarrierError::Storage(
                crate::storage::StorageError::Unavailable(m),
            )) => ApiError::Unavailable(m),
            SealError::AlreadyInitialized => ApiError::AlreadyExists(e.to_string()),
            SealError::NotInitialized => ApiError::FailedPrecondition(e.to_string()),
            SealError::Busy | SealError::InProgress(_) => ApiError::Conflict(e.to_string()),
            e if e.is_client_error() => ApiError::InvalidRequest(e.to_string()),
            e => {
                tracing::error!(error = %e, "seal operation failed");
                ApiError::Internal(e.to_string())
            }
        }
    }
}

impl From<BarrierError> for ApiError {
    fn from(e: BarrierError) -> Self {
        match e {
            BarrierError::Sealed => ApiError::Sealed,
            BarrierError::Storage(crate::storage::StorageError::Unavailable(m)) => {
                ApiError::Unavailable(m)
            }
            e => {
                tracing::error!(error = %e, "barrier operation failed");
                ApiError::Internal("internal error".into())
            }
        }
    }
}
