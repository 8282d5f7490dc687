//! The rules ESO's admission webhook enforces on ExternalSecrets and stores, so a manifest that
//! passes `validate` is not refused at `kubectl apply` time.

use std::collections::BTreeMap;

use keyferry_api::external_secret::{CreationPolicy, DeletionPolicy};
use keyferry_api::manifest::{Located, Manifest};

use crate::finding::{RawFinding, Rule};
use crate::model::{EsView, line_of_field};

/// `KF002`: an ExternalSecret needs `data` or `dataFrom`.
pub fn no_data(es: &EsView<'_>) -> Vec<RawFinding> {
    if !es.spec.data.is_empty() || !es.spec.data_from.is_empty() {
        return Vec::new();
    }
    vec![
        RawFinding::new(
            Rule::NoData,
            es.file(),
            line_of_field(&es.doc.located, "spec", "", 0),
            "spec: either data or dataFrom must be specified",
        )
        .with_object(es.object()),
    ]
}

/// `KF013`: every template compiles, by the controller's own compiler (`keyferry_sync::plan`, which
/// parses every template of the spec). Only template errors are reported here; the plan's other
/// refusals are the other rules' findings.
pub fn templates(es: &EsView<'_>) -> Vec<RawFinding> {
    let mut object = keyferry_api::ExternalSecret::new(es.name, es.spec.clone());
    object.metadata.namespace = es.namespace.map(str::to_owned);
    match keyferry_sync::plan(&object) {
        Err(keyferry_sync::SyncError::Template { field, source, .. }) => {
            // The line of the template's own key (the last segment of the field path).
            let key = field
                .rsplit('.')
                .next()
                .unwrap_or_default()
                .split('[')
                .next()
                .unwrap_or_default();
            let line = line_of_field(&es.doc.located, key, "", 0);
            vec![
                RawFinding::new(
                    Rule::Template,
                    es.file(),
                    line,
                    format!("{field}: template does not compile: {source}").replace('\n', " "),
                )
                .with_object(es.object()),
            ]
        }
        _ => Vec::new(),
    }
}

/// `KF003`: two `data` entries must not write the same `secretKey`.
pub fn duplicate_secret_keys(es: &EsView<'_>) -> Vec<RawFinding> {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    let mut out = Vec::new();
    for (i, d) in es.spec.data.iter().enumerate() {
        let key = d.secret_key.as_str();
        let n = seen.entry(key).or_insert(0);
        if *n > 0 {
            out.push(
                RawFinding::new(
                    Rule::DuplicateSecretKey,
                    es.file(),
                    es.line_of_key("secretKey", key, *n),
                    format!("spec.data[{i}].secretKey: duplicate secretKey {key:?}"),
                )
                .with_object(es.object()),
            );
        }
        *n += 1;
    }
    out
}

/// `KF008`: every `secretKey` is a valid Secret data key, and the target Secret's name a valid
/// object name (a DNS subdomain), or the API server refuses the Secret at sync time.
pub fn k8s_names(es: &EsView<'_>) -> Vec<RawFinding> {
    let mut out = Vec::new();
    // With a template that replaces the data, secretKeys are only template variables and never
    // reach the Secret.
    let template = es.spec.target.as_ref().and_then(|t| t.template.as_ref());
    let replaced = template.is_some_and(|t| {
        (!t.data.is_empty() || !t.template_from.is_empty())
            && t.merge_policy != Some(keyferry_api::external_secret::TemplateMergePolicy::Merge)
    });
    for (i, d) in es.spec.data.iter().enumerate().filter(|_| !replaced) {
        let key = d.secret_key.as_str();
        if !keyferry_api::names::is_valid_secret_key(key) {
            out.push(
                RawFinding::new(
                    Rule::K8sName,
                    es.file(),
                    es.line_of_key("secretKey", key, 0),
                    format!(
                        "spec.data[{i}].secretKey: {key:?} is not a valid Secret key (1-253 characters of a-z, A-Z, 0-9, '-', '_' and '.', not \".\" or \"..\")"
                    ),
                )
                .with_object(es.object()),
            );
        }
    }
    if let Some(name) = es.spec.target.as_ref().and_then(|t| t.name.as_deref())
        && !is_dns_subdomain(name)
    {
        out.push(
            RawFinding::new(
                Rule::K8sName,
                es.file(),
                es.line_of_key("name", name, usize::from(name == es.name)),
                format!(
                    "spec.target.name: {name:?} is not a valid Secret name (lowercase a-z, 0-9, '-' and '.', at most 253, starting and ending alphanumeric)"
                ),
            )
            .with_object(es.object()),
        );
    }
    out
}

/// RFC 1123 subdomain: what Kubernetes requires of a Secret's name.
fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// `KF004`: `find.name.regexp` and `rewrite[].regexp.source` must compile.
///
/// ESO compiles them with Go's RE2; Rust's `regex` accepts the same syntax for everything RE2
/// supports (neither has look-around or back-references), so a compile error here is one there.
pub fn invalid_regexps(es: &EsView<'_>) -> Vec<RawFinding> {
    let mut out = Vec::new();
    let mut check = |path: String, field: &str, pattern: &str| {
        if let Err(e) = regex::Regex::new(pattern) {
            let reason = crate::policy::regex_reason(&e);
            out.push(
                RawFinding::new(
                    Rule::InvalidRegexp,
                    es.file(),
                    es.line_of_key(field, pattern, 0),
                    format!("{path}: {pattern:?} is not a valid regular expression: {reason}"),
                )
                .with_object(es.object()),
            );
        }
    };
    for (i, df) in es.spec.data_from.iter().enumerate() {
        if let Some(name) = df.find.as_ref().and_then(|f| f.name.as_ref()) {
            check(
                format!("spec.dataFrom[{i}].find.name.regexp"),
                "regexp",
                &name.regexp,
            );
        }
        for (j, rw) in df.rewrite.iter().enumerate() {
            if let Some(re) = &rw.regexp {
                check(
                    format!("spec.dataFrom[{i}].rewrite[{j}].regexp.source"),
                    "source",
                    &re.source,
                );
            }
        }
    }
    out
}

/// `KF005`: each `dataFrom` entry sets exactly one of `extract`/`find`; each rewrite exactly one of
/// `regexp`/`transform`.
pub fn datafrom_shape(es: &EsView<'_>) -> Vec<RawFinding> {
    let mut out = Vec::new();
    let line = line_of_field(&es.doc.located, "dataFrom", "", 0);
    for (i, df) in es.spec.data_from.iter().enumerate() {
        let message = match (&df.extract, &df.find) {
            (None, None) => Some(format!("spec.dataFrom[{i}]: set one of extract or find")),
            (Some(_), Some(_)) => Some(format!(
                "spec.dataFrom[{i}]: extract and find cannot be set together"
            )),
            _ => None,
        };
        out.extend(message.map(|m| RawFinding::new(Rule::DataFromShape, es.file(), line, m)));
        for (j, rw) in df.rewrite.iter().enumerate() {
            let message = match (&rw.regexp, &rw.transform) {
                (None, None) => Some(format!(
                    "spec.dataFrom[{i}].rewrite[{j}]: set one of regexp or transform"
                )),
                (Some(_), Some(_)) => Some(format!(
                    "spec.dataFrom[{i}].rewrite[{j}]: regexp and transform cannot be set together"
                )),
                _ => None,
            };
            out.extend(message.map(|m| RawFinding::new(Rule::DataFromShape, es.file(), line, m)));
        }
    }
    out.into_iter().map(|f| f.with_object(es.object())).collect()
}

/// `KF006`: `deletionPolicy` must fit `creationPolicy` (ESO refuses `Delete` with `Merge` or `None`,
/// and `Merge` with `None`; the controller refuses the same pairs).
pub fn policy_conflict(es: &EsView<'_>) -> Vec<RawFinding> {
    let target = es.spec.target_or_default();
    let message = match (
        target.creation_policy_or_default(),
        target.deletion_policy_or_default(),
    ) {
        (CreationPolicy::Merge, DeletionPolicy::Delete) => {
            "spec.target: deletionPolicy Delete needs a Secret keyferry owns; set creationPolicy Owner"
        }
        (CreationPolicy::None, DeletionPolicy::Delete) => {
            "spec.target: deletionPolicy Delete cannot be used with creationPolicy None (keyferry must not delete a Secret it did not create)"
        }
        (CreationPolicy::None, DeletionPolicy::Merge) => {
            "spec.target: deletionPolicy Merge cannot be used with creationPolicy None (there is no Secret to merge into)"
        }
        _ => return Vec::new(),
    };
    let line = line_of_field(&es.doc.located, "deletionPolicy", "", 0);
    vec![RawFinding::new(Rule::PolicyConflict, es.file(), line, message).with_object(es.object())]
}

/// `KF007`: a store selects exactly one provider keyferry supports.
pub fn unsupported_provider(doc: &Located<Manifest>) -> Vec<RawFinding> {
    let (kind, meta, provider) = match &doc.value {
        Manifest::SecretStore(s) => ("SecretStore", &s.metadata, &s.spec.provider),
        Manifest::ClusterSecretStore(s) => ("ClusterSecretStore", &s.metadata, &s.spec.provider),
        _ => return Vec::new(),
    };
    match provider.kind() {
        Ok(_) => Vec::new(),
        Err(e) => {
            let name = meta.name.as_deref().unwrap_or("<unnamed>");
            vec![
                RawFinding::new(
                    Rule::UnsupportedProvider,
                    &doc.origin.file,
                    doc.line_of("provider:"),
                    format!("spec.provider: {e}"),
                )
                .with_object(format!("{kind} {name}")),
            ]
        }
    }
}

/// `KF009`: the store settings ESO's webhook checks for `azurekv`, plus compilable
/// `conditions[].namespaceRegexes`.
pub fn store_spec(doc: &Located<Manifest>) -> Vec<RawFinding> {
    let (kind, meta, spec, namespaced) = match &doc.value {
        Manifest::SecretStore(s) => ("SecretStore", &s.metadata, &s.spec.provider, true),
        Manifest::ClusterSecretStore(s) => ("ClusterSecretStore", &s.metadata, &s.spec.provider, false),
        _ => return Vec::new(),
    };
    let conditions = match &doc.value {
        Manifest::SecretStore(s) => &s.spec.conditions,
        Manifest::ClusterSecretStore(s) => &s.spec.conditions,
        _ => return Vec::new(),
    };
    let object = format!("{kind} {}", meta.name.as_deref().unwrap_or("<unnamed>"));
    let mut problems: Vec<(String, String)> = Vec::new();
    if let Some(az) = &spec.azurekv {
        if !az.vault_url.starts_with("https://") {
            problems.push((
                "vaultUrl".into(),
                format!(
                    "spec.provider.azurekv.vaultUrl: {:?} must be an https:// URL",
                    az.vault_url
                ),
            ));
        }
        let auth = az.auth_type_or_default();
        if auth == keyferry_api::secret_store::AzureAuthType::ServicePrincipal {
            let r = az.auth_secret_ref.as_ref();
            let has_id = r.is_some_and(|r| r.client_id.is_some());
            let has_secret = r.is_some_and(|r| r.client_secret.is_some() || r.client_certificate.is_some());
            if !(has_id && has_secret) {
                problems.push((
                    "azurekv".into(),
                    "spec.provider.azurekv.authSecretRef: authType ServicePrincipal needs clientId and clientSecret (or clientCertificate)".into(),
                ));
            }
        }
        if namespaced && let Some(what) = keyferry_providers::azure::store_auth::ambient_identity(az, true) {
            // The controller refuses these unless started with
            // --allow-ambient-identity-for-namespaced-stores (see docs/security.md).
            problems.push((
                "azurekv".into(),
                format!(
                    "spec.provider.azurekv: {what} is the controller's ambient identity; a namespaced SecretStore may only use credentials from its own namespace (authSecretRef or serviceAccountRef); the controller refuses it unless started with --allow-ambient-identity-for-namespaced-stores"
                ),
            ));
        }
        if namespaced {
            let mut selectors = Vec::new();
            if let Some(r) = &az.auth_secret_ref {
                for (name, sel) in [
                    ("clientId", &r.client_id),
                    ("clientSecret", &r.client_secret),
                    ("clientCertificate", &r.client_certificate),
                    ("tenantId", &r.tenant_id),
                ] {
                    if sel.as_ref().is_some_and(|s| s.namespace.is_some()) {
                        selectors.push((name, format!("authSecretRef.{name}")));
                    }
                }
            }
            if az
                .service_account_ref
                .as_ref()
                .is_some_and(|s| s.namespace.is_some())
            {
                selectors.push(("serviceAccountRef", "serviceAccountRef".to_owned()));
            }
            for (needle, field) in selectors {
                problems.push((
                    format!("{needle}:"),
                    format!("spec.provider.azurekv.{field}.namespace: a namespaced SecretStore reads only from its own namespace"),
                ));
            }
        }
    }
    if let Some(vault) = &spec.vault {
        // The provider's own checks, so `validate` refuses what the controller would.
        let server = vault.server.trim();
        let server_ok = ["http://", "https://"]
            .iter()
            .any(|s| server.strip_prefix(s).is_some_and(|rest| !rest.is_empty()));
        if !server_ok {
            problems.push((
                "server".into(),
                format!(
                    "spec.provider.vault.server: {:?} must be an http:// or https:// URL",
                    vault.server
                ),
            ));
        }
        match vault.auth.as_ref().map(|a| a.kind()) {
            None => problems.push((
                "vault".into(),
                keyferry_api::secret_store::VaultAuthSpecError::Missing.to_string(),
            )),
            Some(Err(e)) => problems.push(("auth".into(), e.to_string())),
            Some(Ok(_)) => {}
        }
        if namespaced {
            for (field, sel) in keyferry_providers::vault::credential_refs(vault) {
                if sel.namespace.is_some() {
                    problems.push((
                        "vault".into(),
                        format!(
                            "{field}.namespace: a namespaced SecretStore reads only from its own namespace"
                        ),
                    ));
                }
            }
        }
    }
    for (i, c) in conditions.iter().enumerate() {
        for re in &c.namespace_regexes {
            if let Err(e) = regex::Regex::new(re) {
                problems.push((
                    "namespaceRegexes".into(),
                    format!(
                        "spec.conditions[{i}].namespaceRegexes: {re:?} is not a valid regular expression: {}",
                        crate::policy::regex_reason(&e)
                    ),
                ));
            }
        }
    }
    problems
        .into_iter()
        .map(|(needle, message)| {
            RawFinding::new(Rule::StoreSpec, &doc.origin.file, doc.line_of(&needle), message)
                .with_object(object.clone())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testutil::{docs, es};

    fn run(f: fn(&EsView<'_>) -> Vec<RawFinding>, spec: &str) -> Vec<(Rule, usize, String)> {
        let d = docs(&es("a", spec));
        f(&EsView::of(&d[0]).unwrap())
            .into_iter()
            .map(|f| (f.rule, f.line, f.message))
            .collect()
    }

    #[test]
    fn no_data_nor_data_from() {
        let f = run(no_data, "  target: {name: x}\n");
        assert_eq!(
            f,
            [(
                Rule::NoData,
                4,
                "spec: either data or dataFrom must be specified".into()
            )]
        );
        assert!(run(no_data, "  dataFrom: [{extract: {key: a-b}}]\n").is_empty());
    }

    #[test]
    fn duplicate_secret_key_points_at_the_second() {
        let f = run(
            duplicate_secret_keys,
            "  data:\n  - {secretKey: A, remoteRef: {key: a-b}}\n  - {secretKey: B, remoteRef: {key: a-c}}\n  - {secretKey: A, remoteRef: {key: a-d}}\n",
        );
        assert_eq!(
            f,
            [(
                Rule::DuplicateSecretKey,
                8,
                "spec.data[2].secretKey: duplicate secretKey \"A\"".into()
            )]
        );
    }

    #[test]
    fn secret_keys_and_target_names() {
        let f = run(
            k8s_names,
            "  target: {name: Netbox_Creds}\n  data:\n  - {secretKey: DB PASSWORD, remoteRef: {key: a-b}}\n  - {secretKey: db.password-1_A, remoteRef: {key: a-c}}\n",
        );
        assert_eq!(f.len(), 2, "{f:?}");
        assert_eq!((f[0].0, f[0].1), (Rule::K8sName, 7));
        assert!(
            f[0].2
                .starts_with("spec.data[0].secretKey: \"DB PASSWORD\" is not a valid Secret key")
        );
        assert_eq!(f[1].1, 5);
        assert!(
            f[1].2
                .starts_with("spec.target.name: \"Netbox_Creds\" is not a valid Secret name")
        );
        let templated = run(
            k8s_names,
            "  target:\n    template: {data: {DSN: \"{{ index . \\\"DB PASSWORD\\\" }}\"}}\n  data:\n  - {secretKey: DB PASSWORD, remoteRef: {key: a-b}}\n",
        );
        assert!(
            templated.is_empty(),
            "template variables are not Secret keys: {templated:?}"
        );
        // `.` and `..` pass the character rule but the apiserver (and the controller) refuse them.
        for key in [".", ".."] {
            let f = run(
                k8s_names,
                &format!("  data:\n  - {{secretKey: \"{key}\", remoteRef: {{key: a-b}}}}\n"),
            );
            assert_eq!(f.len(), 1, "{key}: {f:?}");
        }
        assert!(is_dns_subdomain("netbox-db-credentials.v1"));
        assert!(!is_dns_subdomain("-a") && !is_dns_subdomain("a..b") && !is_dns_subdomain(""));
    }

    #[test]
    fn bad_regexps_in_find_and_rewrite() {
        let f = run(
            invalid_regexps,
            "  dataFrom:\n  - find: {name: {regexp: \"netbox-(\"}}\n    rewrite:\n    - regexp: {source: \"[a-\", target: x}\n    - regexp: {source: \"^netbox-\", target: \"\"}\n",
        );
        assert_eq!(f.len(), 2, "{f:?}");
        assert_eq!((f[0].0, f[0].1), (Rule::InvalidRegexp, 6));
        assert!(f[0].2.starts_with(
            "spec.dataFrom[0].find.name.regexp: \"netbox-(\" is not a valid regular expression"
        ));
        assert_eq!(f[1].1, 8);
        assert!(f[1].2.starts_with("spec.dataFrom[0].rewrite[0].regexp.source"));
    }

    #[test]
    fn data_from_needs_exactly_one_source() {
        let f = run(
            datafrom_shape,
            "  dataFrom:\n  - rewrite: [{}]\n  - extract: {key: a-b}\n    find: {name: {regexp: a}}\n",
        );
        let msgs: Vec<_> = f.iter().map(|f| f.2.as_str()).collect();
        assert_eq!(
            msgs,
            [
                "spec.dataFrom[0]: set one of extract or find",
                "spec.dataFrom[0].rewrite[0]: set one of regexp or transform",
                "spec.dataFrom[1]: extract and find cannot be set together",
            ]
        );
    }

    #[test]
    fn deletion_policy_conflicts() {
        let data = "  data: [{secretKey: A, remoteRef: {key: a-b}}]\n";
        let f = run(
            policy_conflict,
            &format!("  target:\n    creationPolicy: Merge\n    deletionPolicy: Delete\n{data}"),
        );
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].0, f[0].1), (Rule::PolicyConflict, 7));
        let f = run(
            policy_conflict,
            &format!("  target: {{creationPolicy: None, deletionPolicy: Merge}}\n{data}"),
        );
        assert_eq!(f.len(), 1);
        // ESO's rule the controller already had: Delete with None.
        let f = run(
            policy_conflict,
            &format!("  target: {{creationPolicy: None, deletionPolicy: Delete}}\n{data}"),
        );
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(
            run(
                policy_conflict,
                &format!("  target: {{creationPolicy: Owner, deletionPolicy: Delete}}\n{data}")
            )
            .is_empty()
        );
    }

    #[test]
    fn store_settings_eso_refuses() {
        let d = docs(
            "apiVersion: external-secrets.io/v1\nkind: SecretStore\nmetadata: {name: local, namespace: netbox}\nspec:\n  provider:\n    azurekv:\n      vaultUrl: http://kv.vault.azure.net/\n      authSecretRef:\n        clientId: {name: sp, key: id, namespace: other}\n  conditions: [{namespaceRegexes: [\"net(\"]}]\n---\napiVersion: external-secrets.io/v1\nkind: ClusterSecretStore\nmetadata: {name: ok}\nspec:\n  provider:\n    azurekv:\n      vaultUrl: https://kv.vault.azure.net/\n      authType: WorkloadIdentity\n      serviceAccountRef: {name: eso, namespace: external-secrets}\n",
        );
        let f = store_spec(&d[0].located);
        let got: Vec<_> = f.iter().map(|f| (f.line, f.message.as_str())).collect();
        assert_eq!(
            got,
            [
                (
                    7,
                    "spec.provider.azurekv.vaultUrl: \"http://kv.vault.azure.net/\" must be an https:// URL"
                ),
                (
                    6,
                    "spec.provider.azurekv.authSecretRef: authType ServicePrincipal needs clientId and clientSecret (or clientCertificate)"
                ),
                (
                    9,
                    "spec.provider.azurekv.authSecretRef.clientId.namespace: a namespaced SecretStore reads only from its own namespace"
                ),
                (
                    10,
                    "spec.conditions[0].namespaceRegexes: \"net(\" is not a valid regular expression: unclosed group"
                ),
            ]
        );
        assert!(
            store_spec(&d[1].located).is_empty(),
            "a ClusterSecretStore may name namespaces"
        );
    }

    #[test]
    fn namespaced_stores_with_ambient_identities_are_flagged() {
        let store = |kind: &str, auth: &str| {
            format!(
                "apiVersion: external-secrets.io/v1\nkind: {kind}\nmetadata: {{name: s, namespace: team}}\nspec:\n  provider:\n    azurekv:\n      vaultUrl: https://kv.vault.azure.net/\n      tenantId: t\n{auth}"
            )
        };
        for auth in [
            "      authType: ManagedIdentity\n",
            "      authType: WorkloadIdentity\n",
            "      authType: WorkloadIdentity\n      authSecretRef:\n        clientId: {name: c, key: id}\n",
        ] {
            let d = docs(&store("SecretStore", auth));
            let msgs: Vec<_> = store_spec(&d[0].located).into_iter().map(|f| f.message).collect();
            assert_eq!(msgs.len(), 1, "{auth}: {msgs:?}");
            assert!(msgs[0].contains("ambient identity"), "{msgs:?}");
            let d = docs(&store("ClusterSecretStore", auth));
            assert!(
                store_spec(&d[0].located).is_empty(),
                "cluster stores may use them: {auth}"
            );
        }
        let own_sa = "      authType: WorkloadIdentity\n      serviceAccountRef: {name: team-sa}\n";
        assert!(store_spec(&docs(&store("SecretStore", own_sa))[0].located).is_empty());
    }

    #[test]
    fn stores_need_one_supported_provider() {
        let d = docs(
            "apiVersion: external-secrets.io/v1\nkind: ClusterSecretStore\nmetadata: {name: aws}\nspec:\n  provider:\n    aws: {region: x}\n---\napiVersion: external-secrets.io/v1\nkind: ClusterSecretStore\nmetadata: {name: ok}\nspec:\n  provider:\n    azurekv: {vaultUrl: \"https://kv.vault.azure.net/\"}\n",
        );
        let f = unsupported_provider(&d[0].located);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].line, 5);
        assert_eq!(
            f[0].message,
            "spec.provider: provider aws is not supported (keyferry supports: azurekv, fake, vault)"
        );
        assert_eq!(f[0].object.as_deref(), Some("ClusterSecretStore aws"));
        assert!(unsupported_provider(&d[1].located).is_empty());
    }
}
