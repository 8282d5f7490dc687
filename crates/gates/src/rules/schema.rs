//! `KF001 schema` checks the parser cannot make: values whose shape is right but whose content the
//! CRD (or keyferry) refuses.

use crate::finding::{RawFinding, Rule};
use crate::model::{EsView, line_of_field};

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
