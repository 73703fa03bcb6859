//! The hub's errors, and their one mapping to gRPC codes (HTTP statuses and
//! transfer failures follow from the codes: `ganglion_proto::status`).

use axum::http::StatusCode;
use ganglion_store::InviteRefusal;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("missing or malformed credential")]
    Unauthenticated,
    #[error("credential is not valid")]
    BadCredential,
    #[error("node {0:?} was revoked")]
    Revoked(String),
    #[error("too many failed attempts from this address; retry in {retry_after_s} s")]
    RateLimited { retry_after_s: u64 },
    #[error("{0}")]
    InvalidArgument(String),
    /// A duration or size outside its bound ([`crate::limits`]).
    #[error(transparent)]
    OutOfRange(#[from] ganglion_core::limit::LimitError),
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Invite(#[from] InviteRefusal),
    #[error("the hub's store did not answer in time")]
    StoreTimeout,
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Store(#[source] ganglion_store::Error),
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    DataDirLocked(#[from] crate::datadir::LockError),
    #[error("tls: {0}")]
    Tls(String),
    #[error("transfer failed: {message}")]
    Transfer {
        failure: ganglion_mirror::TransferFailure,
        message: String,
    },
}

impl From<ganglion_store::Error> for Error {
    fn from(e: ganglion_store::Error) -> Self {
        match e {
            ganglion_store::Error::NotFound { what } => Error::NotFound { what: what.into() },
            ganglion_store::Error::AlreadyExists { what } => {
                Error::Conflict(format!("{what} already exists"))
            }
            ganglion_store::Error::Invite(r) => Error::Invite(r),
            e @ ganglion_store::Error::WriterFailed(_) => Error::Unavailable(e.to_string()),
            other => Error::Store(other),
        }
    }
}

impl Error {
    /// The gRPC code for this error.
    ///
    /// Unauthenticated: missing/bad credential · PermissionDenied: revoked ·
    /// ResourceExhausted: rate limited · InvalidArgument: malformed input ·
    /// NotFound · AlreadyExists: name taken · FailedPrecondition: invite expired,
    /// used, revoked or scoped to another name · Unavailable: store timeout, shutdown.
    pub fn grpc_code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            Error::Unauthenticated | Error::BadCredential => Code::Unauthenticated,
            Error::Revoked(_) => Code::PermissionDenied,
            Error::RateLimited { .. } => Code::ResourceExhausted,
            Error::InvalidArgument(_) | Error::OutOfRange(_) => Code::InvalidArgument,
            Error::NotFound { .. } => Code::NotFound,
            Error::Conflict(_) | Error::Invite(InviteRefusal::NameTaken(_)) => Code::AlreadyExists,
            Error::Invite(InviteRefusal::Unknown) => Code::Unauthenticated,
            Error::Invite(InviteRefusal::NameRequired) => Code::InvalidArgument,
            Error::Invite(_) => Code::FailedPrecondition,
            Error::StoreTimeout | Error::Unavailable(_) => Code::Unavailable,
            Error::Store(_) | Error::Io(_) | Error::Tls(_) => Code::Internal,
            Error::DataDirLocked(_) => Code::FailedPrecondition,
            Error::Transfer { failure, .. } => ganglion_proto::status::transfer_code(*failure),
        }
    }

    /// The HTTP status for this error (from its gRPC code: one mapping,
    /// `ganglion_proto::status`).
    pub fn http_status(&self) -> StatusCode {
        ganglion_proto::status::http_status(self.grpc_code())
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        if matches!(e.grpc_code(), tonic::Code::Internal) {
            tracing::error!(error = ?e, "internal error");
        }
        tonic::Status::new(e.grpc_code(), e.to_string())
    }
}

impl axum::response::IntoResponse for Error {
    fn into_response(self) -> axum::response::Response {
        if self.http_status() == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = ?self, "internal error");
        }
        let body = ganglion_api::ErrorBody {
            error: self.to_string(),
        };
        (self.http_status(), axum::Json(body)).into_response()
    }
}
