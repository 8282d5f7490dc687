//! The `validate` rules: one pure function per rule, each returning the findings it makes. None of
//! them reads files or talks to a vault; `lib.rs` feeds them the parsed repository.

pub mod layout;
pub mod names;
pub mod plaintext;
pub mod schema;
pub mod stores;
pub mod targets;
pub mod webhook;

#[cfg(test)]
pub(crate) mod testutil {
    //! Builds documents from YAML for rule tests.

    use keyferry_api::manifest::parse_documents;

    use crate::model::Doc;

    /// Parses `text` as file `f.yaml`, inside the ExternalSecret pattern.
    pub fn docs(text: &str) -> Vec<Doc> {
        docs_in("f.yaml", text)
    }

    /// Parses `text` as `file`.
    pub fn docs_in(file: &str, text: &str) -> Vec<Doc> {
        parse_documents(file, text)
            .into_iter()
            .map(|r| Doc {
                in_pattern: true,
                in_scope: true,
                located: r.expect("test YAML parses"),
            })
            .collect()
    }

    /// An ExternalSecret in namespace `netbox` with the given spec body (indented under `spec:`).
    pub fn es(name: &str, spec: &str) -> String {
        format!(
            "apiVersion: external-secrets.io/v1\nkind: ExternalSecret\nmetadata: {{name: {name}, namespace: netbox}}\nspec:\n{spec}"
        )
    }
}
