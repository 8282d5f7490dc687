//! `KF030`: no two ExternalSecrets in a namespace write the same Secret.

use std::collections::BTreeMap;

use keyferry_api::external_secret::CreationPolicy;

use crate::finding::{RawFinding, Rule};
use crate::model::EsView;

/// Reports every ExternalSecret whose target Secret another ExternalSecret in the same namespace
/// already writes. Only writers that own or create the Secret count: `creationPolicy: Merge` is the
/// supported way to add keys to someone else's Secret, and `None` writes nothing.
pub fn duplicate_targets(all: &[EsView<'_>]) -> Vec<RawFinding> {
    let mut first: BTreeMap<(String, String), &EsView<'_>> = BTreeMap::new();
    let mut out = Vec::new();
    for es in all {
        let Some(ns) = es.namespace else { continue };
        let target = es.spec.target_or_default();
        if matches!(
            target.creation_policy_or_default(),
            CreationPolicy::Merge | CreationPolicy::None
        ) {
            continue;
        }
        let name = target.name.clone().unwrap_or_else(|| es.name.to_owned());
        match first.get(&(ns.to_owned(), name.clone())) {
            None => {
                first.insert((ns.to_owned(), name), es);
            }
            Some(prev) => {
                let line = match &target.name {
                    Some(n) => es.line_of_key("name", n, if n == es.name { 1 } else { 0 }),
                    None => es.doc.located.origin.line,
                };
                out.push(
                    RawFinding::new(
                        Rule::DuplicateTarget,
                        es.file(),
                        line,
                        format!(
                            "target Secret {ns}/{name} is also written by {} ({}:{}); give one of them creationPolicy: Merge or another target name",
                            prev.object(),
                            prev.file(),
                            prev.doc.located.origin.line
                        ),
                    )
                    .with_object(es.object()),
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testutil::{docs_in, es};

    #[test]
    fn same_namespace_same_target() {
        let data = "  data: [{secretKey: A, remoteRef: {key: a-b}}]\n";
        let mut all = docs_in(
            "a.yaml",
            &es("one", &format!("  target: {{name: creds}}\n{data}")),
        );
        all.extend(docs_in(
            "b.yaml",
            &es("two", &format!("  target:\n    name: creds\n{data}")),
        ));
        all.extend(docs_in(
            "c.yaml",
            &es(
                "three",
                &format!("  target: {{name: creds, creationPolicy: Merge}}\n{data}"),
            ),
        ));
        all.extend(docs_in("d.yaml", &es("creds", data)));
        let other_ns = es("four", &format!("  target: {{name: creds}}\n{data}"))
            .replace("namespace: netbox", "namespace: jenkins");
        all.extend(docs_in("e.yaml", &other_ns));
        let views: Vec<_> = all.iter().filter_map(EsView::of).collect();
        let f = duplicate_targets(&views);
        let got: Vec<_> = f.iter().map(|f| (f.file.as_str(), f.line)).collect();
        assert_eq!(
            got,
            [("b.yaml", 6), ("d.yaml", 1)],
            "Merge and other namespaces are fine; a default target counts"
        );
        assert_eq!(
            f[0].message,
            "target Secret netbox/creds is also written by ExternalSecret netbox/one (a.yaml:1); give one of them creationPolicy: Merge or another target name"
        );
    }
}
