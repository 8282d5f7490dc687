//! Encrypt/decrypt round trips, MAC enforcement and the distinct errors.

use keyferry_sops::{
    AgeIdentity, CryptRule, EncryptOptions, Format, Leaf, Node, Plaintext, Scalar, SopsError, encrypt, parse,
    parse_as, parse_identities,
};
use proptest::prelude::*;

const CANARY: &str = "canary-sops-5e1d";

fn sample() -> Node<Leaf> {
    let clear = |s: &str| Node::Leaf(Leaf::Clear(Scalar::Str(s.to_owned())));
    let secret = |s: &str| Node::Leaf(Leaf::Secret(Plaintext::string(s)));
    Node::Map(vec![(
        "secrets".to_owned(),
        Node::List(vec![
            Node::Map(vec![
                ("name".to_owned(), clear("db-password")),
                ("version".to_owned(), clear("v1")),
                ("value".to_owned(), secret(CANARY)),
            ]),
            Node::Map(vec![
                ("name".to_owned(), clear("api-key")),
                ("version".to_owned(), clear("v2")),
                ("value".to_owned(), secret("second-value")),
            ]),
        ]),
    )])
}

fn options(id: &AgeIdentity) -> EncryptOptions {
    EncryptOptions {
        recipients: vec![id.recipient()],
        rule: CryptRule::EncryptedRegex("^value$".to_owned()),
        mac_only_encrypted: false,
        lastmodified: None,
    }
}

fn values(tree: &Node<Leaf>) -> Vec<Vec<u8>> {
    let Some(Node::List(items)) = tree.get("secrets") else {
        panic!("no list")
    };
    items
        .iter()
        .map(|e| match e.get("value").and_then(Node::leaf) {
            Some(Leaf::Secret(p)) => p.expose().to_vec(),
            other => panic!("not a secret: {other:?}"),
        })
        .collect()
}

#[test]
fn round_trip_yaml_and_json() {
    let id = AgeIdentity::generate();
    let doc = encrypt(&sample(), &options(&id)).unwrap();
    for format in [Format::Yaml, Format::Json] {
        let text = doc.to_text(format).unwrap();
        assert!(!text.contains(CANARY), "{text}");
        assert!(
            text.contains("db-password") && text.contains("ENC[AES256_GCM"),
            "{text}"
        );
        let back = parse(&text).unwrap();
        assert_eq!(back, doc);
        let tree = back.decrypt(std::slice::from_ref(&id)).unwrap();
        assert_eq!(
            values(&tree),
            vec![CANARY.as_bytes().to_vec(), b"second-value".to_vec()]
        );
    }
}

#[test]
fn tampered_reordered_and_truncated_files_are_refused() {
    let id = AgeIdentity::generate();
    let text = encrypt(&sample(), &options(&id))
        .unwrap()
        .to_text(Format::Yaml)
        .unwrap();
    let ids = [id];

    // A cleartext field changed: the MAC no longer matches.
    let changed = text.replace("version: v1", "version: v9");
    assert_ne!(changed, text);
    assert_eq!(
        parse(&changed).unwrap().decrypt(&ids),
        Err(SopsError::MacMismatch)
    );

    // Entries swapped: both values still decrypt (same AAD), but the order is in the MAC.
    let doc = parse(&text).unwrap();
    let Node::Map(mut top) = doc.tree().clone() else {
        panic!()
    };
    let Node::List(items) = &mut top[0].1 else {
        panic!()
    };
    items.swap(0, 1);
    let swapped = Node::Map(top);
    let yaml = serde_yaml_ng::to_string(&swapped).unwrap();
    let meta = text.split_once("sops:").unwrap().1;
    let reordered = format!("{yaml}sops:{meta}");
    assert_eq!(
        parse(&reordered).unwrap().decrypt(&ids),
        Err(SopsError::MacMismatch)
    );

    // An encrypted value replaced with clear text.
    let start = text.find("value: ENC[").unwrap();
    let end = start + text[start..].find('\n').unwrap();
    let plain = format!("{}value: plain{}", &text[..start], &text[end..]);
    assert!(matches!(
        parse(&plain).unwrap().decrypt(&ids),
        Err(SopsError::NotEncryptedValue { .. })
    ));

    // A ciphertext bit flipped.
    let flip = text.replacen("data:", "data:A", 1);
    assert!(matches!(
        parse(&flip).unwrap().decrypt(&ids),
        Err(SopsError::Tampered { .. } | SopsError::MalformedValue { .. })
    ));

    // Truncated at every line boundary: never Ok, never a panic.
    for (i, _) in text.trim_end().match_indices('\n') {
        let cut = &text[..i];
        let result = parse(cut).and_then(|d| d.decrypt(&ids));
        assert!(result.is_err(), "truncated at {i} was accepted");
        let msg = result.unwrap_err().to_string();
        assert!(!msg.contains('\n') && !msg.contains(CANARY), "{msg}");
    }
}

#[test]
fn key_errors_are_distinct() {
    let id = AgeIdentity::generate();
    let text = encrypt(&sample(), &options(&id))
        .unwrap()
        .to_text(Format::Yaml)
        .unwrap();
    let doc = parse(&text).unwrap();
    let stranger = AgeIdentity::generate();
    let err = doc.decrypt(&[stranger]).unwrap_err();
    assert!(matches!(err, SopsError::NoMatchingRecipient { .. }), "{err}");
    assert!(err.to_string().contains(&id.recipient().to_string()), "{err}");

    // The recipient is listed, but its stanza was replaced by one for another key.
    let other = AgeIdentity::generate();
    let other_doc = encrypt(&sample(), &options(&other)).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&doc.to_text(Format::Json).unwrap()).unwrap();
    json["sops"]["age"][0]["enc"] = serde_json::Value::String(other_doc.metadata().age[0].enc.clone());
    let swapped = parse(&json.to_string()).unwrap();
    assert_eq!(swapped.metadata().age[0].recipient, id.recipient().to_string());
    let err = swapped.decrypt(std::slice::from_ref(&id)).unwrap_err();
    assert!(matches!(err, SopsError::WrongKey { .. }), "{err}");

    assert!(matches!(
        parse_identities("# nothing\n"),
        Err(SopsError::InvalidKey { .. })
    ));
    assert_eq!(parse_identities(&id.to_key_file()).unwrap().len(), 1);
}

#[test]
fn unsupported_features_are_named() {
    let id = AgeIdentity::generate();
    let text = encrypt(&sample(), &options(&id))
        .unwrap()
        .to_text(Format::Yaml)
        .unwrap();
    let groups = text.replace(
        "sops:\n",
        "sops:\n  shamir_threshold: 2\n  key_groups:\n  - age: []\n",
    );
    let err = parse(&groups).unwrap_err();
    assert!(
        matches!(err, SopsError::Unsupported { .. }) && err.to_string().contains("Shamir"),
        "{err}"
    );
    let pgp_only = "a: ENC[AES256_GCM,data:AA==,iv:AA==,tag:AA==,type:str]\nsops:\n  pgp:\n  - fp: ABC\n    enc: x\n  lastmodified: '2026-01-01T00:00:00Z'\n  mac: ''\n  version: 3.11.0\n";
    let err = parse(pgp_only).unwrap_err();
    assert!(
        matches!(err, SopsError::Unsupported { .. }) && err.to_string().contains("pgp"),
        "{err}"
    );
    assert_eq!(parse("a: 1\n").unwrap_err(), SopsError::NotEncrypted);
    assert!(matches!(
        parse_as("{\"a\":", Format::Json),
        Err(SopsError::Syntax { .. })
    ));
}

#[test]
fn typed_leaves_default_rule_and_mac_only_encrypted() {
    let id = AgeIdentity::generate();
    let c = |s: Scalar| Node::Leaf(Leaf::Clear(s));
    let tree = Node::Map(vec![
        ("n".to_owned(), c(Scalar::Int(42))),
        ("f".to_owned(), c(Scalar::Float(1.5))),
        ("b".to_owned(), c(Scalar::Bool(false))),
        ("empty".to_owned(), c(Scalar::Str(String::new()))),
        (
            "note_unencrypted".to_owned(),
            c(Scalar::Str("visible".to_owned())),
        ),
        ("nothing".to_owned(), Node::Null),
    ]);
    for mac_only_encrypted in [false, true] {
        let opts = EncryptOptions {
            recipients: vec![id.recipient()],
            rule: CryptRule::default(),
            mac_only_encrypted,
            lastmodified: None,
        };
        let text = encrypt(&tree, &opts).unwrap().to_text(Format::Yaml).unwrap();
        assert!(
            text.contains("type:int]") && text.contains("type:bool]") && text.contains("visible"),
            "{text}"
        );
        let out = parse(&text).unwrap().decrypt(std::slice::from_ref(&id)).unwrap();
        match out.get("b").and_then(Node::leaf) {
            Some(Leaf::Secret(p)) => assert_eq!(p.expose(), b"false"),
            other => panic!("{other:?}"),
        }
        // In mac_only_encrypted mode the clear field is not covered; otherwise it is.
        let edited = parse(&text.replace("visible", "changed"))
            .unwrap()
            .decrypt(std::slice::from_ref(&id));
        assert_eq!(edited.is_ok(), mac_only_encrypted);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn any_string_values_round_trip(
        entries in proptest::collection::vec(("[a-z][a-z0-9_-]{0,12}", ".{0,40}"), 1..6),
        json in any::<bool>(),
    ) {
        let id = AgeIdentity::generate();
        let mut seen = std::collections::HashSet::new();
        let tree = Node::Map(entries.iter().filter(|(k, _)| k != "sops" && seen.insert(k.clone()))
            .map(|(k, v)| (k.clone(), Node::Leaf(Leaf::Secret(Plaintext::string(v.as_bytes())))))
            .collect());
        let opts = EncryptOptions { recipients: vec![id.recipient()], rule: CryptRule::default(), mac_only_encrypted: false, lastmodified: None };
        let format = if json { Format::Json } else { Format::Yaml };
        let text = encrypt(&tree, &opts).unwrap().to_text(format).unwrap();
        let out = parse(&text).unwrap().decrypt(std::slice::from_ref(&id)).unwrap();
        let Node::Map(got) = out else { panic!() };
        let Node::Map(want) = tree else { panic!() };
        prop_assert_eq!(got.len(), want.len());
        for ((gk, gv), (wk, wv)) in got.iter().zip(want.iter()) {
            prop_assert_eq!(gk, wk);
            let g = match gv { Node::Leaf(Leaf::Secret(p)) => p.expose().to_vec(), Node::Leaf(Leaf::Clear(Scalar::Str(s))) => s.as_bytes().to_vec(), _ => panic!() };
            let w = match wv { Node::Leaf(Leaf::Secret(p)) => p.expose().to_vec(), _ => panic!() };
            prop_assert_eq!(g, w);
        }
    }

    #[test]
    fn arbitrary_input_never_panics(text in ".{0,400}") {
        let id = AgeIdentity::generate();
        let _ = parse(&text).and_then(|d| d.decrypt(std::slice::from_ref(&id)));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A valid file with bytes changed or removed is never accepted with different content, and
    /// never panics: mutations reach the metadata, the ENC grammar, base64 and the MAC.
    #[test]
    fn mutated_files_are_refused_or_unchanged(
        json in any::<bool>(),
        edits in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>(), any::<bool>()), 1..4),
    ) {
        static FIXTURE: std::sync::LazyLock<(AgeIdentity, String, String)> = std::sync::LazyLock::new(|| {
            let id = AgeIdentity::generate();
            let doc = encrypt(&sample(), &options(&id)).unwrap();
            (id.clone(), doc.to_text(Format::Yaml).unwrap(), doc.to_text(Format::Json).unwrap())
        });
        let (id, yaml, json_text) = &*FIXTURE;
        let mut bytes = if json { json_text.clone() } else { yaml.clone() }.into_bytes();
        for (at, byte, remove) in edits {
            if bytes.is_empty() { break; }
            let i = at.index(bytes.len());
            if remove { bytes.remove(i); } else { bytes[i] = byte; }
        }
        let Ok(text) = String::from_utf8(bytes) else { return Ok(()) };
        if let Ok(tree) = parse(&text).and_then(|d| d.decrypt(std::slice::from_ref(id))) {
            // Accepted only if what is protected is unchanged.
            prop_assert_eq!(values(&tree), vec![CANARY.as_bytes().to_vec(), b"second-value".to_vec()]);
        }
    }
}
