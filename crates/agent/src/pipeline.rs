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

/// Which secrets of its vault an output reads, as its `remoteRef.key`s are written, or `None` when a
/// `dataFrom.find` makes any secret matter (the controller's change-feed rule). The change feed
/// checks these one by one when that is cheaper than listing the vault.
pub fn used_keys(output: &OutputConfig) -> Option<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for d in &output.data {
        out.insert(d.remote_ref.key.clone());
    }
    for d in &output.data_from {
        if d.find.is_some() {
            return None;
        }
        if let Some(e) = &d.extract {
            out.insert(e.key.clone());
        }
    }
    Some(out)
}

/// [`used_keys`] as the change feed names them: without object prefix, lower-case.
pub fn used_names(output: &OutputConfig) -> Option<BTreeSet<String>> {
    used_keys(output).map(|keys| {
        keys.iter()
            .map(|key| split_remote_key(key).1.to_ascii_lowercase())
            .collect()
    })
}

/// Whether a change of `changed` (lower-case names) concerns the output.
pub fn affected(output: &OutputConfig, changed: &BTreeSet<String>) -> bool {
    match used_names(output) {
        None => !changed.is_empty(),
        Some(names) => names.iter().any(|n| changed.contains(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(yaml: &str) -> OutputConfig {
        serde_yaml_ng::from_str(yaml).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn keys_are_kept_as_written_and_named_like_the_change_feed() {
        let o = output(
            "name: db\npath: /tmp/db\nvault: main\ndata:\n  - secretKey: p\n    remoteRef: {key: secret/DB-Password}\ndataFrom:\n  - extract: {key: Config}\n",
        );
        let keys: BTreeSet<String> = ["Config", "secret/DB-Password"].map(String::from).into();
        assert_eq!(used_keys(&o), Some(keys));
        let names: BTreeSet<String> = ["config", "db-password"].map(String::from).into();
        assert_eq!(used_names(&o), Some(names.clone()));
        assert!(affected(&o, &["db-password".to_owned()].into()));
        assert!(!affected(&o, &["other".to_owned()].into()));
        let find = output(
            "name: all\npath: /tmp/all\nvault: main\ndataFrom:\n  - find: {name: {regexp: '^app-'}}\n",
        );
        assert_eq!(used_keys(&find), None, "find: every secret matters");
        assert!(affected(&find, &["anything".to_owned()].into()));
    }
}
