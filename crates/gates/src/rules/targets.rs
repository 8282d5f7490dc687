//! `KF030`: no two ExternalSecrets in a namespace write the same Secret.

use std::collections::BTreeMap;

use keyferry_api::external_secret::CreationPolicy;

use crate::finding::{RawFinding, Rule};
use crate::model::EsView;

/// Reports every ExternalSecret whose target Secret another ExternalSecret in the same namespace
/// also writes — each of them, so whichever file a change touches shows the conflict. Only writers
/// that own or create the Secret count: `creationPolicy: Merge` is the supported way to add keys to
/// someone else's Secret, and `None` writes nothing.
pub fn duplicate_targets(all: &[EsView<'_>]) -> Vec<RawFinding> {
    let mut groups: BTreeMap<(String, String), Vec<&EsView<'_>>> = BTreeMap::new();
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
        groups.entry((ns.to_owned(), name)).or_default().push(es);
    }
    let mut out = Vec::new();
    for ((ns, name), writers) in groups.iter().filter(|(_, w)| w.len() > 1) {
        let lines: Vec<usize> = writers.iter().map(|es| target_line(es)).collect();
        for (i, es) in writers.iter().enumerate() {
            let j = usize::from(i == 0);
            let other = writers[j];
            out.push(
                RawFinding::new(
                    Rule::DuplicateTarget,
                    es.file(),
                    lines[i],
                    format!(
                        "target Secret {ns}/{name} is also written by {} ({}:{}); give one of them creationPolicy: Merge or another target name",
                        other.object(),
                        other.file(),
                        lines[j]
                    ),
                )
                .with_object(es.object()),
            );
        }
    }
    out
}

/// The line naming the target Secret, or the document start when the name is defaulted.
fn target_line(es: &EsView<'_>) -> usize {
    match &es.spec.target_or_default().name {
        // With the same name as the ExternalSecret, the first `name:` is metadata's.
        Some(n) => es.line_of_key("name", n, usize::from(n == es.name)),
        None => es.doc.located.origin.line,
    }
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
            [("a.yaml", 5), ("b.yaml", 6), ("d.yaml", 1)],
            "Merge and other namespaces are fine; a default target counts"
        );
        assert_eq!(
            f[1].message,
            "target Secret netbox/creds is also written by ExternalSecret netbox/one (a.yaml:5); give one of them creationPolicy: Merge or another target name"
        );
    }
}
