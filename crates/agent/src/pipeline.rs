//! An output as an ExternalSecret: the agent does not re-implement `data`/`dataFrom`/`template`,
//! it hands the same spec the controller would see to `keyferry_sync`.

use std::collections::BTreeSet;

use keyferry_api::ExternalSecret;
use keyferry_api::external_secret::{ExternalSecretSpec, ExternalSecretTarget, SecretStoreRef};
use keyferry_api::names::split_remote_key;

use crate::config::OutputConfig;

/// The ExternalSecret-shaped spec of an output: its `data`, `dataFrom` and `template`, reading
/// from a store named after the output's vault.
pub fn external_secret(output: &OutputConfig) -> ExternalSecret {
    let spec = ExternalSecretSpec {
        secret_store_ref: Some(SecretStoreRef {
            name: output.vault.clone(),
            kind: None,
        }),
        target: Some(ExternalSecretTarget {
            name: Some(output.name.clone()),
            template: output.template.clone(),
            ..ExternalSecretTarget::default()
        }),
        data: output.data.clone(),
        data_from: output.data_from.clone(),
        ..ExternalSecretSpec::default()
    };
    ExternalSecret::new(&output.name, spec)
}

/// Which secrets of its vault an output reads: named secrets (lower-case), or `None` when a
/// `dataFrom.find` makes any secret matter (the controller's change-feed rule).
pub fn used_names(output: &OutputConfig) -> Option<BTreeSet<String>> {
    let name = |key: &str| split_remote_key(key).1.to_ascii_lowercase();
    let mut out = BTreeSet::new();
    for d in &output.data {
        out.insert(name(&d.remote_ref.key));
    }
    for d in &output.data_from {
        if d.find.is_some() {
            return None;
        }
        if let Some(e) = &d.extract {
            out.insert(name(&e.key));
        }
    }
    Some(out)
}

/// Whether a change of `changed` (lower-case names) concerns the output.
pub fn affected(output: &OutputConfig, changed: &BTreeSet<String>) -> bool {
    match used_names(output) {
        None => !changed.is_empty(),
        Some(names) => names.iter().any(|n| changed.contains(n)),
    }
}
