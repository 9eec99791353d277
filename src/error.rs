//! The library's error type and the exit-code policy the binaries apply to it.

use crate::agent::PlanError;
use crate::code::CodeError;
use crate::config::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Code(#[from] CodeError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Usage(String),
    #[error(
        "{display_name} is not installed: `{binary}` is not on PATH.\nInstall it with: {install}"
    )]
    NotInstalled {
        display_name: String,
        binary: String,
        install: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl Error {
    /// 2 for anything the user typed or configured wrong, 127 for a missing agent (as a
    /// shell would), 1 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Code(_) | Error::Plan(_) | Error::Config(_) | Error::Usage(_) => 2,
            Error::NotInstalled { .. } => 127,
            Error::Io { .. } => 1,
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
