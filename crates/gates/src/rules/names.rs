//! Remote-key names: Azure Key Vault's object-name rule (`KF010`), the platform's naming
//! convention (`KF011`), and Vault's KV path rule for references to Vault stores (`KF012`).

use keyferry_api::names::{check_vault_name, split_remote_key};
use regex::Regex;

use crate::finding::{RawFinding, Rule};
use crate::model::{EsView, RefKind, RefSite};
use crate::rules::stores::StoreIndex;

/// The Vault provider settings of the store a reference reads from, if it is a Vault store in the
/// repository.
fn vault_store<'i>(
    es: &EsView<'_>,
    site: &RefSite<'_>,
    index: &'i StoreIndex,
) -> Option<&'i keyferry_api::secret_store::VaultProvider> {
    let r = site.store?;
    index
        .resolve(r, es.namespace)
        .ok()?
        .spec
        .as_ref()?
        .provider
        .vault
        .as_ref()
}

/// `KF012`: every remote key read from a Vault store is a KV secret path (the provider's own rule,
/// [`keyferry_providers::vault::check_path`]), after the store's mount prefix.
pub fn vault_paths(es: &EsView<'_>, index: &StoreIndex) -> Vec<RawFinding> {
    es.refs()
        .into_iter()
        .filter_map(|site| {
            let RefKind::Key(remote) = site.what else {
                return None;
            };
            let vault = vault_store(es, &site, index)?;
            let mount = vault.path.as_deref().unwrap_or_default().trim_matches('/');
            let key = remote.key.trim_start_matches('/');
            let rel = if mount.is_empty() {
                key.split_once('/').map_or("", |(_, r)| r)
            } else {
                key.strip_prefix(mount)
                    .and_then(|r| r.strip_prefix('/'))
                    .unwrap_or(key)
            };
            keyferry_providers::vault::check_path(rel).err().map(|e| {
                RawFinding::new(
                    Rule::VaultPath,
                    es.file(),
                    site.line(),
                    format!("{}: {:?} is not a Vault secret path: {e}", site.path, remote.key),
                )
                .with_object(es.object())
            })
        })
        .collect()
}

/// `KF010`: every remote key, after its `secret/`, `key/` or `cert/` prefix, is 1–127 characters
/// of `0-9a-zA-Z-`.
pub fn akv_names(es: &EsView<'_>, index: &StoreIndex) -> Vec<RawFinding> {
    es.refs()
        .into_iter()
        .filter_map(|site| {
            let RefKind::Key(remote) = site.what else {
                return None;
            };
            // Vault stores have paths, not Key Vault names (KF012).
            if vault_store(es, &site, index).is_some() {
                return None;
            }
            let (_, name) = split_remote_key(&remote.key);
            check_vault_name(name).err().map(|e| {
                RawFinding::new(
                    Rule::AkvName,
                    es.file(),
                    site.line(),
                    format!(
                        "{}: {:?} is not a valid Key Vault name: {e}",
                        site.path, remote.key
                    ),
                )
                .with_object(es.object())
            })
        })
        .collect()
}

/// `KF011`: every remote key that is a valid Key Vault name also follows the naming convention
/// (by default lowercase `<service>-<purpose>`). Invalid names are left to `KF010`, so one mistake
/// is reported once.
pub fn naming_convention(es: &EsView<'_>, convention: &Regex, index: &StoreIndex) -> Vec<RawFinding> {
    es.refs()
        .into_iter()
        .filter_map(|site| {
            let RefKind::Key(remote) = site.what else { return None };
            if vault_store(es, &site, index).is_some() {
                return None;
            }
            let (_, name) = split_remote_key(&remote.key);
            if check_vault_name(name).is_err() || convention.is_match(name) {
                return None;
            }
            Some(
                RawFinding::new(
                    Rule::NamingConvention,
                    es.file(),
                    site.line(),
                    format!(
                        "{}: {name:?} does not follow the naming convention {} (lowercase <service>-<purpose>, e.g. netbox-db-password)",
                        site.path,
                        convention.as_str()
                    ),
                )
                .with_object(es.object()),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::DEFAULT_NAMING;
    use crate::rules::testutil::{docs, es};

    const SPEC: &str = "  secretStoreRef: {kind: ClusterSecretStore, name: akv}\n  data:\n  - {secretKey: A, remoteRef: {key: netbox-db-password}}\n  - {secretKey: B, remoteRef: {key: prod/netbox-db-password}}\n  - {secretKey: C, remoteRef: {key: TF_VAR_arm_client_secret}}\n  - {secretKey: D, remoteRef: {key: cert/netbox-tls}}\n  - {secretKey: E, remoteRef: {key: NetboxToken}}\n  dataFrom:\n  - extract: {key: secret/netbox-config}\n  - find: {name: {regexp: \"^netbox-\"}}\n";

    #[test]
    fn vault_names() {
        let d = docs(&es("a", SPEC));
        let f = akv_names(&EsView::of(&d[0]).unwrap(), &StoreIndex::default());
        let got: Vec<_> = f.iter().map(|f| (f.line, f.message.as_str())).collect();
        assert_eq!(
            got,
            [
                (
                    8,
                    "spec.data[1].remoteRef.key: \"prod/netbox-db-password\" is not a valid Key Vault name: name contains '/'; Key Vault names use only 0-9, a-z, A-Z and -"
                ),
                (
                    9,
                    "spec.data[2].remoteRef.key: \"TF_VAR_arm_client_secret\" is not a valid Key Vault name: name contains '_'; Key Vault names use only 0-9, a-z, A-Z and -"
                ),
            ]
        );
        assert!(f.iter().all(|f| f.rule == Rule::AkvName));
    }

    #[test]
    fn too_long_and_empty_names() {
        let long = "a".repeat(128);
        let d = docs(&es(
            "a",
            &format!(
                "  data:\n  - {{secretKey: A, remoteRef: {{key: \"{long}\"}}}}\n  - {{secretKey: B, remoteRef: {{key: \"secret/\"}}}}\n"
            ),
        ));
        let f = akv_names(&EsView::of(&d[0]).unwrap(), &StoreIndex::default());
        assert_eq!(f.len(), 2);
        assert!(f[0].message.contains("128 characters long"));
        assert!(f[1].message.ends_with("name is empty"));
    }

    #[test]
    fn convention() {
        let d = docs(&es("a", SPEC));
        let re = Regex::new(DEFAULT_NAMING).unwrap();
        let f = naming_convention(&EsView::of(&d[0]).unwrap(), &re, &StoreIndex::default());
        let got: Vec<_> = f.iter().map(|f| (f.rule, f.line)).collect();
        assert_eq!(
            got,
            [(Rule::NamingConvention, 11)],
            "only NetboxToken: prefixes are stripped, bad names are KF010's"
        );
        assert!(f[0].message.starts_with(
            "spec.data[4].remoteRef.key: \"NetboxToken\" does not follow the naming convention"
        ));
    }

    #[test]
    fn vault_store_references_get_the_vault_path_rule_instead() {
        let store = "apiVersion: external-secrets.io/v1\nkind: SecretStore\nmetadata: {name: bao, namespace: netbox}\nspec:\n  provider: {vault: {server: \"https://bao:8200\", path: secret, auth: {tokenSecretRef: {name: t, key: k}}}}\n---\n";
        let spec = "  secretStoreRef: {name: bao}\n  data:\n  - {secretKey: A, remoteRef: {key: netbox/db}}\n  - {secretKey: B, remoteRef: {key: secret/netbox/api}}\n  - {secretKey: C, remoteRef: {key: netbox/}}\n  - {secretKey: D, remoteRef: {key: netbox/../x}}\n";
        let d = docs(&format!("{store}{}", es("a", spec)));
        let index = StoreIndex::build(&d, &[]);
        let view = EsView::of(&d[1]).unwrap();
        assert!(
            akv_names(&view, &index).is_empty(),
            "Key Vault names do not apply"
        );
        let re = Regex::new(DEFAULT_NAMING).unwrap();
        assert!(naming_convention(&view, &re, &index).is_empty());
        let f = vault_paths(&view, &index);
        let got: Vec<&str> = f.iter().map(|f| f.message.as_str()).collect();
        assert_eq!(
            got,
            [
                "spec.data[2].remoteRef.key: \"netbox/\" is not a Vault secret path: the path ends in '/', which names a directory, not a secret",
                "spec.data[3].remoteRef.key: \"netbox/../x\" is not a Vault secret path: the path has an empty, '.' or '..' segment",
            ]
        );
    }
}
