//! Secret values in Git: committed plaintext `Secret` manifests (`KF040`) and tracked `.env` files
//! (`KF041`). Messages name the keys at most, never a value.

use keyferry_api::manifest::{Located, Manifest};

use crate::discover::SourceFile;
use crate::finding::{RawFinding, Rule};
use crate::policy::Policy;

/// `KF040`: a core `v1` Secret with `data` or `stringData`, in a file the policy does not allow.
pub fn plaintext_secret(doc: &Located<Manifest>, policy: &Policy) -> Vec<RawFinding> {
    let Manifest::Secret(secret) = &doc.value else {
        return Vec::new();
    };
    if policy.allows_plaintext(&doc.origin.file) {
        return Vec::new();
    }
    let data = secret.data.as_ref().map_or(0, |d| d.len());
    let string_data = secret.string_data.as_ref().map_or(0, |d| d.len());
    if data == 0 && string_data == 0 {
        return Vec::new();
    }
    let name = secret.metadata.name.as_deref().unwrap_or("<unnamed>");
    let ns = secret.metadata.namespace.as_deref().unwrap_or("default");
    let field = if data > 0 { "data:" } else { "stringData:" };
    vec![
        RawFinding::new(
            Rule::PlaintextSecret,
            &doc.origin.file,
            doc.line_of(field),
            format!(
                "Secret {ns}/{name} is committed with {} value(s) in data/stringData; keep the value in Key Vault and commit an ExternalSecret (or allow this file in [allow] plaintext-secrets)",
                data + string_data
            ),
        )
        .with_object(format!("Secret {ns}/{name}")),
    ]
}

/// `KF041`: tracked `.env` files the policy does not allow.
pub fn dotenv_files(files: &[SourceFile], policy: &Policy) -> Vec<RawFinding> {
    files
        .iter()
        .filter(|f| !policy.allows_env_file(&f.rel))
        .map(|f| {
            RawFinding::new(
                Rule::DotenvFile,
                &f.rel,
                1,
                ".env files are for local bootstrap only and must not be committed: git rm --cached it and add it to .gitignore (or allow it in [allow] env-files)",
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testutil::docs_in;

    #[test]
    fn secrets_with_values_are_flagged_without_the_values() {
        let text = "apiVersion: v1\nkind: Secret\nmetadata: {name: akv-sp-credentials, namespace: external-secrets}\ntype: Opaque\nstringData:\n  client-secret: canary-1b2c\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: empty}\n";
        let d = docs_in("deploy/x/sp.yaml", text);
        let policy = Policy::defaults(".");
        let f = plaintext_secret(&d[0].located, &policy);
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].rule, f[0].line), (Rule::PlaintextSecret, 5));
        assert!(
            f[0].message
                .starts_with("Secret external-secrets/akv-sp-credentials is committed with 1 value(s)")
        );
        assert!(!format!("{f:?}").contains("canary"));
        assert!(
            plaintext_secret(&d[1].located, &policy).is_empty(),
            "a Secret without data is not a leak"
        );

        let allowing = Policy::parse(
            ".",
            std::path::Path::new("k.toml"),
            "[allow]\nplaintext-secrets = [\"deploy/x/*\"]\n",
        )
        .unwrap();
        assert!(plaintext_secret(&d[0].located, &allowing).is_empty());
    }

    #[test]
    fn env_files_unless_allowed() {
        let files: Vec<SourceFile> = [".env", "app/.env.example", "control/secrets.env"]
            .iter()
            .map(|r| SourceFile {
                rel: (*r).into(),
                path: r.into(),
                in_scope: true,
            })
            .collect();
        let f = dotenv_files(&files, &Policy::defaults("."));
        let got: Vec<_> = f.iter().map(|f| f.file.as_str()).collect();
        assert_eq!(got, [".env", "control/secrets.env"]);
    }
}
