//! The manifest parser never panics, whatever the bytes, and every error is one line naming the file.

use keyferry_api::manifest::parse_documents;
use proptest::prelude::*;

const SAMPLE: &str = "apiVersion: external-secrets.io/v1\nkind: ExternalSecret\nmetadata: {name: a, namespace: b}\nspec:\n  secretStoreRef: {kind: ClusterSecretStore, name: s}\n  target: {name: t, creationPolicy: Owner}\n  data:\n    - secretKey: K\n      remoteRef: {key: k, property: a.b, decodingStrategy: Base64}\n  dataFrom:\n    - find: {name: {regexp: '^x'}, tags: {a: b}}\n      rewrite: [{regexp: {source: a, target: b}}]\n---\napiVersion: external-secrets.io/v1\nkind: ClusterSecretStore\nmetadata: {name: s}\nspec:\n  provider:\n    azurekv: {vaultUrl: 'https://x.vault.azure.net'}\n";

fn check(text: &str) {
    for doc in parse_documents("fuzz.yaml", text) {
        if let Err(e) = doc {
            let msg = e.to_string();
            assert!(msg.starts_with("fuzz.yaml: document "), "{msg}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        check(&text);
    }

    #[test]
    fn yaml_ish_soup_never_panics(parts in proptest::collection::vec(
        prop_oneof![
            Just("apiVersion: external-secrets.io/v1\n"), Just("kind: ExternalSecret\n"), Just("kind: SecretStore\n"),
            Just("spec:\n"), Just("  data:\n"), Just("  - secretKey: x\n"), Just("    remoteRef: {key: 1}\n"),
            Just("---\n"), Just("  provider: {aws: {}}\n"), Just("metadata: {name: [}\n"), Just("  refreshInterval: -1\n"),
            Just(": :\n"), Just("\t\n"), Just("&a *a\n"), Just("!!binary x\n"), Just("  dataFrom: [{}]\n"),
        ],
        0..20,
    )) {
        check(&parts.concat());
    }

    #[test]
    fn mutated_sample_never_panics(cut in 0usize..SAMPLE.len(), insert in "\\PC{0,8}") {
        let mut text = SAMPLE.to_owned();
        if text.is_char_boundary(cut) {
            text.insert_str(cut, &insert);
        }
        check(&text);
        if text.is_char_boundary(cut) {
            check(&text[..cut]);
        }
    }
}
