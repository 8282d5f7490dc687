//! `KF050`: ExternalSecrets live where the platform expects them (by default
//! `deploy/<app>/secrets/externalsecret-*.yaml`), so reviewers and tooling find every one.

use crate::finding::{RawFinding, Rule};
use crate::model::EsView;

/// An ExternalSecret in a file outside the configured pattern.
pub fn layout(es: &EsView<'_>, patterns: &[String]) -> Vec<RawFinding> {
    if es.doc.in_pattern || es.kind != "ExternalSecret" {
        return Vec::new();
    }
    vec![
        RawFinding::new(
            Rule::Layout,
            es.file(),
            es.doc.located.origin.line,
            format!(
                "ExternalSecret is outside the expected layout ({})",
                patterns.join(", ")
            ),
        )
        .with_object(es.object()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testutil::{docs, es};

    #[test]
    fn outside_the_pattern() {
        let mut d = docs(&es("a", "  data: [{secretKey: A, remoteRef: {key: a-b}}]\n"));
        let patterns = vec!["deploy/*/secrets/externalsecret-*.yaml".to_owned()];
        assert!(layout(&EsView::of(&d[0]).unwrap(), &patterns).is_empty());
        d[0].in_pattern = false;
        let f = layout(&EsView::of(&d[0]).unwrap(), &patterns);
        assert_eq!(
            f[0].message,
            "ExternalSecret is outside the expected layout (deploy/*/secrets/externalsecret-*.yaml)"
        );
    }
}
