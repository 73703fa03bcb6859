//! The one mapping between domain errors and gRPC codes (and from those, HTTP
//! statuses), both ways: what a code means to a node, what a transfer
//! failure is on the wire. The hub's `Error::grpc_code` picks a code per
//! error; everything else about codes is here.

use ganglion_mirror::TransferFailure;
use tonic::codegen::http::StatusCode;
use tonic::{Code, Status};

/// The HTTP status for a gRPC code (the hub's API answers with it).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists => StatusCode::CONFLICT,
        Code::FailedPrecondition => StatusCode::CONFLICT,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The code an upload ends with when a transfer fails.
pub fn transfer_code(failure: TransferFailure) -> Code {
    match failure {
        TransferFailure::HashMismatch | TransferFailure::SourceChanged => Code::DataLoss,
        TransferFailure::DiskFull => Code::ResourceExhausted,
        TransferFailure::Refused => Code::FailedPrecondition,
        TransferFailure::Cancelled => Code::Aborted,
        TransferFailure::Io => Code::Internal,
    }
}

/// What a failed upload stream means for each of its files (the inverse of
/// [`transfer_code`]; a stream that broke is cancelled).
pub fn transfer_failure(code: Code) -> TransferFailure {
    match code {
        Code::DataLoss => TransferFailure::HashMismatch,
        Code::ResourceExhausted => TransferFailure::DiskFull,
        Code::FailedPrecondition => TransferFailure::Refused,
        Code::Aborted | Code::Cancelled | Code::Unavailable => TransferFailure::Cancelled,
        _ => TransferFailure::Io,
    }
}

/// Why the hub refused a node's call, as the node acts on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The node was revoked: it stops for good.
    Revoked,
    /// The hub does not accept the credential: it stops for good.
    Unauthenticated(String),
    /// Another running process holds a live stream with the same credential.
    Duplicate(String),
    /// Anything else (retried).
    Other(String),
}

impl From<&Status> for Refusal {
    fn from(s: &Status) -> Self {
        match s.code() {
            Code::PermissionDenied => Refusal::Revoked,
            Code::Unauthenticated => Refusal::Unauthenticated(s.message().to_owned()),
            Code::AlreadyExists => Refusal::Duplicate(s.message().to_owned()),
            _ => Refusal::Other(format!("{}: {}", s.code(), s.message())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transfer_failure_survives_its_code() {
        for f in [
            TransferFailure::HashMismatch,
            TransferFailure::DiskFull,
            TransferFailure::Refused,
            TransferFailure::Cancelled,
            TransferFailure::Io,
        ] {
            assert_eq!(transfer_failure(transfer_code(f)), f);
        }
        assert_eq!(
            transfer_failure(transfer_code(TransferFailure::SourceChanged)),
            TransferFailure::HashMismatch
        );
    }
}
