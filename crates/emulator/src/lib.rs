//! `keyferry-emulator`: a local Azure Key Vault (secrets data plane) that the real, unmodified
//! official Azure SDK talks to.
//!
//! It serves, on one HTTPS port:
//! - the vault at `https://<vault_name>.vault.localhost:<port>` (bearer challenge
//!   `resource="https://vault.localhost:<port>"`, so the SDKs' challenge-resource check, which
//!   compares host and port, passes; see `docs/emulator.md`),
//! - an Entra-style token service at `https://localhost:<port>/{tenant}/`: v2 and v1 token
//!   endpoints (client secret and client assertion / workload identity), the OpenID configuration
//!   and instance discovery documents MSAL fetches first,
//! - the App Service managed-identity endpoint at `https://localhost:<port>/msi/token`
//!   (2019-08-01 and 2017-09-01), plus VM IMDS and Azure Arc,
//! - Event Grid delivery of Key Vault's secret events: pull at `https://localhost:<port>/topics/…`
//!   (namespace topics) and push to webhooks (see `events`),
//! - an unauthenticated admin API under `/_admin/` (counters, fault injection, tokens, seeding,
//!   event subscriptions).
//!
//! It shares no code with keyferry's own crates, so it cannot "agree with itself".
//!
//! ```no_run
//! # async fn demo() -> Result<(), keyferry_emulator::EmulatorError> {
//! use keyferry_emulator::{Emulator, EmulatorConfig};
//! let emulator = Emulator::start(EmulatorConfig::default()).await?;
//! emulator.set_secret("db-password", "s3cret")?;
//! println!("{} trusts {}", emulator.vault_url(), emulator.ca_file().display());
//! emulator.shutdown().await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod admin;
mod cli;
mod config;
mod counters;
mod entra;
mod error;
mod events;
mod faults;
mod identity;
mod model;
mod route;
mod seed;
mod server;
mod store;
mod tls;
mod tokens;
mod vault;

pub use cli::{EmulatorArgs, env_lines, run_cli};
pub use config::{ClientEntry, Clients, DEFAULT_TENANT_ID, EmulatorConfig, TlsMode};
pub use counters::{CounterSnapshot, OperationCounts};
pub use entra::EVENT_GRID_APP_ID;
pub use error::{ApiError, EmulatorError};
pub use events::{
    EVENT_GRID_API_VERSIONS, EVENT_GRID_AUDIENCE, EventSchema, NEAR_EXPIRY_WINDOW_SECS, PushSubscription,
    SubscriptionError,
};
pub use faults::{ActiveFault, FaultKind, FaultSpec};
pub use identity::MANAGED_IDENTITY_CLIENT_ID;
pub use route::Operation;
pub use seed::{Seed, SeedSecret};
pub use server::Emulator;
pub use store::{MAX_TAGS, MAX_VALUE_BYTES, NewVersion};
pub use tls::install_crypto_provider;
pub use tokens::VAULT_RESOURCE;
pub use vault::{MAX_PAGE, SUPPORTED_API_VERSIONS};
