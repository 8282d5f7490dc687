//! `shape`: turns fetched values into the [`DesiredSecret`]. Pure: no I/O.

use keyferry_api::ExternalSecret;

use crate::desired::DesiredSecret;
use crate::error::SyncError;
use crate::fetch::Fetched;
use crate::plan::Plan;

/// Whether `key` is a valid Kubernetes Secret data key: 1–253 characters of `[-._a-zA-Z0-9]`, and
/// not `.` or `..`.
pub fn is_valid_secret_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key != "."
        && key != ".."
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Shapes the fetched values into the desired Secret.
pub fn shape(es: &ExternalSecret, plan: &Plan, fetched: &Fetched) -> Result<DesiredSecret, SyncError> {
    let _ = (es, fetched);
    Err(SyncError::Unsupported {
        es: plan.es.clone(),
        field: "spec".into(),
        what: "shape".into(),
    })
}
