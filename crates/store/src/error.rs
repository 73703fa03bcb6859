//! The store's errors. Database errors are translated to domain errors here and
//! nowhere else (unique violation → `AlreadyExists`, and so on).

use ganglion_core::Timestamp;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} not found")]
    NotFound { what: &'static str },
    #[error("{what} already exists")]
    AlreadyExists { what: &'static str },
    #[error(transparent)]
    Invite(#[from] InviteRefusal),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database error")]
    Database(#[source] sqlx::Error),
    #[error("database migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The writer of a backend's group commits failed: no write goes
    /// through until the hub restarts.
    #[error("the task journal's writer failed ({0}); restart the hub")]
    WriterFailed(String),
}

/// Why an invite cannot be redeemed. The messages are safe to show to the
/// redeeming node: they never reveal anything about other invites.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InviteRefusal {
    #[error("invite is not valid")]
    Unknown,
    #[error("invite expired at {0}")]
    Expired(Timestamp),
    #[error("invite was already used")]
    Used,
    #[error("invite was revoked")]
    Revoked,
    #[error("invite is for node {scope:?}, not {asked:?}")]
    NameScope { scope: String, asked: String },
    #[error("node name {0:?} is already taken")]
    NameTaken(String),
    #[error("a node name is required: this invite is not scoped to one")]
    NameRequired,
}

impl Error {
    /// Translates a database error; `what` names the record for the message.
    pub(crate) fn db(what: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
        move |e| match &e {
            sqlx::Error::RowNotFound => Error::NotFound { what },
            sqlx::Error::Database(d) if d.is_unique_violation() => Error::AlreadyExists { what },
            _ => Error::Database(e),
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::db("record")(e)
    }
}
