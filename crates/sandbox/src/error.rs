//! Why a task could not be started. Messages never name the node: the caller
//! prefixes it.

use std::io;

/// Exit code reported for a task refused by the sandbox or that cannot run.
pub const EXIT_REFUSED: i32 = 126;
/// Exit code reported for a program that does not exist.
pub const EXIT_NOT_FOUND: i32 = 127;
/// Exit code the caller reports for [`crate::Status::TimedOut`].
pub const EXIT_TIMED_OUT: i32 = 124;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("empty command")]
    EmptyArgv,
    #[error("argument or environment entry contains a NUL byte")]
    NulByte,
    #[error("environment variable name is invalid")]
    InvalidEnvName { name: String },
    #[error("argument list too large ({size} bytes, at most {max})")]
    ArgumentsTooLarge { size: usize, max: usize },
    #[error("program {program:?} is not allowed by the strict policy")]
    ShellRefused { program: String },
    #[error("program {program:?} is the dynamic loader, which runs any file named as its argument")]
    LoaderRefused { program: String },
    #[error("program {program:?} is not on the allowlist of the strict policy")]
    NotAllowlisted { program: String },
    #[error("program {program:?} must be a name or an absolute path under the strict policy")]
    RelativeProgramPath { program: String },
    #[error("working directory {cwd:?} escapes the workspace")]
    CwdEscapes { cwd: String },
    #[error("working directory {cwd:?} is hidden from tasks")]
    CwdHidden { cwd: String },
    #[error("working directory {cwd:?} cannot be used")]
    CwdUnusable {
        cwd: String,
        #[source]
        source: io::Error,
    },
    #[error("program {program:?} not found")]
    NotFound { program: String },
    #[error(
        "the strict policy needs landlock filesystem rules, which this kernel cannot enforce \
         (set allow_weak_sandbox to run anyway)"
    )]
    WeakSandbox,
    #[error("sandbox setup failed: {what}")]
    Setup {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("program {program:?} could not be started")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("sandbox options are invalid: {0}")]
    InvalidOptions(&'static str),
}

impl Error {
    /// The exit code a caller reports for this error: 127 when the program does
    /// not exist, 126 otherwise (refused, or cannot run).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::NotFound { .. } => EXIT_NOT_FOUND,
            _ => EXIT_REFUSED,
        }
    }

    /// Whether the policy (rather than the machine) refused the task.
    pub fn is_refusal(&self) -> bool {
        !matches!(
            self,
            Error::Setup { .. } | Error::Spawn { .. } | Error::InvalidOptions(_)
        )
    }

    pub(crate) fn setup(what: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Setup { what, source }
    }
}
