//! keyferry's VM tier: `keyferry agent` keeps files on a host in step with Azure Key Vault, and
//! `keyferry run` hands one output's data to a command as environment variables.
//!
//! The agent is the controller with files instead of Secrets: the same providers, the same
//! [`keyferry_providers::CachedClient`] change feed (one listing per vault per interval) and the
//! same `keyferry_sync` pipeline; an output is an ExternalSecret-shaped spec
//! ([`pipeline::external_secret`]) whose result is formatted ([`format`]) and written atomically
//! ([`write`]), followed by its `onChange` hook ([`hooks`]). [`state`] records what happened,
//! without values, for `keyferry agent status`.

#![warn(missing_docs)]

pub mod agent;
pub mod auth;
pub mod breakglass;
pub mod config;
pub mod events;
pub mod format;
pub mod hooks;
pub mod metrics;
pub mod pipeline;
pub mod state;
pub mod write;

pub use agent::{Agent, EXIT_CONFIG, EXIT_FAILED, EXIT_OK};
pub use config::{AgentConfig, ConfigError};
