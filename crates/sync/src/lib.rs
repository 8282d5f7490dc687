//! The keyferry sync pipeline: one library used by the controller, `keyferry render`/`demo` and the
//! VM agent.
//!
//! ```text
//! ExternalSecret ──plan (pure)──▶ Plan ──fetch (I/O)──▶ Fetched ──shape (pure)──▶ DesiredSecret
//! ```
//!
//! * [`plan()`] validates the spec and lists the remote reads, deduplicated by (store, key, version,
//!   metadataPolicy): two properties of one secret cost one read.
//! * [`fetch()`] performs the reads through a caller-provided [`StoreResolver`] with bounded
//!   concurrency. Only a confirmed `NotFound` is kept as an outcome (for `deletionPolicy`); any other
//!   provider error fails the fetch.
//! * [`shape()`] applies property paths, decoding, `dataFrom` extract/find, rewrites and templates,
//!   and returns the [`DesiredSecret`].
//! * [`sync()`] runs the three in a row; [`sync_with()`] also hands `shape` the `templateFrom`
//!   ConfigMaps and Secrets the caller read ([`TemplateSources`]).
//!
//! No error message and no `Debug` output of this crate contains a secret value: values live in
//! [`SecretValue`], which cannot be printed, and errors name fields, keys and positions only.

// `SyncError` is a flat enum with context fields (~200 bytes). Errors are built at most once per
// failed sync, so boxing would buy nothing but clumsier matching in the controller and the CLI.
#![allow(clippy::result_large_err)]
#![warn(missing_docs)]

pub mod decode;
pub mod desired;
pub mod error;
pub mod fetch;
pub mod metadata;
pub mod plan;
pub mod property;
pub mod shape;
pub mod sources;
pub mod template;

pub use desired::{DesiredSecret, REDACTED_PREFIX};
pub use error::{EsRef, ResolveError, SyncError};
pub use fetch::{DEFAULT_CONCURRENCY, Fetched, ReadOutcome, SingleStore, StoreResolver, fetch, fetch_with};
pub use keyferry_providers::SecretValue;
pub use plan::{DataFromPlan, DataFromSource, DataPlan, FindRead, Plan, Read, plan};
pub use shape::{shape, shape_blocking};
pub use sources::{SourceKind, SourceRef, TemplateSources};

use keyferry_api::ExternalSecret;

/// Runs the whole pipeline: [`plan()`], [`fetch()`], [`shape()`]. No `templateFrom` ConfigMap or
/// Secret is available (an ExternalSecret using one fails naming the field): see [`sync_with()`].
pub async fn sync(
    es: &ExternalSecret,
    stores: &(impl StoreResolver + ?Sized),
) -> Result<DesiredSecret, SyncError> {
    sync_with(es, stores, TemplateSources::default()).await
}

/// [`sync()`] with the `templateFrom` ConfigMaps and Secrets the caller read.
pub async fn sync_with(
    es: &ExternalSecret,
    stores: &(impl StoreResolver + ?Sized),
    templates: TemplateSources,
) -> Result<DesiredSecret, SyncError> {
    let plan = plan(es)?;
    let mut fetched = fetch(&plan, stores).await?;
    fetched.templates = templates;
    shape_blocking(es, &plan, &fetched).await
}
