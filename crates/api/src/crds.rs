//! The CustomResourceDefinitions keyferry installs: every kind served as `v1` (storage) and `v1beta1`
//! (same schema, so the API server converts between them by rewriting `apiVersion` only).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use kube::CustomResourceExt;

use crate::{ClusterExternalSecret, ClusterSecretStore, ExternalSecret, SecretStore, VERSION_V1BETA1};

/// All CRDs, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    [
        ExternalSecret::crd(),
        SecretStore::crd(),
        ClusterSecretStore::crd(),
        ClusterExternalSecret::crd(),
    ]
    .into_iter()
    .map(finish)
    .collect()
}

/// All CRDs as one multi-document YAML stream, as `keyferry crds` prints and `deploy/crds/` holds.
pub fn all_yaml() -> Result<String, serde_yaml_ng::Error> {
    let mut out = String::new();
    for crd in all() {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&crd)?);
    }
    Ok(out)
}

/// What `kubectl explain <kind>` says first (kube-derive would say "Auto-generated derived type").
fn kind_description(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "ExternalSecret" => {
            "Which vault values to read, from which store, and how to shape them into one Kubernetes Secret."
        }
        "SecretStore" => {
            "How to reach one vault (provider, address, credentials), for the ExternalSecrets of its own namespace."
        }
        "ClusterSecretStore" => {
            "How to reach one vault, for ExternalSecrets in every namespace its conditions allow."
        }
        "ClusterExternalSecret" => {
            "One ExternalSecret stamped into every namespace that matches its selectors."
        }
        _ => return None,
    })
}

/// Adds the served `v1beta1` version, describes the kind and removes every `default:` marker from
/// the schemas.
fn finish(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    let description = kind_description(&crd.spec.names.kind);
    for version in &mut crd.spec.versions {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            strip_defaults(schema);
            if let Some(d) = description {
                schema.description = Some(d.to_owned());
            }
        }
    }
    if let Some(v1) = crd.spec.versions.first().cloned() {
        let mut beta = v1;
        beta.name = VERSION_V1BETA1.to_owned();
        beta.storage = false;
        beta.served = true;
        crd.spec.versions.push(beta);
    }
    crd
}

/// Defaults in a CRD schema are written into every stored object, which GitOps tools then report as
/// drift (ESO issue #6797); keyferry applies its defaults in code instead.
fn strip_defaults(schema: &mut JSONSchemaProps) {
    schema.default = None;
    let children = schema
        .properties
        .iter_mut()
        .flat_map(|p| p.values_mut())
        .chain(schema.all_of.iter_mut().flatten())
        .chain(schema.any_of.iter_mut().flatten())
        .chain(schema.one_of.iter_mut().flatten());
    for child in children {
        strip_defaults(child);
    }
    if let Some(
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray::Schema(
            items,
        ),
    ) = schema.items.as_mut()
    {
        strip_defaults(items);
    }
    if let Some(
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrBool::Schema(
            extra,
        ),
    ) = schema.additional_properties.as_mut()
    {
        strip_defaults(extra);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_serves_v1_and_v1beta1_with_v1_stored() {
        for crd in all() {
            let versions: Vec<(&str, bool, bool)> = crd
                .spec
                .versions
                .iter()
                .map(|v| (v.name.as_str(), v.served, v.storage))
                .collect();
            assert_eq!(
                versions,
                vec![("v1", true, true), ("v1beta1", true, false)],
                "{}",
                crd.spec.names.kind
            );
            assert_eq!(crd.spec.group, "external-secrets.io");
        }
    }

    #[test]
    fn schemas_carry_no_defaults() {
        let yaml = all_yaml().unwrap();
        assert!(
            !yaml.contains("default:"),
            "a default: marker leaked into the CRD schema"
        );
    }

    #[test]
    fn every_property_has_a_description() {
        fn walk(path: &str, s: &JSONSchemaProps, missing: &mut Vec<String>) {
            for (name, child) in s.properties.iter().flatten() {
                let p = format!("{path}.{name}");
                // metadata, apiVersion and kind are documented by Kubernetes itself.
                if child.description.is_none() && !matches!(name.as_str(), "metadata" | "apiVersion" | "kind")
                {
                    missing.push(p.clone());
                }
                walk(&p, child, missing);
            }
            if let Some(
                k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray::Schema(
                    items,
                ),
            ) = &s.items
            {
                walk(&format!("{path}[]"), items, missing);
            }
        }
        let mut missing = Vec::new();
        for crd in all() {
            let schema = crd.spec.versions[0]
                .schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema
                .as_ref()
                .unwrap();
            walk(&crd.spec.names.kind, schema, &mut missing);
        }
        // LabelSelector internals come from Kubernetes' own types.
        missing.retain(|p| !p.contains("amespaceSelector") && !p.contains("namespaceSelectors"));
        assert!(missing.is_empty(), "fields without a doc comment: {missing:#?}");
    }

    #[test]
    fn committed_crds_match_the_code() {
        let committed = include_str!("../../../deploy/crds/external-secrets.io.yaml");
        assert!(
            committed == all_yaml().unwrap(),
            "deploy/crds/external-secrets.io.yaml is stale; regenerate it with `cargo run -p keyferry -- crds > deploy/crds/external-secrets.io.yaml`"
        );
    }
}
