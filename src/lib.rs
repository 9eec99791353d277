//! clutch: one launcher (`xx`) and one local gateway for every coding agent.
//!
//! The binaries are thin: they parse arguments with [`cli`], call into this library and map
//! its [`Error`] to an exit code.

pub mod agent;
pub mod app;
pub mod cli;
pub mod code;
pub mod config;
mod embedded;
pub mod error;
pub mod gateway;
pub mod inventory;
pub mod keys;
pub mod launch;
pub mod paths;
pub mod session;
pub mod setup;
pub mod shell;
pub mod sidecar;

pub use error::Error;
