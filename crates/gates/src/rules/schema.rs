//! `KF001 schema` checks the parser cannot make: values whose shape is right but whose content the
//! CRD (or keyferry) refuses.

use keyferry_api::manifest::{Located, Manifest};

use crate::finding::{RawFinding, Rule};
use crate::model::{EsView, line_of_field};

/// `metadata.name` is required (the API server refuses an object without one).
pub fn missing_name(doc: &Located<Manifest>) -> Vec<RawFinding> {
    let meta = match &doc.value {
        Manifest::ExternalSecret(o) => &o.metadata,
        Manifest::ClusterExternalSecret(o) => &o.metadata,
        Manifest::SecretStore(o) => &o.metadata,
        Manifest::ClusterSecretStore(o) => &o.metadata,
        _ => return Vec::new(),
    };
    if meta.name.as_deref().is_some_and(|n| !n.is_empty()) {
        return Vec::new();
    }
    vec![RawFinding::new(
        Rule::Schema,
        &doc.origin.file,
        doc.line_of("metadata"),
        format!("{}: metadata.name: missing", doc.value.kind()),
    )]
}

/// `refreshInterval` must be a Go duration (`1h`, `15m30s`, `0`).
pub fn refresh_interval(es: &EsView<'_>) -> Vec<RawFinding> {
    let Some(text) = es.spec.refresh_interval.as_deref() else {
        return Vec::new();
    };
    match es.spec.refresh_interval_or_default() {
        Ok(_) => Vec::new(),
        Err(e) => vec![
            RawFinding::new(
                Rule::Schema,
                es.file(),
                line_of_field(&es.doc.located, "refreshInterval", text, 0),
                format!("spec.refreshInterval: {e}"),
            )
            .with_object(es.object()),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testutil::{docs, es};

    #[test]
    fn objects_need_a_name() {
        let d = docs(
            "apiVersion: external-secrets.io/v1\nkind: ExternalSecret\nmetadata:\n  namespace: x\nspec: {}\n",
        );
        let f = missing_name(&d[0].located);
        assert_eq!(f.len(), 1);
        assert_eq!(
            (f[0].line, f[0].message.as_str()),
            (3, "ExternalSecret: metadata.name: missing")
        );
        let ok = docs(&es("a", "  data: []\n"));
        assert!(missing_name(&ok[0].located).is_empty());
    }

    #[test]
    fn bad_refresh_interval_is_a_schema_error() {
        let d = docs(&es(
            "a",
            "  refreshInterval: 1x\n  data: [{secretKey: A, remoteRef: {key: a-b}}]\n",
        ));
        let f = refresh_interval(&EsView::of(&d[0]).unwrap());
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].rule, Rule::Schema);
        assert_eq!(f[0].line, 5);
        assert!(
            f[0].message
                .starts_with("spec.refreshInterval: invalid duration \"1x\""),
            "{}",
            f[0].message
        );

        let ok = docs(&es(
            "a",
            "  refreshInterval: 1h\n  data: [{secretKey: A, remoteRef: {key: a-b}}]\n",
        ));
        assert!(refresh_interval(&EsView::of(&ok[0]).unwrap()).is_empty());
    }
}
